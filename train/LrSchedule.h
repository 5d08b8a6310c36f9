// Learning-rate schedules as a pure function of the step, so that a resumed run recomputes the
// same rate without saved scheduler internals.
//   constant:       lr
//   cosine:         linear warmup to lr, then cosine to lr * min_ratio at total_steps
//   wsd:            warmup, stable at lr, then linear decay to lr * min_ratio over the last
//                   decay_fraction of total_steps (warmup-stable-decay)
#pragma once

#include <cstdint>
#include <string>

namespace latentcell::train {

struct LrSchedule {
  std::string kind = "constant";
  double lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_ratio = 0.0;
  double decay_fraction = 0.2;

  // Learning rate for optimizer step `step` (1-based).
  double at(int64_t step) const;
};

}  // namespace latentcell::train
