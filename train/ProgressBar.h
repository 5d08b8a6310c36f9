// A one-line progress bar for interactive terminals: steps, a bar, loss, steps/s, cells/s, ETA.
//
// Only drawn when stderr is a TTY (plain periodic log lines go to files and pipes instead), and
// redrawn at most ten times a second so that fast steps are not slowed by terminal output.
#pragma once

#include <chrono>
#include <cstdint>

namespace latentcell::train {

class ProgressBar {
 public:
  explicit ProgressBar(int64_t total_steps);
  static bool enabled();  // stderr is a terminal
  void update(int64_t step, double loss, double steps_per_s, double cells_per_s);
  // Erases the bar so that a log line can be printed cleanly; the next update redraws it.
  void clear();
  void finish();

 private:
  int64_t total_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace latentcell::train
