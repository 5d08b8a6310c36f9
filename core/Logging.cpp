// The spdlog side of the logging facade (see Logging.h). Compiled without LibTorch's include
// directories so that spdlog sees the fmt it was built with.
#include "core/Logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

namespace latentcell::core {
namespace {

spdlog::level::level_enum toSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::Trace: return spdlog::level::trace;
    case LogLevel::Debug: return spdlog::level::debug;
    case LogLevel::Info: return spdlog::level::info;
    case LogLevel::Warn: return spdlog::level::warn;
    case LogLevel::Error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> logger() {
  static auto instance = [] {
    auto l = spdlog::stderr_color_mt("latentcell");
    l->set_pattern("[%Y-%m-%d %H:%M:%S] [%^%l%$] %v");
    return l;
  }();
  return instance;
}

// The same file sinks as logger(), without the console.
std::shared_ptr<spdlog::logger> fileLogger() {
  static auto instance = std::make_shared<spdlog::logger>("latentcell-files");
  return instance;
}

}  // namespace

void setupLogging(const std::string& level) {
  const auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    throw std::invalid_argument("unknown log level '" + level +
                                "' (use trace, debug, info, warn, error or off)");
  }
  logger()->set_level(parsed);
  fileLogger()->set_level(parsed);
}

void addLogFile(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  logger()->sinks().push_back(sink);
  fileLogger()->sinks().push_back(sink);
}

bool logEnabled(LogLevel level) { return logger()->should_log(toSpdlog(level)); }

void logMessage(LogLevel level, const std::string& message) {
  logger()->log(toSpdlog(level), "{}", message);
}

}  // namespace latentcell::core

namespace latentcell::core {

void logFileMessage(LogLevel level, const std::string& message) {
  fileLogger()->log(toSpdlog(level), "{}", message);
  fileLogger()->flush();
}

}  // namespace latentcell::core
