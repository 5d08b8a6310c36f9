// The training engine (see Trainer.h).
//
// Exactness on resume is the design constraint: the learning rate is a function of the step, the
// data position and every RNG state are checkpointed, and the optimizer state is saved through
// LibTorch's own serializer, so a resumed run takes bit-identical steps.
#include "train/Trainer.h"

#include "core/Autocast.h"
#include "core/BuildInfo.h"
#include "core/Logging.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "train/Communicator.h"
#include "train/Ema.h"
#include "train/GradientReducer.h"
#include "train/LrSchedule.h"
#include "train/ProgressBar.h"
#include "train/TensorBoardWriter.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace latentcell::train {

void LossMeter::add(const std::vector<std::pair<std::string, at::Tensor>>& terms, double weight) {
  if (sums_.empty())
    for (const auto& [name, value] : terms) sums_.emplace_back(name, 0.0);
  for (size_t k = 0; k < terms.size() && k < sums_.size(); ++k) sums_[k].second += terms[k].second.item<double>() * weight;
  weight_ += weight;
}

LossTerms LossMeter::mean() const {
  LossTerms out;
  if (weight_ <= 0) return out;
  for (const auto& [name, sum] : sums_) out.terms.emplace_back(name, torch::tensor(sum / weight_));
  return out;
}


