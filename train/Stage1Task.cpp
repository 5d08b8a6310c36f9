// Stage-1 training and loading (see Stage1Task.h).
#include "train/Stage1Task.h"

#include "core/Device.h"
#include "core/Logging.h"
#include "core/Random.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "data/DistributedSampler.h"
#include "data/H5ad.h"
#include "data/Preprocess.h"
#include "train/Checkpoint.h"
#include "train/Export.h"
#include "train/TrainingProcess.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

namespace fs = std::filesystem;

namespace latentcell::train {

void Stage1DataConfig::visit(core::ConfigVisitor& v) {
  v.field("path", path, "h5ad file with raw counts");
  v.field("matrix", matrix, "the counts: X, layers/NAME or raw/X");
  v.field("exclude_column", exclude_column, "obs column whose values in exclude_values drop a cell (e.g. perturbation)");
  v.field("exclude_values", exclude_values, "values of exclude_column whose cells are dropped (e.g. [unassigned])");
  v.field("holdout", holdout,
          "rules 'col=v1,v2; col2=v3' whose cells join the validation split, never trained on (e.g. a prior's "
          "held-out perturbations)");
  v.field("genes", genes, "gene vocabulary in model order; empty = every var name of the file");
  v.field("context_length", context_length, "gene tokens per cell; 0 = the most expressed genes of any cell");
  v.choice("truncation", truncation, {"error", "random", "topk"}, "cells with more expressed genes than the context");
  v.field("batch_size", batch_size, "cells per batch (per rank)");
  v.field("val_fraction", val_fraction, "random fraction of cells held out for validation");
  v.field("split_seed", split_seed, "seed of the random split");
  v.field("eval_cells", eval_cells, "held-out cells scored at each validation (the first ones)");
}

void Stage1DataConfig::validate() const {
  if (path.empty()) reject("path", "is required: the h5ad file to train on");
  if (context_length < 0) reject("context_length", "must be 0 (automatic) or positive");
  if (batch_size <= 0) reject("batch_size", "must be positive");
  if (val_fraction < 0 || val_fraction >= 1) reject("val_fraction", "must be in [0, 1)");
  if (eval_cells <= 0) reject("eval_cells", "must be positive");
  if (!exclude_values.empty() && exclude_column.empty()) reject("exclude_column", "is required with exclude_values");
  try {
    data::parseHoldOutRules(holdout);
  } catch (const std::invalid_argument& e) {
    reject("holdout", e.what());
  }
}

void Stage1Config::visit(core::ConfigVisitor& v) {
  v.choice("task", task, {"stage1"}, "what to train");
  v.field("seed", seed, "random seed (weights and batches)");
  v.field("device", device, "auto, cpu, cuda or cuda:N");
  v.field("run_dir", run_dir, "run directory: resolved config, vocabulary, split, checkpoints, metrics");
  v.section("data", data, "training cells");
  v.section("model", model, "encoder/decoder family");
  v.section("bottleneck", bottleneck, "between encoder and decoder");
  v.section("head", head, "output distribution over counts");
  v.section("trainer", trainer, "training engine");
}

Stage1Data loadStage1Data(const Stage1DataConfig& c, const std::vector<std::string>& vocabulary, bool need_counts) {
  data::H5adReadOptions options;
  options.matrix = c.matrix;
  options.obsm = false;
  auto adata = data::readH5ad(c.path, options);
  if (need_counts) data::requireCounts(adata, c.path);

  Stage1Data out;
  if (!c.exclude_column.empty()) {
    const auto& column = adata.obsColumn(c.exclude_column);
    const std::set<std::string> drop(c.exclude_values.begin(), c.exclude_values.end());
    for (int64_t i = 0; i < adata.n_obs(); ++i)
      if (!drop.count(column.text(i))) out.rows.push_back(i);
  } else {
    out.rows.resize(static_cast<size_t>(adata.n_obs()));
    for (int64_t i = 0; i < adata.n_obs(); ++i) out.rows[static_cast<size_t>(i)] = i;
  }
  if (out.rows.empty()) {
    throw std::invalid_argument(c.path + ": no cells left after dropping " + c.exclude_column + " in the excluded values");
  }

  const auto library = data::librarySizes(adata.X);
  const auto genes = vocabulary.empty() ? adata.var.index : vocabulary;
  const auto mapping = data::mapGenes(adata.var.index, genes);
  auto selected = data::selectGenes(adata.X, mapping);

  out.cells.X = data::takeRows(selected, out.rows);
  out.cells.obs = data::takeRows(adata.obs, out.rows);
  out.cells.source = c.path;
  for (int64_t r : out.rows) out.library.push_back(static_cast<float>(library[static_cast<size_t>(r)]));
  out.cells.var.index = genes;
  return out;
}

models::CellBatch makeCellBatch(const Stage1Data& d, const std::vector<int64_t>& rows,
                                const data::TokenizerOptions& tokens, const c10::Device& device) {
  auto t = data::tokenize(d.cells.X, tokens, rows);
  std::vector<float> library;
  library.reserve(rows.size());
  for (int64_t r : rows) library.push_back(d.library[static_cast<size_t>(r)]);
  models::CellBatch b;
  b.gene_ids = t.gene_ids.to(device);                                      // [batch, context]
  b.counts = t.counts.to(device);                                          // [batch, context]
  b.padding_mask = t.padding_mask.to(device);                              // [batch, context]
  b.dense_counts = data::denseRows(d.cells.X, rows).to(device);            // [batch, genes]
  b.library = torch::tensor(library).to(device);                           // [batch]
  return b;
}

namespace {

int64_t maxExpressed(const data::CsrMatrix& x) {
  int64_t most = 0;
  for (int64_t r = 0; r < x.rows; ++r) most = std::max(most, x.indptr[r + 1] - x.indptr[r]);
  return std::max<int64_t>(most, 1);
}

data::TokenizerOptions tokenizerOptions(const Stage1DataConfig& c, uint64_t seed) {
  data::TokenizerOptions t;
  t.context_length = c.context_length;
  t.truncation = data::parseTruncation(c.truncation);
  t.seed = seed;
  return t;
}

void writeGenes(const std::vector<std::string>& genes, const std::string& run_dir) {
  const auto path = fs::path(run_dir) / "genes.txt";
  std::ofstream out(path.string() + ".tmp", std::ios::trunc);
  for (const auto& g : genes) out << g << '\n';
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
  fs::rename(path.string() + ".tmp", path);
}

std::vector<std::string> readGenes(const std::string& run_dir) {
  const auto path = fs::path(run_dir) / "genes.txt";
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path.string() + " is missing: " + run_dir + " is not a stage-1 run directory");
  std::vector<std::string> genes;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) genes.push_back(line);
  if (genes.empty()) throw std::invalid_argument(path.string() + " lists no genes");
  return genes;
}

