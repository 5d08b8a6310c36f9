// Bucketed gradient all-reduce (see GradientReducer.h).
//
// Buckets are always launched in bucket order, on every rank, whether from a hook or from
// synchronize(): the collectives of all ranks then pair up even when a parameter is unused on
// some rank (its bucket simply waits for synchronize()). The flat buffers persist across steps.
#include "train/GradientReducer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <bit>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>

namespace latentcell::train {

namespace {

// Runs after a parameter's AccumulateGrad node has added this backward's gradient into .grad.
class PostAccumulateHook final : public torch::autograd::FunctionPostHook {
 public:
  explicit PostAccumulateHook(std::function<void()> fn) : fn_(std::move(fn)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    fn_();
    return outputs;
  }

 private:
  std::function<void()> fn_;
};

}  // namespace

struct GradientReducer::Hooks {
  // Holding the accumulators keeps them (and their hooks) alive for the module's lifetime.
  std::vector<std::pair<c10::intrusive_ptr<torch::autograd::Node>, uintptr_t>> installed;
  ~Hooks() {
    for (auto& [node, key] : installed) node->del_post_hook(key);
  }
};

GradientReducer::GradientReducer(torch::nn::Module& module, Communicator& comm, ReducerOptions options)
    : module_(module), comm_(comm), options_(options) {
  if (options_.bucket_bytes <= 0) throw std::runtime_error("GradientReducer: bucket_bytes must be positive");
  if (comm_.worldSize() == 1) return;
  for (const auto& p : module_.parameters()) {
    if (p.requires_grad()) params_.push_back(p);
  }
  bucket_of_.resize(params_.size());
  std::map<std::string, size_t> open;  // one open bucket per dtype and device
  for (size_t i = params_.size(); i-- > 0;) {
    const auto& p = params_[i];
    const std::string kind = fmt::format("{}/{}", c10::toString(p.scalar_type()), p.device().str());
    auto it = open.find(kind);
    if (it == open.end() ||
        (buckets_[it->second].numel + p.numel()) * static_cast<int64_t>(p.element_size()) > options_.bucket_bytes) {
      buckets_.emplace_back();
      it = open.insert_or_assign(kind, buckets_.size() - 1).first;
    }
    Bucket& bucket = buckets_[it->second];
    bucket.params.push_back(i);
    bucket.offsets.push_back(bucket.numel);
    bucket.numel += p.numel();
    bucket_of_[i] = it->second;
  }
  // A CPU-only backend (gloo) reduces CUDA gradients through host buffers.
  const bool stage_on_cpu = comm_.deviceType() == c10::kCPU;
  for (auto& bucket : buckets_) {
    const auto& first = params_[bucket.params.front()];
    const auto device = stage_on_cpu ? c10::Device(c10::kCPU) : first.device();
    bucket.flat = at::zeros({bucket.numel + static_cast<int64_t>(bucket.params.size())},
                            at::TensorOptions().dtype(first.scalar_type()).device(device));  // [numel + params]
  }
  resetStep();
  if (options_.overlap && comm_.asyncCollectives()) {
    hooks_ = std::make_unique<Hooks>();
    for (size_t i = 0; i < params_.size(); ++i) {
      auto accumulator = torch::autograd::impl::grad_accumulator(params_[i]);
      const auto key = accumulator->add_post_hook(std::make_unique<PostAccumulateHook>([this, i] { onGradient(i); }));
      hooks_->installed.emplace_back(std::move(accumulator), key);
    }
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::broadcastParameters() {
  at::NoGradGuard no_grad;
  auto tensors = module_.parameters();
  for (const auto& b : module_.buffers()) tensors.push_back(b);
  for (auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    if (comm_.deviceType() == c10::kCPU && !t.device().is_cpu()) {
      auto host = t.to(c10::kCPU);
      comm_.broadcast(host, 0);
      t.copy_(host);
    } else {
      comm_.broadcast(t, 0);
    }
  }
}

void GradientReducer::prepareForBackward() {
  if (!hooks_) return;
  std::lock_guard<std::mutex> lock(mu_);
  resetStep();
  armed_ = true;
}

void GradientReducer::onGradient(size_t param) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;
  Bucket& bucket = buckets_[bucket_of_[param]];
  if (bucket.launched || arrived_[param]) {
    // A second backward after prepareForBackward(): its gradient would miss the reduction.
    late_gradient_ = fmt::format("parameter {} received a gradient after its bucket was reduced", param);
    return;
  }
  arrived_[param] = 1;
  --bucket.pending;
  launchReadyInOrder();
}

void GradientReducer::launchReadyInOrder() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    launch(buckets_[next_launch_++], /*async=*/true);
  }
}

