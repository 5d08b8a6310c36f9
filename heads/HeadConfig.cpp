// Head config and factory (see HeadConfig.h).
#include "heads/HeadConfig.h"

#include "heads/CeQuantHead.h"
#include "heads/HurdleHead.h"
#include "heads/MseHead.h"
#include "heads/NegativeBinomialHead.h"

#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::heads {

void MmdConfig::visit(core::ConfigVisitor& v) {
  v.field("weight", weight, "weight of the MMD term between reconstructed and real cells of a batch (SCALE eq. 13); 0 = off");
  v.field("sigmas", sigmas, "RBF kernel bandwidths, summed (log1p-normalised space)");
}

void MmdConfig::validate() const {
  if (!(weight >= 0)) reject("weight", fmt::format("must be >= 0, got {}", weight));
  if (weight > 0 && sigmas.empty()) reject("sigmas", "needs at least one bandwidth when the MMD term is on");
  for (double s : sigmas)
    if (!(s > 0)) reject("sigmas", fmt::format("bandwidths must be positive, got {}", s));
}

void HeadConfig::visit(core::ConfigVisitor& v) {
  v.choice("kind", kind, {"nb", "hurdle", "ce_quant", "mse"}, "output head");
  v.choice("dispersion", dispersion, {"gene", "cell"}, "nb: dispersion per gene (learned) or per cell and gene (predicted)");
  v.choice("library", library, {"auto", "none", "observed", "modeled"},
           "library size: observed, modeled (log-normal latent with a KL) or none (nb only); auto = observed, none for ce_quant");
  v.field("library_kl_weight", library_kl_weight, "nb with library: modeled: weight of the library-size KL");
  v.field("target_sum", target_sum, "log1p normalisation target: log1p(x / library * target_sum) (hurdle, mse, MMD)");
  v.field("singleton_bins", singleton_bins, "ce_quant: one bin per count 0 .. singleton_bins - 1");
  v.field("quantile_bins", quantile_bins, "ce_quant: bins at training-count quantiles between the singletons and the first tail edge");
  v.field("tail_edges", tail_edges, "ce_quant: fixed lower edges of the high-count bins; the last bin is unbounded");
  v.section("mmd", mmd, "optional MMD term, for any head");
}

std::string HeadConfig::resolvedLibrary() const {
  if (library != "auto") return library;
  return kind == "ce_quant" ? "none" : "observed";
}

void HeadConfig::validate() const {
  if (dispersion != "gene" && kind != "nb")
    reject("dispersion", fmt::format("applies to the nb head only, not {}; remove it", kind));
  const std::string lib = resolvedLibrary();
  if ((kind == "hurdle" || kind == "mse") && lib != "observed")
    reject("library", fmt::format("the {} head normalises by the observed library size; use observed (or auto)", kind));
  if (kind == "ce_quant" && lib != "none")
    reject("library", "the ce_quant head models raw counts without a library size; use none (or auto)");
  if (!(library_kl_weight >= 0)) reject("library_kl_weight", fmt::format("must be >= 0, got {}", library_kl_weight));
  if (!(target_sum > 0)) reject("target_sum", fmt::format("must be positive, got {}", target_sum));
  if (kind == "ce_quant") {
    CeQuantOptions bins;
    bins.singleton_bins = singleton_bins;
    bins.quantile_bins = quantile_bins;
    bins.tail_edges = tail_edges;
    try {
      bins.check();
    } catch (const std::invalid_argument& e) {
      reject("quantile_bins", e.what());
    }
  }
}

std::shared_ptr<OutputHead> makeHead(const HeadConfig& config, const HeadDims& dims) {
  std::shared_ptr<OutputHead> head;
  if (config.kind == "nb") {
    NegativeBinomialOptions o;
    o.width = dims.width;
    o.n_genes = dims.n_genes;
    o.dispersion = parseDispersion(config.dispersion);
    o.library = parseLibraryMode(config.resolvedLibrary());
    o.cell_dim = dims.cell_dim;
    o.library_kl_weight = config.library_kl_weight;
    o.target_sum = config.target_sum;
    head = std::make_shared<NegativeBinomialHead>(o);
  } else if (config.kind == "hurdle") {
    head = std::make_shared<HurdleHead>(dims.width, config.target_sum);
  } else if (config.kind == "ce_quant") {
    CeQuantOptions o;
    o.width = dims.width;
    o.singleton_bins = config.singleton_bins;
    o.quantile_bins = config.quantile_bins;
    o.tail_edges = config.tail_edges;
    o.target_sum = config.target_sum;
    head = std::make_shared<CeQuantHead>(o);
  } else if (config.kind == "mse") {
    head = std::make_shared<MseHead>(dims.width, config.target_sum);
  } else {
    throw std::invalid_argument(fmt::format("unknown head kind '{}' (choices: nb, hurdle, ce_quant, mse)", config.kind));
  }
  head->setMmd(MmdOptions{config.mmd.weight, config.mmd.sigmas});
  return head;
}

}  // namespace latentcell::heads
