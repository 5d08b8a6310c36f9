// Cells as gene-token sequences for the MCAB encoder (notes sec. 1, scLDM "expressed" mode).
//
// A cell becomes the list of its expressed genes (count > 0), in gene order, packed to the left and
// padded to a fixed context length: gene j of the panel gets id j + 1 and PAD is id 0 with count 0.
// The public scLDM code stops when a cell has more expressed genes than the context; here that is
// one option (Error, the default, so nothing is dropped silently) next to two truncations: a seeded
// random subset and the top-k genes by count. Mode All emits every gene of a small panel in order
// (no packing), which is what a dense decoder target or a panel smaller than the context wants.
//
// Tokenisation runs on the CSR counts on the CPU (what a loader holds) or, for small panels already
// dense, with tensor ops on any device. The two agree exactly except for the random subset, whose
// draws come from different generators.
#pragma once

#include "data/AnnData.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::data {

enum class TokenMode { Expressed, All };
enum class Truncation { Error, Random, TopK };

// "expressed" / "all" and "error" / "random" / "topk"; anything else throws std::invalid_argument
// naming the value and the choices.
TokenMode parseTokenMode(const std::string& name);
Truncation parseTruncation(const std::string& name);

struct TokenizerOptions {
  int64_t context_length = 0;
  TokenMode mode = TokenMode::Expressed;
  Truncation truncation = Truncation::Error;
  // Random truncation: the subset of cell i depends only on (seed, i), not on the batch it is in;
  // pass a different seed per epoch to draw new subsets.
  uint64_t seed = 0;
};

struct Tokens {
  at::Tensor gene_ids;      // [cells, context] int64: gene + 1, 0 = PAD
  at::Tensor counts;        // [cells, context] float32, 0 at PAD
  at::Tensor padding_mask;  // [cells, context] bool, true = PAD (core/Attention.h convention)
};

// Tokenises rows `rows` of `counts` (all rows when empty); rows are the cell indices used in error
// messages and random seeds. Output tensors are on the CPU.
Tokens tokenize(const CsrMatrix& counts, const TokenizerOptions& options, const std::vector<int64_t>& rows = {});

// Tokenises a dense [cells, genes] count tensor with tensor ops on its own device; the i-th row is
// cell `first_cell + i` in messages.
Tokens tokenizeDense(const at::Tensor& counts, const TokenizerOptions& options, int64_t first_cell = 0);

}  // namespace latentcell::data
