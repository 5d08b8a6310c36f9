// The conditioning of every prior: condition ids -> one vector c per sample (DiT adaLN input) or
// one token per condition column (the transport prior's seed attention), with the null
// condition classifier-free guidance needs (notes sec. 4-5).
//
//   c = t_emb(t * time_scale) + sum_k emb_k(id_k)
//
// A column is either a learned label table with one extra row for the null label (DiT's
// LabelEmbedder), or an external table (e.g. ESM2 vectors of the targeted gene, one row per
// vocabulary label, kept as a buffer so a checkpoint generates without the embedding file)
// projected by a learned Linear, whose null condition is a learned vector. External vectors for
// labels absent from the file (the control, typically) either are an error or use the null
// vector, by option.
//
// Which keys are null is always an explicit [batch, keys] bool mask, so training (condition
// dropout), guidance (all-null or one-key-at-a-time passes) and tests share one code path. Ids
// below zero are also null, so callers can leave a column unspecified. Condition dropout is joint
// (one Bernoulli per sample, shared by all keys: scLDM) or additive (one per sample and key:
// CFGen).
#pragma once

#include "core/TimestepEmbedding.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace latentcell::data {
class EmbeddingTable;
}

namespace latentcell::priors {

// One condition column (an obs column such as `perturbation`) as a prior sees it.
struct ConditionColumnSpec {
  std::string name;                 // the obs column
  std::vector<std::string> labels;  // the vocabulary: id -> label
  // External embedding: [labels, ext_dim] float rows, one per label; undefined for a learned table.
  at::Tensor external;
  // Per label, 1 when the external table had no vector for it (it then uses the null vector).
  std::vector<uint8_t> missing;
};

// The external column of `name` whose rows are `table`'s vectors for `labels`. Labels absent from
// the table are an error listing them unless `missing_as_null`, which lets them use the null vector.
ConditionColumnSpec externalColumn(const std::string& name, const std::vector<std::string>& labels,
                                   const data::EmbeddingTable& table, bool missing_as_null);

enum class DropoutMode { Joint, Additive };
DropoutMode parseDropoutMode(const std::string& name);

struct ConditionEncoderOptions {
  int64_t dim = 0;
  bool timestep = true;     // add a timestep embedding (priors without time: false)
  double time_scale = 1.0;  // the embedding sees t * time_scale
  double dropout = 0.0;     // condition dropout probability during training
  DropoutMode dropout_mode = DropoutMode::Joint;
};

class ConditionColumnImpl : public torch::nn::Module {
 public:
  ConditionColumnImpl(const ConditionColumnSpec& spec, int64_t dim);
  // ids [batch] int64, null [batch] bool -> [batch, dim]; ids < 0 are null too.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& null);

  bool isExternal() const { return external_; }
  int64_t vocabularySize() const { return vocab_; }

  at::Tensor table;           // learned: [vocab + 1, dim], the last row is the null label
  at::Tensor vectors;         // external (buffer): [vocab, ext_dim]
  at::Tensor present;         // external (buffer): [vocab] bool, false = label had no vector
  torch::nn::Linear proj{nullptr};  // external: ext_dim -> dim
  at::Tensor null_embedding;  // external: [dim], the learned null condition

 private:
  bool external_ = false;
  int64_t vocab_ = 0;
};
TORCH_MODULE(ConditionColumn);

class ConditionEncoderImpl : public torch::nn::Module {
 public:
  ConditionEncoderImpl(const ConditionEncoderOptions& options, const std::vector<ConditionColumnSpec>& columns);

  int64_t keys() const { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  const ConditionEncoderOptions& options() const { return options_; }

  // ids must be [batch, keys] int64 with every id < its column's vocabulary size; throws
  // std::invalid_argument naming the column, the id and the vocabulary size otherwise.
  void checkIds(const at::Tensor& ids) const;

  // Per-column embeddings [batch, keys, dim]; null [batch, keys] bool (undefined = none null).
  at::Tensor embedKeys(const at::Tensor& ids, const at::Tensor& null = {});
  // c = t_emb + sum of the column embeddings: [batch, dim]. t [batch] is required exactly when
  // the encoder has a timestep embedding.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& null = {}, const at::Tensor& t = {});
  // The timestep part alone, t_emb(t * time_scale): [batch, dim].
  at::Tensor timeEmbedding(const at::Tensor& t);

  // The training-time dropout mask [batch, keys] bool on `device` (true = replaced by null),
  // drawn with `gen` (the default generator when absent) according to the dropout mode.
  at::Tensor sampleDropout(int64_t batch, const c10::Device& device,
                           std::optional<at::Generator> gen = std::nullopt) const;

  core::TimestepEmbedding time_embed{nullptr};
  torch::nn::ModuleList columns{nullptr};

 private:
  ConditionEncoderOptions options_;
  std::vector<std::string> names_;
  std::vector<ConditionColumn> column_modules_;
  std::vector<int64_t> vocab_sizes_;
};
TORCH_MODULE(ConditionEncoder);

}  // namespace latentcell::priors