class Stage1Trainable : public Trainable {
 public:
  Stage1Trainable(const Stage1Config& c, Stage1Data data, std::vector<int64_t> train, std::vector<int64_t> val,
                  std::shared_ptr<models::Autoencoder> model, const c10::Device& device, int64_t rank, int64_t world)
      : config_(c), data_(std::move(data)), train_(std::move(train)), model_(std::move(model)), device_(device) {
    val_.assign(val.begin(), val.begin() + std::min<int64_t>(static_cast<int64_t>(val.size()), c.data.eval_cells));
    data::SamplerOptions s;
    s.size = static_cast<int64_t>(train_.size());
    s.world_size = world;
    s.rank = rank;
    s.batch_size = c.data.batch_size;
    s.seed = static_cast<uint64_t>(c.seed);
    cursor_ = std::make_unique<data::SamplerCursor>(s);
  }

  torch::nn::Module& module() override { return *model_; }
  int64_t batchSize() const override { return config_.data.batch_size; }
  DataState dataState() const override { return {{"epoch", cursor_->epoch()}, {"batch", cursor_->batch()}}; }
  void restoreDataState(const DataState& state) override {
    cursor_->restore(state.at("epoch"), state.at("batch"));
  }

  LossTerms trainLoss() override {
    std::vector<int64_t> rows;
    for (int64_t position : cursor_->next()) rows.push_back(train_[static_cast<size_t>(position)]);
    // Random truncation draws new subsets each epoch.
    const auto tokens = tokenizerOptions(config_.data, static_cast<uint64_t>(config_.seed) * 7919ULL + cursor_->epoch());
    return toTerms(model_->loss(makeCellBatch(data_, rows, tokens, device_)));
  }

