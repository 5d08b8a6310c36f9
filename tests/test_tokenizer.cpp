// Tests for data/Tokenizer: expressed genes packed left in gene order with PAD = 0, the three
// truncation modes (error message, seeded random subsets that do not depend on the batch, top-k by
// count with ties to the lower gene), mode all, and the dense tensor path agreeing with the CSR path.
#include "data/Tokenizer.h"

#include "TestUtil.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

using namespace latentcell::data;

namespace {

using latentcell::test::csrFromDense;

at::Tensor denseOf(const CsrMatrix& m) {
  at::Tensor d = torch::zeros({m.rows, m.cols});
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t k = m.indptr[r]; k < m.indptr[r + 1]; ++k) d[r][m.indices[k]] = m.data[k];
  return d;
}

TokenizerOptions opts(int64_t ctx, Truncation t = Truncation::Error, uint64_t seed = 0) {
  TokenizerOptions o;
  o.context_length = ctx;
  o.truncation = t;
  o.seed = seed;
  return o;
}

CsrMatrix randomCounts(int64_t cells, int64_t genes, double p_zero, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor x = torch::randint(1, 6, {cells, genes}).to(torch::kFloat) *
                 torch::rand({cells, genes}).ge(p_zero).to(torch::kFloat);
  std::vector<std::vector<float>> rows(cells, std::vector<float>(genes));
  for (int64_t i = 0; i < cells; ++i)
    for (int64_t j = 0; j < genes; ++j) rows[i][j] = x[i][j].item<float>();
  return csrFromDense(rows);
}

at::Tensor floats(std::vector<float> v) { return torch::tensor(v); }

void expectSame(const Tokens& a, const Tokens& b) {
  EXPECT_TRUE(torch::equal(a.gene_ids.cpu(), b.gene_ids.cpu())) << a.gene_ids << "\n" << b.gene_ids;
  EXPECT_TRUE(torch::equal(a.counts.cpu(), b.counts.cpu()));
  EXPECT_TRUE(torch::equal(a.padding_mask.cpu(), b.padding_mask.cpu()));
}

}  // namespace

TEST(Tokenizer, PacksExpressedGenesLeftWithPadding) {
  CsrMatrix m = csrFromDense({{0, 3, 0, 1, 0}, {0, 0, 0, 0, 0}, {2, 1, 1, 1, 7}});
  // An explicit zero stored in the CSR is not an expressed gene.
  m.indices.insert(m.indices.begin() + 2, 4);
  m.data.insert(m.data.begin() + 2, 0.0f);
  m.indptr[1] += 1, m.indptr[2] += 1, m.indptr[3] += 1;
  const Tokens t = tokenize(m, opts(5));
  EXPECT_TRUE(torch::equal(t.gene_ids, torch::tensor({2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5},
                                                     torch::kLong).view({3, 5})));
  EXPECT_TRUE(torch::equal(t.counts, floats({3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 1, 1, 7}).view({3, 5})));
  EXPECT_TRUE(torch::equal(t.padding_mask, t.gene_ids.eq(0)));
  EXPECT_EQ(t.gene_ids.scalar_type(), torch::kLong);
  EXPECT_EQ(t.counts.scalar_type(), torch::kFloat);

  // A subset of rows in the given order.
  const Tokens sub = tokenize(m, opts(5), {2, 0});
  EXPECT_TRUE(torch::equal(sub.gene_ids[0], t.gene_ids[2]));
  EXPECT_TRUE(torch::equal(sub.gene_ids[1], t.gene_ids[0]));
  EXPECT_THROW(tokenize(m, opts(5), {3}), std::out_of_range);
}