void OptimizerConfig::visit(core::ConfigVisitor& v) {
  v.choice("name", name, {"adamw", "adam", "sgd"}, "optimizer");
  v.field("lr", lr, "peak learning rate");
  v.field("beta1", beta1, "Adam beta1");
  v.field("beta2", beta2, "Adam beta2");
  v.field("eps", eps, "Adam epsilon");
  v.field("weight_decay", weight_decay, "weight decay (decoupled for adamw, L2 for adam and sgd)");
  v.field("momentum", momentum, "SGD momentum");
  v.field("decay_norms_biases_embeddings", decay_norms_biases_embeddings,
          "also apply weight decay to biases, norm weights, embeddings and pseudo-inputs");
}
void OptimizerConfig::validate() const {
  if (!(lr > 0)) reject("lr", "must be positive");
  if (weight_decay < 0) reject("weight_decay", "must be >= 0");
  if (!(beta1 >= 0 && beta1 < 1)) reject("beta1", "must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) reject("beta2", "must be in [0, 1)");
}

void ScheduleConfig::visit(core::ConfigVisitor& v) {
  v.choice("kind", kind, {"constant", "cosine", "wsd"}, "learning-rate schedule");
  v.field("warmup_steps", warmup_steps, "linear warmup steps");
  v.field("min_ratio", min_ratio, "final learning rate as a fraction of the peak (cosine, wsd)");
  v.field("decay_fraction", decay_fraction, "wsd: fraction of the steps spent decaying");
}
void ScheduleConfig::validate() const {
  if (warmup_steps < 0) reject("warmup_steps", "must be >= 0");
  if (!(min_ratio >= 0 && min_ratio <= 1)) reject("min_ratio", "must be in [0, 1]");
  if (!(decay_fraction >= 0 && decay_fraction <= 1)) reject("decay_fraction", "must be in [0, 1]");
}

void EmaConfig::visit(core::ConfigVisitor& v) {
  v.field("enabled", enabled, "keep an exponential moving average of the weights");
  v.field("decay", decay, "EMA decay per update");
  v.field("every", every, "optimizer steps between EMA updates");
  v.field("start", start, "until this step the EMA copies the weights");
}
void EmaConfig::validate() const {
  if (!(decay >= 0 && decay < 1)) reject("decay", "must be in [0, 1)");
  if (every <= 0) reject("every", "must be positive");
}

void DistributedConfig::visit(core::ConfigVisitor& v) {
  v.choice("backend", backend, {"auto", "gloo", "nccl"}, "collective backend when launched with several ranks");
  v.field("timeout_s", timeout_s, "seconds any collective may take before the job fails naming the lost rank");
  v.field("bucket_mb", bucket_mb, "MiB of gradients per all-reduce bucket");
  v.field("overlap", overlap, "all-reduce each full bucket while backward still runs");
}
void DistributedConfig::validate() const {
  if (!(timeout_s > 0)) reject("timeout_s", "must be positive");
  if (!(bucket_mb > 0)) reject("bucket_mb", "must be positive");
}

void TrainerConfig::visit(core::ConfigVisitor& v) {
  v.field("max_steps", max_steps, "optimizer steps to train for (also the schedule's length)");
  v.field("max_epochs", max_epochs,
          "stop once the data position reaches this epoch (0 = none); the model must count epochs");
  v.field("max_time_s", max_time_s,
          "wall-time limit in seconds (0 = none; with several ranks checked every log_every steps); a checkpoint is "
          "written on stopping");
  v.field("accumulate", accumulate, "micro-batches accumulated per optimizer step");
  v.field("grad_clip", grad_clip, "clip the global gradient norm to this (0 = off)");
  v.field("bf16", bf16, "bf16 autocast (CUDA, or CPUs with bf16 units)");
  v.field("log_every", log_every, "steps between log lines and metrics records");
  v.field("eval_every", eval_every, "steps between validations (0 = none)");
  v.field("eval_metric", eval_metric, "validation term ranking the best checkpoints (empty = the first term)");
  v.choice("eval_mode", eval_mode, {"min", "max"}, "whether a lower (min) or higher (max) eval_metric is better");
  v.field("keep_best", keep_best, "best checkpoints by eval_metric kept beside the last keep_last (0 = none)");
  v.field("checkpoint_every", checkpoint_every, "steps between checkpoints (0 = only at the end)");
  v.field("keep_last", keep_last, "checkpoints kept");
  v.field("max_nonfinite", max_nonfinite, "non-finite losses skipped before the run stops");
  v.section("optimizer", optimizer, "optimizer");
  v.section("schedule", schedule, "learning-rate schedule");
  v.section("ema", ema, "EMA of the weights");
  v.section("distributed", distributed, "data parallel (under --nproc-per-node, torchrun or srun)");
}
void TrainerConfig::validate() const {
  if (max_steps <= 0) reject("max_steps", "must be positive");
  if (max_epochs < 0) reject("max_epochs", "must be >= 0");
  if (max_time_s < 0) reject("max_time_s", "must be >= 0");
  if (accumulate <= 0) reject("accumulate", "must be positive");
  if (grad_clip < 0) reject("grad_clip", "must be >= 0");
  if (log_every <= 0) reject("log_every", "must be positive");
  if (eval_every < 0) reject("eval_every", "must be >= 0");
  if (checkpoint_every < 0) reject("checkpoint_every", "must be >= 0");
  if (keep_last <= 0) reject("keep_last", "must be positive");
  if (keep_best < 0) reject("keep_best", "must be >= 0");
  if (max_nonfinite < 0) reject("max_nonfinite", "must be >= 0");
}

namespace {

// Parameters that take no weight decay by default: biases and norm weights (fewer than two
// dimensions), embedding tables and MCAB pseudo-inputs (learned tokens).
std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> splitForDecay(torch::nn::Module& module,
                                                                         bool decay_all) {
  std::set<const void*> embeddings;
  for (const auto& item : module.named_modules()) {
    if (dynamic_cast<torch::nn::EmbeddingImpl*>(item.value().get()) != nullptr) {
      for (const auto& p : item.value()->parameters(false)) embeddings.insert(p.unsafeGetTensorImpl());
    }
  }
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& item : module.named_parameters()) {
    const auto& p = item.value();
    if (!p.requires_grad()) continue;
    const auto& name = item.key();
    const bool token = name.size() >= 13 && name.compare(name.size() - 13, 13, "pseudo_inputs") == 0;
    const bool exempt = p.dim() < 2 || embeddings.count(p.unsafeGetTensorImpl()) > 0 || token;
    (decay_all || !exempt ? decay : no_decay).push_back(p);
  }
  return {decay, no_decay};
}

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const OptimizerConfig& c, torch::nn::Module& module) {
  auto [decay, no_decay] = splitForDecay(module, c.decay_norms_biases_embeddings);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto add = [&](std::vector<at::Tensor> params, double wd, auto options) {
    if (params.empty()) return;
    options.weight_decay(wd);
    groups.emplace_back(std::move(params), std::make_unique<decltype(options)>(options));
  };
  if (c.name == "adamw") {
    auto o = torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps);
    add(decay, c.weight_decay, o);
    add(no_decay, 0.0, o);
    return std::make_unique<torch::optim::AdamW>(groups, o);
  }
  if (c.name == "adam") {
    auto o = torch::optim::AdamOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps);
    add(decay, c.weight_decay, o);
    add(no_decay, 0.0, o);
    return std::make_unique<torch::optim::Adam>(groups, o);
  }
  auto o = torch::optim::SGDOptions(c.lr).momentum(c.momentum);
  add(decay, c.weight_decay, o);
  add(no_decay, 0.0, o);
  return std::make_unique<torch::optim::SGD>(groups, o);
}

