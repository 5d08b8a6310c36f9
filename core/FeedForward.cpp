// Feed-forward networks (see FeedForward.h).
#include "core/FeedForward.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <torch/nn/options/linear.h>

#include <cmath>
#include <stdexcept>

namespace latentcell::core {

Activation parseActivation(const std::string& name) {
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_tanh") return Activation::GeluTanh;
  throw std::invalid_argument("unknown activation '" + name + "' (use gelu or gelu_tanh)");
}

FeedForwardKind parseFeedForwardKind(const std::string& name) {
  if (name == "gelu") return FeedForwardKind::Gelu;
  if (name == "gelu_tanh") return FeedForwardKind::GeluTanh;
  if (name == "swiglu") return FeedForwardKind::SwiGlu;
  throw std::invalid_argument("unknown feed-forward kind '" + name +
                              "' (use gelu, gelu_tanh or swiglu)");
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, Activation activation, bool bias, int64_t out_dim)
    : activation_(activation) {
  if (out_dim == 0) out_dim = dim;
  fc1 = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(dim, hidden).bias(bias)));
  fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(hidden, out_dim).bias(bias)));
  xavierUniform(fc1);
  xavierUniform(fc2);
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  auto h = fc1(x);
  h = at::gelu(h, activation_ == Activation::GeluTanh ? "tanh" : "none");
  return fc2(h);
}

int64_t SwiGluImpl::defaultHidden(int64_t dim, int64_t multiple_of) {
  const int64_t hidden = 2 * 4 * dim / 3;
  return multiple_of * ((hidden + multiple_of - 1) / multiple_of);
}

SwiGluImpl::SwiGluImpl(int64_t dim, int64_t hidden, int64_t multiple_of) {
  if (hidden == 0) hidden = defaultHidden(dim, multiple_of);
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  w1 = register_module("w1", linear(dim, hidden));
  w2 = register_module("w2", linear(dim, hidden));
  w3 = register_module("w3", linear(hidden, dim));
  xavierUniform(w1);
  xavierUniform(w2);
  xavierUniform(w3);
}

at::Tensor SwiGluImpl::forward(const at::Tensor& x) { return w3(at::silu(w1(x)) * w2(x)); }

FeedForwardImpl::FeedForwardImpl(FeedForwardKind kind, int64_t dim, double mlp_ratio,
                                 int64_t multiple_of) {
  if (kind == FeedForwardKind::SwiGlu) {
    swiglu = register_module("swiglu", SwiGlu(dim, 0, multiple_of));
  } else {
    const auto hidden = static_cast<int64_t>(std::llround(dim * mlp_ratio));
    const auto act = kind == FeedForwardKind::Gelu ? Activation::Gelu : Activation::GeluTanh;
    mlp = register_module("mlp", Mlp(dim, hidden, act));
  }
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) {
  return mlp ? mlp(x) : swiglu(x);
}

}  // namespace latentcell::core
