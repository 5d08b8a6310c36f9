// What every training task does before it builds its model: find its place in the job (torchrun,
// SLURM or one process), pick its device (a rank's local GPU under data parallel), join the
// process group, seed every generator, and refuse to start a new run over a directory that already
// holds checkpoints (a training run never overwrites its last good checkpoint by accident).
#pragma once

#include "train/Communicator.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace latentcell::train {

struct DistributedConfig;

struct TrainingProcess {
  DistributedEnv env;
  c10::Device device{c10::kCPU};
  std::unique_ptr<Communicator> comm;  // data parallel only (world size > 1)
};

// With several ranks, ranks other than 0 log warnings only, and backend "auto" means NCCL only when
// this run trains on CUDA (a CPU run on a GPU machine uses Gloo).
TrainingProcess startTrainingProcess(const std::string& device, const DistributedConfig& distributed, int64_t seed,
                                     const std::string& run_dir, bool resume);

}  // namespace latentcell::train