LrSchedule scheduleOf(const TrainerConfig& c) {
  LrSchedule s;
  s.kind = c.schedule.kind;
  s.lr = c.optimizer.lr;
  s.warmup_steps = c.schedule.warmup_steps;
  s.total_steps = c.max_steps;
  s.min_ratio = c.schedule.min_ratio;
  s.decay_fraction = c.schedule.decay_fraction;
  return s;
}

std::string formatDuration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02d}s", s / 60, s % 60);
}

// Enters (step, value) in the best-K ranking; returns whether it got in. Ties keep the earlier
// step ahead; a non-finite value never enters.
bool enterRanking(BestCheckpoints& best, int64_t keep, int64_t step, double value) {
  if (keep <= 0 || !std::isfinite(value)) return false;
  auto& ranked = best.ranked;
  const bool lower = best.mode == "min";
  const auto pos = std::find_if(ranked.begin(), ranked.end(), [&](const RankedCheckpoint& r) {
    return lower ? value < r.value : value > r.value;
  });
  if (pos - ranked.begin() >= keep) return false;
  ranked.insert(pos, {step, value});
  if (static_cast<int64_t>(ranked.size()) > keep) ranked.resize(static_cast<size_t>(keep));
  return true;
}

// Keeps only the metrics records of steps <= `step` (a resumed run rewrites the later ones).
void truncateMetrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::vector<std::string> kept;
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_discarded() && record.value("step", int64_t{0}) <= step) kept.push_back(line);
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (const auto& line : kept) out << line << '\n';
}

}  // namespace

Trainer::Trainer(const TrainerConfig& config, Trainable& model, const c10::Device& device,
                 std::string run_dir, std::string resolved_config_yaml, Communicator* comm)
    : config_(config),
      model_(model),
      device_(device),
      run_dir_(std::move(run_dir)),
      resolved_config_(std::move(resolved_config_yaml)),
      checkpoints_(run_dir_, config.keep_last) {
  if (config_.bf16 && device_.is_cpu() && !core::cpuHasBf16()) {
    throw std::invalid_argument(
        "trainer.bf16 = true, but this CPU has no bf16 arithmetic (no avx512_bf16, amx_bf16 or Arm bf16); set "
        "trainer.bf16=false or train on a CUDA device");
  }
  best_.metric = config_.eval_metric;
  best_.mode = config_.eval_mode;
  model_.module().to(device_);
  if (comm != nullptr && comm->worldSize() > 1) {
    writer_ = comm->rank() == 0;
    world_ = comm->worldSize();
    comm_ = comm;
    ReducerOptions reducer_options;
    reducer_options.bucket_bytes = std::llround(config_.distributed.bucket_mb * 1024 * 1024);
    reducer_options.overlap = config_.distributed.overlap;
    reducer_ = std::make_unique<GradientReducer>(model_.module(), *comm, reducer_options);
    reducer_->broadcastParameters();
    checkReplicasAgree(*comm, resolved_config_, model_.module());
  }
  optimizer_ = makeOptimizer(config_.optimizer, model_.module());
  for (auto& group : optimizer_->param_groups())
    for (auto& p : group.params()) params_.push_back(p);
  if (config_.ema.enabled) {
    ema_ = std::make_unique<Ema>(model_.module(), config_.ema.decay, config_.ema.every, config_.ema.start);
  }
  if (writer_) std::ofstream(fs::path(run_dir_) / "config.yaml") << resolved_config_;
}

Trainer::~Trainer() = default;

