// Expressed-gene tokenisation (see Tokenizer.h).
#include "data/Tokenizer.h"

#include "core/Random.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <stdexcept>

namespace latentcell::data {
namespace {

void checkOptions(const TokenizerOptions& o) {
  if (o.context_length < 1)
    throw std::invalid_argument(fmt::format("tokenizer: context_length must be >= 1, got {}", o.context_length));
}

[[noreturn]] void tooManyGenes(int64_t cell, int64_t expressed, int64_t context) {
  throw std::invalid_argument(fmt::format(
      "tokenizer: cell {} has {} expressed genes but the context length is {} (raise the context length "
      "or choose truncation random or topk)",
      cell, expressed, context));
}

[[noreturn]] void panelTooLarge(int64_t genes, int64_t context) {
  throw std::invalid_argument(fmt::format(
      "tokenizer: mode all needs context_length >= the number of genes, got {} genes and context {}", genes,
      context));
}

}  // namespace

TokenMode parseTokenMode(const std::string& name) {
  if (name == "expressed") return TokenMode::Expressed;
  if (name == "all") return TokenMode::All;
  throw std::invalid_argument("tokenizer: unknown mode '" + name + "' (choices: expressed, all)");
}

Truncation parseTruncation(const std::string& name) {
  if (name == "error") return Truncation::Error;
  if (name == "random") return Truncation::Random;
  if (name == "topk") return Truncation::TopK;
  throw std::invalid_argument("tokenizer: unknown truncation '" + name + "' (choices: error, random, topk)");
}

Tokens tokenize(const CsrMatrix& counts, const TokenizerOptions& options, const std::vector<int64_t>& rows) {
  checkOptions(options);
  const int64_t ctx = options.context_length;
  const int64_t n = rows.empty() ? counts.rows : static_cast<int64_t>(rows.size());
  if (options.mode == TokenMode::All && counts.cols > ctx) panelTooLarge(counts.cols, ctx);

  // Plain loops, no ATen kernels: loader threads tokenise, and ATen's intra-op pool (OpenMP) run
  // from several threads on a loaded machine oversubscribes the cores badly.
  at::Tensor ids = at::empty({n, ctx}, at::kLong);  // [cells, context]
  at::Tensor vals = at::empty({n, ctx}, at::kFloat);
  at::Tensor pad = at::empty({n, ctx}, at::kBool);
  int64_t* id_ptr = ids.data_ptr<int64_t>();
  float* val_ptr = vals.data_ptr<float>();
  std::fill_n(id_ptr, n * ctx, 0);
  std::fill_n(val_ptr, n * ctx, 0.0f);
  std::vector<std::pair<int32_t, float>> genes;  // (gene, count) of one cell
  for (int64_t i = 0; i < n; ++i) {
    const int64_t cell = rows.empty() ? i : rows[i];
    if (cell < 0 || cell >= counts.rows)
      throw std::out_of_range(fmt::format("tokenizer: row {} is outside the matrix of {} cells", cell, counts.rows));
    int64_t* out_id = id_ptr + i * ctx;
    float* out_val = val_ptr + i * ctx;
    if (options.mode == TokenMode::All) {
      for (int64_t g = 0; g < counts.cols; ++g) out_id[g] = g + 1;
      for (int64_t k = counts.indptr[cell]; k < counts.indptr[cell + 1]; ++k) out_val[counts.indices[k]] = counts.data[k];
      continue;
    }
    genes.clear();
    for (int64_t k = counts.indptr[cell]; k < counts.indptr[cell + 1]; ++k)
      if (counts.data[k] > 0) genes.emplace_back(counts.indices[k], counts.data[k]);  // explicit zeros are not expressed
    const int64_t expressed = static_cast<int64_t>(genes.size());
    if (expressed > ctx) {
      switch (options.truncation) {
        case Truncation::Error: tooManyGenes(cell, expressed, ctx);
        case Truncation::TopK:
          // Ties go to the lower gene id, as in the dense path.
          std::partial_sort(genes.begin(), genes.begin() + ctx, genes.end(), [](const auto& a, const auto& b) {
            return a.second != b.second ? a.second > b.second : a.first < b.first;
          });
          break;
        case Truncation::Random: {
          std::mt19937_64 rng(core::splitMix64(options.seed ^ core::splitMix64(static_cast<uint64_t>(cell))));
          for (int64_t k = 0; k < ctx; ++k)  // partial Fisher-Yates: the first ctx are a uniform subset
            std::swap(genes[k], genes[k + core::uniformBelow(rng, static_cast<uint64_t>(expressed - k))]);
          break;
        }
      }
      genes.resize(ctx);
      std::sort(genes.begin(), genes.end());
    }
    for (size_t k = 0; k < genes.size(); ++k) {
      out_id[k] = genes[k].first + 1;
      out_val[k] = genes[k].second;
    }
  }
  bool* pad_ptr = pad.data_ptr<bool>();
  for (int64_t k = 0; k < n * ctx; ++k) pad_ptr[k] = id_ptr[k] == 0;
  return {ids, vals, pad};
}

Tokens tokenizeDense(const at::Tensor& counts, const TokenizerOptions& options, int64_t first_cell) {
  checkOptions(options);
  if (counts.dim() != 2)
    throw std::invalid_argument(fmt::format("tokenizer: dense counts must be [cells, genes], got {} dims", counts.dim()));
  const int64_t ctx = options.context_length;
  const int64_t n = counts.size(0), g = counts.size(1);
  const at::Tensor x = counts.to(at::kFloat);
  auto long_opts = x.options().dtype(at::kLong);

  if (options.mode == TokenMode::All) {
    if (g > ctx) panelTooLarge(g, ctx);
    at::Tensor ids = at::zeros({n, ctx}, long_opts);
    ids.narrow(1, 0, g).copy_(at::arange(1, g + 1, long_opts).expand({n, g}));
    at::Tensor vals = at::zeros({n, ctx}, x.options());
    vals.narrow(1, 0, g).copy_(x);
    return {ids, vals, ids.eq(0)};
  }

  const at::Tensor expressed = x.gt(0);
  at::Tensor selected = expressed;
  const at::Tensor per_cell = expressed.sum(1);
  if (n > 0 && per_cell.max().item<int64_t>() > ctx) {
    const at::Tensor score = [&] {
      switch (options.truncation) {
        case Truncation::Error: {
          const int64_t row = per_cell.gt(ctx).to(at::kLong).argmax().item<int64_t>();
          tooManyGenes(first_cell + row, per_cell[row].item<int64_t>(), ctx);
        }
        case Truncation::TopK: return at::where(expressed, x, -1.0);
        case Truncation::Random: {
          at::Generator gen = core::makeGenerator(options.seed, x.device());
          return at::where(expressed, at::rand({n, g}, gen, x.options()), -1.0);
        }
      }
      return at::Tensor();
    }();
    // A stable descending sort keeps the lower gene first among equal counts (as the CSR path).
    const at::Tensor top = std::get<1>(at::sort(score, /*stable=*/true, /*dim=*/1, /*descending=*/true)).narrow(1, 0, ctx);
    selected = at::zeros_like(expressed).scatter(1, top, expressed.gather(1, top));
  }
  // Pack the selected genes to the left in gene order: a stable sort on "not selected".
  const int64_t width = std::min(ctx, g);
  const at::Tensor pos =
      std::get<1>(at::sort(selected.logical_not().to(at::kByte), /*stable=*/true, /*dim=*/1, /*descending=*/false))
          .narrow(1, 0, width);
  const at::Tensor keep = selected.gather(1, pos);
  at::Tensor ids = at::zeros({n, ctx}, long_opts);
  at::Tensor vals = at::zeros({n, ctx}, x.options());
  ids.narrow(1, 0, width).copy_(at::where(keep, pos + 1, 0));
  vals.narrow(1, 0, width).copy_(at::where(keep, x.gather(1, pos), 0.0));
  return {ids, vals, ids.eq(0)};
}

}  // namespace latentcell::data
