// What this build of latentcell sees: versions of itself (with the git commit it was built from)
// and of its GPU stack, devices, distributed backends and thread counts. Printed by
// `latentcell info` and recorded in run metadata.
#pragma once

#include <string>
#include <vector>

namespace latentcell::core {

struct BuildInfo {
  std::string latentcell_version;
  std::string git_commit;          // commit of the sources built; "unknown" outside a git checkout
  bool git_dirty = false;          // tracked files differed from that commit at build time
  std::string torch_version;
  bool cuda_build = false;         // the linked LibTorch has CUDA support
  std::string cuda_runtime;        // CUDA runtime version LibTorch was built with, e.g. "13.0"
  std::string cudnn_version;       // "" when not available
  std::string nccl_version;        // "" when not available
  std::vector<std::string> devices;
  std::vector<std::string> distributed_backends;
  int intra_op_threads = 0;
  int inter_op_threads = 0;
  std::string compiler;
};

BuildInfo buildInfo();
std::string formatBuildInfo(const BuildInfo& info);

}  // namespace latentcell::core