void Trainer::writeMetrics(const std::string& json_line) {
  if (!writer_) return;
  if (!metrics_.is_open()) metrics_.open(fs::path(run_dir_) / "metrics.jsonl", std::ios::app);
  metrics_ << json_line << '\n';
  metrics_.flush();
}

void Trainer::writeScalar(const std::string& tag, double value) {
  if (!writer_) return;
  if (!tensorboard_) tensorboard_ = std::make_unique<TensorBoardWriter>((fs::path(run_dir_) / "tensorboard").string());
  tensorboard_->addScalar(tag, value, step_);
}

double Trainer::trainStep() {
  const double lr = scheduleOf(config_).at(step_ + 1);
  for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
  optimizer_->zero_grad();
  double total = 0;
  bool finite = true;
  for (int64_t micro = 0; micro < config_.accumulate; ++micro) {
    LossTerms terms;
    {
      core::AutocastGuard autocast(device_.type(), config_.bf16);
      terms = model_.trainLoss();
    }
    const double value = terms.objective().item<double>();
    if (!std::isfinite(value)) {
      finite = false;
      // Data parallel: every rank must still join the gradient average; the NaN it contributes
      // makes the averaged norm non-finite on all ranks, so they all skip this step together.
      if (!reducer_) break;
    }
    if (reducer_ && micro == config_.accumulate - 1) reducer_->prepareForBackward();
    (terms.objective() / static_cast<double>(config_.accumulate)).backward();
    total += value;
  }
  if (reducer_) {
    reducer_->synchronize();
    finite = true;  // decided below from the averaged gradients, identically on every rank
  }
  if (finite) {
    const double max_norm = config_.grad_clip > 0 ? config_.grad_clip : std::numeric_limits<double>::infinity();
    const double norm = torch::nn::utils::clip_grad_norm_(params_, max_norm);
    finite = std::isfinite(norm);
  }
  if (!finite) {
    optimizer_->zero_grad();
    ++nonfinite_;
    if (nonfinite_ > config_.max_nonfinite) {
      throw std::runtime_error(fmt::format(
          "stopping at step {}: {} non-finite losses or gradients (limit trainer.max_nonfinite = {}); "
          "the last good checkpoint is {}; lower the learning rate or check the data",
          step_ + 1, nonfinite_, config_.max_nonfinite, last_checkpoint_.empty() ? "none" : last_checkpoint_));
    }
    core::logWarn("step {}: non-finite loss or gradient, step skipped ({} of at most {})", step_ + 1,
                  nonfinite_, config_.max_nonfinite);
    return std::numeric_limits<double>::quiet_NaN();
  }
  optimizer_->step();
  ++step_;
  if (ema_) ema_->update(step_);
  return total / static_cast<double>(config_.accumulate);
}

LossTerms Trainer::evalStep() {
  torch::NoGradGuard no_grad;
  model_.module().eval();
  LossTerms terms;
  {
    core::AutocastGuard autocast(device_.type(), config_.bf16);
    terms = model_.evalLoss();
  }
  model_.module().train();
  if (comm_ != nullptr && !terms.terms.empty()) {
    // Each rank validated its own share: every rank takes the mean over the ranks.
    std::vector<double> mine;
    for (const auto& [name, value] : terms.terms) mine.push_back(value.item<double>());
    const auto all = comm_->allgather(mine);  // [world * terms]
    for (size_t k = 0; k < mine.size(); ++k) {
      double sum = 0;
      for (int64_t r = 0; r < world_; ++r) sum += all[static_cast<size_t>(r) * mine.size() + k];
      terms.terms[k].second = at::scalar_tensor(sum / static_cast<double>(world_), at::kDouble);
    }
  }
  return terms;
}

bool Trainer::timeLimitReached(double elapsed_s) {
  if (config_.max_time_s <= 0) return false;
  if (comm_ == nullptr) return elapsed_s > config_.max_time_s;
  // Every rank must stop after the same step, so rank 0's clock decides, read at logging steps
  // (a store round trip, not one per step).
  if (step_ % config_.log_every != 0) return false;
  return comm_->allgather(std::vector<int64_t>{elapsed_s > config_.max_time_s ? 1 : 0}).front() != 0;
}

