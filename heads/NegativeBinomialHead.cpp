// Negative binomial head (see NegativeBinomialHead.h).
#include "heads/NegativeBinomialHead.h"

#include "core/Init.h"
#include "data/Preprocess.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace latentcell::heads {

Dispersion parseDispersion(const std::string& name) {
  if (name == "gene") return Dispersion::Gene;
  if (name == "cell") return Dispersion::Cell;
  throw std::invalid_argument(fmt::format("unknown NB dispersion '{}' (choices: gene, cell)", name));
}

LibraryMode parseLibraryMode(const std::string& name) {
  if (name == "none") return LibraryMode::None;
  if (name == "observed") return LibraryMode::Observed;
  if (name == "modeled") return LibraryMode::Modeled;
  throw std::invalid_argument(fmt::format("unknown library-size mode '{}' (choices: none, observed, modeled)", name));
}

NegativeBinomialHead::NegativeBinomialHead(const NegativeBinomialOptions& options)
    : OutputHead(options.target_sum), options_(options) {
  if (options_.width <= 0) throw std::invalid_argument(fmt::format("nb head: width must be positive, got {}", options_.width));
  scale = register_module("scale", torch::nn::Linear(options_.width, 1));
  core::xavierUniform(scale);
  if (options_.dispersion == Dispersion::Gene) {
    if (options_.n_genes <= 0)
      throw std::invalid_argument(fmt::format("nb head: gene-specific dispersion needs the gene count, got {}", options_.n_genes));
    // theta = 1 for every gene at the start, as a moderately overdispersed guess.
    log_theta = register_parameter("log_theta", at::zeros({options_.n_genes}));
  } else {
    dispersion = register_module("dispersion", torch::nn::Linear(options_.width, 1));
    core::xavierUniform(dispersion);
  }
  if (options_.library == LibraryMode::Modeled) {
    library_model = register_module("library_model", std::make_shared<LibraryModel>(options_.cell_dim));
  }
}

NegativeBinomialParams NegativeBinomialHead::distribution(const at::Tensor& decoder_out, const HeadContext& context,
                                                        bool sample_library, std::optional<at::Generator> generator) {
  checkShapes(decoder_out, at::Tensor());
  const int64_t batch = decoder_out.size(0), genes = decoder_out.size(1);
  NegativeBinomialParams p;
  auto logits = atLeastFloat32(scale(decoder_out).squeeze(-1));  // [batch, genes]
  switch (options_.library) {
    case LibraryMode::None:
      p.mu = at::exp(logits);
      break;
    case LibraryMode::Observed: {
      const auto& library = requireLibrary(context, "library: observed");
      p.mu = library.to(logits.scalar_type()).unsqueeze(1) * at::softmax(logits, 1);
      break;
    }
    case LibraryMode::Modeled: {
      auto draw = library_model->forward(context.cell_features, sample_library, generator);
      p.mu = at::exp(draw.log_library).unsqueeze(1) * at::softmax(logits, 1);
      p.library_kl = draw.kl;
      break;
    }
  }
  if (options_.dispersion == Dispersion::Gene) {
    const auto& ids = context.gene_ids;
    if (!ids.defined())
      throw std::invalid_argument("nb head (dispersion: gene): HeadContext.gene_ids is missing; pass the decoded genes' ids");
    const bool shared = ids.dim() == 1 && ids.size(0) == genes;
    if (!shared && !(ids.dim() == 2 && ids.size(0) == batch && ids.size(1) == genes))
      throw std::invalid_argument(fmt::format("nb head: gene_ids must be [{}] or [{}, {}], got [{}]", genes, batch, genes,
                                              fmt::join(ids.sizes(), ", ")));
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 1 || hi > options_.n_genes)
      throw std::invalid_argument(fmt::format("nb head: gene ids must lie in 1..{} (the model's genes), got {}..{}",
                                              options_.n_genes, lo, hi));
    auto theta = at::exp(log_theta.index_select(0, ids.reshape(-1) - 1)).view(ids.sizes());  // [genes] or [batch, genes]
    p.theta = atLeastFloat32(theta).expand({batch, genes});
  } else {
    p.theta = at::exp(atLeastFloat32(dispersion(decoder_out).squeeze(-1)));  // [batch, genes]
  }
  return p;
}

at::Tensor NegativeBinomialHead::logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                                               const HeadContext& context) {
  checkShapes(decoder_out, counts);
  auto p = distribution(decoder_out, context, /*sample_library=*/false);
  return negativeBinomialLogProb(counts.to(p.mu.scalar_type()), p.mu, p.theta);
}

HeadLoss NegativeBinomialHead::headLoss(const at::Tensor& decoder_out, const at::Tensor& counts,
                                        const HeadContext& context) {
  auto p = distribution(decoder_out, context, /*sample_library=*/is_training());
  auto nll = -negativeBinomialLogProb(counts.to(p.mu.scalar_type()), p.mu, p.theta).sum(1).mean();
  HeadLoss out{nll, {{"nb_nll", nll}}};
  if (p.library_kl.defined()) {
    auto kl = p.library_kl.mean();
    out.total = out.total + options_.library_kl_weight * kl;
    out.terms.emplace_back("library_kl", kl);
  }
  return out;
}

