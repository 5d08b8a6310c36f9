// Stage-2 prior training and loading (see Stage2Task.h).
#include "train/Stage2Task.h"

#include "core/Crc32c.h"
#include "core/Device.h"
#include "core/Logging.h"
#include "core/Random.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "data/DistributedSampler.h"
#include "priors/PriorFactory.h"
#include "train/Checkpoint.h"
#include "train/Export.h"
#include "train/TrainingProcess.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace latentcell::train {

void Stage2DataConfig::visit(core::ConfigVisitor& v) {
  v.field("path", path, "h5ad file with the cells and their obs (conditions); empty = the autoencoder's data.path");
  v.field("latents", latents,
          "latents.safetensors written by `latentcell encode` from the same file; empty = encode with the frozen "
          "autoencoder at the start");
  v.field("conditions", conditions, "obs columns the prior is conditioned on, e.g. [perturbation, bio_rep]");
  v.field("perturbation_column", perturbation_column, "the condition column that holds the control label");
  v.field("control", control, "control label of perturbation_column (id 0)");
  v.field("exclude_column", exclude_column, "obs column whose values in exclude_values drop a cell");
  v.field("exclude_values", exclude_values, "values of exclude_column whose cells are dropped (e.g. [unassigned])");
  v.field("holdout", holdout,
          "held-out rules, each 'col=v1,v2; col2=v3': matching cells form the test split and are never trained on");
  v.field("val_fraction", val_fraction, "random fraction of the other cells kept for validation");
  v.field("split_seed", split_seed, "seed of the random validation cells");
  v.field("batch_size", batch_size, "cells per batch (transport prior: sets per batch)");
  v.field("set_size", set_size, "transport prior: cells per set (control and perturbed)");
  v.field("eval_batches", eval_batches, "validation batches scored at each evaluation");
}

void Stage2DataConfig::validate() const {
  if (conditions.empty()) reject("conditions", "must name at least one obs column, e.g. [perturbation]");
  if (std::find(conditions.begin(), conditions.end(), perturbation_column) == conditions.end()) {
    reject("perturbation_column", "'" + perturbation_column + "' must be one of data.conditions");
  }
  if (control.empty()) reject("control", "is required: the control label of " + perturbation_column);
  if (val_fraction < 0 || val_fraction >= 1) reject("val_fraction", "must be in [0, 1)");
  if (batch_size <= 0) reject("batch_size", "must be positive");
  if (set_size <= 0) reject("set_size", "must be positive");
  if (eval_batches <= 0) reject("eval_batches", "must be positive");
  if (!exclude_values.empty() && exclude_column.empty()) reject("exclude_column", "is required with exclude_values");
  try {
    data::parseHoldOutRules(holdout);
  } catch (const std::invalid_argument& e) {
    reject("holdout", e.what());
  }
}

void FinetuneConfig::visit(core::ConfigVisitor& v) {
  v.field("init_from", init_from, "a stage-2 run directory whose latest weights initialise this prior; empty = none");
  v.field("freeze_backbone", freeze_backbone, "train only the conditioning (and the seed/set modules), not the DiT");
}

void Stage2Config::visit(core::ConfigVisitor& v) {
  v.choice("task", task, {"stage2"}, "what to train");
  v.field("seed", seed, "random seed (weights, batches, noise)");
  v.field("device", device, "auto, cpu, cuda or cuda:N");
  v.field("run_dir", run_dir, "run directory: resolved config, vocabularies, split, checkpoints, metrics");
  v.field("autoencoder", autoencoder, "the stage-1 run directory whose frozen latents the prior models");
  v.section("data", data, "cells, conditions and split");
  v.section("prior", prior, "the prior family and its backbone");
  v.section("finetune", finetune, "initialising from another prior");
  v.section("trainer", trainer, "training engine");
}

void Stage2Config::validate() const {
  if (autoencoder.empty()) reject("autoencoder", "is required: the stage-1 run directory (latentcell train ... task: stage1)");
}

// ---------------------------------------------------------------------------------------------
// Library sizes

namespace {

std::string joinIds(const std::vector<int64_t>& ids, int64_t skip) {
  std::string key;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (static_cast<int64_t>(k) == skip) continue;
    if (!key.empty()) key += ',';
    key += std::to_string(ids[k]);
  }
  return key;
}

LibrarySizeModel::Fit fitLogNormal(const std::vector<double>& logs) {
  LibrarySizeModel::Fit f;
  f.cells = static_cast<int64_t>(logs.size());
  if (logs.empty()) return f;
  double sum = 0;
  for (double x : logs) sum += x;
  f.mean = sum / static_cast<double>(logs.size());
  double ss = 0;
  for (double x : logs) ss += (x - f.mean) * (x - f.mean);
  f.std = logs.size() > 1 ? std::sqrt(ss / static_cast<double>(logs.size() - 1)) : 0.0;
  return f;
}