std::optional<int64_t> Trainer::epoch() const {
  const auto state = model_.dataState();
  const auto it = state.find(kEpochKey);
  if (it == state.end()) return std::nullopt;
  return it->second;
}

bool Trainer::validate(double elapsed_s) {
  const auto terms = evalStep();
  if (terms.terms.empty()) {
    if (!warned_no_validation_) {
      core::logWarn("trainer.eval_every = {}, but the model has no validation data; nothing is validated",
                    config_.eval_every);
    }
    warned_no_validation_ = true;
    return false;
  }
  const std::string metric = config_.eval_metric.empty() ? terms.terms.front().first : config_.eval_metric;
  nlohmann::json record{{"step", step_}, {"split", "val"}, {"time_s", elapsed_s}};
  std::optional<double> score;
  std::vector<std::string> names;
  for (const auto& [name, value] : terms.terms) {
    const double v = value.item<double>();
    record[name] = v;
    writeScalar("val/" + name, v);
    names.push_back(name);
    if (name == metric) score = v;
  }
  if (!score) {
    throw std::invalid_argument(fmt::format("trainer.eval_metric = '{}' is not a validation term of this model "
                                            "(it reports {}); set trainer.eval_metric to one of them",
                                            metric, fmt::join(names, ", ")));
  }
  best_.metric = metric;
  const bool entered = enterRanking(best_, config_.keep_best, step_, *score);
  record["best"] = entered;
  writeMetrics(record.dump());
  if (!best_.ranked.empty()) {
    core::logInfo("step {:>6}  validation {} {:.5f}{}  (best {:.5f} at step {})", step_, metric, *score,
                  entered ? " *" : "", best_.ranked.front().value, best_.ranked.front().step);
  } else {
    core::logInfo("step {:>6}  validation {} {:.5f}", step_, metric, *score);
  }
  return entered;
}

std::string Trainer::saveCheckpoint() {
  saved_step_ = step_;
  if (!writer_) return last_checkpoint_;
  last_checkpoint_ = checkpoints_.save(step_, [&](const std::string& dir) {
    const fs::path d(dir);
    core::saveSafetensors((d / "model.safetensors").string(), core::stateDict(model_.module()),
                          {{"step", std::to_string(step_)}});
    // Fault injection for the crash-safety test: die half-way through writing this checkpoint.
    if (const char* kill_at = std::getenv("LATENTCELL_TEST_KILL_IN_CHECKPOINT");
        kill_at != nullptr && std::to_string(step_) == kill_at) {
      std::raise(SIGKILL);
    }
    if (ema_) core::saveSafetensors((d / "ema.safetensors").string(), ema_->weights(), {{"step", std::to_string(step_)}});
    torch::save(*optimizer_, (d / "optimizer.pt").string());
    std::vector<std::pair<std::string, at::Tensor>> rng = {
        {"cpu", at::detail::getDefaultCPUGenerator().get_state()}};
    for (c10::DeviceIndex i = 0; i < static_cast<c10::DeviceIndex>(torch::cuda::device_count()); ++i) {
      rng.emplace_back(fmt::format("cuda:{}", i), at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, i)).get_state());
    }
    core::saveSafetensors((d / "rng.safetensors").string(), rng);
    YAML::Emitter state;
    state << YAML::BeginMap << YAML::Key << "step" << YAML::Value << step_ << YAML::Key << "nonfinite_skipped"
          << YAML::Value << nonfinite_ << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
    for (const auto& [k, v] : model_.dataState()) state << YAML::Key << k << YAML::Value << v;
    state << YAML::EndMap;
    // The ranking as of this step, so that a resumed run keeps ranking the same checkpoints.
    state.SetDoublePrecision(17);
    state << YAML::Key << "best" << YAML::Value << YAML::BeginMap << YAML::Key << "metric" << YAML::Value
          << best_.metric << YAML::Key << "mode" << YAML::Value << best_.mode << YAML::Key << "ranked" << YAML::Value
          << YAML::BeginSeq;
    for (const auto& r : best_.ranked) {
      state << YAML::Flow << YAML::BeginSeq << r.step << r.value << YAML::EndSeq;
    }
    state << YAML::EndSeq << YAML::EndMap << YAML::EndMap;
    std::ofstream(d / "state.yaml") << state.c_str() << '\n';
    std::ofstream(d / "config.yaml") << resolved_config_;
    const auto info = core::buildInfo();
    YAML::Emitter meta;
    meta << YAML::BeginMap << YAML::Key << "latentcell" << YAML::Value << info.latentcell_version << YAML::Key
         << "git_commit" << YAML::Value << info.git_commit << YAML::Key << "git_dirty" << YAML::Value
         << info.git_dirty << YAML::Key << "torch" << YAML::Value << info.torch_version << YAML::Key << "cuda"
         << YAML::Value << info.cuda_runtime << YAML::Key << "device" << YAML::Value << device_.str() << YAML::Key
         << "world_size" << YAML::Value << world_ << YAML::Key << "command_line" << YAML::Value << YAML::BeginSeq;
    for (const auto& arg : command_line_) meta << YAML::DoubleQuoted << arg;
    meta << YAML::EndSeq << YAML::EndMap;
    std::ofstream(d / "meta.yaml") << meta.c_str() << '\n';
  }, best_);
  return last_checkpoint_;
}