void GradientReducer::launch(Bucket& bucket, bool async) {
  at::NoGradGuard no_grad;
  auto flags = at::empty({static_cast<int64_t>(bucket.params.size())}, at::TensorOptions().dtype(at::kFloat));  // [params]
  auto* flag = flags.data_ptr<float>();
  for (size_t k = 0; k < bucket.params.size(); ++k) {
    const auto& p = params_[bucket.params[k]];
    auto slice = bucket.flat.narrow(0, bucket.offsets[k], p.numel());  // [numel(p)]
    const auto& grad = p.grad();
    if (grad.defined()) {
      slice.copy_(grad.reshape({-1}));
      flag[k] = 1;
    } else {
      slice.zero_();
      flag[k] = 0;
    }
  }
  bucket.flat.narrow(0, bucket.numel, flags.numel()).copy_(flags);
  if (async) {
    bucket.work = comm_.allreduceSumAsync(bucket.flat);
  } else {
    comm_.allreduceSum(bucket.flat);
  }
  bucket.launched = true;
}

void GradientReducer::synchronize() {
  if (comm_.worldSize() == 1) return;
  std::lock_guard<std::mutex> lock(mu_);
  at::NoGradGuard no_grad;
  // Every bucket past next_launch_ is still unlaunched: hooks launch strictly in order. Without
  // hooks nothing is left to overlap, so the reductions block (no handoff to a backend thread).
  for (; next_launch_ < buckets_.size(); ++next_launch_) launch(buckets_[next_launch_], hooks_ != nullptr);
  for (auto& bucket : buckets_) {
    if (!bucket.work) continue;
    bucket.work->wait();
    bucket.work.reset();
  }
  const double world = comm_.worldSize();
  for (auto& bucket : buckets_) {
    bucket.flat.narrow(0, 0, bucket.numel).div_(world);
    at::Tensor used;  // [params] on the host, read only when some gradient is missing here
    for (size_t k = 0; k < bucket.params.size(); ++k) {
      auto& p = params_[bucket.params[k]];
      auto reduced = bucket.flat.narrow(0, bucket.offsets[k], p.numel()).view(p.sizes());  // like p
      if (p.grad().defined()) {
        p.mutable_grad().copy_(reduced);
        continue;
      }
      if (!used.defined()) used = bucket.flat.narrow(0, bucket.numel, bucket.params.size()).to(c10::kCPU, at::kFloat);
      if (used.data_ptr<float>()[k] > 0) {
        p.mutable_grad() = reduced.device() == p.device() ? reduced.clone() : reduced.to(p.device());
      }
    }
  }
  const std::string late = std::move(late_gradient_);
  resetStep();
  if (!late.empty()) {
    throw std::runtime_error(late + "; call prepareForBackward() only before the last backward of a step");
  }
}

void GradientReducer::resetStep() {
  armed_ = false;
  next_launch_ = 0;
  late_gradient_.clear();
  arrived_.assign(params_.size(), 0);
  for (auto& bucket : buckets_) {
    bucket.pending = bucket.params.size();
    bucket.launched = false;
  }
}

namespace {

// FNV-1a over 64-bit words (then the tail bytes): exact and fast enough for a one-off check.
uint64_t hashBytes(const void* data, size_t size, uint64_t h = 1469598103934665603ull) {
  constexpr uint64_t kPrime = 1099511628211ull;
  const auto* bytes = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = (h ^ word) * kPrime;
  }
  for (; i < size; ++i) h = (h ^ bytes[i]) * kPrime;
  return h;
}

}  // namespace

void checkReplicasAgree(Communicator& comm, const std::string& resolved_config, torch::nn::Module& module) {
  uint64_t structure = hashBytes(nullptr, 0);
  uint64_t values = structure;
  const auto add = [&](const std::string& name, const at::Tensor& t) {
    const std::string shape = fmt::format("{}:{}:{}", name, c10::toString(t.scalar_type()), t.sizes());
    structure = hashBytes(shape.data(), shape.size(), structure);
    const auto host = t.detach().to(c10::kCPU).contiguous();
    values = hashBytes(host.data_ptr(), host.nbytes(), values);
  };
  for (const auto& item : module.named_parameters()) add(item.key(), item.value());
  for (const auto& item : module.named_buffers()) add(item.key(), item.value());
  const uint64_t config = hashBytes(resolved_config.data(), resolved_config.size());
  const std::vector<int64_t> mine = {std::bit_cast<int64_t>(config), std::bit_cast<int64_t>(structure),
                                     std::bit_cast<int64_t>(values)};
  const auto all = comm.allgather(mine);  // [world * 3]
  const char* const what[] = {"the resolved config (start every rank with the same config and overrides)",
                              "the model structure (parameter names, dtypes or shapes)",
                              "the initial parameters or buffers (broadcastParameters() must run first)"};
  std::vector<std::string> problems;
  for (size_t field = 0; field < 3; ++field) {
    std::vector<int> differ;
    for (int r = 1; r < comm.worldSize(); ++r) {
      if (all[3 * r + field] != all[field]) differ.push_back(r);
    }
    if (!differ.empty()) {
      problems.push_back(
          fmt::format("rank{} {} differ{} in {}", differ.size() > 1 ? "s" : "", fmt::join(differ, ", "),
                      differ.size() > 1 ? "" : "s", what[field]));
    }
  }
  if (!problems.empty()) {
    throw std::runtime_error(fmt::format("replicas disagree with rank 0: {}", fmt::join(problems, "; ")));
  }
}

}  // namespace latentcell::train
