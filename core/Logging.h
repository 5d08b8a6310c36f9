// Logging: a small facade over spdlog.
//
// The torch wheel ships fmt 12 headers, which shadow Debian's fmt 9 that Debian's spdlog is built
// against; the two cannot meet in one translation unit. So spdlog lives in one torch-free unit
// (Logging.cpp, library latentcell_log) and everything else formats with whatever fmt it sees and
// hands the finished line over here.
#pragma once

#include <fmt/format.h>

#include <string>
#include <utility>

namespace latentcell::core {

enum class LogLevel { Trace, Debug, Info, Warn, Error };

// level: trace, debug, info, warn, error or off. Unknown names are an error naming the value.
void setupLogging(const std::string& level = "info");
// Adds a file sink (append) to the logger, e.g. RUN_DIR/log.txt.
void addLogFile(const std::string& path);
bool logEnabled(LogLevel level);
void logMessage(LogLevel level, const std::string& message);
// To the file logs only: lines a terminal shows another way (the trainer's progress bar).
void logFileMessage(LogLevel level, const std::string& message);

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (logEnabled(level)) logMessage(level, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void logInfo(fmt::format_string<Args...> format, Args&&... args) {
  log(LogLevel::Info, format, std::forward<Args>(args)...);
}
template <typename... Args>
void logWarn(fmt::format_string<Args...> format, Args&&... args) {
  log(LogLevel::Warn, format, std::forward<Args>(args)...);
}
template <typename... Args>
void logDebug(fmt::format_string<Args...> format, Args&&... args) {
  log(LogLevel::Debug, format, std::forward<Args>(args)...);
}

}  // namespace latentcell::core
