// JiT endpoint transport prior (SCALE sec. 3.3-3.4; JiT = Li & He 2025; notes sec. 5).
//
// Tokens are the cells of a set: a training example pairs a set of control cells Z0 with a set
// of perturbed cells Z1 of the same context ([sets, cells, width]; a cell's latent [L, d] enters
// flattened, width = L d). The path is
//
//   z_t = (1 - t) x0 + t Z1,  t = sigmoid(N(t_mean, t_std^2))
//
// from x0 = Z0 (SCALE), x0 = eps + control_scale Z0 (Gaussian-control mixed start), or x0 = eps
// (JiT noise-to-data). The network predicts the endpoint (x-pred) or the velocity (v-pred), and
// the loss compares endpoints (x-loss) or velocities (v-loss); the conversions are JiT's, on z_t:
//
//   v = (x - z_t) / max(1 - t, t_clip)        x = z_t + max(1 - t, t_clip) v
//
// exact inverses of each other; the v target is the conversion of x1, i.e. x1 - x0 whenever
// 1 - t >= t_clip. x-pred/x-loss is SCALE's default, v-pred/v-loss is plain flow matching.
//
// Conditions (cell type, perturbation, batch) are embedded per column and pooled by a learned seed
// query (attention over the condition tokens) into one token that joins the cell tokens in every
// block and is dropped after it; the timestep drives adaLN. No positional embedding: the prior is
// permutation-equivariant in the cells. Optionally a DeepSets summary rho(mean_i phi(h_i)) of
// the embedded set is fused into every cell token (h_i + psi([h_i, s]), psi zero-initialised).
// Sampling: Heun (50 steps, the last one Euler) from x0 to t = 1, with the velocity of the
// prediction; the output layer starts at zero, so an untrained x-predictor returns zeros.
#pragma once

#include "core/Attention.h"
#include "core/FeedForward.h"
#include "priors/DitBackbone.h"
#include "priors/Prior.h"
#include "priors/PriorConfig.h"

namespace latentcell::priors {

// JiT conversions; t [batch] broadcasts over [batch, cells, width].
at::Tensor jitVelocityFromX(const at::Tensor& x, const at::Tensor& z, const at::Tensor& t, double t_clip);
at::Tensor jitXFromVelocity(const at::Tensor& v, const at::Tensor& z, const at::Tensor& t, double t_clip);

// A learned query attending over the condition tokens: [batch, keys, dim] -> [batch, 1, dim].
class SeedAttentionImpl : public torch::nn::Module {
 public:
  SeedAttentionImpl(int64_t dim, int64_t heads);
  at::Tensor forward(const at::Tensor& tokens);

  at::Tensor query;  // [1, 1, dim]
  core::MultiHeadAttention attn{nullptr};
};
TORCH_MODULE(SeedAttention);

// h_i + psi([h_i, rho(mean_j phi(h_j))]) over the cells of each set: [batch, cells, dim].
class DeepSetsSummaryImpl : public torch::nn::Module {
 public:
  explicit DeepSetsSummaryImpl(int64_t dim);
  at::Tensor forward(const at::Tensor& h);

  core::Mlp phi{nullptr}, rho{nullptr};
  torch::nn::Linear fuse{nullptr};  // 2 dim -> dim, zero-initialised
};
TORCH_MODULE(DeepSetsSummary);

class JitTransportPrior : public Prior {
 public:
  JitTransportPrior(const PriorConfig& config, int64_t width, const std::vector<ConditionColumnSpec>& columns);

  const char* kindName() const override { return "jit"; }
  bool predictsX() const { return config_.prediction == "x"; }
  bool needsControl() const { return config_.start != "noise"; }

  // The network output for z [batch, cells, width] at t [batch]: an endpoint or a velocity.
  at::Tensor network(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids, const at::Tensor& null = {});
  // Velocity of the sampling ODE at (z, t), converting an endpoint prediction.
  at::Tensor velocity(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids);

  // Training times [batch]: sigmoid(N(t_mean, t_std^2)).
  at::Tensor sampleTimes(int64_t batch, std::optional<at::Generator> gen = std::nullopt) const;
  // The path start for control sets [batch, cells, width] (undefined for start: noise, then
  // `shape` gives [batch, cells, width]).
  at::Tensor start(const at::Tensor& control, c10::IntArrayRef shape, std::optional<at::Generator> gen) const;
  // The loss with the randomness given: x0 the path start, x1 the perturbed sets, t [batch].
  // Returns loss (per the variant), x_mse and v_mse.
  NamedLosses lossAt(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& ids, const at::Tensor& t,
                     const at::Tensor& null);

  NamedLosses loss(const PriorBatch& batch, std::optional<at::Generator> gen = std::nullopt) override;
  // request.control [n, cells, width] (start control or mixed); start noise takes the set size
  // from request.control when given, else from jit.cells.
  at::Tensor sample(const SampleRequest& request, int64_t n, const SamplerOptions& options, at::Generator& gen) override;
  SamplerOptions defaultSamplerOptions() const override;

  DitBackbone backbone{nullptr};
  SeedAttention seed{nullptr};
  DeepSetsSummary set_summary{nullptr};

 private:
  JitConfig config_;
};

}  // namespace latentcell::priors
