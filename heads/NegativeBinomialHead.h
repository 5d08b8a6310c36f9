// The negative binomial head of scVI / scLDM / ExpressionVAE (notes sec. 3).
//
//   mu_g = l * softmax_g(w^T h_g)   (library observed or modeled)  or  mu_g = exp(w^T h_g)  (none)
//   theta_g = exp(log_theta[gene])  (gene-specific)  or  exp(v^T h_g)  (per cell and gene)
//
// The softmax over the decoded genes makes the network predict composition and leaves depth to
// the library size, which is observed (the cell's total count), modeled (a log-normal latent per
// cell, heads/LibraryModel.h) or absent (the network predicts the rate itself; the reconstruction
// benchmark paper's three modes). The log-likelihood is scVI's with eps = 1e-8 inside the logs;
// `sample` draws Gamma-Poisson (NB as a Poisson with a Gamma(theta, theta / mu) rate), `mean`
// returns mu. Both predictions share trained weights, which is ExpressionVAE's nb-sample /
// nb-deter pair.
#pragma once

#include "heads/LibraryModel.h"
#include "heads/OutputHead.h"

#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <memory>
#include <string>

namespace latentcell::heads {

enum class Dispersion { Gene, Cell };
enum class LibraryMode { None, Observed, Modeled };
// "gene" / "cell" and "none" / "observed" / "modeled"; anything else is std::invalid_argument.
Dispersion parseDispersion(const std::string& name);
LibraryMode parseLibraryMode(const std::string& name);

struct NegativeBinomialOptions {
  int64_t width = 0;    // decoder output width per gene
  int64_t n_genes = 0;  // gene vocabulary size (ids 1..n_genes), for gene-specific dispersion
  Dispersion dispersion = Dispersion::Gene;
  LibraryMode library = LibraryMode::Observed;
  int64_t cell_dim = 0;            // width of HeadContext::cell_features (modeled library only)
  double library_kl_weight = 1.0;  // weight of the library-size KL (modeled library only)
  double target_sum = 1e4;         // for the MMD term's log1p normalisation
};

// NB(mu, theta) parameters of one batch.
struct NegativeBinomialParams {
  at::Tensor mu;          // [batch, genes]
  at::Tensor theta;       // [batch, genes]
  at::Tensor library_kl;  // [batch], modeled library only
};

class NegativeBinomialHead : public OutputHead {
 public:
  explicit NegativeBinomialHead(const NegativeBinomialOptions& options);

  // `sample_library` draws a modeled library size from its posterior instead of taking its mean.
  NegativeBinomialParams distribution(const at::Tensor& decoder_out, const HeadContext& context,
                                    bool sample_library, std::optional<at::Generator> generator = std::nullopt);

  at::Tensor logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                           const HeadContext& context) override;
  at::Tensor predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                     std::optional<at::Generator> generator = std::nullopt) override;
  ValueSpace valueSpace() const override { return ValueSpace::Counts; }
  const char* kind() const override { return "nb"; }
  bool needsIntegerCounts() const override { return true; }
  // Checks that the training counts are raw counts (std::invalid_argument naming the first value
  // that is not) and fits the modeled library size's prior on their library sizes.
  void fitToData(const data::CsrMatrix& counts) override;

  const NegativeBinomialOptions& options() const { return options_; }

  torch::nn::Linear scale{nullptr};       // width -> 1: unnormalised log rate per gene
  torch::nn::Linear dispersion{nullptr};  // width -> 1: log theta per cell and gene (dispersion: cell)
  at::Tensor log_theta;                   // [n_genes] (dispersion: gene)
  std::shared_ptr<LibraryModel> library_model;  // library: modeled

 protected:
  HeadLoss headLoss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) override;

 private:
  NegativeBinomialOptions options_;
};

// log NB(x | mu, theta) elementwise (scVI's form, eps inside the logs; notes sec. 3).
at::Tensor negativeBinomialLogProb(const at::Tensor& x, const at::Tensor& mu, const at::Tensor& theta,
                                   double eps = 1e-8);
// E[log1p(scale * X)] for X ~ NB(mu, theta), elementwise over the broadcast shape of the three
// (double precision, no gradient): the pmf summed over k = 0, 1, ... until each entry's remaining
// mass is below `tolerance` past its mean. This is `predict(log1p_mean)` with scale = target_sum / l.
at::Tensor negativeBinomialExpectedLog1p(const at::Tensor& mu, const at::Tensor& theta, const at::Tensor& scale,
                                        double tolerance = 1e-10);

// One draw per element from NB(mu, theta) via Gamma-Poisson; mu and theta of equal shape.
at::Tensor sampleNegativeBinomial(const at::Tensor& mu, const at::Tensor& theta,
                                  std::optional<at::Generator> generator = std::nullopt);

}  // namespace latentcell::heads