void Trainer::loadCheckpoint(const std::string& dir) {
  const fs::path d(dir);
  try {
    core::loadStateDict(model_.module(), core::loadSafetensors((d / "model.safetensors").string()).tensors, true,
                        (d / "model.safetensors").string());
    if (ema_) ema_->load(core::loadSafetensors((d / "ema.safetensors").string()).tensors);
    torch::load(*optimizer_, (d / "optimizer.pt").string());
    const auto rng = core::loadSafetensors((d / "rng.safetensors").string());
    auto cpu_gen = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(cpu_gen.mutex());
      cpu_gen.set_state(rng.at("cpu"));
    }
    for (c10::DeviceIndex i = 0; i < static_cast<c10::DeviceIndex>(torch::cuda::device_count()); ++i) {
      const auto key = fmt::format("cuda:{}", i);
      if (!rng.contains(key)) continue;
      auto gen = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, i));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng.at(key));
    }
    const auto state = YAML::LoadFile((d / "state.yaml").string());
    step_ = state["step"].as<int64_t>();
    nonfinite_ = state["nonfinite_skipped"].as<int64_t>();
    DataState data;
    for (const auto& kv : state["data"]) data[kv.first.as<std::string>()] = kv.second.as<int64_t>();
    model_.restoreDataState(data);
    if (const auto best = state["best"]) {
      BestCheckpoints saved;
      saved.metric = best["metric"].as<std::string>();
      saved.mode = best["mode"].as<std::string>();
      for (const auto& r : best["ranked"]) saved.ranked.push_back({r[0].as<int64_t>(), r[1].as<double>()});
      const bool same = saved.mode == config_.eval_mode &&
                        (config_.eval_metric.empty() || saved.metric.empty() || saved.metric == config_.eval_metric);
      if (same) {
        best_ = std::move(saved);
      } else if (!saved.ranked.empty()) {
        core::logWarn("the best checkpoints of {} were ranked by {} ({}); the config now ranks by {} ({}), so the "
                      "ranking starts afresh",
                      dir, saved.metric, saved.mode, config_.eval_metric, config_.eval_mode);
      }
    }
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("cannot load checkpoint {}: {}", dir, e.what_without_backtrace()));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(fmt::format("cannot load checkpoint {}: state.yaml: {}", dir, e.what()));
  }
  last_checkpoint_ = dir;
  saved_step_ = step_;
  if (writer_) truncateMetrics(fs::path(run_dir_) / "metrics.jsonl", step_);
}

bool Trainer::resume() {
  const auto latest = checkpoints_.latest();
  if (!latest) return false;
  loadCheckpoint(*latest);
  core::logInfo("resumed from {} at step {}", *latest, step_);
  return true;
}

