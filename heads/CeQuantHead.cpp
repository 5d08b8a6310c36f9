// ce-quant head (see CeQuantHead.h).
#include "heads/CeQuantHead.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace latentcell::heads {

void CeQuantOptions::check() const {
  if (singleton_bins < 1)
    throw std::invalid_argument(fmt::format("ce_quant head: singleton_bins must be >= 1 (bin 0 holds the zeros), got {}", singleton_bins));
  if (quantile_bins < 0) throw std::invalid_argument(fmt::format("ce_quant head: quantile_bins must be >= 0, got {}", quantile_bins));
  if (quantile_bins > 0 && tail_edges.empty())
    throw std::invalid_argument("ce_quant head: quantile bins need a first tail edge as their upper end; give tail_edges");
  for (size_t i = 1; i < tail_edges.size(); ++i)
    if (tail_edges[i] <= tail_edges[i - 1])
      throw std::invalid_argument(fmt::format("ce_quant head: tail_edges must increase strictly, got [{}]", fmt::join(tail_edges, ", ")));
  if (!tail_edges.empty() && tail_edges[0] < singleton_bins + quantile_bins)
    throw std::invalid_argument(fmt::format(
        "ce_quant head: the first tail edge ({}) leaves no room for {} quantile bins above the {} singletons; "
        "raise it to at least {}", tail_edges[0], quantile_bins, singleton_bins, singleton_bins + quantile_bins));
  if (numBins() < 2) throw std::invalid_argument("ce_quant head: the layout needs at least 2 bins");
}

CeQuantHead::CeQuantHead(const CeQuantOptions& options) : OutputHead(options.target_sum), options_(options) {
  options_.check();
  if (options_.width <= 0) throw std::invalid_argument(fmt::format("ce_quant head: width must be positive, got {}", options_.width));
  proj = register_module("proj", torch::nn::Linear(options_.width, options_.numBins()));
  core::xavierUniform(proj);
  bin_edges = register_buffer("bin_edges", at::zeros({options_.numBins()}));
  bin_means = register_buffer("bin_means", at::zeros({options_.numBins()}));
}

void CeQuantHead::fitToData(const data::CsrMatrix& counts) {
  checkIntegerCounts(counts, "ce_quant bin fitting", "ce_quant");
  // Histogram of the integer counts, implicit zeros included.
  int64_t max_count = 0;
  for (float v : counts.data) max_count = std::max<int64_t>(max_count, static_cast<int64_t>(v));
  std::vector<double> hist(max_count + 1, 0.0);
  hist[0] = static_cast<double>(counts.rows * counts.cols - counts.nnz());
  for (float v : counts.data) hist[static_cast<int64_t>(v)] += 1.0;
  auto mass = [&](int64_t lo, int64_t hi) {  // number of counts in [lo, hi)
    double n = 0;
    for (int64_t c = std::max<int64_t>(lo, 0); c < std::min<int64_t>(hi, max_count + 1); ++c) n += hist[c];
    return n;
  };

  const int64_t S = options_.singleton_bins, Q = options_.quantile_bins;
  std::vector<int64_t> edges;
  for (int64_t c = 0; c < S; ++c) edges.push_back(c);
  if (Q > 0) {
    const int64_t top = options_.tail_edges[0];
    const double n = mass(S, top);
    edges.push_back(S);
    for (int64_t k = 1; k < Q; ++k) {
      int64_t edge;
      if (n > 0) {
        // The value at sorted position floor(k n / Q) among the counts in [S, top).
        const double pos = std::floor(static_cast<double>(k) * n / static_cast<double>(Q));
        double below = 0;
        edge = S;
        while (edge < top - 1 && below + (edge <= max_count ? hist[edge] : 0.0) <= pos) {
          below += edge <= max_count ? hist[edge] : 0.0;
          ++edge;
        }
      } else {
        edge = S + static_cast<int64_t>(std::llround(static_cast<double>(k * (top - S)) / static_cast<double>(Q)));
      }
      // Ties at one value would repeat an edge: keep edges strictly increasing and leave room for
      // the bins still to come.
      edge = std::min(std::max(edge, edges.back() + 1), top - (Q - k));
      edges.push_back(edge);
    }
  }
  for (int64_t t : options_.tail_edges) edges.push_back(t);

  std::vector<double> means(edges.size());
  for (size_t b = 0; b < edges.size(); ++b) {
    const bool last = b + 1 == edges.size();
    const int64_t lo = edges[b], hi = last ? max_count + 1 : edges[b + 1];
    double n = 0, sum = 0;
    for (int64_t c = lo; c < std::min<int64_t>(hi, max_count + 1); ++c) {
      n += hist[c];
      sum += hist[c] * static_cast<double>(c);
    }
    if (n > 0) means[b] = sum / n;
    else means[b] = last ? static_cast<double>(lo) : 0.5 * static_cast<double>(lo + edges[b + 1] - 1);
  }

  at::NoGradGuard no_grad;
  bin_edges.copy_(at::tensor(edges, at::kLong).to(bin_edges.options()));
  bin_means.copy_(at::tensor(means, at::kDouble).to(bin_means.options()));
  fitted_ = true;
}

