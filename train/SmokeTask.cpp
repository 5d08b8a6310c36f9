// The smoke task (see SmokeTask.h).
#include "train/SmokeTask.h"

#include "core/Device.h"
#include "core/Logging.h"
#include "core/Mcab.h"
#include "core/Random.h"
#include "core/TransformerBlock.h"
#include "train/TrainingProcess.h"

#include <torch/nn/modules/linear.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <memory>

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
    auto z = pool(embed(x), pad);  // [batch, latent_tokens, dim]
    z = block(z);                  // [batch, latent_tokens, dim]
    return readout(z.mean(1));     // [batch, 2]
  }
  torch::nn::Linear embed{nullptr}, readout{nullptr};
  core::Mcab pool{nullptr};
  core::TransformerBlock block{nullptr};
};
TORCH_MODULE(SetModel);

class SmokeTrainable : public Trainable {
 public:
  // Rank r of `world` trains on global batches b * world + r.
  SmokeTrainable(const SmokeConfig& c, const c10::Device& device, int64_t rank, int64_t world)
      : config_(c), device_(device), model_(c.model, c.data.features), rank_(rank), world_(world) {}

  torch::nn::Module& module() override { return *model_; }
  int64_t batchSize() const override { return config_.data.batch_size; }
  DataState dataState() const override {
    const int64_t per_epoch = config_.data.epoch_batches;
    if (per_epoch == 0) return {{"batch", next_batch_}};
    return {{"batch", next_batch_}, {kEpochKey, next_batch_ / per_epoch}};
  }
  void restoreDataState(const DataState& state) override { next_batch_ = state.at("batch"); }

  LossTerms trainLoss() override {
    const int64_t per_epoch = config_.data.epoch_batches;
    const int64_t i = per_epoch > 0 ? next_batch_ % per_epoch : next_batch_;
    ++next_batch_;
    return lossOn(i * world_ + rank_);
  }
  // Validation uses one fixed batch whose index no training step reaches.
  LossTerms evalLoss() override { return lossOn(-1); }

 private:
  LossTerms lossOn(int64_t batch_index) {
    const int64_t b = config_.data.batch_size, n = config_.data.set_size, f = config_.data.features;
    auto gen = core::makeGenerator(static_cast<uint64_t>(config_.seed) * 1000003ULL +
                                   static_cast<uint64_t>(batch_index));
    auto x = torch::randn({b, n, f}, gen);                                     // [b, n, f]
    auto lengths = torch::randint(1, n + 1, {b}, gen);                         // [b]
    auto pad = torch::arange(n).unsqueeze(0).ge(lengths.unsqueeze(1));        // [b, n]
    auto valid = pad.logical_not().to(torch::kFloat);
    auto mean0 = (x.select(2, 0) * valid).sum(1) / valid.sum(1);               // [b]
    auto max1 = std::get<0>(x.select(2, 1).masked_fill(pad, -1e9).max(1));     // [b]
    auto target = torch::stack({mean0, max1}, 1).to(device_);                  // [b, 2]
    auto pred = model_(x.to(device_), pad.to(device_));
    return {{{"loss", torch::mse_loss(pred.to(torch::kFloat), target)}}};
  }

  const SmokeConfig& config_;
  c10::Device device_;
  SetModel model_;
  int64_t rank_, world_;
  int64_t next_batch_ = 0;
};

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
  v.field("batch_size", batch_size, "sets per batch");
  v.field("epoch_batches", epoch_batches,
          "batches per rank and epoch, repeated every epoch (0 = endless fresh batches, no epochs)");
}
void SmokeDataConfig::validate() const {
  if (set_size <= 0) reject("set_size", "must be positive");
  if (features < 2) reject("features", "must be at least 2 (the targets read features 0 and 1)");
  if (batch_size <= 0) reject("batch_size", "must be positive");
  if (epoch_batches < 0) reject("epoch_batches", "must be >= 0");
}

void SmokeConfig::visit(core::ConfigVisitor& v) {
  v.choice("task", task, {"smoke"}, "what to train");
  v.field("seed", seed, "random seed (weights and data)");
  v.field("device", device, "auto, cpu, cuda or cuda:N");
  v.field("run_dir", run_dir, "run directory: resolved config, checkpoints, metrics");
  v.section("model", model, "the set model");
  v.section("data", data, "random sets");
  v.section("trainer", trainer, "training engine");
}

TrainSummary runSmokeTask(const SmokeConfig& c, bool resume, const std::vector<std::string>& command_line) {
  auto process = startTrainingProcess(c.device, c.trainer.distributed, c.seed, c.run_dir, resume);
  const auto& env = process.env;
  const auto device = process.device;
  auto& comm = process.comm;
  SmokeTrainable trainable(c, device, env.rank, env.world_size);
  Trainer trainer(c.trainer, trainable, device, c.run_dir, core::dumpConfig(c), comm.get());
  trainer.setCommandLine(command_line);
  if (env.rank == 0) core::addLogFile((std::filesystem::path(c.run_dir) / "log.txt").string());
  if (resume && !trainer.resume()) {
    throw std::invalid_argument("cannot resume: " + c.run_dir + " has no checkpoint; drop --resume to start a new run");
  }
  int64_t params = 0;
  for (const auto& p : trainable.module().parameters()) params += p.numel();
  core::logInfo("smoke task on {} (rank {} of {}): {} parameters, steps {} -> {}, run directory {}", device.str(),
                env.rank, env.world_size, params, trainer.step(), c.trainer.max_steps, c.run_dir);
  auto summary = trainer.fit();
  if (comm) comm->barrier();  // rank 0 keeps the store up until every rank is done
  return summary;
}

}  // namespace latentcell::train
