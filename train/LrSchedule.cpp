// Learning-rate schedules (see LrSchedule.h).
#include "train/LrSchedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace latentcell::train {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) {
    return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  const double floor = lr * min_ratio;
  if (kind == "constant") return lr;
  if (kind == "cosine") {
    const double span = std::max<int64_t>(1, total_steps - warmup_steps);
    const double progress = std::clamp((step - warmup_steps) / span, 0.0, 1.0);
    return floor + (lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  if (kind == "wsd") {
    const auto decay_steps = static_cast<int64_t>(std::llround(decay_fraction * total_steps));
    const int64_t decay_start = total_steps - decay_steps;
    if (step <= decay_start || decay_steps <= 0) return lr;
    const double progress = std::clamp(static_cast<double>(step - decay_start) / decay_steps, 0.0, 1.0);
    return lr + (floor - lr) * progress;
  }
  throw std::invalid_argument("unknown lr schedule '" + kind + "' (use constant, cosine or wsd)");
}

}  // namespace latentcell::train
