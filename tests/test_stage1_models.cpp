// Stage-1 encoders and decoders (models/): the MCAB pair's symmetries (issue 5, acceptance 1:
// the latent is invariant to the order of the input genes and to the amount of padding, decoder
// outputs permute exactly with the queried genes), gradients against finite differences in double,
// the count-embedding formulas, the MLP family, the PCA baseline against an exact SVD and a numpy
// reference, decoder-only mode, and the errors bad configs and inputs get.
#include "GradCheck.h"
#include "TestUtil.h"
#include "core/Config.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "models/DecoderOnly.h"
#include "models/EncoderDecoder.h"
#include "models/GeneEmbedding.h"
#include "models/McabEncoderDecoder.h"
#include "models/MlpEncoderDecoder.h"
#include "models/PcaBaseline.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>

using namespace latentcell;
using namespace latentcell::models;
using latentcell::test::errorOf;

namespace {

constexpr int64_t kGenes = 30;

// The tensors here are tiny: LibTorch's intra-op thread pool only adds overhead, and on a shared
// machine contention (the gradient checks took 40 s with the default pool, 2 s on one thread).
class SingleThreaded : public ::testing::Environment {
 public:
  void SetUp() override { torch::set_num_threads(1); }
};
const auto* const kSingleThreaded = ::testing::AddGlobalTestEnvironment(new SingleThreaded);

CellBatch tokens(const torch::Tensor& gene_ids, const torch::Tensor& counts) {
  CellBatch b;
  b.gene_ids = gene_ids;
  b.counts = counts;
  b.padding_mask = gene_ids.eq(0);
  return b;
}

// A small MCAB configuration: every part present (blocks on both sides, several heads), fast.
McabConfig smallMcab(const std::string& count_embedding = "log1p") {
  McabConfig c;
  c.width = 16;
  c.heads = 4;
  c.cross_heads = 2;
  c.encoder_blocks = 2;
  c.decoder_blocks = 1;
  c.latent_tokens = 5;
  c.latent_dim = 6;
  c.count_embedding = count_embedding;
  c.multiple_of = 16;
  return c;
}

// Cells with `lengths[i]` distinct expressed genes (random ids in 1..kGenes, counts 1..40),
// packed to the left and padded to `context` as data::tokenize does.
CellBatch randomCells(const std::vector<int64_t>& lengths, int64_t context) {
  const auto b = static_cast<int64_t>(lengths.size());
  auto ids = torch::zeros({b, context}, torch::kLong);
  auto counts = torch::zeros({b, context});
  for (int64_t i = 0; i < b; ++i) {
    const int64_t n = lengths[i];
    ids[i].narrow(0, 0, n).copy_(torch::randperm(kGenes, torch::kLong).narrow(0, 0, n) + 1);
    counts[i].narrow(0, 0, n).copy_(torch::randint(1, 41, {n}).to(torch::kFloat));
  }
  return tokens(ids, counts);
}

// Every cell's positions (tokens and PAD alike) in a random order of its own.
CellBatch shuffled(const CellBatch& in) {
  CellBatch out = in;
  const int64_t b = in.gene_ids.size(0), n = in.gene_ids.size(1);
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < b; ++i) rows.push_back(torch::randperm(n, torch::kLong));
  auto order = torch::stack(rows);  // [b, n]
  out.gene_ids = in.gene_ids.gather(1, order);
  out.counts = in.counts.gather(1, order);
  out.padding_mask = in.padding_mask.gather(1, order);
  return out;
}

// `extra` more PAD positions after every cell.
CellBatch morePadding(const CellBatch& in, int64_t extra) {
  const int64_t b = in.gene_ids.size(0);
  CellBatch out = in;
  out.gene_ids = torch::cat({in.gene_ids, torch::zeros({b, extra}, torch::kLong)}, 1);
  out.counts = torch::cat({in.counts, torch::zeros({b, extra})}, 1);
  out.padding_mask = out.gene_ids.eq(0);
  return out;
}

double maxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Float32 agreement of two computations that differ only in summation order: 1e-5 of the scale.
void expectSameUpToRounding(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double scale = 1.0 + want.abs().max().item<double>();
  EXPECT_LE(maxAbsDiff(got, want), 1e-5 * scale) << what;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Acceptance 1: symmetries of the full MCAB encoder and decoder.

TEST(McabEncoder, LatentIsInvariantToGeneOrder) {
  for (const std::string kind : {"concat", "log1p", "mlp"}) {
    SCOPED_TRACE(kind);
    torch::manual_seed(1);
    McabEncoderDecoder model(kGenes, smallMcab(kind));
    model.eval();
    auto batch = randomCells({12, 3, 20, 1}, 24);
    auto z = model.encode(batch);
    ASSERT_EQ(z.sizes(), (std::vector<int64_t>{4, 5, 6}));
    for (int trial = 0; trial < 3; ++trial) expectSameUpToRounding(model.encode(shuffled(batch)), z, "shuffled");
  }
}

TEST(McabEncoder, LatentIsInvariantToPadding) {
  for (const std::string kind : {"concat", "log1p", "mlp"}) {
    SCOPED_TRACE(kind);
    torch::manual_seed(2);
    McabEncoderDecoder model(kGenes, smallMcab(kind));
    model.eval();
    auto batch = randomCells({7, 2, 9}, 9);  // the longest cell fills the context
    auto z = model.encode(batch);
    expectSameUpToRounding(model.encode(morePadding(batch, 1)), z, "1 more PAD");
    expectSameUpToRounding(model.encode(morePadding(batch, 40)), z, "40 more PAD");
    // PAD interleaved with the tokens: more padding and a new order at once.
    expectSameUpToRounding(model.encode(shuffled(morePadding(batch, 13))), z, "shuffled with PAD");
    // Without a padding mask in the batch, PAD is recognised by its id.
    auto unmasked = batch;
    unmasked.padding_mask = torch::Tensor();
    EXPECT_TRUE(torch::equal(model.encode(unmasked), z));
    // A cell alone equals the same cell inside a batch padded to another cell's length.
    auto alone = randomCells({9}, 9);
    auto one = tokens(alone.gene_ids, alone.counts);
    expectSameUpToRounding(model.encode(morePadding(one, 5)), model.encode(one), "single cell");
  }
}

TEST(McabEncoder, PaddingMaskIsWhatMakesTheLatentPaddingInvariant) {
  // The public scLDM code does not mask PAD: the latent then still ignores the gene order, but
  // depends on how many PAD tokens there are (they take part in the softmax).
  torch::manual_seed(3);
  auto config = smallMcab("concat");
  config.mask_padding = false;
  McabEncoderDecoder model(kGenes, config);
  model.eval();
  auto batch = randomCells({6, 4}, 8);
  auto z = model.encode(batch);
  expectSameUpToRounding(model.encode(shuffled(batch)), z, "unmasked, shuffled");
  EXPECT_GT(maxAbsDiff(model.encode(morePadding(batch, 8)), z), 1e-3);
}

TEST(McabEncoderDecoder, ReconstructionIsInvariantToInputOrderAndPadding) {
  torch::manual_seed(4);
  McabEncoderDecoder model(kGenes, smallMcab("mlp"));
  model.eval();
  auto batch = randomCells({11, 5, 8}, 16);
  auto all_genes = torch::arange(1, kGenes + 1, torch::kLong);
  auto out = model.decode(model.encode(batch), all_genes);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, kGenes, 16}));
  expectSameUpToRounding(model.decode(model.encode(shuffled(morePadding(batch, 7))), all_genes), out,
                         "shuffled and padded input");
}

TEST(McabDecoder, OutputsPermuteExactlyWithTheQueriedGenes) {
  torch::manual_seed(5);
  McabEncoderDecoder model(kGenes, smallMcab("concat"));
  model.eval();
  auto latent = torch::randn({3, 5, 6});
  auto genes = torch::randperm(kGenes, torch::kLong) + 1;                       // [G]
  auto out = model.decode(latent, genes);                                       // [3, G, E]
  for (int trial = 0; trial < 3; ++trial) {
    auto perm = torch::randperm(kGenes, torch::kLong);
    auto permuted = model.decode(latent, genes.index_select(0, perm));
    EXPECT_TRUE(torch::equal(permuted, out.index_select(1, perm))) << maxAbsDiff(permuted, out.index_select(1, perm));
  }
  // Per-cell gene lists: each cell's own permutation.
  auto per_cell = torch::stack({genes, genes.flip(0), genes.roll(7)});          // [3, G]
  auto out_cells = model.decode(latent, per_cell);
  auto perm = torch::stack({torch::randperm(kGenes, torch::kLong), torch::randperm(kGenes, torch::kLong),
                            torch::randperm(kGenes, torch::kLong)});           // [3, G]
  auto permuted = model.decode(latent, per_cell.gather(1, perm));
  auto expected = out_cells.gather(1, perm.unsqueeze(-1).expand({3, kGenes, 16}));
  EXPECT_TRUE(torch::equal(permuted, expected)) << maxAbsDiff(permuted, expected);
  // A subset of genes gets the same outputs as in the full request: rows depend only on their gene.
  auto subset = genes.narrow(0, 4, 9);
  expectSameUpToRounding(model.decode(latent, subset), out.narrow(1, 4, 9), "subset of genes");
}

