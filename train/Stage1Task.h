// Stage 1: training an autoencoder on an h5ad file, and loading a trained one back from its run.
//
// A stage-1 run directory holds, besides the trainer's files, the gene vocabulary (genes.txt: the
// model's gene ids 1..G in order) and the cell split (split.json). Everything that reads a run
// (`encode`, `reconstruct`, the priors) maps new data onto that vocabulary, so a model never sees
// genes in another order than it was trained on, and a missing gene is an error that names it.
//
// Batches are small host-side gathers: the cells' CSR rows are tokenised (data/Tokenizer.h,
// expressed genes for the MCAB family) and also densified over the vocabulary (the decoder is
// queried for every gene and the head scores full counts, notes sec. 1). The observed library size
// is the cell's total over all genes of the file, not only the vocabulary's.
#pragma once

#include "core/Config.h"
#include "data/AnnData.h"
#include "data/Conditions.h"
#include "data/Tokenizer.h"
#include "heads/HeadConfig.h"
#include "models/Autoencoder.h"
#include "models/BottleneckConfig.h"
#include "train/Trainer.h"

#include <c10/core/Device.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace latentcell::train {

struct Stage1DataConfig : core::ConfigSection {
  std::string path;
  std::string matrix = "X";
  std::string exclude_column;
  std::vector<std::string> exclude_values;
  std::vector<std::string> holdout;
  std::vector<std::string> genes;
  int64_t context_length = 0;
  std::string truncation = "error";
  int64_t batch_size = 128;
  double val_fraction = 0.1;
  int64_t split_seed = 0;
  int64_t eval_cells = 2048;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct Stage1Config : core::ConfigSection {
  std::string task = "stage1";
  int64_t seed = 0;
  std::string device = "auto";
  std::string run_dir = "runs/stage1";
  Stage1DataConfig data;
  models::AutoencoderConfig model;
  models::BottleneckConfig bottleneck;
  heads::HeadConfig head;
  TrainerConfig trainer;
  void visit(core::ConfigVisitor& v) override;
};

// The cells of one h5ad file on a gene vocabulary.
struct Stage1Data {
  data::AnnData cells;          // obs and var of the kept cells; X = counts on the vocabulary
  std::vector<float> library;   // per kept cell: total count over all genes of the file
  std::vector<int64_t> rows;    // kept cells' rows in the file
};

// Reads `config.path`, drops excluded cells and maps the genes onto `vocabulary` (all var names of
// the file, in order, when empty). With `need_counts`, non-count values are an error naming the file.
Stage1Data loadStage1Data(const Stage1DataConfig& config, const std::vector<std::string>& vocabulary,
                          bool need_counts);

// Rows `rows` of `data` as a model batch on `device`.
models::CellBatch makeCellBatch(const Stage1Data& data, const std::vector<int64_t>& rows,
                                const data::TokenizerOptions& tokens, const c10::Device& device);

// Trains (or, with resume, continues) a stage-1 autoencoder; returns the trainer's summary. The
// command line is recorded in the checkpoints' run metadata.
TrainSummary runStage1Task(Stage1Config config, bool resume, const std::vector<std::string>& command_line = {});

struct ExportFile;

// A trained autoencoder loaded from its run directory (EMA weights when the run kept them) or from
// a file written by `latentcell export` (train/Export.h).
struct Stage1Run {
  Stage1Config config;
  std::vector<std::string> genes;
  std::shared_ptr<models::Autoencoder> model;
  std::string checkpoint;  // the checkpoint directory the weights came from, or the export file
  data::TokenizerOptions tokens;
};
// `run_dir` is a run directory or an exported file (of a stage-1 or a stage-2 run: the autoencoder).
Stage1Run loadStage1Run(const std::string& run_dir, const c10::Device& device);
// The autoencoder of a read export (its autoencoder.* tensors and metadata).
Stage1Run loadStage1Run(const ExportFile& file, const c10::Device& device);

// The weights file of a checkpoint directory that loading uses: ema.safetensors when the run kept
// EMA weights, else model.safetensors.
std::string checkpointWeights(const std::string& checkpoint);

// Throws std::invalid_argument, naming `option`, when `run` is an exported file: the option needs a
// run directory's records (the cell split), which an export does not hold.
void requireRunDirectory(const std::string& run, const std::string& option);

// Reads `data_path` for a loaded run: its exclusions and vocabulary, the run's matrix unless
// `matrix` is given, counts required when the model's head models counts.
Stage1Data loadRunData(const Stage1Run& run, const std::string& data_path, const std::string& matrix = "");

// Cells `which` ("all", "train" or "val") of `data` under the run's split; the split must have been
// made on the same cells (checked by count). train and val need a run directory (an export holds no
// split).
std::vector<int64_t> runCells(const std::string& run_dir, const std::string& which, int64_t cells);

// Encodes (or reconstructs) `rows` of `data` in batches; `fn` gets each batch's rows and batch.
void forEachBatch(const Stage1Run& run, const Stage1Data& data, const std::vector<int64_t>& rows, int64_t batch_size,
                  const c10::Device& device,
                  const std::function<void(const std::vector<int64_t>&, const models::CellBatch&)>& fn);

}  // namespace latentcell::train
