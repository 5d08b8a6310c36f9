// DiT backbone over latent tokens (see DitBackbone.h).
#include "priors/DitBackbone.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/options/embedding.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

namespace latentcell::priors {

DitBackboneImpl::DitBackboneImpl(const DitBackboneOptions& o) : options_(o) {
  if (o.dim <= 0 || o.depth <= 0 || o.heads <= 0 || o.dim % o.heads != 0) {
    throw std::invalid_argument(fmt::format(
        "DitBackbone: dim ({}) must be a positive multiple of heads ({}) and depth ({}) positive", o.dim, o.heads,
        o.depth));
  }
  if ((o.in_dim > 0) == (o.vocab > 0)) {
    throw std::invalid_argument("DitBackbone: exactly one of in_dim (continuous tokens) and vocab (token ids) must be set");
  }
  if (o.out_dim <= 0 || o.positions < 0) throw std::invalid_argument("DitBackbone: out_dim must be positive");
  torch::NoGradGuard no_grad;
  if (o.in_dim > 0) {
    input = register_module("input", torch::nn::Linear(o.in_dim, o.dim));
    core::xavierUniform(input);
  } else {
    token_embed = register_module("token_embed", torch::nn::Embedding(o.vocab, o.dim));
    torch::nn::init::normal_(token_embed->weight, 0.0, 0.02);
  }
  if (o.positions > 0) {
    pos_embed = register_parameter("pos_embed", at::empty({o.positions, o.dim}));
    torch::nn::init::normal_(pos_embed, 0.0, 0.02);
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth; ++i) {
    auto block = core::DitBlock(core::DitBlockOptions{o.dim, o.heads, o.mlp_ratio, o.dropout});
    blocks->push_back(block);
    blocks_.push_back(block);
  }
  final_layer = register_module("final_layer", core::DitFinalLayer(o.dim, o.out_dim));
}

at::Tensor DitBackboneImpl::embed(const at::Tensor& x, int64_t offset) {
  at::Tensor h;
  if (input) {
    if (x.dim() != 3 || x.size(2) != options_.in_dim || !x.is_floating_point()) {
      throw std::invalid_argument(fmt::format("DitBackbone: expected continuous tokens [batch, n, {}], got {} {}",
                                              options_.in_dim, x.sizes(), c10::toString(x.scalar_type())));
    }
    h = input(x.to(input->weight.scalar_type()));  // [batch, n, dim]
  } else {
    if (x.dim() != 2 || x.scalar_type() != at::kLong) {
      throw std::invalid_argument(fmt::format("DitBackbone: expected token ids [batch, n] int64, got {} {}", x.sizes(),
                                              c10::toString(x.scalar_type())));
    }
    h = token_embed(x);  // [batch, n, dim]
  }
  if (pos_embed.defined()) {
    const int64_t n = h.size(1);
    if (offset + n > options_.positions) {
      throw std::invalid_argument(fmt::format("DitBackbone: positions {}..{} exceed the {} learned positions", offset,
                                              offset + n - 1, options_.positions));
    }
    h = h + pos_embed.narrow(0, offset, n).unsqueeze(0);  // [batch, n, dim]
  }
  return h;
}

at::Tensor DitBackboneImpl::run(at::Tensor h, const at::Tensor& c, const at::Tensor& cond_token,
                                std::vector<core::KvCache>* caches) {
  if (cond_token.defined() && (options_.causal || caches != nullptr)) {
    throw std::invalid_argument("DitBackbone: a condition token cannot join causal or cached attention");
  }
  if (caches != nullptr && caches->size() != blocks_.size()) {
    throw std::invalid_argument("DitBackbone: need one KV cache per block (use makeCaches)");
  }
  const int64_t n = h.size(1);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    core::KvCache* cache = caches != nullptr ? &(*caches)[i] : nullptr;
    if (cond_token.defined()) {
      auto joint = at::cat({h, cond_token.to(h.scalar_type())}, 1);  // [batch, n + 1, dim]
      h = blocks_[i]->forward(joint, c).narrow(1, 0, n);             // [batch, n, dim]
    } else {
      h = blocks_[i]->forward(h, c, {}, options_.causal, cache);     // [batch, n, dim]
    }
  }
  return final_layer(h, c);  // [batch, n, out_dim]
}

}  // namespace latentcell::priors