TEST(McabEncoderDecoder, GeneTableIsSharedAndOwnedOnce) {
  McabEncoderDecoder model(kGenes, smallMcab());
  int64_t tables = 0;
  for (const auto& [name, tensor] : core::stateDict(model)) {
    if (tensor.dim() == 2 && tensor.size(0) == kGenes + 1) {
      ++tables;
      EXPECT_EQ(name, "genes.weight");
    }
  }
  EXPECT_EQ(tables, 1);
  // The decoder's queries are the table's rows: changing a row changes that gene's output only.
  model.eval();
  auto latent = torch::randn({2, 5, 6});
  auto genes = torch::tensor({3, 8, 21}, torch::kLong);
  auto before = model.decode(latent, genes);
  {
    torch::NoGradGuard ng;
    model.genes->weight[8].add_(1.0);
  }
  auto after = model.decode(latent, genes);
  EXPECT_TRUE(torch::equal(after.select(1, 0), before.select(1, 0)));
  EXPECT_GT(maxAbsDiff(after.select(1, 1), before.select(1, 1)), 1e-3);
}

// ---------------------------------------------------------------------------------------------
// Gradients in double against finite differences.

TEST(McabEncoderDecoder, GradientsMatchFiniteDifferences) {
  for (const std::string kind : {"concat", "log1p", "mlp"}) {
    SCOPED_TRACE(kind);
    torch::manual_seed(6);
    auto config = smallMcab(kind);
    config.width = 8;
    config.heads = 2;
    config.latent_tokens = 3;
    config.latent_dim = 4;
    config.multiple_of = 8;
    config.latent_norm = true;
    McabEncoderDecoder model(10, config);
    test::randomiseDouble(model);
    auto ids = torch::tensor({{3, 7, 1, 0}, {9, 2, 0, 0}}, torch::kLong);
    auto counts = torch::tensor({{2.0, 5.0, 1.0, 0.0}, {3.0, 1.0, 0.0, 0.0}}, torch::kDouble).requires_grad_(true);
    auto genes = torch::tensor({4, 9, 1}, torch::kLong);
    auto f = [&] { return model.decode(model.encode(tokens(ids, counts)), genes); };
    auto wrt = test::withParameters(model);
    wrt.emplace_back("counts", counts);
    test::expectGradientsMatch(f, wrt, 6);
  }
}

TEST(McabDecoder, GradientsMatchFiniteDifferencesInLatentAndPerCellQueries) {
  torch::manual_seed(7);
  auto config = smallMcab("log1p");
  config.width = 8;
  config.heads = 2;
  config.decoder_blocks = 2;
  config.latent_tokens = 3;
  config.latent_dim = 4;
  config.multiple_of = 8;
  McabEncoderDecoder model(10, config);
  test::randomiseDouble(model);
  auto latent = torch::randn({2, 3, 4}, torch::kDouble).requires_grad_(true);
  auto genes = torch::tensor({{4, 9, 1}, {2, 2, 10}}, torch::kLong);
  auto wrt = test::withParameters(*model.decoder);
  wrt.emplace_back("latent", latent);
  test::expectGradientsMatch([&] { return model.decode(latent, genes); }, wrt, 8);
}

// ---------------------------------------------------------------------------------------------
// Gene and count embeddings: the notes' formulas.

