// PCA baseline with a randomized SVD (see PcaBaseline.h).
#include "models/PcaBaseline.h"

#include "core/Random.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace latentcell::models {

void PcaConfig::visit(core::ConfigVisitor& v) {
  v.field("components", components, "number of principal components k (the latent size)");
  v.field("oversampling", oversampling, "extra random sketch columns of the randomized SVD");
  v.field("power_iterations", power_iterations, "subspace (power) iterations of the randomized SVD");
  v.field("seed", seed, "seed of the random sketch");
}

void PcaConfig::validate() const {
  if (components <= 0) reject("components", "must be positive");
  if (oversampling < 0) reject("oversampling", "must be >= 0");
  if (power_iterations < 0) reject("power_iterations", "must be >= 0");
  if (seed < 0) reject("seed", "must be >= 0");
}

Svd randomizedSvd(const at::Tensor& a, int64_t rank, int64_t oversampling, int64_t power_iterations,
                  at::Generator generator) {
  if (a.dim() != 2) throw std::invalid_argument("randomizedSvd: expected a matrix");
  const int64_t m = a.size(0), n = a.size(1);
  if (rank <= 0 || rank > std::min(m, n)) {
    throw std::invalid_argument(fmt::format("randomizedSvd: rank {} must be in 1..min({}, {})", rank, m, n));
  }
  const int64_t sketch = std::min(rank + oversampling, std::min(m, n));
  auto omega = at::randn({n, sketch}, generator, a.options());                  // [n, l]
  auto q = std::get<0>(at::linalg_qr(at::matmul(a, omega)));                    // [m, l]
  for (int64_t i = 0; i < power_iterations; ++i) {
    auto w = std::get<0>(at::linalg_qr(at::matmul(a.t(), q)));                  // [n, l]
    q = std::get<0>(at::linalg_qr(at::matmul(a, w)));                           // [m, l]
  }
  auto b = at::matmul(q.t(), a);                                                // [l, n]
  auto [ub, s, vh] = at::linalg_svd(b, /*full_matrices=*/false);                // [l, l], [l], [l, n]
  auto u = at::matmul(q, ub.narrow(1, 0, rank));                                // [m, k]
  s = s.narrow(0, 0, rank);
  vh = vh.narrow(0, 0, rank);                                                   // [k, n]
  // Sign convention: each right singular vector's largest-magnitude entry is positive.
  auto pivot = vh.abs().argmax(1, /*keepdim=*/true);                            // [k, 1]
  auto sign = at::where(vh.gather(1, pivot) < 0, -1.0, 1.0).to(a.scalar_type());  // [k, 1]
  return {u * sign.t(), s, vh * sign};
}

PcaBaseline::PcaBaseline(int64_t num_genes, const PcaConfig& config) : num_genes_(num_genes), config_(config) {
  core::validateConfig(config_);
  if (num_genes <= 0) throw std::invalid_argument("PcaBaseline: num_genes must be positive");
  if (config_.components > num_genes) {
    throw core::ConfigError(fmt::format("pca.components ({}) cannot exceed the number of genes ({})",
                                        config_.components, num_genes));
  }
  mean = register_buffer("mean", at::zeros({num_genes}));
  components = register_buffer("components", at::zeros({config_.components, num_genes}));
  singular_values = register_buffer("singular_values", at::zeros({config_.components}));
  explained_variance = register_buffer("explained_variance", at::zeros({config_.components}));
  fitted_cells = register_buffer("fitted_cells", at::zeros({}, at::kLong));
}

void PcaBaseline::fit(const at::Tensor& x) {
  if (x.dim() != 2 || x.size(1) != num_genes_) {
    throw std::invalid_argument(fmt::format("PCA fit: expected [cells, {}] log1p-normalised values, got {}",
                                            num_genes_, fmt::format("{}", x.sizes())));
  }
  const int64_t cells = x.size(0);
  if (cells < std::max<int64_t>(config_.components, 2)) {
    throw std::invalid_argument(fmt::format(
        "PCA fit: {} training cells are too few for {} components (need at least max(k, 2))", cells,
        config_.components));
  }
  auto xf = x.to(mean.scalar_type());
  auto mu = xf.mean(0);                                                         // [G]
  auto gen = core::makeGenerator(static_cast<uint64_t>(config_.seed), x.device());
  auto svd = randomizedSvd(xf - mu, config_.components, config_.oversampling, config_.power_iterations, gen);
  at::NoGradGuard no_grad;
  mean.copy_(mu);
  components.copy_(svd.vh);
  singular_values.copy_(svd.s);
  explained_variance.copy_(svd.s.pow(2) / static_cast<double>(cells - 1));
  fitted_cells.fill_(cells);
}

bool PcaBaseline::fitted() const { return fitted_cells.item<int64_t>() > 0; }

void PcaBaseline::requireFitted(const char* what) const {
  if (!fitted()) throw std::runtime_error(std::string("PCA ") + what + ": the baseline has not been fitted (call fit or load a fitted state)");
}

at::Tensor PcaBaseline::project(const at::Tensor& x) {
  requireFitted("project");
  return at::matmul(x.to(mean.scalar_type()) - mean, components.t());  // [cells, k]
}

at::Tensor PcaBaseline::reconstruct(const at::Tensor& z) {
  requireFitted("reconstruct");
  return at::matmul(z, components) + mean;  // [cells, G]
}

at::Tensor PcaBaseline::encode(const CellBatch& batch) {
  auto x = denseInput(batch, num_genes_, InputTransform::Log1pCp10k, "PCA encoder");  // [b, G]
  return project(x).unsqueeze(1);                                                    // [b, 1, k]
}

at::Tensor PcaBaseline::decode(const at::Tensor& latent, const at::Tensor& gene_ids) {
  checkDecodeInputs(latent, gene_ids, 1, latentDim(), num_genes_, "PCA decoder");
  auto recon = reconstruct(latent.squeeze(1));                                       // [b, G]
  recon = at::cat({at::zeros({recon.size(0), 1}, recon.options()), recon}, 1);      // [b, G + 1], PAD = 0
  auto values = gene_ids.dim() == 1 ? recon.index_select(1, gene_ids) : recon.gather(1, gene_ids);  // [b, n]
  return values.unsqueeze(-1);                                                       // [b, n, 1]
}

}  // namespace latentcell::models
