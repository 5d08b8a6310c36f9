// Stage 2 through the binary, as a user runs it: a small autoencoder on a simulated screen, each prior
// family trained on its latents with a held-out condition combination, `generate` shaped like the
// held-out cells (and accepted by cell-eval when the Python env is present), fine-tuning onto new
// perturbation labels, and the input errors of issue 6 (unknown condition values at generation, a
// prior paired with another autoencoder, an FSQ prior on Gaussian latents).
#include "TestUtil.h"

#include "core/Safetensors.h"
#include "data/Conditions.h"
#include "data/H5ad.h"
#include "data/Preprocess.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

namespace latentcell {
namespace {

using test::runBinary;
using test::TempDir;

// One simulated screen and two autoencoders on it, shared by the tests of this file (training them
// is most of the cost).
struct Fixture {
  TempDir dir;
  std::string data, gaussian, fsq;
};

std::string stage1Config(const TempDir& dir, const std::string& name, const std::string& data,
                         const std::string& bottleneck) {
  const auto path = dir.file(name + ".yaml");
  std::ofstream(path) << "task: stage1\nseed: 0\ndevice: cpu\nrun_dir: " << dir.file(name) << "\n"
                      << "data: {path: " << data << ", batch_size: 64, val_fraction: 0.1}\n"
                      << "model: {family: mcab, mcab: {width: 16, heads: 2, encoder_blocks: 1, decoder_blocks: 1,"
                      << " latent_tokens: 4, latent_dim: 3}}\n"
                      << "bottleneck: " << bottleneck << "\nhead: {kind: nb}\n"
                      << "trainer: {max_steps: 30, log_every: 10, optimizer: {lr: 0.003}}\n";
  return path;
}

const Fixture& fixture() {
  static Fixture* f = [] {
    auto* f = new Fixture;
    f->data = f->dir.file("screen.h5ad");
    auto r = runBinary("simulate --out '" + f->data + "' --cells 600 --genes 30 --perturbations 4 --seed 3");
    EXPECT_EQ(r.status, 0) << r.out;
    f->gaussian = f->dir.file("ae-gaussian");
    f->fsq = f->dir.file("ae-fsq");
    r = runBinary("train '" + stage1Config(f->dir, "ae-gaussian", f->data, "{kind: gaussian, beta: 1.0e-5}") + "'");
    EXPECT_EQ(r.status, 0) << r.out;
    r = runBinary("train '" + stage1Config(f->dir, "ae-fsq", f->data, "{kind: fsq, levels: [3, 3, 3]}") + "'");
    EXPECT_EQ(r.status, 0) << r.out;
    return f;
  }();
  return *f;
}

// A stage-2 config over `ae`, holding out pert_1 in batch_1.
std::string priorConfig(const TempDir& dir, const std::string& name, const std::string& ae, const std::string& kind,
                        const std::string& data, const std::string& extra = "") {
  const auto path = dir.file(name + ".yaml");
  std::ofstream(path) << "task: stage2\nseed: 0\ndevice: cpu\nrun_dir: " << dir.file(name) << "\nautoencoder: " << ae
                      << "\ndata: {path: " << data << ", conditions: [perturbation, batch], control: control,"
                      << " holdout: ['batch=batch_1; perturbation=pert_1'], batch_size: 32, set_size: 8}\n"
                      << "prior: {kind: " << kind << ", backbone: {dim: 32, depth: 2, heads: 2},"
                      << " flow: {solver: euler, steps: 4}, mdlm: {steps: 4}, jit: {steps: 4}}\n"
                      << "trainer: {max_steps: 12, log_every: 4, eval_every: 6, optimizer: {lr: 0.002}}\n"
                      << extra;
  return path;
}

std::map<std::string, int64_t> countsOf(const data::Column& column) {
  std::map<std::string, int64_t> counts;
  for (int64_t i = 0; i < column.size(); ++i) ++counts[column.text(i)];
  return counts;
}

class Stage2Families : public ::testing::TestWithParam<std::string> {};

TEST_P(Stage2Families, TrainsAndGeneratesTheHeldOutCellsLikeTheRealOnes) {
  const auto& f = fixture();
  const auto kind = GetParam();
  const auto ae = (kind == "ar" || kind == "mdlm") ? f.fsq : f.gaussian;
  TempDir dir;
  auto r = runBinary("train '" + priorConfig(dir, "prior", ae, kind, f.data) + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto run = dir.file("prior");
  const auto real = data::readH5ad(f.data);
  const auto split = data::loadSplit(run, real.n_obs());
  const auto test = split.indices(data::SplitPart::Test);
  ASSERT_FALSE(test.empty());
  for (int64_t i : test) {
    ASSERT_EQ(real.obsColumn("perturbation").text(i), "pert_1");
    ASSERT_EQ(real.obsColumn("batch").text(i), "batch_1");
  }

  const auto pred = dir.file("pred.h5ad"), truth = dir.file("real.h5ad");
  r = runBinary("generate --prior '" + run + "' --like '" + f.data + "' --cells test --out '" + pred +
                "' --real-out '" + truth + "' --seed 1");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto p = data::readH5ad(pred), t = data::readH5ad(truth);
  // Row for row the real cells' obs; the held-out cells generated, the controls of batch_1 copied.
  EXPECT_EQ(p.var.index, real.var.index);
  EXPECT_EQ(p.n_obs(), t.n_obs());
  EXPECT_EQ(p.obs.index, t.obs.index);
  const auto counts = countsOf(p.obsColumn("perturbation"));
  EXPECT_EQ(counts.at("pert_1"), static_cast<int64_t>(test.size()));
  EXPECT_GT(counts.at("control"), 0);
  EXPECT_EQ(counts.size(), 2u);
  for (int64_t i = 0; i < p.n_obs(); ++i) EXPECT_EQ(p.obsColumn("batch").text(i), "batch_1");
  for (float v : p.X.data) ASSERT_TRUE(v >= 0 && v == std::floor(v)) << "a sampling NB head gives counts";
  // The generated cells are not copies of the real ones.
  EXPECT_FALSE(torch::equal(data::denseRows(p.X), data::denseRows(t.X)));

  // Same seed, same cells.
  const auto again = dir.file("again.h5ad");
  ASSERT_EQ(runBinary("generate --prior '" + run + "' --like '" + f.data + "' --cells test --out '" + again +
                      "' --seed 1").status,
            0);
  EXPECT_TRUE(torch::equal(data::denseRows(p.X), data::denseRows(data::readH5ad(again).X)));

  r = runBinary("evaluate --pred '" + pred + "' --real '" + truth +
                "' --pert-col perturbation --control-pert control --profile minimal --outdir '" + dir.file("eval") +
                "'");
  EXPECT_EQ(r.status, 0) << r.out;
  if (!test::pythonPath().empty()) {
    // cell-eval itself (15 s a run): once per generation code path, sequence priors and sets.
    const std::string cli = std::filesystem::path(test::pythonPath()).parent_path() / "cell-eval";
    if ((kind == "flow" || kind == "jit") && std::filesystem::exists(cli)) {
      const std::string cmd = "'" + cli + "' run -ar '" + truth + "' -ap '" + pred +
                              "' --pert-col perturbation --control-pert control --profile full --skip-metrics "
                              "clustering_agreement --num-threads 1 -o '" + dir.file("cell-eval") + "' > '" +
                              dir.file("cell-eval.log") + "' 2>&1";
      const int raw = std::system(cmd.c_str());
      std::ifstream log_file(dir.file("cell-eval.log"));
      const std::string log((std::istreambuf_iterator<char>(log_file)), std::istreambuf_iterator<char>());
      ASSERT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 0) << log;
      EXPECT_TRUE(std::filesystem::exists(dir.file("cell-eval/agg_results.csv"))) << log;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Priors, Stage2Families, ::testing::Values("flow", "ar", "mdlm", "jit"));

TEST(Stage2Task, EncodedLatentsTrainTheSamePriorAsOnTheFlyEncoding) {
  const auto& f = fixture();
  TempDir dir;
  const auto latents = dir.file("latents.safetensors");
  auto r = runBinary("encode --run '" + f.gaussian + "' --data '" + f.data + "' --out '" + latents + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  r = runBinary("train '" + priorConfig(dir, "from-file", f.gaussian, "flow", f.data) + "' data.latents='" + latents +
                "'");
  ASSERT_EQ(r.status, 0) << r.out;
  r = runBinary("train '" + priorConfig(dir, "on-the-fly", f.gaussian, "flow", f.data) + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  auto weights = [&](const std::string& run) {
    return core::loadSafetensors(run + "/checkpoints/step-00000012/model.safetensors");
  };
  const auto a = weights(dir.file("from-file")), b = weights(dir.file("on-the-fly"));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  // The latents agree up to the batching of the encoder's matmuls; twelve steps keep that small.
  for (size_t i = 0; i < a.tensors.size(); ++i)
    EXPECT_TRUE(torch::allclose(a.tensors[i].second, b.tensors[i].second, 1e-4, 1e-5)) << a.tensors[i].first;
}

TEST(Stage2Task, FineTuningKeepsTheRowsOfKnownLabelsAndAddsNewOnes) {
  const auto& f = fixture();
  TempDir dir;
  ASSERT_EQ(runBinary("train '" + priorConfig(dir, "base", f.gaussian, "flow", f.data) + "'").status, 0);
  // A new screen: pert_3 renamed to pert_new (a label the base prior never saw).
  auto adata = data::readH5ad(f.data);
  for (auto& [name, column] : adata.obs.columns)
    if (name == "perturbation")
      for (auto& c : column.categories)
        if (c == "pert_3") c = "pert_new";
  const auto renamed = dir.file("renamed.h5ad");
  data::writeH5ad(adata, renamed);
  // A vanishing learning rate: the fine-tuned weights are the initialisation itself.
  auto r = runBinary("train '" +
                     priorConfig(dir, "tuned", f.gaussian, "flow", renamed,
                                 "finetune: {init_from: " + dir.file("base") + ", freeze_backbone: true}\n") +
                     "' trainer.max_steps=1 trainer.eval_every=0 trainer.optimizer.lr=1e-30");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("fine-tuning from"), std::string::npos) << r.out;
  const auto base = core::loadSafetensors(dir.file("base") + "/checkpoints/step-00000012/model.safetensors");
  const auto tuned = core::loadSafetensors(dir.file("tuned") + "/checkpoints/step-00000001/model.safetensors");
  const auto base_vocab = data::loadVocabularies(dir.file("base"))[0].values;
  const auto tuned_vocab = data::loadVocabularies(dir.file("tuned"))[0].values;
  const auto& old_table = base.at("conditions.columns.0.table");
  const auto& new_table = tuned.at("conditions.columns.0.table");
  for (size_t i = 0; i < tuned_vocab.size(); ++i) {
    const auto pos = std::find(base_vocab.begin(), base_vocab.end(), tuned_vocab[i]);
    const bool same = torch::equal(new_table[static_cast<int64_t>(i)],
                                   old_table[pos == base_vocab.end() ? 0 : pos - base_vocab.begin()]);
    if (pos == base_vocab.end()) {
      EXPECT_EQ(tuned_vocab[i], "pert_new");
      EXPECT_FALSE(same) << "a new label gets a fresh row";
    } else {
      EXPECT_TRUE(same) << tuned_vocab[i];
    }
  }
  EXPECT_TRUE(torch::equal(new_table[-1], old_table[-1])) << "the null row carries over";
  EXPECT_TRUE(torch::equal(tuned.at("backbone.input.weight"), base.at("backbone.input.weight")));
}

TEST(Stage2Task, GeneratesTheCombinationsOfAConditionsCsv) {
  const auto& f = fixture();
  TempDir dir;
  ASSERT_EQ(runBinary("train '" + priorConfig(dir, "prior", f.gaussian, "flow", f.data) + "'").status, 0);
  const auto csv = dir.file("conditions.csv");
  std::ofstream(csv) << "batch,perturbation,n\nbatch_1,pert_1,7\nbatch_0,control,3\n";
  const auto pred = dir.file("pred.h5ad");
  auto r = runBinary("generate --prior '" + dir.file("prior") + "' --conditions '" + csv + "' --out '" + pred + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto p = data::readH5ad(pred);
  EXPECT_EQ(p.n_obs(), 10);
  EXPECT_EQ(p.var.index, data::readH5ad(f.data).var.index);  // the autoencoder's genes
  EXPECT_EQ(countsOf(p.obsColumn("perturbation")), (std::map<std::string, int64_t>{{"control", 3}, {"pert_1", 7}}));
  EXPECT_EQ(countsOf(p.obsColumn("batch")), (std::map<std::string, int64_t>{{"batch_0", 3}, {"batch_1", 7}}));
  EXPECT_GT(p.X.nnz(), 0);
  // A label the prior does not know, and a missing column: errors naming them.
  std::ofstream(csv) << "batch,perturbation,n\nbatch_1,pert_x,2\n";
  r = runBinary("generate --prior '" + dir.file("prior") + "' --conditions '" + csv + "' --out '" + pred + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("pert_x"), std::string::npos) << r.out;
  std::ofstream(csv) << "perturbation,n\npert_1,2\n";
  r = runBinary("generate --prior '" + dir.file("prior") + "' --conditions '" + csv + "' --out '" + pred + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("no column 'batch'"), std::string::npos) << r.out;
}

TEST(Stage2Task, MeanPredictionsOfACountHeadAreWrittenLog1pNormalised) {
  const auto& f = fixture();
  TempDir dir;
  ASSERT_EQ(runBinary("train '" + priorConfig(dir, "prior", f.gaussian, "flow", f.data) + "'").status, 0);
  const auto pred = dir.file("pred.h5ad"), truth = dir.file("real.h5ad");
  auto r = runBinary("generate --prior '" + dir.file("prior") + "' --like '" + f.data +
                     "' --cells test --predict mean --out '" + pred + "' --real-out '" + truth + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto p = data::readH5ad(pred), t = data::readH5ad(truth);
  EXPECT_EQ(p.uns_strings.at("latentcell_value_space"), "log1p_normalized");
  // Every row, generated or copied, and every real row: log1p of a total of 1e4.
  for (const auto* m : {&p.X, &t.X}) {
    const auto dense = data::denseRows(*m);
    const auto totals = dense.expm1().sum(1);
    EXPECT_TRUE(torch::allclose(totals, torch::full_like(totals, 1e4), 1e-3)) << totals;
  }
  r = runBinary("evaluate --pred '" + pred + "' --real '" + truth +
                "' --pert-col perturbation --control-pert control --profile minimal --outdir '" + dir.file("eval") + "'");
  EXPECT_EQ(r.status, 0) << r.out;
}

TEST(Stage2Task, UnknownConditionValuesAtGenerationAreAnError) {
  const auto& f = fixture();
  TempDir dir;
  ASSERT_EQ(runBinary("train '" + priorConfig(dir, "prior", f.gaussian, "flow", f.data) + "'").status, 0);
  auto adata = data::readH5ad(f.data);
  for (auto& [name, column] : adata.obs.columns)
    if (name == "perturbation")
      for (auto& c : column.categories)
        if (c == "pert_2") c = "pert_unseen";
  const auto like = dir.file("like.h5ad");
  data::writeH5ad(adata, like);
  auto r = runBinary("generate --prior '" + dir.file("prior") + "' --like '" + like + "' --out '" +
                     dir.file("pred.h5ad") + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("pert_unseen"), std::string::npos) << r.out;
}

TEST(Stage2Task, APriorDecodedByAnotherAutoencoderIsAnError) {
  const auto& f = fixture();
  TempDir dir;
  ASSERT_EQ(runBinary("train '" + priorConfig(dir, "prior", f.gaussian, "flow", f.data) + "'").status, 0);
  // Another Gaussian autoencoder of the same shape: only its weights differ.
  const auto other = dir.file("ae-other");
  auto r = runBinary("train '" + stage1Config(dir, "ae-other", f.data, "{kind: gaussian, beta: 1.0e-5}") + "' seed=5");
  ASSERT_EQ(r.status, 0) << r.out;
  r = runBinary("generate --prior '" + dir.file("prior") + "' --like '" + f.data + "' --out '" + dir.file("p.h5ad") +
                "' --autoencoder '" + other + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("trained on the latents of"), std::string::npos) << r.out;
}

TEST(Stage2Task, FsqPriorOnGaussianLatentsIsAnError) {
  const auto& f = fixture();
  TempDir dir;
  auto r = runBinary("train '" + priorConfig(dir, "prior", f.gaussian, "ar", f.data) + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("FSQ code indices"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fsq bottleneck"), std::string::npos) << r.out;
  r = runBinary("train '" + priorConfig(dir, "prior2", f.fsq, "flow", f.data) + "'");
  EXPECT_EQ(r.status, 2) << r.out;
}

TEST(Stage2Task, HoldOutRulesAreCheckedWhenTheConfigLoads) {
  const auto& f = fixture();
  TempDir dir;
  auto r = runBinary("train '" + priorConfig(dir, "prior", f.gaussian, "flow", f.data) + "' 'data.holdout=[batch]'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("column=value1,value2"), std::string::npos) << r.out;
  // A value that does not occur holds out nothing: an error, not a silent no-op.
  r = runBinary("train '" + priorConfig(dir, "prior", f.gaussian, "flow", f.data) +
                "' 'data.holdout=[\"perturbation=pert_typo\"]'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("pert_typo"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace latentcell