nlohmann::json fitJson(const LibrarySizeModel::Fit& f) { return {{"mean", f.mean}, {"std", f.std}, {"cells", f.cells}}; }
LibrarySizeModel::Fit fitFromJson(const nlohmann::json& j) {
  return {j.at("mean").get<double>(), j.at("std").get<double>(), j.at("cells").get<int64_t>()};
}

}  // namespace

LibrarySizeModel LibrarySizeModel::fit(const at::Tensor& library, const at::Tensor& ids, int64_t perturbation_key) {
  const auto lib = library.to(torch::kDouble).contiguous();  // [cells]
  const auto id = ids.to(torch::kLong).contiguous();         // [cells, keys]
  const int64_t cells = lib.size(0), keys = id.size(1);
  std::map<std::string, std::vector<double>> combo, pert, context;
  std::vector<double> all;
  for (int64_t i = 0; i < cells; ++i) {
    const double l = std::log(std::max(lib[i].item<double>(), 1.0));
    std::vector<int64_t> row(static_cast<size_t>(keys));
    for (int64_t k = 0; k < keys; ++k) row[static_cast<size_t>(k)] = id.index({i, k}).item<int64_t>();
    combo[joinIds(row, -1)].push_back(l);
    pert[std::to_string(row[static_cast<size_t>(perturbation_key)])].push_back(l);
    context[joinIds(row, perturbation_key)].push_back(l);
    all.push_back(l);
  }
  LibrarySizeModel m;
  for (const auto& [k, v] : combo) m.by_combination[k] = fitLogNormal(v);
  for (const auto& [k, v] : pert) m.by_perturbation[k] = fitLogNormal(v);
  for (const auto& [k, v] : context) m.by_context[k] = fitLogNormal(v);
  m.overall = fitLogNormal(all);
  return m;
}

const LibrarySizeModel::Fit& LibrarySizeModel::lookup(const std::vector<int64_t>& ids, int64_t perturbation_key) const {
  // A fit from a handful of cells is noise: prefer the broader group until it has a few.
  constexpr int64_t kMinCells = 10;
  if (auto it = by_combination.find(joinIds(ids, -1)); it != by_combination.end() && it->second.cells >= kMinCells)
    return it->second;
  if (auto it = by_perturbation.find(std::to_string(ids[static_cast<size_t>(perturbation_key)]));
      it != by_perturbation.end() && it->second.cells >= kMinCells)
    return it->second;
  if (auto it = by_context.find(joinIds(ids, perturbation_key)); it != by_context.end() && it->second.cells >= kMinCells)
    return it->second;
  return overall;
}

void LibrarySizeModel::save(const std::string& path) const {
  nlohmann::json j;
  j["format"] = "latentcell.library_sizes.v1";
  j["overall"] = fitJson(overall);
  for (const auto& [k, f] : by_combination) j["by_combination"][k] = fitJson(f);
  for (const auto& [k, f] : by_perturbation) j["by_perturbation"][k] = fitJson(f);
  for (const auto& [k, f] : by_context) j["by_context"][k] = fitJson(f);
  std::ofstream out(path + ".tmp", std::ios::trunc);
  out << j.dump(1) << '\n';
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  fs::rename(path + ".tmp", path);
}

LibrarySizeModel LibrarySizeModel::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + " is missing: not a stage-2 run directory");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

