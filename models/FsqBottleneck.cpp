// FSQ bottleneck (see FsqBottleneck.h).
#include "models/FsqBottleneck.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <limits>
#include <stdexcept>

namespace latentcell::models {
namespace {

constexpr double kEps = 1e-3;

}  // namespace

FsqBottleneck::FsqBottleneck(const FsqBottleneckOptions& options) : options_(options) {
  if (options_.in_dim <= 0)
    throw std::invalid_argument(fmt::format("fsq bottleneck: input width must be positive, got {}", options_.in_dim));
  if (options_.levels.empty()) throw std::invalid_argument("fsq bottleneck: levels must name at least one dimension");
  for (int64_t l : options_.levels) {
    if (l < 2) throw std::invalid_argument(fmt::format("fsq bottleneck: every level must be >= 2, got [{}]", fmt::join(options_.levels, ", ")));
    if (codebook_size_ > std::numeric_limits<int32_t>::max() / l)
      throw std::invalid_argument(fmt::format("fsq bottleneck: levels [{}] give more than 2^31 codes", fmt::join(options_.levels, ", ")));
    basis_.push_back(codebook_size_);
    codebook_size_ *= l;
  }
  if (!(options_.dither >= 0 && options_.dither <= 1))
    throw std::invalid_argument(fmt::format("fsq bottleneck: dither must be a probability in [0, 1], got {}", options_.dither));
  if (!(options_.bound_penalty >= 0))
    throw std::invalid_argument(fmt::format("fsq bottleneck: bound_penalty must be >= 0, got {}", options_.bound_penalty));
  const int64_t d = static_cast<int64_t>(options_.levels.size());
  project_in = register_module("project_in", torch::nn::Linear(options_.in_dim, d));
  project_out = register_module("project_out", torch::nn::Linear(d, options_.in_dim));
  core::xavierUniform(project_in);
  core::xavierUniform(project_out);
}

at::Tensor FsqBottleneck::levelsOn(const c10::Device& device) const {
  return at::tensor(options_.levels, at::kLong).to(device);
}

at::Tensor FsqBottleneck::basisOn(const c10::Device& device) const { return at::tensor(basis_, at::kLong).to(device); }

at::Tensor FsqBottleneck::bound(const at::Tensor& z) const {
  auto levels_int = levelsOn(z.device());                                      // [d]
  auto L = levels_int.to(z.options());                                         // [d]
  auto half = (L - 1.0) * (1.0 - kEps) / 2.0;                                  // [d]
  auto offset = (at::remainder(levels_int, 2) == 0).to(z.options()) * 0.5;     // [d]
  auto shift = at::atanh(offset / half);                                       // [d]
  return at::tanh(z + shift) * half - offset;                                  // [..., d]
}

at::Tensor FsqBottleneck::halfWidth(const at::Tensor& like) const {
  return at::floor_divide(levelsOn(like.device()), 2).to(like.options());  // [d] L // 2
}

at::Tensor FsqBottleneck::quantize(const at::Tensor& z) const {
  auto b = bound(z);                                       // [..., d]
  auto rounded = b + (at::round(b) - b).detach();          // straight-through
  return rounded / halfWidth(z);                           // [..., d]
}

at::Tensor FsqBottleneck::quantizeDithered(const at::Tensor& z, std::optional<at::Generator> generator) const {
  auto b = bound(z);                                                                    // [..., d]
  auto rounded = b + (at::round(b) - b).detach();                                       // straight-through
  auto noise = at::empty_like(b).uniform_(-0.5, 0.5, generator);                        // one rounding cell
  auto use_noise = at::empty_like(b).bernoulli_(options_.dither, generator).to(at::kBool);
  return at::where(use_noise, b + noise, rounded) / halfWidth(z);                       // [..., d]
}

at::Tensor FsqBottleneck::codesFromValues(const at::Tensor& zq) const {
  auto half_width = at::floor_divide(levelsOn(zq.device()), 2);                          // [d]
  auto digits = at::round(zq * half_width.to(zq.options())).to(at::kLong) + half_width;    // [..., d]
  return (digits * basisOn(zq.device())).sum(-1);                                      // [...]
}

at::Tensor FsqBottleneck::valuesFromCodes(const at::Tensor& codes) const {
  auto levels_int = levelsOn(codes.device());
  auto digits = at::remainder(at::floor_divide(codes.unsqueeze(-1), basisOn(codes.device())), levels_int);  // [..., d]
  auto half_width = at::floor_divide(levels_int, 2);                                                                 // [d]
  const auto options = project_out->weight.options();
  return (digits - half_width).to(options) / half_width.to(options);  // [..., d]
}

BottleneckOutput FsqBottleneck::forward(const at::Tensor& h) {
  checkInput(h, options_.in_dim);
  auto z = project_in(h);  // [batch, tokens, d]
  auto zq = quantize(z);   // [batch, tokens, d]
  BottleneckOutput out;
  out.z = project_out(is_training() && options_.dither > 0 ? quantizeDithered(z) : zq);  // [batch, tokens, in_dim]
  out.latent = codesFromValues(zq.detach());  // [batch, tokens]
  out.loss = at::zeros({}, h.options());
  if (options_.bound_penalty > 0) {
    auto penalty = z.square().sum({1, 2}).mean();
    out.loss = out.loss + options_.bound_penalty * penalty;
    out.terms.emplace_back("bound_penalty", penalty);
  }
  out.terms.emplace_back("perplexity", codePerplexity(out.latent, codebook_size_));
  return out;
}

at::Tensor FsqBottleneck::decodeInput(const at::Tensor& latent) {
  if (latent.scalar_type() != at::kLong || latent.dim() != 2)
    throw std::invalid_argument(fmt::format("fsq bottleneck: decodeInput wants [batch, tokens] int64 code indices, got [{}] {}",
                                            fmt::join(latent.sizes(), ", "), c10::toString(latent.scalar_type())));
  const int64_t lo = latent.numel() ? latent.min().item<int64_t>() : 0;
  const int64_t hi = latent.numel() ? latent.max().item<int64_t>() : 0;
  if (lo < 0 || hi >= codebook_size_)
    throw std::invalid_argument(fmt::format("fsq bottleneck: code indices must lie in 0..{}, got {}..{}", codebook_size_ - 1, lo, hi));
  return project_out(valuesFromCodes(latent));  // [batch, tokens, in_dim]
}

at::Tensor codePerplexity(const at::Tensor& codes, int64_t codebook_size) {
  auto counts = at::bincount(codes.reshape(-1).to(at::kLong), {}, codebook_size).to(at::kDouble);  // [codebook]
  auto p = counts / counts.sum();
  auto entropy = -(p * at::log(p.clamp_min(1e-300))).sum();  // 0 log 0 = 0
  return at::exp(entropy);
}

}  // namespace latentcell::models