TEST(GeneEmbedding, PadRowIsZeroAndGetsNoGradient) {
  GeneEmbedding table(6, 4);
  EXPECT_TRUE(torch::equal(table->weight[0], torch::zeros({4})));
  auto ids = torch::tensor({{0, 3, 0}}, torch::kLong);
  table(ids).sum().backward();
  EXPECT_TRUE(torch::equal(table->weight.grad()[0], torch::zeros({4})));
  EXPECT_TRUE(torch::equal(table->weight.grad()[3], torch::ones({4})));
}

TEST(CountEmbedding, FormsFollowTheirFormulas) {
  torch::manual_seed(8);
  auto v = torch::randn({2, 3, 4});
  auto x = torch::tensor({{0.0, 1.0, 7.0}, {2.0, 0.0, 100.0}});
  auto lx = torch::log1p(x).unsqueeze(-1);  // [2, 3, 1]

  CountEmbedding log1p(CountEmbeddingKind::Log1p, 4);
  EXPECT_TRUE(torch::allclose(log1p(v, x), v * lx));
  EXPECT_TRUE(torch::equal(log1p(v, x).select(1, 0)[0], torch::zeros({4})));  // count 0 -> 0

  CountEmbedding concat(CountEmbeddingKind::Concat, 4);
  auto w = concat->proj->weight, b = concat->proj->bias;                     // [4, 8], [4]
  auto want = torch::matmul(v, w.narrow(1, 0, 4).t()) + lx * w.narrow(1, 4, 4).sum(1) + b;
  EXPECT_TRUE(torch::allclose(concat(v, x), want, 1e-5, 1e-6));

  CountEmbedding mlp(CountEmbeddingKind::Mlp, 4, 5);
  auto h = torch::gelu(lx * mlp->mlp->fc1->weight.view({1, 1, 5}) + mlp->mlp->fc1->bias);  // [2, 3, 5]
  auto f = torch::matmul(h, mlp->mlp->fc2->weight.t()) + mlp->mlp->fc2->bias;              // [2, 3, 4]
  EXPECT_TRUE(torch::allclose(mlp(v, x), v * f, 1e-5, 1e-6));
}

// ---------------------------------------------------------------------------------------------
// Bad configs and inputs.

TEST(McabConfig, InvalidValuesAreRejectedWithTheKey) {
  auto config = smallMcab();
  config.heads = 3;
  auto msg = errorOf([&] { McabEncoderDecoder(kGenes, config); });
  EXPECT_NE(msg.find("heads"), std::string::npos) << msg;
  EXPECT_NE(msg.find("width"), std::string::npos) << msg;

  McabConfig loaded;
  msg = errorOf([&] { core::loadConfigText(loaded, "count_embedding: film\n", "model.yaml"); });
  EXPECT_NE(msg.find("count_embedding"), std::string::npos) << msg;
  EXPECT_NE(msg.find("concat"), std::string::npos) << msg;
  msg = errorOf([&] { core::loadConfigText(loaded, "latent_token: 4\n", "model.yaml"); });
  EXPECT_NE(msg.find("latent_token"), std::string::npos) << msg;
  // Round trip of a non-default config.
  auto custom = smallMcab("mlp");
  McabConfig back;
  core::loadConfigText(back, core::dumpConfig(custom), "dump");
  EXPECT_EQ(core::dumpConfig(back), core::dumpConfig(custom));
}

