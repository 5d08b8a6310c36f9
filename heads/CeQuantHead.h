// The ce-quant head: a categorical over quantile bins of raw counts (ExpressionVAE sec. 3.1,
// "Quantile binning for the categorical head"; notes sec. 3).
//
// Bin layout (ExpressionVAE's 20 bins with the defaults):
//   bins 0 .. S-1        singletons for counts 0 .. S-1 (S = 8: bin 0 is exactly zero)
//   next Q bins          [S, t_0) split at quantiles of the training counts in that range
//                        (Q = 7 over 8..63): equal mass per bin, so the bins get wider where counts
//                        thin out ("progressively coarser resolution")
//   last T bins          fixed tail edges t_0 < t_1 < ... (64, 96, 128, 192, 256); the last bin
//                        is unbounded (>= 256)
// A count goes to the bin whose lower edge is the largest one not above it. Detokenisation maps a
// bin to the empirical mean of the training counts inside it, not to its midpoint, because
// within-bin distributions are heavy-tailed (most for the unbounded bin). A bin without training
// counts falls back to its midpoint (its lower edge when unbounded). Edges and means are buffers,
// so they reach checkpoints and safetensors with the weights.
//
// Loss: cross-entropy of the count's bin, summed over genes, averaged over cells. `sample` draws a
// bin from the softmax and emits its mean (ExpressionVAE's inference rule); `mean` returns the
// expected count sum_k p_k * mean_k.
#pragma once

#include "heads/OutputHead.h"

#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <vector>

namespace latentcell::heads {

struct CeQuantOptions {
  int64_t width = 0;
  int64_t singleton_bins = 8;
  int64_t quantile_bins = 7;
  std::vector<int64_t> tail_edges = {64, 96, 128, 192, 256};
  double target_sum = 1e4;  // for the MMD term's log1p normalisation

  int64_t numBins() const { return singleton_bins + quantile_bins + static_cast<int64_t>(tail_edges.size()); }
  // Throws std::invalid_argument when the layout cannot give strictly increasing integer edges.
  void check() const;
};

class CeQuantHead : public OutputHead {
 public:
  explicit CeQuantHead(const CeQuantOptions& options);

  // Fits the quantile edges and per-bin means on raw counts (every entry, zeros included).
  // Throws std::invalid_argument on a negative or non-integer count.
  void fitToData(const data::CsrMatrix& counts) override;

  // Bin index of each count [...] (int64), with the fitted edges.
  at::Tensor binOf(const at::Tensor& counts);
  at::Tensor logits(const at::Tensor& decoder_out);  // [batch, genes, bins]

  at::Tensor logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                           const HeadContext& context) override;
  at::Tensor predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                     std::optional<at::Generator> generator = std::nullopt) override;
  ValueSpace valueSpace() const override { return ValueSpace::Counts; }
  const char* kind() const override { return "ce_quant"; }
  bool needsIntegerCounts() const override { return true; }

  const CeQuantOptions& options() const { return options_; }

  torch::nn::Linear proj{nullptr};  // width -> bins
  at::Tensor bin_edges;              // [bins] buffer: lower edge of each bin (count units), increasing
  at::Tensor bin_means;              // [bins] buffer: mean training count inside each bin

 protected:
  HeadLoss headLoss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) override;

 private:
  void requireFitted();

  CeQuantOptions options_;
  bool fitted_ = false;
};

}  // namespace latentcell::heads