void CeQuantHead::requireFitted() {
  if (fitted_) return;
  // Fitted edges start 0, 1, ... so the last one is positive; unfitted buffers are all zero.
  if (!(bin_edges[-1].item<double>() > 0))
    throw std::runtime_error(
        "ce_quant head: the quantile bins are not fitted; call fitToData on the training counts before training "
        "(a loaded checkpoint restores them)");
  fitted_ = true;
}

at::Tensor CeQuantHead::binOf(const at::Tensor& counts) {
  requireFitted();
  auto edges = bin_edges.to(counts.scalar_type());
  return at::bucketize(counts, edges, /*out_int32=*/false, /*right=*/true) - 1;
}

at::Tensor CeQuantHead::logits(const at::Tensor& decoder_out) {
  checkShapes(decoder_out, at::Tensor());
  return atLeastFloat32(proj(decoder_out));  // [batch, genes, bins]
}

at::Tensor CeQuantHead::logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                                      const HeadContext& context) {
  checkShapes(decoder_out, counts);
  auto log_probs = at::log_softmax(logits(decoder_out), -1);                     // [batch, genes, bins]
  auto bins = binOf(counts.to(log_probs.scalar_type()));                          // [batch, genes]
  return log_probs.gather(-1, bins.unsqueeze(-1)).squeeze(-1);                    // [batch, genes]
}

HeadLoss CeQuantHead::headLoss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) {
  auto ce = -logLikelihood(decoder_out, counts, context).sum(1).mean();
  return {ce, {{"ce_quant_ce", ce}}};
}

at::Tensor CeQuantHead::predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                                std::optional<at::Generator> generator) {
  requireFitted();
  auto probs = at::softmax(logits(decoder_out), -1);  // [batch, genes, bins]
  auto means = bin_means.to(probs.scalar_type());      // [bins]
  if (mode == PredictMode::Mean) return (probs * means).sum(-1);
  if (mode == PredictMode::Log1pMean) {
    // Each bin counts as its empirical mean, as in `mean`; log1p is taken per bin before averaging.
    auto scale = log1pScale(requireLibrary(context, "predict log1p_mean"), target_sum_).to(probs.scalar_type());
    auto values = at::log1p(means.view({1, 1, -1}) * scale.view({-1, 1, 1}));  // [batch, 1, bins]
    return (probs * values).sum(-1);                                          // [batch, genes]
  }
  at::NoGradGuard no_grad;
  const int64_t bins = probs.size(-1);
  auto drawn = at::multinomial(probs.reshape({-1, bins}), 1, /*replacement=*/false, generator);  // [batch * genes, 1]
  return means.index_select(0, drawn.reshape(-1)).view({probs.size(0), probs.size(1)});
}

}  // namespace latentcell::heads