LibrarySizeModel LibrarySizeModel::parse(const std::string& json_text, const std::string& source) {
  LibrarySizeModel m;
  try {
    const auto j = nlohmann::json::parse(json_text);
    m.overall = fitFromJson(j.at("overall"));
    for (const char* part : {"by_combination", "by_perturbation", "by_context"}) {
      if (!j.contains(part)) continue;
      auto& target = std::string(part) == "by_combination" ? m.by_combination
                     : std::string(part) == "by_perturbation" ? m.by_perturbation
                                                              : m.by_context;
      for (const auto& [k, v] : j.at(part).items()) target[k] = fitFromJson(v);
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(source + " is not a library-size file: " + e.what());
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Autoencoder identity

namespace {

struct AutoencoderRecord {
  std::string run, checkpoint;
  uint32_t crc = 0;
};

uint32_t fileCrc(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<char> buffer(1 << 20);
  uint32_t crc = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    crc = core::crc32c(buffer.data(), static_cast<size_t>(in.gcount()), crc);
  }
  return crc;
}

// An exported autoencoder carries the checksum of the weights file it was exported from.
AutoencoderRecord recordOf(const Stage1Run& run, const std::string& run_dir) {
  if (isExportFile(run_dir)) {
    return {run_dir, run.checkpoint,
            static_cast<uint32_t>(std::stoul(readExport(run_dir).meta("autoencoder.weights_crc32c")))};
  }
  return {run_dir, run.checkpoint, fileCrc(checkpointWeights(run.checkpoint))};
}

void saveRecord(const AutoencoderRecord& r, const std::string& run_dir) {
  nlohmann::json j{{"run", r.run}, {"checkpoint", r.checkpoint}, {"weights_crc32c", r.crc}};
  const auto path = (fs::path(run_dir) / "autoencoder.json").string();
  std::ofstream out(path + ".tmp", std::ios::trunc);
  out << j.dump(1) << '\n';
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  fs::rename(path + ".tmp", path);
}

AutoencoderRecord loadRecord(const std::string& run_dir) {
  const auto path = (fs::path(run_dir) / "autoencoder.json").string();
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + " is missing: " + run_dir + " is not a stage-2 run directory");
  const auto j = nlohmann::json::parse(in);
  return {j.at("run").get<std::string>(), j.at("checkpoint").get<std::string>(), j.at("weights_crc32c").get<uint32_t>()};
}

// ---------------------------------------------------------------------------------------------
// The cells a prior sees: latents, condition ids and library sizes, after exclusions.

struct PriorData {
  data::DataFrame obs;
  at::Tensor latents;  // [cells, L, d] float or [cells, L] int64
  at::Tensor library;  // [cells] float
};

PriorData loadPriorData(const Stage2Config& c, const Stage1Run& ae, const std::string& data_path,
                        const c10::Device& device) {
  auto cells = loadRunData(ae, data_path);
  PriorData out;
  if (!c.data.latents.empty()) {
    const auto file = core::loadSafetensors(c.data.latents);
    const auto checkpoint = file.metadata.count("checkpoint") ? file.metadata.at("checkpoint") : "";
    if (fs::weakly_canonical(checkpoint) != fs::weakly_canonical(ae.checkpoint)) {
      throw std::invalid_argument(c.data.latents + " was encoded with the autoencoder checkpoint '" + checkpoint +
                                  "', not the run's '" + ae.checkpoint +
                                  "'; encode again with `latentcell encode --run " + c.autoencoder +
                                  "` or set data.latents empty to encode at the start");
    }
    out.latents = file.at("latent");
    if (out.latents.size(0) != cells.cells.n_obs()) {
      throw std::invalid_argument(c.data.latents + " holds " + std::to_string(out.latents.size(0)) + " cells but " +
                                  data_path + " has " + std::to_string(cells.cells.n_obs()) +
                                  " after the autoencoder's exclusions; encode the same file with --cells all");
    }
  } else {
    std::vector<int64_t> rows(static_cast<size_t>(cells.cells.n_obs()));
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
    std::vector<at::Tensor> parts;
    forEachBatch(ae, cells, rows, 512, device, [&](const std::vector<int64_t>&, const models::CellBatch& batch) {
      parts.push_back(ae.model->encodeLatent(batch).cpu());
    });
    out.latents = torch::cat(parts, 0);
  }
  out.library = torch::tensor(cells.library);
  out.obs = std::move(cells.cells.obs);

  if (!c.data.exclude_column.empty()) {
    const auto& column = out.obs.at(c.data.exclude_column, data_path + " obs");
    const std::set<std::string> drop(c.data.exclude_values.begin(), c.data.exclude_values.end());
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < column.size(); ++i)
      if (!drop.count(column.text(i))) keep.push_back(i);
    if (keep.empty()) throw std::invalid_argument(data_path + ": no cells left after data.exclude_values");
    const auto index = torch::tensor(keep);
    out.latents = out.latents.index_select(0, index);
    out.library = out.library.index_select(0, index);
    out.obs = data::takeRows(out.obs, keep);
  }
  return out;
}

priors::PriorContext priorContext(const Stage1Run& ae, const std::vector<priors::ConditionColumnSpec>& columns) {
  priors::PriorContext ctx;
  const bool codes = ae.model->discreteLatent();
  ctx.latents = codes ? priors::LatentKind::Codes : priors::LatentKind::Continuous;
  ctx.bottleneck = ae.config.model.family == "pca" ? "pca" : ae.config.bottleneck.kind;
  ctx.tokens = ae.model->latentTokens();
  if (codes) {
    ctx.codebook = ae.model->latentWidth();
  } else {
    ctx.latent_dim = ae.model->latentWidth();
  }
  ctx.columns = columns;
  return ctx;
}

int64_t keyOf(const Stage2Config& c) {
  const auto& cols = c.data.conditions;
  return std::find(cols.begin(), cols.end(), c.data.perturbation_column) - cols.begin();
}

std::vector<data::Vocabulary> buildVocabularies(const Stage2Config& c, const data::DataFrame& obs) {
  std::vector<data::Vocabulary> v;
  for (const auto& column : c.data.conditions)
    v.push_back(data::buildVocabulary(obs, column, column == c.data.perturbation_column ? c.data.control : ""));
  return v;
}

// ---------------------------------------------------------------------------------------------
// Trainables

// ar, mdlm, flow: random cells, the DistributedSampler's epochs (exact resume by epoch and batch).
class CellPriorTrainable : public Trainable {
 public:
  CellPriorTrainable(const Stage2Config& c, std::shared_ptr<priors::Prior> prior, at::Tensor latents, at::Tensor ids,
                     std::vector<int64_t> train, std::vector<int64_t> val, const c10::Device& device, int64_t rank,
                     int64_t world)
      : config_(c),
        prior_(std::move(prior)),
        latents_(std::move(latents)),
        ids_(std::move(ids)),
        train_(std::move(train)),
        val_(std::move(val)),
        device_(device) {
    data::SamplerOptions s;
    s.size = static_cast<int64_t>(train_.size());
    s.world_size = world;
    s.rank = rank;
    s.batch_size = c.data.batch_size;
    s.seed = static_cast<uint64_t>(c.seed);
    cursor_ = std::make_unique<data::SamplerCursor>(s);
  }

  torch::nn::Module& module() override { return *prior_; }
  int64_t batchSize() const override { return config_.data.batch_size; }
  DataState dataState() const override { return {{kEpochKey, cursor_->epoch()}, {"batch", cursor_->batch()}}; }
  void restoreDataState(const DataState& state) override {
    cursor_->restore(state.at(kEpochKey), state.at("batch"));
  }

  LossTerms trainLoss() override {
    std::vector<int64_t> rows;
    for (int64_t position : cursor_->next()) rows.push_back(train_[static_cast<size_t>(position)]);
    return toTerms(prior_->loss(batchOf(rows)));
  }

  LossTerms evalLoss() override {
    if (val_.empty()) return {};
    // Fixed randomness (times, noise, masks) so successive validations compare the weights alone.
    auto gen = core::makeGenerator(static_cast<uint64_t>(config_.seed) + 17, device_);
    LossMeter meter;
    const size_t bs = static_cast<size_t>(config_.data.batch_size);
    for (size_t start = 0, b = 0; start < val_.size() && b < static_cast<size_t>(config_.data.eval_batches);
         start += bs, ++b) {
      std::vector<int64_t> rows(val_.begin() + static_cast<long>(start),
                                val_.begin() + static_cast<long>(std::min(val_.size(), start + bs)));
      meter.add(prior_->loss(batchOf(rows), gen), static_cast<double>(rows.size()));
    }
    return meter.mean();
  }

 private:
  priors::PriorBatch batchOf(const std::vector<int64_t>& rows) const {
    const auto index = torch::tensor(rows);
    priors::PriorBatch b;
    b.latents = latents_.index_select(0, index).to(device_);   // [batch, L(, d)]
    b.conditions = ids_.index_select(0, index).to(device_);    // [batch, keys]
    return b;
  }
  static LossTerms toTerms(priors::NamedLosses losses) {
    LossTerms t;
    t.terms = std::move(losses);
    return t;
  }

  const Stage2Config& config_;
  std::shared_ptr<priors::Prior> prior_;
  at::Tensor latents_, ids_;
  std::vector<int64_t> train_, val_;
  c10::Device device_;
  std::unique_ptr<data::SamplerCursor> cursor_;
};

// jit: each example pairs set_size cells of one (perturbation, context) group with set_size
// control cells of the same context. Groups are drawn uniformly, cells without replacement when
// the group is large enough. Batch k draws from a generator seeded by (seed, rank, k), so resuming
// at batch k replays exactly the batches a straight run would have drawn.
class SetPriorTrainable : public Trainable {
 public:
  struct Groups {
    std::vector<std::vector<int64_t>> perturbed;  // per group: cell rows
    std::vector<int64_t> context_of;              // per group: index into control
    std::vector<std::vector<int64_t>> control;    // per context: control rows
    std::vector<int64_t> group_ids_row;           // per group: one member row (its condition ids)
  };

  static Groups groupCells(const at::Tensor& ids, const std::vector<int64_t>& rows, int64_t key,
                           const std::vector<int64_t>& control_rows_pool) {
    Groups g;
    std::map<std::string, int64_t> contexts, groups;
    const auto id = ids.contiguous();
    auto rowIds = [&](int64_t r) {
      std::vector<int64_t> v(static_cast<size_t>(id.size(1)));
      for (int64_t k = 0; k < id.size(1); ++k) v[static_cast<size_t>(k)] = id.index({r, k}).item<int64_t>();
      return v;
    };
    for (int64_t r : control_rows_pool) {
      const auto v = rowIds(r);
      if (v[static_cast<size_t>(key)] != 0) continue;
      const auto ctx = joinIds(v, key);
      auto [it, added] = contexts.emplace(ctx, static_cast<int64_t>(g.control.size()));
      if (added) g.control.emplace_back();
      g.control[static_cast<size_t>(it->second)].push_back(r);
    }
    for (int64_t r : rows) {
      const auto v = rowIds(r);
      if (v[static_cast<size_t>(key)] == 0) continue;  // control cells are the start, not a target
      const auto ctx = contexts.find(joinIds(v, key));
      if (ctx == contexts.end()) continue;  // no control cells in its context: nothing to transport from
      auto [it, added] = groups.emplace(joinIds(v, -1), static_cast<int64_t>(g.perturbed.size()));
      if (added) {
        g.perturbed.emplace_back();
        g.context_of.push_back(ctx->second);
        g.group_ids_row.push_back(r);
      }
      g.perturbed[static_cast<size_t>(it->second)].push_back(r);
    }
    return g;
  }

  SetPriorTrainable(const Stage2Config& c, std::shared_ptr<priors::Prior> prior, at::Tensor latents, at::Tensor ids,
                    Groups train, Groups val, const c10::Device& device, int64_t rank)
      : config_(c),
        prior_(std::move(prior)),
        latents_(std::move(latents)),
        ids_(std::move(ids)),
        train_(std::move(train)),
        val_(std::move(val)),
        device_(device),
        rank_(rank) {
    if (train_.perturbed.empty()) {
      throw std::invalid_argument("transport prior: no training cells of a perturbation share a context with control "
                                  "cells; check data.control and data.conditions");
    }
  }

  torch::nn::Module& module() override { return *prior_; }
  int64_t batchSize() const override { return config_.data.batch_size * config_.data.set_size; }
  DataState dataState() const override { return {{"batch", batch_}}; }
  void restoreDataState(const DataState& state) override { batch_ = state.at("batch"); }

  LossTerms trainLoss() override {
    auto gen = core::makeGenerator(static_cast<uint64_t>(config_.seed) * 1000003ULL + static_cast<uint64_t>(rank_) * 7919ULL +
                                   static_cast<uint64_t>(batch_));
    ++batch_;
    return toTerms(prior_->loss(drawBatch(train_, gen)));
  }

  LossTerms evalLoss() override {
    if (val_.perturbed.empty()) return {};
    auto gen = core::makeGenerator(static_cast<uint64_t>(config_.seed) + 17);
    LossMeter meter;
    for (int64_t b = 0; b < config_.data.eval_batches; ++b) meter.add(prior_->loss(drawBatch(val_, gen), gen));
    return meter.mean();
  }

 private:
  std::vector<int64_t> drawSet(const std::vector<int64_t>& pool, at::Generator& gen) const {
    const int64_t n = config_.data.set_size, size = static_cast<int64_t>(pool.size());
    const auto pick = size >= n ? torch::randperm(size, gen, torch::kLong).slice(0, 0, n)
                                : torch::randint(size, {n}, gen, torch::kLong);
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < n; ++i) rows.push_back(pool[static_cast<size_t>(pick[i].item<int64_t>())]);
    return rows;
  }

  priors::PriorBatch drawBatch(const Groups& g, at::Generator& gen) const {
    const int64_t sets = config_.data.batch_size;
    const auto which = torch::randint(static_cast<int64_t>(g.perturbed.size()), {sets}, gen, torch::kLong);
    std::vector<int64_t> target_rows, control_rows, cond_rows;
    for (int64_t s = 0; s < sets; ++s) {
      const auto group = static_cast<size_t>(which[s].item<int64_t>());
      const auto t = drawSet(g.perturbed[group], gen);
      const auto c = drawSet(g.control[static_cast<size_t>(g.context_of[group])], gen);
      target_rows.insert(target_rows.end(), t.begin(), t.end());
      control_rows.insert(control_rows.end(), c.begin(), c.end());
      cond_rows.push_back(g.group_ids_row[group]);
    }
    const int64_t n = config_.data.set_size;
    priors::PriorBatch b;
    b.latents = latents_.index_select(0, torch::tensor(target_rows)).reshape({sets, n, -1}).to(device_);  // [sets, n, L d]
    b.control = latents_.index_select(0, torch::tensor(control_rows)).reshape({sets, n, -1}).to(device_);  // [sets, n, L d]
    b.conditions = ids_.index_select(0, torch::tensor(cond_rows)).to(device_);                             // [sets, keys]
    return b;
  }
  static LossTerms toTerms(priors::NamedLosses losses) {
    LossTerms t;
    t.terms = std::move(losses);
    return t;
  }

  const Stage2Config& config_;
  std::shared_ptr<priors::Prior> prior_;
  at::Tensor latents_, ids_;
  Groups train_, val_;
  c10::Device device_;
  int64_t rank_ = 0;
  int64_t batch_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Fine-tuning

std::string latestWeights(const std::string& run_dir) {
  const auto latest = CheckpointManager(run_dir, 1).latest();
  if (!latest) throw std::invalid_argument(run_dir + " has no checkpoint; train it first");
  return checkpointWeights(*latest);
}

// Copies the weights of the prior in `source_run` into `prior`: same-named tensors of the same
// shape; learned condition tables row by row over the labels both vocabularies know (the null row,
// last, always). Returns how many tensors were copied whole and how many table rows carried over.
std::pair<int64_t, int64_t> initFromRun(priors::Prior& prior, const std::vector<data::Vocabulary>& vocabularies,
                                        const std::string& source_run) {
  const auto path = latestWeights(source_run);
  const auto source = core::loadSafetensors(path);
  const auto old_vocab = data::loadVocabularies(source_run);
  std::map<std::string, const data::Vocabulary*> old_by_column;
  for (const auto& v : old_vocab) old_by_column[v.column] = &v;

  torch::NoGradGuard no_grad;
  int64_t whole = 0, rows = 0;
  std::map<std::string, at::Tensor> target;
  for (const auto& [name, t] : core::stateDict(prior)) target[name] = t;
  for (const auto& [name, tensor] : source.tensors) {
    auto it = target.find(name);
    if (it == target.end()) continue;
    at::Tensor dst = it->second;
    // External vectors belong to this run's vocabulary and embedding file, never the source's.
    if (name.size() > 8 && (name.compare(name.size() - 8, 8, ".vectors") == 0 ||
                            name.compare(name.size() - 8, 8, ".present") == 0))
      continue;
    // conditions.columns.K.table: [vocab + 1, dim] learned label rows + the null row.
    const std::string prefix = "conditions.columns.", suffix = ".table";
    if (name.rfind(prefix, 0) == 0 && name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const auto k = static_cast<size_t>(std::stoll(name.substr(prefix.size())));
      if (k < vocabularies.size() && tensor.dim() == 2 && dst.dim() == 2 && tensor.size(1) == dst.size(1)) {
        const auto& now = vocabularies[k];
        auto old = old_by_column.find(now.column);
        if (old != old_by_column.end()) {
          for (int64_t i = 0; i < now.size(); ++i) {
            const auto& label = now.values[static_cast<size_t>(i)];
            const auto& ov = old->second->values;
            const auto pos = std::find(ov.begin(), ov.end(), label);
            if (pos == ov.end()) continue;
            dst[i].copy_(tensor[pos - ov.begin()]);
            ++rows;
          }
          dst[dst.size(0) - 1].copy_(tensor[tensor.size(0) - 1]);  // null label
        }
        continue;
      }
    }
    if (tensor.sizes() == dst.sizes()) {
      dst.copy_(tensor);
      ++whole;
    }
  }
  return {whole, rows};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TrainSummary runStage2Task(Stage2Config c, bool resume, const std::vector<std::string>& command_line) {
  auto process = startTrainingProcess(c.device, c.trainer.distributed, c.seed, c.run_dir, resume);
  const auto& env = process.env;
  const auto device = process.device;
  auto& comm = process.comm;

  if (isExportFile(c.autoencoder)) {
    throw std::invalid_argument("autoencoder: " + c.autoencoder + " is an exported file; a prior trains on the "
                                "autoencoder's run directory (its data, exclusions and checkpoint records)");
  }
  auto ae = loadStage1Run(c.autoencoder, device);
  for (auto& p : ae.model->parameters()) p.set_requires_grad(false);
  const auto data_path = c.data.path.empty() ? ae.config.data.path : c.data.path;
  // Reject an FSQ prior on Gaussian latents (and the reverse) before reading any data.
  priors::checkLatentCompatibility(c.prior.kind,
                                   ae.model->discreteLatent() ? priors::LatentKind::Codes : priors::LatentKind::Continuous,
                                   ae.config.bottleneck.kind);
  auto cells = loadPriorData(c, ae, data_path, device);

  const auto vocabularies = resume ? data::loadVocabularies(c.run_dir) : buildVocabularies(c, cells.obs);
  const auto ids = data::conditionIds(vocabularies, cells.obs);  // [cells, keys]
  const auto rules = data::parseHoldOutRules(c.data.holdout);
  const auto split = resume ? data::loadSplit(c.run_dir, cells.latents.size(0))
                            : data::holdOutSplit(cells.obs, rules, {}, c.data.val_fraction,
                                                 static_cast<uint64_t>(c.data.split_seed));
  const auto train_rows = split.indices(data::SplitPart::Train);
  const auto val_rows = split.indices(data::SplitPart::Val);
  if (train_rows.empty()) throw std::invalid_argument("the hold-out rules leave no training cells; loosen data.holdout");
  const int64_t key = keyOf(c);

  // Standardised continuous latents (statistics of the training cells).
  at::Tensor latents = cells.latents;
  at::Tensor mean, std;
  const bool continuous = !ae.model->discreteLatent();
  if (continuous) {
    const auto train_latents = latents.index_select(0, torch::tensor(train_rows)).to(torch::kFloat);
    mean = train_latents.mean(0);                                  // [L, d]
    std = train_latents.std(0, /*unbiased=*/true).clamp_min(1e-6);  // [L, d]
    if (resume) {
      const auto stats = core::loadSafetensors((fs::path(c.run_dir) / "latent_stats.safetensors").string());
      mean = stats.at("mean");
      std = stats.at("std");
    }
    latents = (latents.to(torch::kFloat) - mean) / std;
  }

  fs::create_directories(c.run_dir);
  if (env.rank == 0 && !resume) {
    data::saveVocabularies(vocabularies, c.run_dir);
    data::saveSplit(split, c.run_dir);
    saveRecord(recordOf(ae, c.autoencoder), c.run_dir);
    LibrarySizeModel::fit(cells.library.index_select(0, torch::tensor(train_rows)),
                          ids.index_select(0, torch::tensor(train_rows)), key)
        .save((fs::path(c.run_dir) / "library_sizes.json").string());
    if (continuous) {
      core::saveSafetensors((fs::path(c.run_dir) / "latent_stats.safetensors").string(), {{"mean", mean}, {"std", std}},
                            {{"format", "latentcell.latent_stats.v1"}});
    }
  }

  const auto columns = priors::conditionColumns(c.prior.conditioning, vocabularies);
  auto prior = priors::makePrior(c.prior, priorContext(ae, columns));
  if (!c.finetune.init_from.empty() && !resume) {
    const auto [whole, rows] = initFromRun(*prior, vocabularies, c.finetune.init_from);
    core::logInfo("fine-tuning from {}: {} tensors copied, {} condition-table rows carried over by label",
                  c.finetune.init_from, whole, rows);
  }
  if (c.finetune.freeze_backbone) {
    for (auto& item : prior->named_parameters())
      if (item.key().rfind("backbone.", 0) == 0) item.value().set_requires_grad(false);
  }
  prior->to(device);

  std::unique_ptr<Trainable> trainable;
  if (c.prior.kind == "jit") {
    auto train_groups = SetPriorTrainable::groupCells(ids, train_rows, key, train_rows);
    auto val_groups = SetPriorTrainable::groupCells(ids, val_rows, key, train_rows);
    trainable = std::make_unique<SetPriorTrainable>(c, prior, latents, ids, std::move(train_groups),
                                                    std::move(val_groups), device, env.rank);
  } else {
    trainable = std::make_unique<CellPriorTrainable>(c, prior, latents, ids, train_rows, val_rows, device, env.rank,
                                                     env.world_size);
  }
  Trainer trainer(c.trainer, *trainable, device, c.run_dir, core::dumpConfig(c), comm.get());
  trainer.setCommandLine(command_line);
  if (env.rank == 0) core::addLogFile((fs::path(c.run_dir) / "log.txt").string());
  if (resume && !trainer.resume()) {
    throw std::invalid_argument("cannot resume: " + c.run_dir + " has no checkpoint; drop --resume to start a new run");
  }
  int64_t params = 0, trained = 0;
  for (const auto& p : prior->parameters()) {
    params += p.numel();
    if (p.requires_grad()) trained += p.numel();
  }
  core::logInfo("stage 2 ({} prior on {} latents of {}) on {}: {} train / {} val / {} held-out cells, {} parameters "
                "({} trained), steps {} -> {}, run directory {}",
                c.prior.kind, continuous ? "continuous" : "FSQ", c.autoencoder, device.str(), train_rows.size(),
                val_rows.size(), split.indices(data::SplitPart::Test).size(), params, trained, trainer.step(),
                c.trainer.max_steps, c.run_dir);
  auto summary = trainer.fit();
  if (comm) comm->barrier();
  return summary;
}

namespace {

// The prior of `run` (config, autoencoder and vocabularies filled in) with the weights `state`.
void buildPrior(Stage2Run& run, const core::SafetensorsData& state, const c10::Device& device) {
  // External condition vectors live in the checkpoint: generation does not need the embedding file.
  std::vector<priors::ConditionColumnSpec> columns;
  for (size_t k = 0; k < run.vocabularies.size(); ++k) {
    const auto& v = run.vocabularies[k];
    priors::ConditionColumnSpec spec{v.column, v.values, {}, {}};
    const auto prefix = "conditions.columns." + std::to_string(k) + ".";
    if (state.contains(prefix + "vectors")) {
      spec.external = state.at(prefix + "vectors");
      const auto present = state.at(prefix + "present").to(torch::kBool);
      for (int64_t i = 0; i < present.size(0); ++i) spec.missing.push_back(present[i].item<bool>() ? 0 : 1);
    }
    columns.push_back(std::move(spec));
  }
  run.perturbation_key = keyOf(run.config);
  run.prior = priors::makePrior(run.config.prior, priorContext(run.autoencoder, columns));
  core::loadStateDict(*run.prior, state.tensors, true, state.source);
  run.prior->to(device);
  run.prior->eval();
}

// A stage-2 export: everything comes from the file, the autoencoder included.
Stage2Run loadStage2Export(const std::string& path, const c10::Device& device, const std::string& autoencoder_override) {
  if (!autoencoder_override.empty()) {
    throw std::invalid_argument(path + " is an exported prior, which holds its own autoencoder: drop --autoencoder " +
                                autoencoder_override);
  }
  const auto file = readExport(path);
  if (file.kind != "stage2") {
    throw std::invalid_argument(path + " is the export of a stage-1 run (an autoencoder): pass an exported prior "
                                "(`latentcell export` of a stage-2 run) or a stage-2 run directory");
  }
  Stage2Run run;
  run.run_dir = path;
  core::loadConfigText(run.config, file.meta("prior.config"), path + " [prior.config]");
  run.autoencoder = loadStage1Run(file, device);
  run.vocabularies = data::parseVocabularies(file.meta("vocabularies"), path + " [vocabularies]");
  run.library = LibrarySizeModel::parse(file.meta("library_sizes"), path + " [library_sizes]");
  if (!run.autoencoder.model->discreteLatent()) {
    run.latent_mean = file.data.at("latent_stats.mean").to(device);
    run.latent_std = file.data.at("latent_stats.std").to(device);
  }
  run.checkpoint = path;
  buildPrior(run, file.tensorsUnder("prior."), device);
  return run;
}

}  // namespace

Stage2Run loadStage2Run(const std::string& run_dir, const c10::Device& device, const std::string& autoencoder_override) {
  if (isExportFile(run_dir)) return loadStage2Export(run_dir, device, autoencoder_override);
  Stage2Run run;
  run.run_dir = run_dir;
  const auto config_path = (fs::path(run_dir) / "config.yaml").string();
  if (!fs::exists(config_path)) {
    throw std::invalid_argument(run_dir + " has no config.yaml: pass the directory of a `latentcell train` stage-2 run "
                                "or a file written by `latentcell export`");
  }
  const auto task = core::peekConfigString(config_path, "task");
  if (task != "stage2") {
    throw std::invalid_argument(run_dir + " is not a prior run (its config.yaml says task: " + task +
                                "); pass the run directory of a stage-2 prior");
  }
  core::loadConfigFile(run.config, config_path);
  const auto record = loadRecord(run_dir);
  const auto ae_dir = autoencoder_override.empty() ? run.config.autoencoder : autoencoder_override;
  run.autoencoder = loadStage1Run(ae_dir, device);
  const auto now = recordOf(run.autoencoder, ae_dir);
  if (now.crc != record.crc) {
    throw std::invalid_argument("the prior in " + run_dir + " was trained on the latents of " + record.checkpoint +
                                " (weights crc32c " + std::to_string(record.crc) + "), but " + ae_dir +
                                " provides " + now.checkpoint + " (crc32c " + std::to_string(now.crc) +
                                "): decode with the autoencoder the prior was trained with, or retrain the prior");
  }
  run.vocabularies = data::loadVocabularies(run_dir);
  run.library = LibrarySizeModel::load((fs::path(run_dir) / "library_sizes.json").string());
  if (!run.autoencoder.model->discreteLatent()) {
    const auto stats = core::loadSafetensors((fs::path(run_dir) / "latent_stats.safetensors").string());
    run.latent_mean = stats.at("mean").to(device);
    run.latent_std = stats.at("std").to(device);
  }
  const auto latest = CheckpointManager(run_dir, 1).latest();
  if (!latest) throw std::invalid_argument(run_dir + " has no checkpoint yet; train it first");
  run.checkpoint = *latest;
  auto state = core::loadSafetensors(checkpointWeights(run.checkpoint));
  buildPrior(run, state, device);
  return run;
}

std::vector<int64_t> priorCellRows(const Stage2Config& config, const data::DataFrame& obs, const std::string& source) {
  std::vector<int64_t> rows;
  const std::set<std::string> drop(config.data.exclude_values.begin(), config.data.exclude_values.end());
  const auto* column = config.data.exclude_column.empty() ? nullptr : &obs.at(config.data.exclude_column, "obs of " + source);
  const int64_t n = static_cast<int64_t>(obs.index.size());
  for (int64_t i = 0; i < n; ++i)
    if (column == nullptr || !drop.count(column->text(i))) rows.push_back(i);
  return rows;
}

std::vector<int64_t> priorTrainingRows(const std::string& run_dir, const data::DataFrame& obs, const std::string& source) {
  const auto config_path = (fs::path(run_dir) / "config.yaml").string();
  if (!fs::exists(config_path) || core::peekConfigString(config_path, "task") != "stage2") {
    throw std::invalid_argument(run_dir + " is not a prior run (no config.yaml with task: stage2); pass the run "
                                "directory of a stage-2 prior");
  }
  Stage2Config config;
  core::loadConfigFile(config, config_path);
  const auto rows = priorCellRows(config, obs, source);
  const auto split = data::loadSplit(run_dir, static_cast<int64_t>(rows.size()));
  std::vector<int64_t> out;
  for (int64_t i : split.indices(data::SplitPart::Train)) out.push_back(rows[static_cast<size_t>(i)]);
  return out;
}

at::Tensor toAutoencoderLatent(const Stage2Run& run, const at::Tensor& latents) {
  if (!run.latent_mean.defined()) return latents;  // codes
  const auto& mean = run.latent_mean;
  return latents.reshape({-1, mean.size(0), mean.size(1)}) * run.latent_std + mean;  // [n, L, d]
}

}  // namespace latentcell::train
