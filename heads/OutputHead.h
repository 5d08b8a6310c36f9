// The common interface of stage-1 output heads (notes sec. 3; ExpressionVAE sec. 3.1).
//
// A head turns the decoder's per-gene representation H [batch, genes, width] into a distribution
// over the counts of those genes. Training needs its loss, evaluation its log-likelihood and
// generation its prediction, so every head offers all three behind one interface and the
// autoencoder never knows which head it carries. Heads are experimental axes users sweep
// (ExpressionVAE sec. 4.2), so the interface fixes what they share and nothing else:
//
// - inputs are raw counts of the decoded genes; a head that works in log1p-normalised space
//   (hurdle, MSE) normalises them itself with the observed library size, so the data layer feeds
//   every head the same batch;
// - losses are summed over genes and averaged over cells (scVI's convention, notes sec. 3), so that
//   a bottleneck's KL weight means the same thing whichever head is used;
// - predict() says in which space its values are (counts or log1p-normalised), and `mean` is a
//   differentiable function of H, which is what the optional MMD term (SCALE eq. 13) compares with
//   the real cells of the batch, for any head;
// - distribution math runs in at least float32: under autocast the projections come out in bf16,
//   which is too coarse for a softmax over thousands of genes or for lgamma.
#pragma once

#include "data/AnnData.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::heads {

// `sample` draws from the head's predictive distribution, `mean` returns its expectation
// (ExpressionVAE's nb-sample / nb-deter pair). `log1p_mean` returns the expectation of the
// log1p-normalised value, E[log1p(X / l * target_sum)] with l the observed library size, always in
// ValueSpace::LogNormalized: the point prediction that minimises squared error in the space where
// reconstruction is scored. For a count head log1p of the mean is far above this (Jensen) on sparse
// genes; for the hurdle and MSE heads, which predict in that space already, it equals `mean`.
enum class PredictMode { Sample, Mean, Log1pMean };
// "sample" / "mean" / "log1p_mean"; anything else throws std::invalid_argument naming the value and
// the choices.
PredictMode parsePredictMode(const std::string& name);

// The space of a head's predictions: raw counts, or log1p(x / library * target_sum).
enum class ValueSpace { Counts, LogNormalized };

// Per-batch inputs besides H and the counts. Which fields a head needs depends on its kind and
// options; a missing one is a std::invalid_argument naming the head and the field.
struct HeadContext {
  at::Tensor gene_ids;       // [genes] or [batch, genes] int64: the decoded genes, ids 1..n_genes
                             // (data/Tokenizer.h), for gene-specific parameters
  at::Tensor library;        // [batch]: observed library size, the sum of raw counts over all genes
  at::Tensor cell_features;  // [batch, cell_dim]: per-cell input of a modeled library size
};

struct HeadLoss {
  at::Tensor total;  // scalar, what the optimiser minimises
  // The parts, unweighted, for logging (e.g. "nb_nll", "library_kl", "mmd").
  std::vector<std::pair<std::string, at::Tensor>> terms;
};

// The optional MMD term between the batch's reconstructions and its real cells, both in
// log1p-normalised space (SCALE eq. 13 and 16, RBF kernel summed over the bandwidths).
struct MmdOptions {
  double weight = 0.0;  // 0 = off
  std::vector<double> sigmas;
};

class OutputHead : public torch::nn::Module {
 public:
  ~OutputHead() override;

  // decoder_out [batch, genes, width], counts [batch, genes] raw counts of the same genes.
  // The head's own loss plus, when enabled, weight * MMD.
  HeadLoss loss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context);

  // log p(counts | H) per cell and gene [batch, genes], under the head's predictive distribution
  // (for the hurdle and MSE heads a density over the log1p-normalised magnitude).
  virtual at::Tensor logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                                   const HeadContext& context) = 0;

  // [batch, genes] in predictionSpace(mode). `generator` drives `sample` (the global one when
  // absent). `log1p_mean` needs context.library.
  virtual at::Tensor predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                             std::optional<at::Generator> generator = std::nullopt) = 0;

  // The space of `sample` and `mean` predictions.
  virtual ValueSpace valueSpace() const = 0;
  ValueSpace predictionSpace(PredictMode mode) const {
    return mode == PredictMode::Log1pMean ? ValueSpace::LogNormalized : valueSpace();
  }
  // The head's name in configs and messages ("nb", "hurdle", "ce_quant", "mse").
  virtual const char* kind() const = 0;
  // True when the head models raw integer counts (a count head on normalised data is an error).
  virtual bool needsIntegerCounts() const = 0;

  // Fits the state a head takes from the training counts before training (ce-quant bins, the
  // modeled library-size prior) and, for heads that model integer counts, rejects data that are
  // not raw counts. The state is saved with the model as buffers, so a resumed or loaded model must
  // not call it again; code that feeds new data to a loaded model checks it with
  // checkIntegerCounts when needsIntegerCounts().
  virtual void fitToData(const data::CsrMatrix& counts) {}

  void setMmd(MmdOptions options);
  double targetSum() const { return target_sum_; }

 protected:
  explicit OutputHead(double target_sum) : target_sum_(target_sum) {}

  // The head's own loss terms (total and named parts), without the MMD term.
  virtual HeadLoss headLoss(const at::Tensor& decoder_out, const at::Tensor& counts,
                            const HeadContext& context) = 0;

  // Checks decoder_out [batch, genes, width] against counts [batch, genes] (when defined).
  void checkShapes(const at::Tensor& decoder_out, const at::Tensor& counts) const;
  // A projection's output in float32 when it is in a reduced precision (bf16/fp16), else unchanged.
  static at::Tensor atLeastFloat32(const at::Tensor& t);
  // context.library, or a std::invalid_argument saying that `why` needs it.
  const at::Tensor& requireLibrary(const HeadContext& context, const char* why) const;

  double target_sum_;
  MmdOptions mmd_;
};

// log1p(counts / library * target_sum) per cell; counts [batch, genes], library [batch].
// Cells with an empty library stay zero.
at::Tensor logNormalize(const at::Tensor& counts, const at::Tensor& library, double target_sum);

// target_sum / library per cell [batch], 0 for an empty cell (its log1p-normalised values are 0).
at::Tensor log1pScale(const at::Tensor& library, double target_sum);

// Throws std::invalid_argument when `counts` holds a negative or non-integer value, naming the
// first one (cell, gene), `source` and `head`, and saying that the head wants raw UMI counts.
void checkIntegerCounts(const data::CsrMatrix& counts, const std::string& source, const std::string& head);

}  // namespace latentcell::heads