at::Tensor NegativeBinomialHead::predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                                         std::optional<at::Generator> generator) {
  auto p = distribution(decoder_out, context, mode == PredictMode::Sample, generator);
  if (mode == PredictMode::Mean) return p.mu;
  if (mode == PredictMode::Sample) return sampleNegativeBinomial(p.mu, p.theta, generator);
  const auto scale = log1pScale(requireLibrary(context, "predict log1p_mean"), target_sum_);  // [batch]
  return negativeBinomialExpectedLog1p(p.mu, p.theta, scale.unsqueeze(1)).to(p.mu.scalar_type());
}

void NegativeBinomialHead::fitToData(const data::CsrMatrix& counts) {
  checkIntegerCounts(counts, "nb head training counts", "nb");
  if (options_.library != LibraryMode::Modeled) return;
  const auto sizes = data::librarySizes(counts);
  library_model->fitPrior(at::tensor(sizes, at::kDouble));
}

at::Tensor negativeBinomialLogProb(const at::Tensor& x, const at::Tensor& mu, const at::Tensor& theta, double eps) {
  auto log_theta_mu = at::log(theta + mu + eps);
  return theta * (at::log(theta + eps) - log_theta_mu) + x * (at::log(mu + eps) - log_theta_mu) +
         at::lgamma(x + theta) - at::lgamma(theta) - at::lgamma(x + 1.0);
}

at::Tensor negativeBinomialExpectedLog1p(const at::Tensor& mu, const at::Tensor& theta, const at::Tensor& scale,
                                        double tolerance) {
  at::NoGradGuard no_grad;
  // Double precision throughout: the pmf is summed over up to kMaxSupport terms.
  auto shape = at::broadcast_tensors({mu, theta, scale})[0].sizes().vec();
  auto m = mu.to(at::kDouble).expand(shape).reshape(-1).clamp_min(1e-300);  // [n]; mu = 0: all mass at 0
  auto t = theta.to(at::kDouble).expand(shape).reshape(-1);                  // [n]
  auto s = scale.to(at::kDouble).expand(shape).reshape(-1);                  // [n]
  const int64_t n = m.numel();
  auto expected = at::zeros({n}, m.options());  // sum_k pmf(k) log1p(s k) over the support so far
  auto mass = at::zeros({n}, m.options());      // sum_k pmf(k)
  auto first = at::zeros({n}, m.options());     // sum_k k pmf(k)
  // log pmf(k) = lgamma(k + t) - lgamma(t) - lgamma(k + 1) + t log(t / (t + m)) + k log(m / (t + m))
  auto log_p = t * (at::log(t) - at::log(t + m));
  auto log_q = at::log(m) - at::log(t + m);
  auto lgamma_t = at::lgamma(t);

  // Entries still missing mass get the next chunk of support; settled ones drop out, so a few
  // highly expressed genes do not make every entry walk their long support.
  auto active = at::arange(n, at::TensorOptions().dtype(at::kLong).device(m.device()));
  constexpr int64_t kMaxSupport = int64_t{1} << 20;
  int64_t start = 0;
  while (active.numel() > 0 && start < kMaxSupport) {
    const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 22) / active.numel(), 16, 4096);
    auto k = at::arange(start, start + chunk, m.options()).unsqueeze(0);  // [1, chunk]
    auto ta = t.index_select(0, active).unsqueeze(1);                      // [a, 1]
    auto log_pmf = at::lgamma(k + ta) - lgamma_t.index_select(0, active).unsqueeze(1) - at::lgamma(k + 1.0) +
                   log_p.index_select(0, active).unsqueeze(1) +
                   k * log_q.index_select(0, active).unsqueeze(1);  // [a, chunk]
    auto pmf = at::exp(log_pmf);
    expected.index_add_(0, active, (pmf * at::log1p(k * s.index_select(0, active).unsqueeze(1))).sum(1));
    mass.index_add_(0, active, pmf.sum(1));
    first.index_add_(0, active, (pmf * k).sum(1));
    start += chunk;
    // Past the mean (which is past the mode) the pmf only falls, so the missing mass is the tail.
    auto past_mean = (static_cast<double>(start) > m.index_select(0, active));
    auto settled = past_mean & ((1.0 - mass.index_select(0, active)) < tolerance);
    active = active.masked_select(settled.logical_not());
  }
  // What support was not reached (heavy tails past kMaxSupport): its mass at its conditional mean,
  // which is at least start and is exact in the mean; log1p is nearly flat that far out.
  auto rest = (1.0 - mass).clamp_min(0.0);
  auto tail_mean = ((m - first) / rest.clamp_min(1e-300)).clamp_min(static_cast<double>(start));
  expected = expected + rest * at::log1p(s * tail_mean);
  return expected.view(shape);
}

at::Tensor sampleNegativeBinomial(const at::Tensor& mu, const at::Tensor& theta, std::optional<at::Generator> generator) {
  if (mu.sizes() != theta.sizes())
    throw std::invalid_argument(fmt::format("sampleNegativeBinomial: mu [{}] and theta [{}] differ in shape",
                                            fmt::join(mu.sizes(), ", "), fmt::join(theta.sizes(), ", ")));
  at::NoGradGuard no_grad;
  auto rate = at::_standard_gamma(theta.contiguous(), generator) * (mu / theta);  // Gamma(theta, scale mu / theta)
  return at::poisson(rate, generator);
}

}  // namespace latentcell::heads
