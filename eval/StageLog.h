// Wall time of an evaluator's stages, and the process's peak resident memory so far, at debug log
// level (`--log-level debug`), so that a slow or large run says where its time and memory went
// without a profiler. Cheap when debug logging is off: one clock read per stage.
#pragma once

#include "core/Logging.h"

#include <chrono>
#include <fstream>
#include <string>

namespace latentcell::eval {

class StageLog {
 public:
  explicit StageLog(std::string scope) : scope_(std::move(scope)) {}
  // Logs the seconds since the previous lap (or construction) under `stage`.
  void lap(const char* stage) {
    const auto now = std::chrono::steady_clock::now();
    if (core::logEnabled(core::LogLevel::Debug))
      core::logDebug("{}: {} {:.3f} s (RSS {} MiB, peak {} MiB)", scope_, stage,
                     std::chrono::duration<double>(now - last_).count(), statusMiB("VmRSS:"), statusMiB("VmHWM:"));
    last_ = now;
  }

 private:
  // A field of /proc/self/status in MiB (VmRSS: now, VmHWM: peak); -1 where there is none (not Linux).
  static long statusMiB(const std::string& field) {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind(field, 0) == 0) return std::stol(line.substr(field.size())) / 1024;
    return -1;
  }

  std::string scope_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace latentcell::eval
