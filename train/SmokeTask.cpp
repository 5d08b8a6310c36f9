// The smoke task (see SmokeTask.h).
#include "train/SmokeTask.h"

#include "core/Device.h"
#include "core/Logging.h"
#include "core/Mcab.h"
#include "core/Random.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "core/TransformerBlock.h"

#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace latentcell::train {
namespace {

class SetModelImpl : public torch::nn::Module {
 public:
  SetModelImpl(const SmokeModelConfig& m, int64_t features) {
    embed = register_module("embed", torch::nn::Linear(features, m.dim));
    pool = register_module("pool", core::Mcab(core::McabOptions{m.dim, m.dim, m.heads, m.latent_tokens}));
    block = register_module("block", core::TransformerBlock(core::TransformerBlockOptions{m.dim, m.heads}));
    readout = register_module("readout", torch::nn::Linear(m.dim, 2));
  }
  // x [batch, n, features], pad [batch, n] -> [batch, 2]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pad) {
    auto z = pool(embed(x), pad);          // [batch, latent_tokens, dim]
    z = block(z);                          // [batch, latent_tokens, dim]
    return readout(z.mean(1));             // [batch, 2]
  }
  torch::nn::Linear embed{nullptr}, readout{nullptr};
  core::Mcab pool{nullptr};
  core::TransformerBlock block{nullptr};
};
TORCH_MODULE(SetModel);

struct Batch {
  torch::Tensor x, pad, target;
};

Batch randomBatch(const SmokeConfig& c, at::Generator& gen, const c10::Device& device) {
  const int64_t b = c.optim.batch_size, n = c.data.set_size, f = c.data.features;
  auto x = torch::randn({b, n, f}, gen);                                          // [b, n, f]
  auto lengths = torch::randint(1, n + 1, {b}, gen);                              // [b]
  auto pad = torch::arange(n).unsqueeze(0).ge(lengths.unsqueeze(1));             // [b, n]
  auto valid = pad.logical_not().to(torch::kFloat);
  auto mean0 = (x.select(2, 0) * valid).sum(1) / valid.sum(1);                    // [b]
  auto max1 = std::get<0>(x.select(2, 1).masked_fill(pad, -1e9).max(1));          // [b]
  auto target = torch::stack({mean0, max1}, 1);                                   // [b, 2]
  return {x.to(device), pad.to(device), target.to(device)};
}

}  // namespace

void SmokeModelConfig::visit(core::ConfigVisitor& v) {
  v.field("dim", dim, "model width");
  v.field("heads", heads, "attention heads");
  v.field("latent_tokens", latent_tokens, "MCAB pseudo-inputs (latent tokens)");
}
void SmokeModelConfig::validate() const {
  if (dim <= 0) reject("dim", "must be positive");
  if (heads <= 0) reject("heads", "must be positive");
  if (latent_tokens <= 0) reject("latent_tokens", "must be positive");
  if (dim % heads != 0) reject("dim", fmt::format("must be a multiple of heads ({})", heads));
}

void SmokeDataConfig::visit(core::ConfigVisitor& v) {
  v.field("set_size", set_size, "maximum set size (padded length)");
  v.field("features", features, "features per set element (at least 2)");
}
void SmokeDataConfig::validate() const {
  if (set_size <= 0) reject("set_size", "must be positive");
  if (features < 2) reject("features", "must be at least 2 (the targets read features 0 and 1)");
}

void SmokeOptimConfig::visit(core::ConfigVisitor& v) {
  v.field("lr", lr, "AdamW learning rate");
  v.field("steps", steps, "optimizer steps");
  v.field("batch_size", batch_size, "sets per step");
  v.field("log_every", log_every, "steps between loss lines");
}
void SmokeOptimConfig::validate() const {
  if (!(lr > 0)) reject("lr", "must be positive");
  if (steps <= 0) reject("steps", "must be positive");
  if (batch_size <= 0) reject("batch_size", "must be positive");
  if (log_every <= 0) reject("log_every", "must be positive");
}

void SmokeConfig::visit(core::ConfigVisitor& v) {
  v.choice("task", task, {"smoke"}, "what to train");
  v.field("seed", seed, "random seed (weights and data)");
  v.field("device", device, "auto, cpu, cuda or cuda:N");
  v.field("out_dir", out_dir, "if set, the resolved config and final weights are written here");
  v.section("model", model, "the set model");
  v.section("data", data, "random sets");
  v.section("optim", optim, "optimisation");
}

SmokeResult runSmokeTask(const SmokeConfig& c) {
  const auto device = core::resolveDevice(c.device);
  core::seedEverything(static_cast<uint64_t>(c.seed));
  auto gen = core::makeGenerator(static_cast<uint64_t>(c.seed) + 1);
  SetModel model(c.model, c.data.features);
  model->to(device);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(c.optim.lr).weight_decay(0.0));
  core::logInfo("smoke task on {}: {} parameters, {} steps of {} random sets", device.str(),
               [&] { int64_t n = 0; for (auto& p : model->parameters()) n += p.numel(); return n; }(),
               c.optim.steps, c.optim.batch_size);

  SmokeResult result;
  double window = 0;
  int64_t in_window = 0;
  for (int64_t step = 1; step <= c.optim.steps; ++step) {
    auto batch = randomBatch(c, gen, device);
    auto loss = torch::mse_loss(model(batch.x, batch.pad), batch.target);
    opt.zero_grad();
    loss.backward();
    opt.step();
    window += loss.item<double>();
    ++in_window;
    if (step % c.optim.log_every == 0 || step == c.optim.steps) {
      result.losses.push_back(window / in_window);
      core::logInfo("step {:>5}/{}  loss {:.5f}", step, c.optim.steps, result.losses.back());
      window = 0;
      in_window = 0;
    }
  }

  if (!c.out_dir.empty()) {
    std::filesystem::create_directories(c.out_dir);
    std::ofstream(std::filesystem::path(c.out_dir) / "config.yaml") << core::dumpConfig(c);
    model->to(torch::kCPU);
    core::saveSafetensors((std::filesystem::path(c.out_dir) / "model.safetensors").string(),
                          core::stateDict(*model), {{"task", "smoke"}});
    core::logInfo("wrote {}/config.yaml and model.safetensors", c.out_dir);
  }
  return result;
}

}  // namespace latentcell::train