  LossTerms evalLoss() override {
    if (val_.empty()) return {};
    const auto tokens = tokenizerOptions(config_.data, static_cast<uint64_t>(config_.seed));
    LossMeter meter;
    for (size_t start = 0; start < val_.size(); start += static_cast<size_t>(config_.data.batch_size)) {
      const auto end = std::min(val_.size(), start + static_cast<size_t>(config_.data.batch_size));
      std::vector<int64_t> rows(val_.begin() + static_cast<long>(start), val_.begin() + static_cast<long>(end));
      meter.add(model_->loss(makeCellBatch(data_, rows, tokens, device_)).terms, static_cast<double>(rows.size()));
    }
    return meter.mean();
  }

 private:
  static LossTerms toTerms(models::AutoencoderLoss loss) {
    LossTerms t;
    t.terms = std::move(loss.terms);
    return t;
  }

  const Stage1Config& config_;
  Stage1Data data_;
  std::vector<int64_t> train_, val_;
  std::shared_ptr<models::Autoencoder> model_;
  c10::Device device_;
  std::unique_ptr<data::SamplerCursor> cursor_;
};

}  // namespace

TrainSummary runStage1Task(Stage1Config c, bool resume, const std::vector<std::string>& command_line) {
  auto process = startTrainingProcess(c.device, c.trainer.distributed, c.seed, c.run_dir, resume);
  const auto& env = process.env;
  const auto device = process.device;
  auto& comm = process.comm;
  fs::create_directories(c.run_dir);

  // The model's head decides whether the data must be counts; build it first on the data's width.
  auto genes = resume ? readGenes(c.run_dir) : c.data.genes;
  bool need_counts = heads::HeadConfig(c.head).kind != "mse" && c.model.family != "pca";
  auto data = loadStage1Data(c.data, genes, need_counts);
  genes = data.cells.var.index;
  if (c.data.context_length == 0) c.data.context_length = maxExpressed(data.cells.X);

  const auto holdout = data::parseHoldOutRules(c.data.holdout);
  const auto split = resume ? data::loadSplit(c.run_dir, data.cells.n_obs())
                     : holdout.empty()
                         ? data::randomSplit(data.cells.n_obs(), c.data.val_fraction, 0.0,
                                             static_cast<uint64_t>(c.data.split_seed))
                         : data::holdOutSplit(data.cells.obs, {}, holdout, c.data.val_fraction,
                                              static_cast<uint64_t>(c.data.split_seed));
  auto train_rows = split.indices(data::SplitPart::Train);
  auto val_rows = split.indices(data::SplitPart::Val);
  if (env.rank == 0 && !resume) {
    writeGenes(genes, c.run_dir);
    data::saveSplit(split, c.run_dir);
  }

  auto model = std::make_shared<models::Autoencoder>(static_cast<int64_t>(genes.size()), c.model, c.bottleneck, c.head);
  if (!resume) {
    const auto train_counts = data::takeRows(data.cells.X, train_rows);
    model->fitToData(train_counts);
  }

  const TrainerConfig& trainer_config = c.trainer;
  Stage1Trainable trainable(c, std::move(data), std::move(train_rows), std::move(val_rows), model, device, env.rank,
                            env.world_size);
  Trainer trainer(trainer_config, trainable, device, c.run_dir, core::dumpConfig(c), comm.get());
  trainer.setCommandLine(command_line);
  if (env.rank == 0) core::addLogFile((fs::path(c.run_dir) / "log.txt").string());
  if (resume && !trainer.resume()) {
    throw std::invalid_argument("cannot resume: " + c.run_dir + " has no checkpoint; drop --resume to start a new run");
  }
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  core::logInfo("stage 1 ({} + {} + {}) on {}: {} genes, context {}, {} parameters, steps {} -> {}, run directory {}",
                c.model.family, c.model.family == "pca" ? "-" : c.bottleneck.kind,
                c.model.family == "pca" ? "-" : c.head.kind, device.str(), genes.size(), c.data.context_length, params,
                trainer.step(), model->trainable() ? trainer_config.max_steps : 0, c.run_dir);
  TrainSummary summary;
  if (model->trainable()) {
    summary = trainer.fit();
  } else if (env.rank == 0) {
    summary.last_checkpoint = trainer.saveCheckpoint();  // PCA: fitted above, saved like a trained model
  }
  if (comm) comm->barrier();
  return summary;
}