TrainSummary Trainer::fit() {
  TrainSummary summary;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto window_start = start;
  double window_sum = 0;
  int64_t window_n = 0, window_steps = 0;
  bool first_window = true;
  const int64_t start_step = step_;
  if (config_.max_epochs > 0 && !epoch()) {
    throw std::invalid_argument(fmt::format(
        "trainer.max_epochs = {}, but this model's data has no epochs (its data position lacks '{}'); limit the "
        "run with trainer.max_steps or trainer.max_time_s",
        config_.max_epochs, kEpochKey));
  }
  const auto epochsDone = [&] { return config_.max_epochs > 0 && *epoch() >= config_.max_epochs; };
  // On a terminal a progress bar replaces the periodic log lines.
  std::optional<ProgressBar> bar;
  if (ProgressBar::enabled() && core::logEnabled(core::LogLevel::Info)) bar.emplace(config_.max_steps);
  model_.module().train();
  summary.stopped_by = epochsDone() ? "max_epochs" : "max_steps";  // a run resumed at its limit takes no step
  while (step_ < config_.max_steps && summary.stopped_by == "max_steps") {
    const double loss = trainStep();
    if (!std::isfinite(loss)) continue;
    window_sum += loss;
    ++window_n;
    ++window_steps;
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    // The limit this step reached, if any: its window is logged and the loop ends after it.
    std::string limit;
    if (step_ == config_.max_steps) {
      limit = "max_steps";
    } else if (epochsDone()) {
      limit = "max_epochs";
    } else if (timeLimitReached(elapsed)) {
      limit = "max_time_s";
    }
    if (bar) {
      const double rate = window_steps / std::max(std::chrono::duration<double>(clock::now() - window_start).count(), 1e-9);
      bar->update(step_, window_sum / window_n, rate, rate * model_.batchSize() * config_.accumulate * world_);
    }
    if (step_ % config_.log_every == 0 || !limit.empty()) {
      const double dt = std::chrono::duration<double>(clock::now() - window_start).count();
      const double mean = window_sum / window_n;
      const double steps_per_s = window_steps / std::max(dt, 1e-9);
      const double cells_per_s = steps_per_s * model_.batchSize() * config_.accumulate * world_;
      const double eta = (config_.max_steps - step_) / std::max(steps_per_s, 1e-9);
      const double lr = optimizer_->param_groups().front().options().get_lr();
      const auto line = fmt::format("step {:>6}/{}  loss {:.5f}  lr {:.2e}  {:.1f} steps/s  {:.0f} cells/s  ETA {}",
                                    step_, config_.max_steps, mean, lr, steps_per_s, cells_per_s, formatDuration(eta));
      if (bar) {
        core::logFileMessage(core::LogLevel::Info, line);
      } else {
        core::logInfo("{}", line);
      }
      nlohmann::json record{{"step", step_},         {"split", "train"},           {"loss", mean},
                            {"lr", lr},             {"steps_per_s", steps_per_s}, {"cells_per_s", cells_per_s},
                            {"time_s", elapsed}};
      if (const auto e = epoch()) record["epoch"] = *e;
      writeMetrics(record.dump());
      writeScalar("train/loss", mean);
      writeScalar("train/lr", lr);
      writeScalar("train/cells_per_s", cells_per_s);
      if (tensorboard_) tensorboard_->flush();
      if (first_window) summary.first_loss = mean;
      first_window = false;
      summary.last_loss = mean;
      window_sum = 0;
      window_n = window_steps = 0;
      window_start = clock::now();
    }
    bool checkpoint = config_.checkpoint_every > 0 && step_ % config_.checkpoint_every == 0;
    if (config_.eval_every > 0 && step_ % config_.eval_every == 0) {
      if (bar) bar->clear();
      checkpoint = validate(elapsed) || checkpoint;  // a new best-K entry needs its checkpoint
    }
    if (checkpoint) saveCheckpoint();
    if (!limit.empty()) summary.stopped_by = limit;
  }
  if (summary.stopped_by != "max_steps") {
    if (bar) bar->clear();
    if (summary.stopped_by == "max_epochs") {
      core::logInfo("epoch limit of {} reached at step {}", config_.max_epochs, step_);
    } else {
      core::logInfo("wall-time limit of {} s reached at step {}", config_.max_time_s, step_);
    }
  }
  if (bar) bar->finish();
  if (step_ > start_step && step_ != saved_step_) saveCheckpoint();
  summary.steps = step_;
  summary.nonfinite_skipped = nonfinite_;
  summary.last_checkpoint = last_checkpoint_;
  summary.best = best_;
  return summary;
}

}  // namespace latentcell::train
