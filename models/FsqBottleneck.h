// Finite scalar quantisation (Mentzer et al. 2023; ExpressionVAE sec. 3.1; notes sec. 2).
//
// Each latent token is projected to d = levels.size() dimensions, each dimension is squashed to a
// bounded range with a shifted tanh and rounded to one of L_i values, and the result is projected
// back to the input width for the decoder. Per dimension with L levels (eps = 1e-3):
//
//   half = (L - 1) (1 - eps) / 2,  offset = 0.5 if L even else 0,  shift = atanh(offset / half)
//   bound(z) = tanh(z + shift) * half - offset          (lies strictly inside the L rounding cells)
//   zq = round_ste(bound(z)) / (L // 2),  round_ste(x) = x + stopgrad(round(x) - x)
//
// so zq is on the grid {(k - L//2) / (L//2) : k = 0 .. L-1} and the gradient passes straight
// through the rounding (d zq / d z = bound'(z) / (L // 2)). The code of a token is the mixed-radix
// number of its digits k_i = zq_i (L_i // 2) + L_i // 2 with basis [1, L_0, L_0 L_1, ...]; the
// inverse reads the digits back. There is no codebook to collapse, but code usage still matters to
// a discrete prior, so forward() reports the perplexity exp(H) of the batch's code histogram
// (K = prod L_i when every code is used equally, 1 when one code takes everything).
//
// Two training-only options for small latents, both off by default (the paper's FSQ):
// - `dither` p: in training each value is, with probability p, not rounded but moved by uniform
//   noise of one rounding cell (Stable Codec's quantisation dropout). The straight-through
//   gradient cannot see rounding error, so nothing pushes the encoder to spread values over the
//   levels; noise of the same size does.
// - `bound_penalty` w: adds w * sum(z^2) over tokens and dimensions, averaged over cells, on the
//   values before the tanh. A dimension driven into saturation gets no gradient through tanh and
//   stays there (a dead dimension); the penalty's gradient does not vanish, so it pulls it back.
// Codes, evaluation and decodeInput always use the rounded grid. On the real screen at 8 tokens x 4
// (docs/results.md, stage 1) the penalty closed most of the gap to the Gaussian bottleneck and
// dither 0.5 widened it, with or without the penalty.
#pragma once

#include "models/Bottleneck.h"

#include <torch/nn/modules/linear.h>

#include <optional>
#include <vector>

namespace latentcell::models {

struct FsqBottleneckOptions {
  int64_t in_dim = 0;
  std::vector<int64_t> levels = {8, 8, 8};
  double dither = 0.0;         // training: probability of noise instead of rounding, per value
  double bound_penalty = 0.0;  // weight of sum(z^2) before the tanh
};

class FsqBottleneck : public Bottleneck {
 public:
  explicit FsqBottleneck(const FsqBottleneckOptions& options);

  // The quantiser alone, on projected values z [..., d] -> zq [..., d] on the grid.
  at::Tensor quantize(const at::Tensor& z) const;
  // What forward() feeds the decoder in training: quantize(z), except that each value is, with
  // probability options().dither, its bounded value plus U(-0.5, 0.5) of a rounding cell.
  at::Tensor quantizeDithered(const at::Tensor& z, std::optional<at::Generator> generator = std::nullopt) const;
  // zq [..., d] on the grid -> code indices [...] int64, and back.
  at::Tensor codesFromValues(const at::Tensor& zq) const;
  at::Tensor valuesFromCodes(const at::Tensor& codes) const;

  BottleneckOutput forward(const at::Tensor& h) override;  // latent = code indices [batch, tokens]
  at::Tensor decodeInput(const at::Tensor& latent) override;  // code indices -> z
  int64_t outputDim() const override { return options_.in_dim; }
  int64_t latentDim() const override { return 0; }
  bool discrete() const override { return true; }
  int64_t codebookSize() const override { return codebook_size_; }
  const char* kind() const override { return "fsq"; }

  const FsqBottleneckOptions& options() const { return options_; }

  torch::nn::Linear project_in{nullptr}, project_out{nullptr};  // in_dim -> d -> in_dim

 private:
  // Levels and mixed-radix place values [1, L_0, L_0 L_1, ...] as int64 [d] tensors. Not buffers:
  // Module::to(dtype) would turn them into floats, which cannot hold large place values exactly.
  at::Tensor levelsOn(const c10::Device& device) const;
  at::Tensor basisOn(const c10::Device& device) const;
  // tanh(z + shift) * half - offset [..., d]: in level units, inside the L_i rounding cells.
  at::Tensor bound(const at::Tensor& z) const;
  at::Tensor halfWidth(const at::Tensor& like) const;  // L_i // 2 [d] in like's dtype

  FsqBottleneckOptions options_;
  std::vector<int64_t> basis_;
  int64_t codebook_size_ = 1;
};

// exp(entropy) of the empirical distribution of `codes` (any shape, int64 in [0, codebook_size)),
// a float64 scalar on their device (no host sync, so it can be logged every step).
at::Tensor codePerplexity(const at::Tensor& codes, int64_t codebook_size);

}  // namespace latentcell::models
