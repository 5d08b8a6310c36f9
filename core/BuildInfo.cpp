// Build and device information (see BuildInfo.h).
//
// Versions come from the linked libraries (CUDA hooks, NCCL), not from headers, so the report
// says what actually runs.
#include "core/BuildInfo.h"

#include "latentcell/GitInfo.h"
#include "latentcell/Version.h"

#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>
#include <torch/version.h>
#if defined(USE_C10D_NCCL)
#include <ATen/cuda/CUDAContext.h>
#include <torch/csrc/cuda/nccl.h>
#endif

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace latentcell::core {
namespace {

std::string dottedVersion(long v, long major_div, long minor_div) {
  if (v <= 0) return "";
  return fmt::format("{}.{}.{}", v / major_div, (v % major_div) / minor_div, v % minor_div);
}

}  // namespace

BuildInfo buildInfo() {
  BuildInfo info;
  info.latentcell_version = kVersion;
  info.git_commit = kGitCommit;
  info.git_dirty = kGitDirty;
  info.torch_version = TORCH_VERSION;
  const auto& hooks = at::detail::getCUDAHooks();
  info.cuda_build = hooks.hasCUDART();
  if (info.cuda_build) {
    const long rt = hooks.versionCUDART();  // e.g. 13000
    info.cuda_runtime = fmt::format("{}.{}", rt / 1000, (rt % 1000) / 10);
    info.cudnn_version = dottedVersion(hooks.versionCuDNN(), 10000, 100);
  }
#if defined(USE_C10D_NCCL)
  const auto nccl = torch::cuda::nccl::version();
  info.nccl_version = fmt::format("{}.{}.{}", nccl >> 32, (nccl >> 16) & 0xffff, nccl & 0xffff);
#endif
  const auto gpus = torch::cuda::device_count();
#if defined(USE_C10D_NCCL)
  for (size_t i = 0; i < gpus; ++i) {
    const auto* prop = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i));
    info.devices.push_back(fmt::format("cuda:{} {} ({:.1f} GiB, sm_{}{})", i, prop->name,
                                       prop->totalGlobalMem / 1073741824.0, prop->major, prop->minor));
  }
#else
  for (size_t i = 0; i < gpus; ++i) info.devices.push_back(fmt::format("cuda:{}", i));
#endif
  info.devices.push_back("cpu");
#if defined(USE_C10D_NCCL)
  info.distributed_backends.push_back(gpus > 0 ? "nccl" : "nccl (built; no GPU visible)");
#endif
#if defined(USE_C10D_GLOO)
  info.distributed_backends.push_back("gloo");
#endif
  info.intra_op_threads = at::get_num_threads();
  info.inter_op_threads = static_cast<int>(at::get_num_interop_threads());
#if defined(__clang__)
  info.compiler = fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  info.compiler = fmt::format("gcc {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#endif
  return info;
}

std::string formatBuildInfo(const BuildInfo& info) {
  auto orNone = [](const std::string& s) { return s.empty() ? std::string("not available") : s; };
  auto join = [](const std::vector<std::string>& v) {
    return v.empty() ? std::string("none") : fmt::format("{}", fmt::join(v, ", "));
  };
  std::string out;
  out += fmt::format("latentcell      {}\n", info.latentcell_version);
  out += fmt::format("git commit      {}{}\n", info.git_commit, info.git_dirty ? " (dirty)" : "");
  out += fmt::format("torch           {}\n", info.torch_version);
  out += fmt::format("CUDA build      {}\n", info.cuda_build ? "yes" : "no");
  out += fmt::format("CUDA runtime    {}\n", orNone(info.cuda_runtime));
  out += fmt::format("cuDNN           {}\n", orNone(info.cudnn_version));
  out += fmt::format("NCCL            {}\n", orNone(info.nccl_version));
  out += fmt::format("devices         {}\n", join(info.devices));
  out += fmt::format("distributed     {}\n", join(info.distributed_backends));
  out += fmt::format("threads         {} intra-op, {} inter-op\n", info.intra_op_threads,
                     info.inter_op_threads);
  out += fmt::format("compiler        {}\n", info.compiler);
  return out;
}

}  // namespace latentcell::core