TEST(Tokenizer, ErrorModeNamesCellAndCounts) {
  const CsrMatrix m = csrFromDense({{1, 0, 0, 0}, {1, 1, 1, 0}, {1, 1, 1, 1}});
  try {
    tokenize(m, opts(2), {0, 2});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("cell 2 has 4 expressed genes but the context length is 2"), std::string::npos)
        << e.what();
  }
  try {
    tokenizeDense(denseOf(m), opts(2), 100);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("cell 101 has 3 expressed genes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tokenize(m, opts(0)), std::invalid_argument);
}

TEST(Tokenizer, TopKKeepsLargestCountsInGeneOrder) {
  const CsrMatrix m = csrFromDense({{5, 1, 9, 2, 2, 0, 7}});
  const Tokens t = tokenize(m, opts(4, Truncation::TopK));
  // Counts 9, 7, 5 and one of the tied 2s: the lower gene (id 4) wins.
  EXPECT_TRUE(torch::equal(t.gene_ids, torch::tensor({{1, 3, 4, 7}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(t.counts, floats({5, 9, 2, 7}).view({1, 4})));
  EXPECT_FALSE(t.padding_mask.any().item<bool>());
}

TEST(Tokenizer, RandomSubsetIsSeededPerCellAndUniform) {
  const CsrMatrix m = randomCounts(40, 30, 0.2, 1);
  const Tokens a = tokenize(m, opts(8, Truncation::Random, 5));
  expectSame(a, tokenize(m, opts(8, Truncation::Random, 5)));
  EXPECT_FALSE(torch::equal(a.gene_ids, tokenize(m, opts(8, Truncation::Random, 6)).gene_ids));
  // Cell 7's subset does not depend on which batch it is tokenised in.
  const Tokens b = tokenize(m, opts(8, Truncation::Random, 5), {7, 3});
  EXPECT_TRUE(torch::equal(b.gene_ids[0], a.gene_ids[7]));
  for (int64_t i = 0; i < m.rows; ++i) {
    std::set<int64_t> expressed;
    for (int64_t k = m.indptr[i]; k < m.indptr[i + 1]; ++k) expressed.insert(m.indices[k] + 1);
    auto ids = a.gene_ids[i];
    for (int64_t k = 0; k < 8; ++k) {
      EXPECT_TRUE(expressed.count(ids[k].item<int64_t>())) << "cell " << i;
      if (k > 0) {
        EXPECT_LT(ids[k - 1].item<int64_t>(), ids[k].item<int64_t>()) << "cell " << i;
      }
    }
  }
  // Over many seeds every expressed gene of a cell is kept about ctx / expressed of the time.
  const CsrMatrix one = csrFromDense({std::vector<float>(10, 1.0f)});
  std::vector<int> kept(10, 0);
  for (uint64_t s = 0; s < 2000; ++s) {
    const Tokens t = tokenize(one, opts(3, Truncation::Random, s));
    for (int64_t k = 0; k < 3; ++k) kept[t.gene_ids[0][k].item<int64_t>() - 1]++;
  }
  for (int g = 0; g < 10; ++g) EXPECT_NEAR(kept[g] / 2000.0, 0.3, 0.05) << "gene " << g;
}

TEST(Tokenizer, DensePathMatchesCsrPath) {
  const CsrMatrix m = randomCounts(25, 40, 0.6, 2);
  const at::Tensor d = denseOf(m);
  expectSame(tokenize(m, opts(40)), tokenizeDense(d, opts(40)));
  expectSame(tokenize(m, opts(64)), tokenizeDense(d, opts(64)));  // context wider than the panel
  expectSame(tokenize(m, opts(6, Truncation::TopK)), tokenizeDense(d, opts(6, Truncation::TopK)));
  // Random in the dense path: a subset of the expressed genes, packed in gene order, seeded.
  const Tokens r = tokenizeDense(d, opts(6, Truncation::Random, 3));
  expectSame(r, tokenizeDense(d, opts(6, Truncation::Random, 3)));
  const at::Tensor valid = r.gene_ids.gt(0);
  const at::Tensor picked = d.gather(1, (r.gene_ids - 1).clamp_min(0));
  EXPECT_TRUE(torch::equal(picked * valid, r.counts));
  EXPECT_TRUE(r.counts.masked_select(valid).gt(0).all().item<bool>());
  EXPECT_TRUE(torch::equal(valid.sum(1), d.gt(0).sum(1).clamp_max(6)));
}

TEST(Tokenizer, AllModeEmitsEveryGene) {
  const CsrMatrix m = csrFromDense({{0, 2, 0}, {1, 0, 0}});
  TokenizerOptions o = opts(4);
  o.mode = TokenMode::All;
  const Tokens t = tokenize(m, o);
  EXPECT_TRUE(torch::equal(t.gene_ids, torch::tensor({{1, 2, 3, 0}, {1, 2, 3, 0}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(t.counts, floats({0, 2, 0, 0, 1, 0, 0, 0}).view({2, 4})));
  expectSame(t, tokenizeDense(denseOf(m), o));
  o.context_length = 2;
  EXPECT_THROW(tokenize(m, o), std::invalid_argument);
}

TEST(Tokenizer, ParsesNames) {
  EXPECT_EQ(parseTruncation("topk"), Truncation::TopK);
  EXPECT_EQ(parseTruncation("random"), Truncation::Random);
  EXPECT_EQ(parseTokenMode("all"), TokenMode::All);
  EXPECT_THROW(parseTruncation("top-k"), std::invalid_argument);
  EXPECT_THROW(parseTokenMode("dense"), std::invalid_argument);
}
