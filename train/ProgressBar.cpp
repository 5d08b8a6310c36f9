// Terminal progress bar (see ProgressBar.h).
#include "train/ProgressBar.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace latentcell::train {

ProgressBar::ProgressBar(int64_t total_steps) : total_(std::max<int64_t>(total_steps, 1)) {}

bool ProgressBar::enabled() { return isatty(STDERR_FILENO) == 1; }

void ProgressBar::update(int64_t step, double loss, double steps_per_s, double cells_per_s) {
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && step < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  constexpr int kWidth = 30;
  const double frac = std::clamp(static_cast<double>(step) / total_, 0.0, 1.0);
  const int filled = static_cast<int>(frac * kWidth);
  const auto eta = static_cast<int64_t>((total_ - step) / std::max(steps_per_s, 1e-9));
  const std::string bar = std::string(filled, '=') + (filled < kWidth ? ">" : "") +
                          std::string(std::max(0, kWidth - filled - 1), ' ');
  std::fprintf(stderr, "\r\033[K%s", fmt::format("{:>7}/{} [{}] {:3.0f}%  loss {:.5f}  {:.1f} steps/s  {:.0f} cells/s  ETA {}m{:02d}s",
                                               step, total_, bar, 100 * frac, loss, steps_per_s, cells_per_s,
                                               eta / 60, eta % 60).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

void ProgressBar::finish() {
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace latentcell::train
