// Training-process setup shared by the tasks (see TrainingProcess.h).
#include "train/TrainingProcess.h"

#include "core/Device.h"
#include "core/Logging.h"
#include "core/Random.h"
#include "train/Checkpoint.h"
#include "train/Trainer.h"

#include <torch/csrc/distributed/c10d/Store.hpp>  // complete type for makeCommunicator's store

#include <chrono>
#include <stdexcept>

namespace latentcell::train {

TrainingProcess startTrainingProcess(const std::string& device, const DistributedConfig& distributed, int64_t seed,
                                     const std::string& run_dir, bool resume) {
  TrainingProcess p;
  p.env = readDistributedEnv();
  p.device = core::resolveDevice(device);
  if (p.device.is_cuda() && p.env.world_size > 1) {
    p.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(p.env.local_rank));
  }
  if (p.env.world_size > 1) {
    if (p.env.rank != 0) core::setupLogging("warn");  // rank 0 reports; the others only warn and fail
    CommunicatorOptions options;
    options.backend = distributed.backend == "auto" && !p.device.is_cuda() ? "gloo" : distributed.backend;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(distributed.timeout_s * 1000));
    p.comm = makeCommunicator(p.env, options);
  }
  core::seedEverything(static_cast<uint64_t>(seed));
  if (!resume && CheckpointManager(run_dir, 1).latest()) {
    throw std::invalid_argument("run directory " + run_dir + " already holds checkpoints; continue it with --resume " +
                                run_dir + " or set run_dir to a new directory");
  }
  return p;
}

}  // namespace latentcell::train
