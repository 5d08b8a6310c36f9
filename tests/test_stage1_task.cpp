// Stage 1 through the binary, as a user runs it: `train` on a simulated h5ad, then `encode` and
// `reconstruct` from the run directory; the run's vocabulary and split; and the input errors of
// issue 5 (genes missing from the vocabulary, a count head on non-count data, cells longer than the
// context under `error` truncation).
#include "TestUtil.h"

#include "core/Safetensors.h"
#include "data/Conditions.h"
#include "data/H5ad.h"
#include "data/Preprocess.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

namespace latentcell {
namespace {

using test::runBinary;
using test::TempDir;

std::string simulate(const TempDir& dir, const std::string& name, int cells, int genes, int seed = 0) {
  const auto path = dir.file(name);
  auto r = runBinary("simulate --out '" + path + "' --cells " + std::to_string(cells) + " --genes " +
                     std::to_string(genes) + " --seed " + std::to_string(seed));
  EXPECT_EQ(r.status, 0) << r.out;
  return path;
}

// A small stage-1 config; `extra` lines are appended at the top level (sections replace defaults).
std::string writeConfig(const TempDir& dir, const std::string& data, const std::string& run,
                        const std::string& bottleneck, const std::string& head, const std::string& extra = "") {
  const auto path = dir.file("stage1.yaml");
  std::ofstream(path) << "task: stage1\nseed: 0\ndevice: cpu\nrun_dir: " << run << "\n"
                      << "data: {path: " << data << ", batch_size: 32, val_fraction: 0.2}\n"
                      << "model: {family: mcab, mcab: {width: 16, heads: 2, encoder_blocks: 1, decoder_blocks: 1,"
                      << " latent_tokens: 4, latent_dim: 4}}\n"
                      << "bottleneck: " << bottleneck << "\nhead: " << head << "\n"
                      << "trainer: {max_steps: 20, log_every: 5, eval_every: 10, optimizer: {lr: 0.003}}\n"
                      << extra;
  return path;
}

std::vector<std::string> lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(Stage1Task, TrainEncodeReconstructGaussianNb) {
  TempDir dir;
  const auto data = simulate(dir, "cells.h5ad", 200, 40);
  const auto run = dir.file("run");
  const auto config = writeConfig(dir, data, run, "{kind: gaussian, beta: 1.0e-5}", "{kind: nb}");
  auto r = runBinary("train '" + config + "'");
  ASSERT_EQ(r.status, 0) << r.out;

  const auto adata = data::readH5ad(data);
  EXPECT_EQ(lines(run + "/genes.txt"), adata.var.index);
  const auto split = data::loadSplit(run, adata.n_obs());
  const auto val = split.indices(data::SplitPart::Val);
  EXPECT_EQ(static_cast<int64_t>(val.size()), 40);

  // encode: one latent per cell in file order, deterministic (Gaussian means), observed libraries.
  const auto latents = dir.file("latents.safetensors");
  r = runBinary("encode --run '" + run + "' --data '" + data + "' --out '" + latents + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto file = core::loadSafetensors(latents);
  const auto& latent = file.at("latent");
  EXPECT_EQ(latent.sizes(), (std::vector<int64_t>{200, 4, 4}));
  EXPECT_EQ(file.metadata.at("kind"), "continuous");
  const auto library = data::librarySizes(adata.X);
  for (int64_t i = 0; i < 200; i += 37) EXPECT_FLOAT_EQ(file.at("library")[i].item<float>(), library[i]);
  EXPECT_NE(file.metadata.at("obs").find(adata.obs.index[0]), std::string::npos);
  const auto again = dir.file("again.safetensors");
  ASSERT_EQ(runBinary("encode --run '" + run + "' --data '" + data + "' --out '" + again + "'").status, 0);
  EXPECT_TRUE(torch::equal(latent, core::loadSafetensors(again).at("latent")));

  // reconstruct the held-out cells: same cells and genes, counts space, mean >= 0.
  const auto recon = dir.file("recon.h5ad");
  r = runBinary("reconstruct --run '" + run + "' --data '" + data + "' --out '" + recon + "' --cells val");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto out = data::readH5ad(recon);
  ASSERT_EQ(out.n_obs(), 40);
  EXPECT_EQ(out.var.index, adata.var.index);
  for (size_t i = 0; i < val.size(); ++i) EXPECT_EQ(out.obs.index[i], adata.obs.index[val[i]]);
  EXPECT_EQ(out.uns_strings.at("latentcell_value_space"), "counts");
  for (float v : out.X.data) EXPECT_GE(v, 0.0f);

  // --predict log1p_mean: the NB's mean of log1p(x / l * 1e4), in log1p space, below log1p of the
  // normalised mean (Jensen) for every cell and gene, with l the real cell's library size.
  const auto recon_log1p = dir.file("recon-log1p.h5ad"), real = dir.file("real.h5ad");
  r = runBinary("reconstruct --run '" + run + "' --data '" + data + "' --out '" + recon_log1p +
                "' --real-out '" + real + "' --cells val --predict log1p_mean");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto log1p_out = data::readH5ad(recon_log1p);
  EXPECT_EQ(log1p_out.uns_strings.at("latentcell_value_space"), "log1p_normalized");
  EXPECT_EQ(log1p_out.uns_strings.at("reconstruction_space"), "log1p");
  auto real_library = data::denseRows(data::readH5ad(real).X).sum(1, true);        // [40, 1]
  auto log1p_of_mean = torch::log1p(data::denseRows(out.X) * 1e4 / real_library);    // [40, genes]
  auto expected_log1p = data::denseRows(log1p_out.X);                                // [40, genes]
  EXPECT_TRUE((expected_log1p >= 0).all().item<bool>());
  EXPECT_TRUE((expected_log1p <= log1p_of_mean + 1e-5).all().item<bool>());
  EXPECT_GT((log1p_of_mean - expected_log1p).mean().item<double>(), 0.01);
}

TEST(Stage1Task, FsqLatentsAreCodesAndPerplexityIsLogged) {
  TempDir dir;
  const auto data = simulate(dir, "cells.h5ad", 160, 30);
  const auto run = dir.file("run");
  const auto config = writeConfig(dir, data, run, "{kind: fsq, levels: [4, 4]}", "{kind: mse}");
  auto r = runBinary("train '" + config + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  bool logged = false;
  for (const auto& l : lines(run + "/metrics.jsonl")) logged = logged || l.find("\"perplexity\"") != std::string::npos;
  EXPECT_TRUE(logged) << "code-usage perplexity missing from metrics.jsonl";

  const auto latents = dir.file("codes.safetensors");
  r = runBinary("encode --run '" + run + "' --data '" + data + "' --out '" + latents + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto file = core::loadSafetensors(latents);
  const auto& codes = file.at("latent");
  EXPECT_EQ(codes.scalar_type(), torch::kLong);
  EXPECT_EQ(codes.sizes(), (std::vector<int64_t>{160, 4}));
  EXPECT_GE(codes.min().item<int64_t>(), 0);
  EXPECT_LT(codes.max().item<int64_t>(), 16);
  EXPECT_EQ(file.metadata.at("codebook_size"), "16");

  const auto recon = dir.file("recon.h5ad");
  r = runBinary("reconstruct --run '" + run + "' --data '" + data + "' --out '" + recon + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(data::readH5ad(recon).uns_strings.at("latentcell_value_space"), "log1p_normalized");
}

TEST(Stage1Task, PcaIsFittedAndReconstructsLikeTheTruncatedSvd) {
  TempDir dir;
  const auto data = simulate(dir, "cells.h5ad", 150, 25);
  const auto run = dir.file("run");
  const auto config = dir.file("pca.yaml");
  std::ofstream(config) << "task: stage1\ndevice: cpu\nrun_dir: " << run << "\ndata: {path: " << data
                        << ", val_fraction: 0.0}\nmodel: {family: pca, pca: {components: 25}}\n";
  auto r = runBinary("train '" + config + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  // With as many components as genes PCA is lossless: the reconstruction is the log1p-normalised input.
  const auto recon = dir.file("recon.h5ad");
  r = runBinary("reconstruct --run '" + run + "' --data '" + data + "' --out '" + recon + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto real = data::readH5ad(data);
  const auto expected = data::denseRows(data::log1p(data::normalizeTotal(real.X, 1e4)));
  const auto got = data::denseRows(data::readH5ad(recon).X);
  EXPECT_LT((got - expected).abs().max().item<float>(), 2e-3);
}

TEST(Stage1Task, GenesMissingFromTheVocabularyAreAnError) {
  TempDir dir;
  const auto data = simulate(dir, "cells.h5ad", 120, 30);
  const auto run = dir.file("run");
  ASSERT_EQ(runBinary("train '" + writeConfig(dir, data, run, "{kind: gaussian}", "{kind: nb}") + "'").status, 0);
  // The same genes minus the last five: the model's vocabulary cannot be filled.
  auto adata = data::readH5ad(data);
  std::vector<int64_t> keep;
  for (int64_t g = 0; g < 25; ++g) keep.push_back(g);
  const std::string first_missing = adata.var.index[25];
  adata.X = data::selectGenes(adata.X, keep);
  adata.var.index.resize(25);
  adata.var.columns.clear();
  adata.varm.clear();
  const auto fewer = dir.file("fewer.h5ad");
  data::writeH5ad(adata, fewer);
  auto r = runBinary("encode --run '" + run + "' --data '" + fewer + "' --out '" + dir.file("x.safetensors") + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("missing"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(first_missing), std::string::npos) << r.out;
}

TEST(Stage1Task, CountHeadOnNonCountDataIsAnError) {
  TempDir dir;
  auto adata = data::readH5ad(simulate(dir, "cells.h5ad", 100, 20));
  adata.X = data::log1p(adata.X);  // log-normalised-looking values
  const auto logged = dir.file("logged.h5ad");
  data::writeH5ad(adata, logged);
  const auto config = writeConfig(dir, logged, dir.file("run"), "{kind: gaussian}", "{kind: nb}");
  auto r = runBinary("train '" + config + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find(logged), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("count"), std::string::npos) << r.out;
}

TEST(Stage1Task, CellsLongerThanTheContextAreAnErrorUnderErrorTruncation) {
  TempDir dir;
  const auto data = simulate(dir, "cells.h5ad", 100, 30);
  const auto config = writeConfig(dir, data, dir.file("run"), "{kind: gaussian}", "{kind: nb}");
  auto r = runBinary("train '" + config + "' data.context_length=3 data.truncation=error");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("context"), std::string::npos) << r.out;
  // The same run with top-k truncation trains.
  r = runBinary("train '" + config + "' data.context_length=3 data.truncation=topk run_dir='" + dir.file("run2") + "'");
  EXPECT_EQ(r.status, 0) << r.out;
}

}  // namespace
}  // namespace latentcell
