// Position-wise feed-forward networks of the transformer, MCAB and DiT blocks.
//
// Mlp is the classic Linear -> GELU -> Linear (DiT uses the tanh GELU approximation); SwiGlu is
// the bias-free gated form of the public scLDM code, W3(silu(W1 x) * W2 x), whose hidden width is
// round_up(2 * 4E / 3, multiple_of) so parameter counts match a 4E GELU MLP.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

namespace latentcell::core {

enum class Activation { Gelu, GeluTanh };
Activation parseActivation(const std::string& name);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, Activation activation = Activation::Gelu, bool bias = true,
          int64_t out_dim = 0);
  at::Tensor forward(const at::Tensor& x);  // [..., dim] -> [..., out_dim]

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  Activation activation_;
};
TORCH_MODULE(Mlp);

class SwiGluImpl : public torch::nn::Module {
 public:
  // hidden = 0 picks round_up(2 * 4 * dim / 3, multiple_of).
  SwiGluImpl(int64_t dim, int64_t hidden = 0, int64_t multiple_of = 64);
  at::Tensor forward(const at::Tensor& x);  // [..., dim] -> [..., dim]

  static int64_t defaultHidden(int64_t dim, int64_t multiple_of);

  torch::nn::Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(SwiGlu);

// Which feed-forward network a block uses: "gelu", "gelu_tanh" (DiT) or "swiglu" (scLDM).
enum class FeedForwardKind { Gelu, GeluTanh, SwiGlu };
FeedForwardKind parseFeedForwardKind(const std::string& name);

class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(FeedForwardKind kind, int64_t dim, double mlp_ratio = 4.0,
                  int64_t multiple_of = 64);
  at::Tensor forward(const at::Tensor& x);

  Mlp mlp{nullptr};
  SwiGlu swiglu{nullptr};
};
TORCH_MODULE(FeedForward);

}  // namespace latentcell::core
