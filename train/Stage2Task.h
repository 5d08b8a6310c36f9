// Stage 2: training a prior over the latents of a frozen stage-1 autoencoder, and loading a trained
// prior back with everything generation needs.
//
// A stage-2 run directory holds, besides the trainer's files:
//   vocabularies.json       the condition columns' ids (the control label first)
//   split.json              train / val / test cells of the data file (test = the held-out rules)
//   latent_stats.safetensors the per-coordinate mean and std of the training latents: continuous
//                           priors learn standardised latents (scLDM trains its flow on normalised
//                           VAE latents), and generation maps samples back before decoding
//   library_sizes.json      log-normal fits of the library size per condition combination, with
//                           fallbacks, drawn from at generation (the heads need a library size)
//   autoencoder.json        which autoencoder the latents came from (run, checkpoint, a CRC-32C of
//                           its weights), so a prior is never decoded by another autoencoder
//
// Latents come from `latentcell encode` (data.latents) or, when that is empty, from encoding the
// data with the frozen autoencoder once at the start (deterministic latents: Gaussian means or
// FSQ codes, so once equals every step). The sequence priors (ar, mdlm, flow) train on random
// cells; the transport prior (jit) on pairs of sets: set_size cells of one (perturbation, context)
// and set_size control cells of the same context, context = the other condition columns (SCALE).
//
// Fine-tuning (finetune.init_from) starts from another prior run's weights: tensors of the same
// name and shape are copied; learned condition tables keep the rows of labels both vocabularies
// share (and the null row) and initialise the new ones; the backbone can be frozen.
#pragma once

#include "core/Config.h"
#include "data/Conditions.h"
#include "priors/Prior.h"
#include "priors/PriorConfig.h"
#include "train/Stage1Task.h"
#include "train/Trainer.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace latentcell::train {

struct Stage2DataConfig : core::ConfigSection {
  std::string path;
  std::string latents;
  std::vector<std::string> conditions;
  std::string perturbation_column = "perturbation";
  std::string control = "non-targeting";
  std::string exclude_column;
  std::vector<std::string> exclude_values;
  std::vector<std::string> holdout;
  double val_fraction = 0.05;
  int64_t split_seed = 0;
  int64_t batch_size = 256;
  int64_t set_size = 64;
  int64_t eval_batches = 4;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct FinetuneConfig : core::ConfigSection {
  std::string init_from;
  bool freeze_backbone = false;
  void visit(core::ConfigVisitor& v) override;
};

struct Stage2Config : core::ConfigSection {
  std::string task = "stage2";
  int64_t seed = 0;
  std::string device = "auto";
  std::string run_dir = "runs/stage2";
  std::string autoencoder;
  Stage2DataConfig data;
  priors::PriorConfig prior;
  FinetuneConfig finetune;
  TrainerConfig trainer;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

// Log-normal library sizes per condition combination (ids joined by ','), fitted on training cells,
// with fallbacks for combinations never trained on: the perturbation alone, the context alone, all.
struct LibrarySizeModel {
  struct Fit {
    double mean = 0, std = 0;  // of log(library)
    int64_t cells = 0;
  };
  std::map<std::string, Fit> by_combination, by_perturbation, by_context;
  Fit overall;

  static LibrarySizeModel fit(const at::Tensor& library, const at::Tensor& ids, int64_t perturbation_key);
  const Fit& lookup(const std::vector<int64_t>& ids, int64_t perturbation_key) const;
  void save(const std::string& path) const;
  static LibrarySizeModel load(const std::string& path);
  // The JSON text save() writes; `source` names it in errors.
  static LibrarySizeModel parse(const std::string& json_text, const std::string& source);
};

TrainSummary runStage2Task(Stage2Config config, bool resume, const std::vector<std::string>& command_line = {});

// A trained prior with its autoencoder, loaded for generation.
struct Stage2Run {
  Stage2Config config;
  std::string run_dir;
  std::vector<data::Vocabulary> vocabularies;
  int64_t perturbation_key = 0;  // index of data.perturbation_column among the conditions
  std::shared_ptr<priors::Prior> prior;
  Stage1Run autoencoder;
  at::Tensor latent_mean, latent_std;  // [L, d] (continuous latents), undefined for codes
  LibrarySizeModel library;
  std::string checkpoint;  // the prior's checkpoint directory, or the export file
};

// Loads RUN_DIR's prior (EMA weights when kept) and its autoencoder: the one recorded in the run,
// or `autoencoder_override`, which must be the same autoencoder (weights checksum), else an error.
// RUN_DIR may be a stage-2 export (train/Export.h), which holds its autoencoder (no override).
Stage2Run loadStage2Run(const std::string& run_dir, const c10::Device& device, const std::string& autoencoder_override = "");

// Rows of a data file (its obs) that a prior's cells and split index: all but those data.exclude_*
// drops, in file order.
std::vector<int64_t> priorCellRows(const Stage2Config& config, const data::DataFrame& obs, const std::string& source);

// The rows of `obs`, the prior run's data file, in the run's training split (not validation, not
// held out): the cells a baseline of the same split may learn from.
std::vector<int64_t> priorTrainingRows(const std::string& run_dir, const data::DataFrame& obs, const std::string& source);

// Prior latents -> the autoencoder's latent form (undoes the standardisation of continuous latents).
at::Tensor toAutoencoderLatent(const Stage2Run& run, const at::Tensor& latents);

}  // namespace latentcell::train