TEST(McabEncoderDecoder, BadInputsGetClearErrors) {
  McabEncoderDecoder model(kGenes, smallMcab());
  auto batch = randomCells({3, 2}, 4);
  auto bad = batch;
  bad.gene_ids = bad.gene_ids.clone();
  bad.gene_ids[0][0] = kGenes + 5;
  auto msg = errorOf([&] { model.encode(bad); });
  EXPECT_NE(msg.find("outside 0..30"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocabulary"), std::string::npos) << msg;

  bad = batch;
  bad.counts = bad.counts.narrow(1, 0, 3);
  msg = errorOf([&] { model.encode(bad); });
  EXPECT_NE(msg.find("counts"), std::string::npos) << msg;

  msg = errorOf([&] { model.encode(CellBatch{}); });
  EXPECT_NE(msg.find("no gene tokens"), std::string::npos) << msg;

  msg = errorOf([&] { model.decode(torch::randn({2, 4, 6}), torch::tensor({1, 2}, torch::kLong)); });
  EXPECT_NE(msg.find("latent must be [batch, 5, 6]"), std::string::npos) << msg;
  msg = errorOf([&] { model.decode(torch::randn({2, 5, 6}), torch::tensor({1, 31}, torch::kLong)); });
  EXPECT_NE(msg.find("decode gene_ids holds gene id 31"), std::string::npos) << msg;
  msg = errorOf([&] { model.decode(torch::randn({2, 5, 6}), torch::ones({3, 2}, torch::kLong)); });
  EXPECT_NE(msg.find("[batch = 2, genes]"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// The dense MLP family.

namespace {

MlpConfig smallMlp(const std::string& norm) {
  MlpConfig c;
  c.hidden = {12, 9};
  c.latent_dim = 5;
  c.output_width = 3;
  c.norm = norm;
  return c;
}

}  // namespace

TEST(MlpEncoderDecoder, ShapesAndTokenOrDenseInputAgree) {
  torch::manual_seed(9);
  for (const std::string norm : {"layer", "batch", "none"}) {
    SCOPED_TRACE(norm);
    MlpEncoderDecoder model(kGenes, smallMlp(norm));
    model.eval();
    auto batch = randomCells({5, 12, 1}, 14);
    auto z = model.encode(batch);
    ASSERT_EQ(z.sizes(), (std::vector<int64_t>{3, 1, 5}));
    // The same cells given as dense counts of every gene.
    auto dense = torch::zeros({3, kGenes + 1}).scatter_add(1, batch.gene_ids, batch.counts).narrow(1, 1, kGenes);
    CellBatch as_dense;
    as_dense.dense_counts = dense;
    EXPECT_TRUE(torch::equal(model.encode(as_dense), z));
    // Tokens in any order, with any padding: the scatter makes the dense family order-free too.
    EXPECT_TRUE(torch::equal(model.encode(shuffled(morePadding(batch, 6))), z));

    auto genes = torch::randperm(kGenes, torch::kLong) + 1;
    auto out = model.decode(z, genes);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, kGenes, 3}));
    auto perm = torch::randperm(kGenes, torch::kLong);
    expectSameUpToRounding(model.decode(z, genes.index_select(0, perm)), out.index_select(1, perm), "permuted");
    // Per-cell gene lists give each cell's rows of the shared request.
    auto per_cell = torch::stack({genes, genes.flip(0), genes});
    auto expected = torch::stack({out[0], out[1].flip(0), out[2]});
    expectSameUpToRounding(model.decode(z, per_cell), expected, "per-cell genes");
  }
}

TEST(MlpEncoderDecoder, InputTransformsMatchTheirDefinitions) {
  auto dense = torch::tensor({{1.0, 0.0, 3.0}, {0.0, 0.0, 0.0}});
  auto cp10k = transformInput(dense, torch::Tensor(), InputTransform::Log1pCp10k);
  auto want = torch::tensor({{std::log1p(2500.0), 0.0, std::log1p(7500.0)}, {0.0, 0.0, 0.0}}).to(torch::kFloat);
  EXPECT_TRUE(torch::allclose(cp10k, want));
  // The observed library size of the whole cell wins over the (possibly truncated) tokens' sum.
  auto with_library = transformInput(dense, torch::tensor({8.0, 1.0}), InputTransform::Log1pCp10k);
  EXPECT_NEAR(with_library[0][0].item<double>(), std::log1p(1250.0), 1e-4);
  EXPECT_TRUE(torch::equal(transformInput(dense, {}, InputTransform::Log1p), torch::log1p(dense)));
  EXPECT_NE(errorOf([] { parseInputTransform("log2"); }).find("log1p_cp10k"), std::string::npos);
}

TEST(MlpEncoderDecoder, GradientsMatchFiniteDifferences) {
  for (const std::string norm : {"layer", "batch"}) {
    SCOPED_TRACE(norm);
    torch::manual_seed(10);
    auto config = smallMlp(norm);
    config.hidden = {6, 4};
    config.activation = "gelu";
    MlpEncoderDecoder model(8, config);
    test::randomiseDouble(model);
    model.train();  // batch statistics: the normalisation couples the cells, which the check covers
    auto dense = (torch::rand({4, 8}, torch::kDouble) * 5).requires_grad_(true);
    CellBatch batch;
    batch.dense_counts = dense;
    auto genes = torch::tensor({{3, 1}, {8, 8}, {2, 5}, {7, 4}}, torch::kLong);
    auto f = [&] { return model.decode(model.encode(batch), genes); };
    auto wrt = test::withParameters(model);
    wrt.emplace_back("dense_counts", dense);
    test::expectGradientsMatch(f, wrt, 6);
  }
}

TEST(MlpConfig, InvalidValuesAreRejected) {
  MlpConfig config;
  auto msg = errorOf([&] { core::loadConfigText(config, "hidden: [64, 0]\n", "mlp.yaml"); });
  EXPECT_NE(msg.find("hidden"), std::string::npos) << msg;
  msg = errorOf([&] { core::loadConfigText(config, "norm: group\n", "mlp.yaml"); });
  EXPECT_NE(msg.find("batch"), std::string::npos) << msg;
  MlpEncoderDecoder model(4, MlpConfig{});
  CellBatch batch;
  batch.dense_counts = torch::ones({2, 5});
  msg = errorOf([&] { model.encode(batch); });
  EXPECT_NE(msg.find("dense_counts must be [batch, 4]"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// PCA baseline.

namespace {

// A [m, n] matrix with singular values 100 * 0.7^i plus small noise, a spectrum with clear gaps.
torch::Tensor decayingSpectrum(int64_t m, int64_t n) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(77);
  auto u = std::get<0>(torch::linalg_qr(torch::randn({m, n}, gen, torch::kDouble)));
  auto v = std::get<0>(torch::linalg_qr(torch::randn({n, n}, gen, torch::kDouble)));
  auto s = 100.0 * torch::pow(0.7, torch::arange(n, torch::kDouble));
  return torch::matmul(u * s, v.t()) + 1e-3 * torch::randn({m, n}, gen, torch::kDouble);
}

}  // namespace

TEST(PcaBaseline, RandomizedSvdAgreesWithExactSvd) {
  auto a = decayingSpectrum(300, 60);
  auto [u_exact, s_exact, vh_exact] = torch::linalg_svd(a, false);
  const int64_t k = 8;
  auto svd = randomizedSvd(a, k, 10, 4, at::make_generator<at::CPUGeneratorImpl>(3));
  ASSERT_EQ(svd.u.sizes(), (std::vector<int64_t>{300, k}));
  ASSERT_EQ(svd.vh.sizes(), (std::vector<int64_t>{k, 60}));
  EXPECT_LE(maxAbsDiff(svd.s, s_exact.narrow(0, 0, k)) / s_exact[0].item<double>(), 1e-10);
  // Subspace agreement: the cosines of the principal angles between the two top-k right subspaces.
  auto cosines = torch::linalg_svdvals(torch::matmul(svd.vh, vh_exact.narrow(0, 0, k).t()));
  EXPECT_GE(cosines.min().item<double>(), 1 - 1e-10);
  // Reconstruction error equals that of the exact truncated SVD (the Eckart-Young optimum).
  auto exact_recon = torch::matmul(u_exact.narrow(1, 0, k) * s_exact.narrow(0, 0, k), vh_exact.narrow(0, 0, k));
  const double exact_err = (a - exact_recon).norm().item<double>();
  const double err = (a - torch::matmul(svd.u * svd.s, svd.vh)).norm().item<double>();
  EXPECT_NEAR(err, exact_err, 1e-8 * exact_err);
  // Orthonormal factors.
  EXPECT_LE(maxAbsDiff(torch::matmul(svd.vh, svd.vh.t()), torch::eye(k, torch::kDouble)), 1e-12);
  EXPECT_LE(maxAbsDiff(torch::matmul(svd.u.t(), svd.u), torch::eye(k, torch::kDouble)), 1e-12);
  // Without power iterations the sketch alone is already close on this spectrum, but less so.
  auto rough = randomizedSvd(a, k, 2, 0, at::make_generator<at::CPUGeneratorImpl>(3));
  const double rough_err = (a - torch::matmul(rough.u * rough.s, rough.vh)).norm().item<double>();
  EXPECT_GE(rough_err, err);
}

namespace {

// Counts from six gene programmes mixed per cell, Poisson-sampled at depth `scale`, and the numpy
// reference (tests/python/pca_reference.py) for their k-component PCA.
struct PcaCase {
  torch::Tensor counts;
  core::SafetensorsData ref;
};

PcaCase pcaCase(const test::TempDir& dir, const std::string& name, double scale, int64_t k) {
  const int64_t cells = 200, genes = 40;
  auto programmes = torch::rand({6, genes}, torch::kDouble) * scale;
  auto mix = torch::rand({cells, 6}, torch::kDouble);
  PcaCase c;
  c.counts = torch::poisson(torch::matmul(mix, programmes) + 0.05);  // [cells, genes]
  const auto in = dir.file(name + ".safetensors"), out = dir.file(name + "_ref.safetensors");
  core::saveSafetensors(in, {{"counts", c.counts}});
  EXPECT_EQ(test::runPython("tests/python/pca_reference.py", "'" + in + "' '" + out + "' " + std::to_string(k)), 0);
  c.ref = core::loadSafetensors(out);
  return c;
}

}  // namespace

TEST(PcaBaseline, FitsEncodesAndDecodesLikeNumpy) {
  LATENTCELL_REQUIRE_PYTHON();
  torch::manual_seed(11);
  test::TempDir dir;
  const int64_t genes = 40, k = 5;
  // Deep cells: five clear components above the Poisson noise (s5 / s6 = 2.8), so the randomized
  // SVD must find numpy's basis itself, not just an equally good one.
  auto c = pcaCase(dir, "deep", 200.0, k);
  ASSERT_FALSE(HasFailure());
  const auto& ref = c.ref;
  const int64_t cells = c.counts.size(0);

  PcaConfig config;
  config.components = k;
  PcaBaseline pca(genes, config);
  pca.to(torch::kDouble);
  CellBatch batch;
  batch.dense_counts = c.counts;
  auto x = transformInput(c.counts, {}, InputTransform::Log1pCp10k);
  EXPECT_LE(maxAbsDiff(x, ref.at("x")), 1e-12);
  pca.fit(x);
  EXPECT_LE(maxAbsDiff(pca.mean, ref.at("mean")), 1e-12);
  EXPECT_LE(maxAbsDiff(pca.singular_values, ref.at("singular_values")), 1e-9);
  EXPECT_LE(maxAbsDiff(pca.explained_variance, ref.at("explained_variance")), 1e-9);
  EXPECT_LE(maxAbsDiff(pca.components, ref.at("components")), 1e-8);  // same signs by convention
  auto z = pca.encode(batch);
  ASSERT_EQ(z.sizes(), (std::vector<int64_t>{cells, 1, k}));
  auto all_genes = torch::arange(1, genes + 1, torch::kLong);
  auto recon = pca.decode(z, all_genes);
  ASSERT_EQ(recon.sizes(), (std::vector<int64_t>{cells, genes, 1}));
  EXPECT_LE(maxAbsDiff(recon.squeeze(-1), ref.at("reconstruction")), 1e-9);
  // Per-cell gene requests and PAD.
  auto picks = torch::tensor({0, 3, 40, 1}, torch::kLong).unsqueeze(0).expand({cells, 4}).contiguous();
  auto picked = pca.decode(z, picks).squeeze(-1);
  EXPECT_TRUE(torch::equal(picked.select(1, 0), torch::zeros({cells}, torch::kDouble)));
  EXPECT_LE(maxAbsDiff(picked.select(1, 2), ref.at("reconstruction").select(1, 39)), 1e-9);
  // The fitted state round-trips through the state dict.
  PcaBaseline loaded(genes, config);
  loaded.to(torch::kDouble);
  core::loadStateDict(loaded, core::stateDict(pca));
  EXPECT_TRUE(torch::equal(loaded.decode(loaded.encode(batch), all_genes), recon));
}

TEST(PcaBaseline, ReconstructionErrorMatchesExactPcaOnAFlatSpectrum) {
  LATENTCELL_REQUIRE_PYTHON();
  // Shallow cells: Poisson noise flattens the spectrum (s5 / s6 = 1.06), the hard case for a
  // randomized SVD (measured: 0 power iterations lose 2.7%, 2 lose 1.4e-4, 4 lose 1.1e-6, the default 7
  // loses 8e-10). The basis may rotate among near-equal directions, but the baseline must still
  // reconstruct as well as exact PCA, or it would flatter the models compared with it.
  torch::manual_seed(12);
  test::TempDir dir;
  const int64_t genes = 40, k = 5;
  auto c = pcaCase(dir, "shallow", 4.0, k);
  ASSERT_FALSE(HasFailure());
  PcaConfig config;
  config.components = k;
  PcaBaseline pca(genes, config);
  pca.to(torch::kDouble);
  auto x = c.ref.at("x");
  pca.fit(x);
  const double exact = (x - c.ref.at("reconstruction")).pow(2).mean().item<double>();
  const double randomized = (x - pca.reconstruct(pca.project(x))).pow(2).mean().item<double>();
  EXPECT_GE(randomized, exact * (1 - 1e-12));  // exact PCA is optimal
  EXPECT_LE(randomized, exact * (1 + 1e-7)) << "exact " << exact << " randomized " << randomized;
}

TEST(PcaBaseline, ErrorsNameTheProblem) {
  PcaConfig config;
  config.components = 5;
  PcaBaseline pca(8, config);
  auto msg = errorOf([&] { pca.project(torch::zeros({3, 8})); });
  EXPECT_NE(msg.find("not been fitted"), std::string::npos) << msg;
  msg = errorOf([&] { pca.fit(torch::zeros({3, 8})); });
  EXPECT_NE(msg.find("too few"), std::string::npos) << msg;
  msg = errorOf([&] { pca.fit(torch::zeros({30, 7})); });
  EXPECT_NE(msg.find("[cells, 8]"), std::string::npos) << msg;
  config.components = 9;
  msg = errorOf([&] { PcaBaseline(8, config); });
  EXPECT_NE(msg.find("pca.components (9)"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// Decoder-only mode.

TEST(DecoderOnly, PassesTheEmbeddingThroughAndTrainsOnlyTheDecoder) {
  torch::manual_seed(12);
  DecoderOnlyConfig config;
  config.mlp = smallMlp("layer");
  DecoderOnly model(kGenes, 7, config);
  CellBatch batch;
  batch.embedding = torch::randn({4, 7});
  auto z = model.encode(batch);
  ASSERT_EQ(z.sizes(), (std::vector<int64_t>{4, 1, 7}));
  EXPECT_TRUE(torch::equal(z.squeeze(1), batch.embedding));
  auto genes = torch::arange(1, kGenes + 1, torch::kLong);
  auto out = model.decode(z, genes);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{4, kGenes, 3}));
  out.pow(2).mean().backward();
  int64_t with_grad = 0;
  for (auto& p : model.parameters()) with_grad += p.grad().defined();
  EXPECT_EQ(with_grad, static_cast<int64_t>(model.parameters().size()));
  EXPECT_GT(with_grad, 0);
  for (const auto& [name, tensor] : core::stateDict(model)) EXPECT_EQ(name.rfind("decoder.", 0), 0u) << name;

  // The MCAB decoder reads the embedding as several tokens.
  DecoderOnlyConfig mcab_config;
  mcab_config.decoder = "mcab";
  mcab_config.latent_tokens = 4;
  mcab_config.mcab = smallMcab();
  DecoderOnly mcab(kGenes, 24, mcab_config);
  batch.embedding = torch::randn({2, 24});
  auto tokens = mcab.encode(batch);
  ASSERT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 4, 6}));
  EXPECT_TRUE(torch::equal(tokens.reshape({2, 24}), batch.embedding));
  EXPECT_EQ(mcab.decode(tokens, genes).sizes(), (std::vector<int64_t>{2, kGenes, 16}));
}

TEST(DecoderOnly, BadEmbeddingsAndConfigsGetClearErrors) {
  DecoderOnlyConfig config;
  DecoderOnly model(kGenes, 7, config);
  CellBatch batch;
  auto msg = errorOf([&] { model.encode(batch); });
  EXPECT_NE(msg.find("obsm"), std::string::npos) << msg;
  batch.embedding = torch::randn({3, 8});
  msg = errorOf([&] { model.encode(batch); });
  EXPECT_NE(msg.find("expected [batch, 7]"), std::string::npos) << msg;
  config.decoder = "mcab";
  config.latent_tokens = 5;
  msg = errorOf([&] { DecoderOnly(kGenes, 24, config); });
  EXPECT_NE(msg.find("latent_tokens must divide"), std::string::npos) << msg;
  DecoderOnlyConfig loaded;
  msg = errorOf([&] { core::loadConfigText(loaded, "latent_tokens: 4\n", "decoder_only.yaml"); });
  EXPECT_NE(msg.find("must be 1 with the mlp decoder"), std::string::npos) << msg;
}