namespace {

// The model of `run` (config, genes filled in) with `weights`; `source` names them in errors.
void buildModel(Stage1Run& run, const core::NamedTensors& weights, const std::string& source, const c10::Device& device) {
  run.model = std::make_shared<models::Autoencoder>(static_cast<int64_t>(run.genes.size()), run.config.model,
                                                    run.config.bottleneck, run.config.head);
  core::loadStateDict(*run.model, weights, true, source);
  run.model->to(device);
  run.model->eval();
  run.tokens = tokenizerOptions(run.config.data, static_cast<uint64_t>(run.config.seed));
}

}  // namespace

std::string checkpointWeights(const std::string& checkpoint) {
  const auto ema = fs::path(checkpoint) / "ema.safetensors";
  return (fs::exists(ema) ? ema : fs::path(checkpoint) / "model.safetensors").string();
}

void requireRunDirectory(const std::string& run, const std::string& option) {
  if (isExportFile(run)) {
    throw std::invalid_argument(option + " needs the cell split of a run directory, and " + run +
                                " is an exported file (which holds none): pass the run directory, or select all cells");
  }
}

Stage1Run loadStage1Run(const ExportFile& file, const c10::Device& device) {
  Stage1Run run;
  core::loadConfigText(run.config, file.meta("autoencoder.config"), file.path + " [autoencoder.config]");
  try {
    run.genes = nlohmann::json::parse(file.meta("autoencoder.genes")).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(file.path + ": autoencoder.genes is not a JSON list of gene names: " + e.what());
  }
  if (run.genes.empty()) throw std::invalid_argument(file.path + ": autoencoder.genes lists no genes");
  run.checkpoint = file.path;
  const auto weights = file.tensorsUnder("autoencoder.");
  buildModel(run, weights.tensors, weights.source, device);
  return run;
}

Stage1Run loadStage1Run(const std::string& run_dir, const c10::Device& device) {
  if (isExportFile(run_dir)) return loadStage1Run(readExport(run_dir), device);
  Stage1Run run;
  const auto config_path = (fs::path(run_dir) / "config.yaml").string();
  if (!fs::exists(config_path)) {
    throw std::invalid_argument(run_dir + " has no config.yaml: pass the directory of a `latentcell train` run "
                                "or a file written by `latentcell export`");
  }
  if (core::peekConfigString(config_path, "task") != "stage1") {
    throw std::invalid_argument(run_dir + " is not a stage-1 run (its config.yaml says task: " +
                                core::peekConfigString(config_path, "task") + "); pass an autoencoder run");
  }
  core::loadConfigFile(run.config, config_path);
  run.genes = readGenes(run_dir);
  const auto latest = CheckpointManager(run_dir, 1).latest();
  if (!latest) throw std::invalid_argument(run_dir + " has no checkpoint yet; train it first");
  run.checkpoint = *latest;
  const auto weights = checkpointWeights(run.checkpoint);
  buildModel(run, core::loadSafetensors(weights).tensors, weights, device);
  return run;
}

Stage1Data loadRunData(const Stage1Run& run, const std::string& data_path, const std::string& matrix) {
  Stage1DataConfig c = run.config.data;
  c.path = data_path;
  if (!matrix.empty()) c.matrix = matrix;
  return loadStage1Data(c, run.genes, run.model->needsIntegerCounts());
}

std::vector<int64_t> runCells(const std::string& run_dir, const std::string& which, int64_t cells) {
  if (which == "all") {
    std::vector<int64_t> rows(static_cast<size_t>(cells));
    for (int64_t i = 0; i < cells; ++i) rows[static_cast<size_t>(i)] = i;
    return rows;
  }
  requireRunDirectory(run_dir, "--cells " + which);
  const auto split = data::loadSplit(run_dir, cells);
  if (which == "train") return split.indices(data::SplitPart::Train);
  if (which == "val") return split.indices(data::SplitPart::Val);
  throw std::invalid_argument("--cells " + which + " is not one of all, train, val");
}

void forEachBatch(const Stage1Run& run, const Stage1Data& data, const std::vector<int64_t>& rows, int64_t batch_size,
                  const c10::Device& device,
                  const std::function<void(const std::vector<int64_t>&, const models::CellBatch&)>& fn) {
  torch::NoGradGuard no_grad;
  for (size_t start = 0; start < rows.size(); start += static_cast<size_t>(batch_size)) {
    const auto end = std::min(rows.size(), start + static_cast<size_t>(batch_size));
    std::vector<int64_t> chunk(rows.begin() + static_cast<long>(start), rows.begin() + static_cast<long>(end));
    fn(chunk, makeCellBatch(data, chunk, run.tokens, device));
  }
}

}  // namespace latentcell::train
