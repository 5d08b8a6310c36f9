// The DiT that every prior runs over latent tokens (notes sec. 4; Peebles & Xie).
//
//   tokens -> input (Linear(d, D) for continuous latents, Embedding(vocab, D) for code ids)
//          -> + learned positional embedding (sequence priors; none for the set model)
//          -> depth x DitBlock(adaLN-Zero on c) -> DitFinalLayer -> [batch, n, out_dim]
//
// Embedding and the blocks are separate calls (embed / run) so a prior can change the tokens in
// between (the transport prior's DeepSets summary) and so autoregressive sampling can embed one
// new token at its position and run it against per-block KV caches.
//
// A condition token ([batch, 1, D], SCALE's seed-attention token) can be appended to the tokens of
// every block and dropped after it: the tokens attend to it, it never becomes an output, and the
// same token is appended again at the next block (SCALE eqs. 34-36). Without positional embedding
// the backbone is permutation-equivariant in its tokens.
//
// At initialisation every block is the identity and the output is zero (adaLN-Zero).
#pragma once

#include "core/Attention.h"
#include "core/DitBlock.h"

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

namespace latentcell::priors {

struct DitBackboneOptions {
  int64_t dim = 256;
  int64_t depth = 8;
  int64_t heads = 8;
  double mlp_ratio = 4.0;
  double dropout = 0.0;    // attention-probability dropout
  int64_t in_dim = 0;      // continuous tokens of width in_dim (Linear input), or
  int64_t vocab = 0;       // discrete token ids in [0, vocab) (Embedding input); exactly one is > 0
  int64_t positions = 0;   // learned positional embedding over this many positions; 0 = none
  int64_t out_dim = 0;
  bool causal = false;     // token i attends to tokens <= i only
};

class DitBackboneImpl : public torch::nn::Module {
 public:
  explicit DitBackboneImpl(const DitBackboneOptions& options);

  // x [batch, n, in_dim] float or [batch, n] int64 -> [batch, n, dim]; the tokens sit at
  // positions offset .. offset + n - 1.
  at::Tensor embed(const at::Tensor& x, int64_t offset = 0);
  // h [batch, n, dim], c [batch, dim] -> [batch, n, out_dim]. cond_token [batch, 1, dim] joins
  // every block (not with causal). caches: one per block (makeCaches), for incremental causal
  // decoding: the new tokens attend to everything cached before them.
  at::Tensor run(at::Tensor h, const at::Tensor& c, const at::Tensor& cond_token = {},
                 std::vector<core::KvCache>* caches = nullptr);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c, const at::Tensor& cond_token = {}) {
    return run(embed(x), c, cond_token);
  }

  std::vector<core::KvCache> makeCaches() const { return std::vector<core::KvCache>(blocks_.size()); }
  const DitBackboneOptions& options() const { return options_; }
  const std::vector<core::DitBlock>& blockList() const { return blocks_; }

  torch::nn::Linear input{nullptr};
  torch::nn::Embedding token_embed{nullptr};
  at::Tensor pos_embed;  // [positions, dim]
  torch::nn::ModuleList blocks{nullptr};
  core::DitFinalLayer final_layer{nullptr};

 private:
  DitBackboneOptions options_;
  std::vector<core::DitBlock> blocks_;
};
TORCH_MODULE(DitBackbone);

}  // namespace latentcell::priors
