// The shared parts of every output head (see OutputHead.h).
#include "heads/OutputHead.h"

#include "heads/Mmd.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace latentcell::heads {

PredictMode parsePredictMode(const std::string& name) {
  if (name == "sample") return PredictMode::Sample;
  if (name == "mean") return PredictMode::Mean;
  if (name == "log1p_mean") return PredictMode::Log1pMean;
  throw std::invalid_argument(fmt::format("unknown predict mode '{}' (choices: sample, mean, log1p_mean)", name));
}

OutputHead::~OutputHead() = default;

void OutputHead::setMmd(MmdOptions options) {
  if (options.weight < 0) throw std::invalid_argument(fmt::format("{} head: MMD weight must be >= 0, got {}", kind(), options.weight));
  if (options.weight > 0 && options.sigmas.empty())
    throw std::invalid_argument(fmt::format("{} head: the MMD term needs at least one kernel bandwidth", kind()));
  mmd_ = std::move(options);
}

HeadLoss OutputHead::loss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) {
  checkShapes(decoder_out, counts);
  HeadLoss out = headLoss(decoder_out, counts, context);
  if (mmd_.weight > 0) {
    const auto& library = requireLibrary(context, "the MMD term (it compares log1p-normalised cells)");
    auto recon = predict(decoder_out, context, PredictMode::Mean);                // [batch, genes]
    if (valueSpace() == ValueSpace::Counts) recon = logNormalize(recon, library, target_sum_);
    auto real = logNormalize(counts, library, target_sum_);                      // [batch, genes]
    auto mmd = mmdRbf(recon, real.to(recon.scalar_type()), mmd_.sigmas);
    out.total = out.total + mmd_.weight * mmd;
    out.terms.emplace_back("mmd", mmd);
  }
  return out;
}

void OutputHead::checkShapes(const at::Tensor& decoder_out, const at::Tensor& counts) const {
  if (decoder_out.dim() != 3)
    throw std::invalid_argument(fmt::format("{} head: decoder output must be [batch, genes, width], got [{}]", kind(),
                                            fmt::join(decoder_out.sizes(), ", ")));
  if (counts.defined() && (counts.dim() != 2 || counts.size(0) != decoder_out.size(0) ||
                           counts.size(1) != decoder_out.size(1)))
    throw std::invalid_argument(fmt::format("{} head: counts [{}] do not match the decoder output [{}] (want [batch, genes])",
                                            kind(), fmt::join(counts.sizes(), ", "), fmt::join(decoder_out.sizes(), ", ")));
}

at::Tensor OutputHead::atLeastFloat32(const at::Tensor& t) {
  return at::isReducedFloatingType(t.scalar_type()) ? t.to(at::kFloat) : t;
}

const at::Tensor& OutputHead::requireLibrary(const HeadContext& context, const char* why) const {
  if (!context.library.defined())
    throw std::invalid_argument(fmt::format("{} head: {} needs the observed library size per cell (HeadContext.library)",
                                            kind(), why));
  if (context.library.dim() != 1)
    throw std::invalid_argument(fmt::format("{} head: library size must be [batch], got [{}]", kind(),
                                            fmt::join(context.library.sizes(), ", ")));
  return context.library;
}

at::Tensor logNormalize(const at::Tensor& counts, const at::Tensor& library, double target_sum) {
  // An empty cell has zero counts, so any positive floor keeps it at zero instead of 0/0.
  auto scale = target_sum / library.to(counts.scalar_type()).clamp_min(1e-12);  // [batch]
  return at::log1p(counts * scale.unsqueeze(1));                                  // [batch, genes]
}

at::Tensor log1pScale(const at::Tensor& library, double target_sum) {
  return at::where(library > 0, target_sum / library.clamp_min(1e-12), at::zeros_like(library));
}

void checkIntegerCounts(const data::CsrMatrix& counts, const std::string& source, const std::string& head) {
  for (int64_t row = 0; row < counts.rows; ++row) {
    for (int64_t k = counts.indptr[row]; k < counts.indptr[row + 1]; ++k) {
      const float v = counts.data[k];
      if (!std::isfinite(v) || v < 0 || std::nearbyint(v) != v)
        throw std::invalid_argument(fmt::format(
            "{}: value {} at cell {}, gene {} is not a non-negative integer; the {} head models raw counts, "
            "so pass raw UMI counts (not normalised or log1p values)",
            source.empty() ? std::string("counts") : source, v, row, counts.indices[k], head));
    }
  }
}

}  // namespace latentcell::heads
