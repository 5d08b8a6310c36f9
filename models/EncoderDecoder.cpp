// Batch helpers shared by the stage-1 families (see EncoderDecoder.h).
//
// The id range checks cost one host sync per call; they turn a gene outside the model's
// vocabulary into a message naming the model and the range instead of an index error deep in
// at::embedding.
#include "models/EncoderDecoder.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::models {

InputTransform parseInputTransform(const std::string& name) {
  if (name == "log1p") return InputTransform::Log1p;
  if (name == "log1p_cp10k") return InputTransform::Log1pCp10k;
  if (name == "none") return InputTransform::None;
  throw std::invalid_argument("unknown input transform '" + name + "' (use log1p, log1p_cp10k or none)");
}

namespace {

std::string shapeOf(const at::Tensor& t) { return fmt::format("{}", t.sizes()); }

void checkIdRange(const at::Tensor& ids, int64_t num_genes, const std::string& where,
                  const char* field) {
  if (ids.numel() == 0) return;
  auto [lo, hi] = at::aminmax(ids);
  const int64_t min_id = lo.item<int64_t>(), max_id = hi.item<int64_t>();
  if (min_id < 0 || max_id > num_genes) {
    throw std::invalid_argument(fmt::format(
        "{}: {} holds gene id {} outside 0..{} (the model's {} genes + PAD = 0); tokenise the data "
        "with the model's gene vocabulary",
        where, field, min_id < 0 ? min_id : max_id, num_genes, num_genes));
  }
}

}  // namespace

void checkTokens(const CellBatch& batch, int64_t num_genes, const std::string& where) {
  if (!batch.gene_ids.defined() || !batch.counts.defined()) {
    throw std::invalid_argument(where + ": the batch has no gene tokens (gene_ids and counts are required)");
  }
  if (batch.gene_ids.dim() != 2 || batch.gene_ids.scalar_type() != at::kLong) {
    throw std::invalid_argument(fmt::format("{}: gene_ids must be int64 [batch, context], got {} {}",
                                            where, c10::toString(batch.gene_ids.scalar_type()),
                                            shapeOf(batch.gene_ids)));
  }
  if (batch.counts.sizes() != batch.gene_ids.sizes()) {
    throw std::invalid_argument(fmt::format("{}: counts {} must have the shape of gene_ids {}", where,
                                            shapeOf(batch.counts), shapeOf(batch.gene_ids)));
  }
  if (batch.padding_mask.defined() && (batch.padding_mask.sizes() != batch.gene_ids.sizes() ||
                                       batch.padding_mask.scalar_type() != at::kBool)) {
    throw std::invalid_argument(fmt::format("{}: padding_mask must be bool {}, got {} {}", where,
                                            shapeOf(batch.gene_ids),
                                            c10::toString(batch.padding_mask.scalar_type()),
                                            shapeOf(batch.padding_mask)));
  }
  checkIdRange(batch.gene_ids, num_genes, where, "gene_ids");
}

void checkDecodeInputs(const at::Tensor& latent, const at::Tensor& gene_ids, int64_t tokens,
                       int64_t dim, int64_t num_genes, const std::string& where) {
  if (!latent.defined() || latent.dim() != 3 || latent.size(1) != tokens || latent.size(2) != dim) {
    throw std::invalid_argument(fmt::format("{}: latent must be [batch, {}, {}], got {}", where, tokens,
                                            dim, latent.defined() ? shapeOf(latent) : "nothing"));
  }
  if (!gene_ids.defined() || gene_ids.scalar_type() != at::kLong ||
      !(gene_ids.dim() == 1 || (gene_ids.dim() == 2 && gene_ids.size(0) == latent.size(0)))) {
    throw std::invalid_argument(fmt::format(
        "{}: gene_ids must be int64 [genes] or [batch = {}, genes], got {}", where, latent.size(0),
        gene_ids.defined() ? c10::toString(gene_ids.scalar_type()) + std::string(" ") + shapeOf(gene_ids)
                           : std::string("nothing")));
  }
  checkIdRange(gene_ids, num_genes, where, "decode gene_ids");
}

at::Tensor denseCounts(const CellBatch& batch, int64_t num_genes) {
  if (batch.dense_counts.defined()) {
    if (batch.dense_counts.dim() != 2 || batch.dense_counts.size(1) != num_genes) {
      throw std::invalid_argument(fmt::format("dense_counts must be [batch, {}] (the model's genes), got {}",
                                              num_genes, shapeOf(batch.dense_counts)));
    }
    return batch.dense_counts;
  }
  auto counts = batch.counts;
  if (batch.padding_mask.defined()) counts = counts.masked_fill(batch.padding_mask, 0);
  auto dense = at::zeros({batch.gene_ids.size(0), num_genes + 1}, counts.options());  // [b, G + 1]
  dense = dense.scatter_add(1, batch.gene_ids, counts);                                // column 0 = PAD
  return dense.narrow(1, 1, num_genes);                                               // [b, G]
}

at::Tensor transformInput(const at::Tensor& dense, const at::Tensor& library, InputTransform transform) {
  switch (transform) {
    case InputTransform::Log1p:
      return at::log1p(dense);
    case InputTransform::Log1pCp10k: {
      auto l = library.defined() ? library.to(dense.scalar_type()) : dense.sum(1);   // [b]
      // A cell without counts stays zero (scanpy's normalize_total leaves it so).
      auto scale = at::where(l > 0, 1e4 / l.clamp_min(1e-12), at::zeros_like(l));     // [b]
      return at::log1p(dense * scale.unsqueeze(1));                                   // [b, G]
    }
    case InputTransform::None:
      return dense;
  }
  throw std::logic_error("transformInput: unhandled transform");
}

at::Tensor denseInput(const CellBatch& batch, int64_t num_genes, InputTransform transform,
                      const std::string& where) {
  if (!batch.dense_counts.defined()) checkTokens(batch, num_genes, where);
  return transformInput(denseCounts(batch, num_genes), batch.library, transform);  // [b, G]
}

}  // namespace latentcell::models
