// The interface between a stage-1 encoder and decoder: a bottleneck (notes sec. 2).
//
// The encoder's output h [batch, tokens, in_dim] goes through the bottleneck, which returns what
// the decoder consumes (z), what a prior models (the latent: Gaussian means, FSQ code indices,
// or h itself), an auxiliary loss to add to the objective and named diagnostics to log. Priors
// sample latents in that same form and decodeInput() turns them back into decoder input, so
// generation never needs to know which bottleneck a model has. Stochastic behaviour follows
// torch's train/eval convention (like dropout): a Gaussian bottleneck samples in training and
// returns its mean in evaluation, so `encode` and held-out losses are deterministic.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::models {

struct BottleneckOutput {
  at::Tensor z;       // [batch, tokens, outputDim()]: the decoder's input
  at::Tensor latent;  // what a prior models: [batch, tokens, latentDim()] floats, or
                      // [batch, tokens] int64 code indices when discrete()
  at::Tensor loss;    // scalar auxiliary loss, already weighted (beta * KL; 0 without one)
  std::vector<std::pair<std::string, at::Tensor>> terms;  // unweighted diagnostics ("kl", "perplexity")
};

class Bottleneck : public torch::nn::Module {
 public:
  ~Bottleneck() override;

  // h [batch, tokens, in_dim].
  virtual BottleneckOutput forward(const at::Tensor& h) = 0;
  // A latent in the form forward() returns it (e.g. sampled by a prior) -> decoder input z.
  virtual at::Tensor decodeInput(const at::Tensor& latent) = 0;

  virtual int64_t outputDim() const = 0;  // width of z
  virtual int64_t latentDim() const = 0;  // width of a continuous latent; 0 when discrete
  virtual bool discrete() const { return false; }
  virtual int64_t codebookSize() const { return 0; }  // number of codes when discrete
  virtual const char* kind() const = 0;               // "gaussian", "fsq", "none"

 protected:
  // Throws std::invalid_argument unless h is [batch, tokens, in_dim].
  void checkInput(const at::Tensor& h, int64_t in_dim) const;
};

}  // namespace latentcell::models
