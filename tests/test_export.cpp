// `latentcell export` (issue 8): a stage-1 and a stage-2 run exported to one safetensors file hold
// the run's EMA weights bitwise and its records in the metadata; `reconstruct` and `generate` give
// bitwise the output of the run directory from the export; bad inputs are one-line errors; and the
// Python snippet of docs/export.md loads an export of the golden MCAB autoencoder and reproduces
// the golden latent.
#include "TestUtil.h"

#include "core/Config.h"
#include "core/Crc32c.h"
#include "core/Safetensors.h"
#include "data/Conditions.h"
#include "data/H5ad.h"
#include "train/Export.h"
#include "train/Stage1Task.h"
#include "train/Stage2Task.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace latentcell {
namespace {

namespace fs = std::filesystem;
using test::runBinary;
using test::TempDir;

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A small screen, an autoencoder and a flow prior trained on it (both keeping an EMA), and their
// exports. ctest runs each test in its own process, so the prior is trained only by the tests that
// ask for it.
struct Runs {
  TempDir dir;
  std::string data, ae, ae_export, prior, prior_export;
};

Runs& stage1Runs() {
  static Runs* r = [] {
    auto* r = new Runs;
    r->data = r->dir.file("screen.h5ad");
    auto out = runBinary("simulate --out '" + r->data + "' --cells 300 --genes 20 --perturbations 3 --seed 3");
    EXPECT_EQ(out.status, 0) << out.out;
    r->ae = r->dir.file("ae");
    const auto config = r->dir.file("ae.yaml");
    std::ofstream(config) << "task: stage1\nseed: 0\ndevice: cpu\nrun_dir: " << r->ae << "\n"
                          << "data: {path: " << r->data << ", batch_size: 64, val_fraction: 0.1}\n"
                          << "model: {family: mcab, mcab: {width: 16, heads: 2, encoder_blocks: 1, decoder_blocks: 1,"
                          << " latent_tokens: 4, latent_dim: 3}}\n"
                          << "bottleneck: {kind: gaussian, beta: 1.0e-5}\nhead: {kind: nb}\n"
                          << "trainer: {max_steps: 10, log_every: 5, optimizer: {lr: 0.003},"
                          << " ema: {enabled: true, decay: 0.9}}\n";
    out = runBinary("train '" + config + "'");
    EXPECT_EQ(out.status, 0) << out.out;
    r->ae_export = r->dir.file("ae.safetensors");
    out = runBinary("export --run '" + r->ae + "' --out '" + r->ae_export + "'");
    EXPECT_EQ(out.status, 0) << out.out;
    return r;
  }();
  return *r;
}

Runs& stage2Runs() {
  static Runs* r = [] {
    auto* r = &stage1Runs();
    r->prior = r->dir.file("prior");
    const auto config = r->dir.file("prior.yaml");
    std::ofstream(config) << "task: stage2\nseed: 0\ndevice: cpu\nrun_dir: " << r->prior << "\nautoencoder: " << r->ae
                          << "\ndata: {path: " << r->data << ", conditions: [perturbation, batch], control: control,"
                          << " holdout: ['batch=batch_1; perturbation=pert_1'], batch_size: 32}\n"
                          << "prior: {kind: flow, backbone: {dim: 32, depth: 2, heads: 2}, flow: {solver: euler, steps: 4}}\n"
                          << "trainer: {max_steps: 8, log_every: 4, eval_every: 4, optimizer: {lr: 0.002},"
                          << " ema: {enabled: true, decay: 0.9}}\n";
    auto out = runBinary("train '" + config + "'");
    EXPECT_EQ(out.status, 0) << out.out;
    r->prior_export = r->dir.file("prior.safetensors");
    out = runBinary("export --run '" + r->prior + "' --out '" + r->prior_export + "'");
    EXPECT_EQ(out.status, 0) << out.out;
    return r;
  }();
  return *r;
}

std::string latestCheckpoint(const std::string& run_dir) {
  return fs::canonical(fs::path(run_dir) / "checkpoints" / "latest").string();
}

// `file`'s tensors under `prefix` are `expected`'s, in the same order, bitwise (dtype, shape, bytes).
void expectSameTensors(const core::SafetensorsData& file, const std::string& prefix,
                       const core::SafetensorsData& expected) {
  core::NamedTensors got;
  for (const auto& [name, t] : file.tensors)
    if (name.rfind(prefix, 0) == 0) got.emplace_back(name.substr(prefix.size()), t);
  ASSERT_EQ(got.size(), expected.tensors.size()) << prefix;
  for (size_t i = 0; i < got.size(); ++i) {
    const auto& [name, t] = got[i];
    const auto& [want_name, want] = expected.tensors[i];
    EXPECT_EQ(name, want_name);
    EXPECT_EQ(t.scalar_type(), want.scalar_type()) << name;
    ASSERT_EQ(t.sizes(), want.sizes()) << name;
    EXPECT_EQ(std::memcmp(t.data_ptr(), want.data_ptr(), t.nbytes()), 0) << name << " differs";
  }
}

// True when some tensor of `a` differs from the same-named tensor of `b`.
bool anyDiffers(const core::SafetensorsData& a, const core::SafetensorsData& b) {
  for (const auto& [name, t] : a.tensors)
    if (!torch::equal(t, b.at(name))) return true;
  return false;
}

void expectSameMatrix(const std::string& a_path, const std::string& b_path) {
  const auto a = data::readH5ad(a_path), b = data::readH5ad(b_path);
  EXPECT_EQ(a.obs.index, b.obs.index);
  EXPECT_EQ(a.var.index, b.var.index);
  EXPECT_EQ(a.X.rows, b.X.rows);
  EXPECT_EQ(a.X.indptr, b.X.indptr);
  EXPECT_EQ(a.X.indices, b.X.indices);
  EXPECT_EQ(a.X.data, b.X.data);  // float ==: bitwise for finite values
  EXPECT_GT(a.X.data.size(), 0u);
}

TEST(Export, Stage1HoldsTheEmaWeightsBitwiseAndTheRunRecords) {
  const auto& r = stage1Runs();
  const auto file = core::loadSafetensors(r.ae_export);
  const auto checkpoint = latestCheckpoint(r.ae);
  const auto ema = core::loadSafetensors((fs::path(checkpoint) / "ema.safetensors").string());
  expectSameTensors(file, "autoencoder.", ema);
  // EMA (decay 0.9 over 10 steps) is not the trained weights: exporting those would fail above.
  EXPECT_TRUE(anyDiffers(ema, core::loadSafetensors((fs::path(checkpoint) / "model.safetensors").string())));

  const auto& m = file.metadata;
  EXPECT_EQ(m.at("format"), train::kExportFormat);
  EXPECT_EQ(m.at("kind"), "stage1");
  EXPECT_EQ(m.at("autoencoder.weights"), "ema");
  const auto ema_bytes = readText((fs::path(checkpoint) / "ema.safetensors").string());
  EXPECT_EQ(m.at("autoencoder.weights_crc32c"), std::to_string(core::crc32c(ema_bytes.data(), ema_bytes.size())));
  EXPECT_EQ(m.at("autoencoder.step"), "10");
  EXPECT_EQ(m.at("autoencoder.checkpoint"), fs::path(checkpoint).filename().string());
  EXPECT_FALSE(m.at("latentcell_version").empty());
  EXPECT_FALSE(m.at("git_commit").empty());
  EXPECT_NE(m.at("autoencoder.meta").find("command_line"), std::string::npos);
  EXPECT_EQ(m.at("autoencoder.config"), readText(r.ae + "/config.yaml"));
  train::Stage1Config config;
  core::loadConfigText(config, m.at("autoencoder.config"), "export");
  EXPECT_EQ(config.model.mcab.latent_dim, 3);
  std::vector<std::string> genes;
  std::istringstream lines(readText(r.ae + "/genes.txt"));
  for (std::string g; std::getline(lines, g);) genes.push_back(g);
  EXPECT_EQ(nlohmann::json::parse(m.at("autoencoder.genes")).get<std::vector<std::string>>(), genes);
  EXPECT_EQ(genes.size(), 20u);
}

TEST(Export, Stage2HoldsPriorAutoencoderStatsAndRecords) {
  const auto& r = stage2Runs();
  const auto file = core::loadSafetensors(r.prior_export);
  expectSameTensors(file, "prior.",
                    core::loadSafetensors((fs::path(latestCheckpoint(r.prior)) / "ema.safetensors").string()));
  expectSameTensors(file, "autoencoder.",
                    core::loadSafetensors((fs::path(latestCheckpoint(r.ae)) / "ema.safetensors").string()));
  expectSameTensors(file, "latent_stats.", core::loadSafetensors(r.prior + "/latent_stats.safetensors"));
  // Nothing else: every tensor is under one of the three prefixes.
  size_t counted = 0;
  for (const auto& [name, t] : file.tensors)
    counted += name.rfind("prior.", 0) == 0 || name.rfind("autoencoder.", 0) == 0 || name.rfind("latent_stats.", 0) == 0;
  EXPECT_EQ(counted, file.tensors.size());

  const auto& m = file.metadata;
  EXPECT_EQ(m.at("kind"), "stage2");
  EXPECT_EQ(m.at("prior.weights"), "ema");
  EXPECT_EQ(m.at("prior.step"), "8");
  EXPECT_EQ(m.at("autoencoder.step"), "10");
  EXPECT_EQ(m.at("prior.config"), readText(r.prior + "/config.yaml"));
  EXPECT_EQ(m.at("autoencoder.config"), readText(r.ae + "/config.yaml"));
  train::Stage2Config config;
  core::loadConfigText(config, m.at("prior.config"), "export");
  EXPECT_EQ(config.prior.kind, "flow");
  const auto vocabularies = data::parseVocabularies(m.at("vocabularies"), "export");
  const auto expected = data::loadVocabularies(r.prior);
  ASSERT_EQ(vocabularies.size(), 2u);
  for (size_t k = 0; k < vocabularies.size(); ++k) {
    EXPECT_EQ(vocabularies[k].column, expected[k].column);
    EXPECT_EQ(vocabularies[k].values, expected[k].values);
  }
  EXPECT_EQ(vocabularies[0].control, "control");
  const auto library = train::LibrarySizeModel::parse(m.at("library_sizes"), "export");
  const auto library_run = train::LibrarySizeModel::load(r.prior + "/library_sizes.json");
  EXPECT_EQ(library.overall.mean, library_run.overall.mean);
  EXPECT_EQ(library.by_combination.size(), library_run.by_combination.size());
  EXPECT_GT(library.overall.cells, 0);
}

TEST(Export, ReconstructAndEncodeFromTheExportEqualTheRunDirectory) {
  const auto& r = stage1Runs();
  const TempDir dir;
  for (const auto& [name, run] : {std::pair<std::string, std::string>{"dir", r.ae}, {"file", r.ae_export}}) {
    const auto out = runBinary("reconstruct --run '" + run + "' --data '" + r.data + "' --predict sample --seed 4 --out '" +
                               dir.file(name + ".h5ad") + "'");
    ASSERT_EQ(out.status, 0) << out.out;
  }
  expectSameMatrix(dir.file("dir.h5ad"), dir.file("file.h5ad"));
  // encode too: the latents (and every other tensor it writes) bitwise.
  for (const auto& [name, run] : {std::pair<std::string, std::string>{"dir", r.ae}, {"file", r.ae_export}}) {
    const auto out = runBinary("encode --run '" + run + "' --data '" + r.data + "' --out '" +
                               dir.file(name + ".safetensors") + "'");
    ASSERT_EQ(out.status, 0) << out.out;
  }
  const auto from_dir = core::loadSafetensors(dir.file("dir.safetensors"));
  expectSameTensors(core::loadSafetensors(dir.file("file.safetensors")), "", from_dir);
  EXPECT_GT(from_dir.tensors.size(), 0u);
}

TEST(Export, GenerateFromTheExportEqualsTheRunDirectoryAndItsAutoencoderReconstructs) {
  const auto& r = stage2Runs();
  const TempDir dir;
  for (const auto& [name, prior] : {std::pair<std::string, std::string>{"dir", r.prior}, {"file", r.prior_export}}) {
    const auto out = runBinary("generate --prior '" + prior + "' --like '" + r.data + "' --seed 5 --out '" +
                               dir.file(name + ".h5ad") + "'");
    ASSERT_EQ(out.status, 0) << out.out;
  }
  expectSameMatrix(dir.file("dir.h5ad"), dir.file("file.h5ad"));
  // A prior run directory decoded by its autoencoder's export (the recorded checksum matches).
  auto out = runBinary("generate --prior '" + r.prior + "' --autoencoder '" + r.ae_export + "' --like '" + r.data +
                       "' --seed 5 --out '" + dir.file("override.h5ad") + "'");
  ASSERT_EQ(out.status, 0) << out.out;
  expectSameMatrix(dir.file("dir.h5ad"), dir.file("override.h5ad"));
  // The stage-2 export's autoencoder is the stage-1 run's.
  for (const auto& [name, run] : {std::pair<std::string, std::string>{"ae", r.ae}, {"bundled", r.prior_export}}) {
    const auto out = runBinary("reconstruct --run '" + run + "' --data '" + r.data + "' --out '" +
                               dir.file(name + ".h5ad") + "'");
    ASSERT_EQ(out.status, 0) << out.out;
  }
  expectSameMatrix(dir.file("ae.h5ad"), dir.file("bundled.h5ad"));
}

TEST(Export, BadRunsFilesAndPathsAreOneLineErrors) {
  const auto& r = stage1Runs();
  const TempDir dir;
  auto expectError = [](const std::string& args, const std::string& says) {
    const auto out = runBinary(args);
    EXPECT_EQ(out.status, 2) << args << "\n" << out.out;
    EXPECT_NE(out.out.find(says), std::string::npos) << args << "\n" << out.out;
  };
  expectError("export --run '" + dir.file("missing") + "' --out '" + dir.file("x.safetensors") + "'", "does not exist");
  // A run that has not written a checkpoint yet.
  const auto fresh = dir.file("fresh");
  fs::create_directories(fresh);
  fs::copy_file(r.ae + "/config.yaml", fresh + "/config.yaml");
  fs::copy_file(r.ae + "/genes.txt", fresh + "/genes.txt");
  expectError("export --run '" + fresh + "' --out '" + dir.file("x.safetensors") + "'", "has no checkpoint yet");
  expectError("export --run '" + r.ae + "' --out '" + dir.file("no/such/dir/x.safetensors") + "'",
              "does not exist; create it first");
  expectError("export --run '" + r.ae_export + "' --out '" + dir.file("x.safetensors") + "'", "is a file, not a run directory");
  EXPECT_FALSE(fs::exists(dir.file("x.safetensors")));

  // A safetensors file that is not an export (a checkpoint's weights) is refused by name.
  const auto weights = fs::path(latestCheckpoint(r.ae)) / "ema.safetensors";
  expectError("reconstruct --run '" + weights.string() + "' --data '" + r.data + "' --out '" + dir.file("x.h5ad") + "'",
              "is not a latentcell export");
  expectError("generate --prior '" + weights.string() + "' --like '" + r.data + "' --out '" + dir.file("x.h5ad") + "'",
              "is not a latentcell export");
  // An autoencoder's export is not a prior; an export holds no split.
  expectError("generate --prior '" + r.ae_export + "' --like '" + r.data + "' --out '" + dir.file("x.h5ad") + "'",
              "export of a stage-1 run");
  expectError("reconstruct --run '" + r.ae_export + "' --data '" + r.data + "' --cells val --out '" + dir.file("x.h5ad") +
                  "'",
              "pass the run directory");
  EXPECT_FALSE(fs::exists(dir.file("x.h5ad")));
}

TEST(Export, AnExportedPriorRefusesTheSplitAndAnotherAutoencoder) {
  const auto& r = stage2Runs();
  const TempDir dir;
  auto out = runBinary("generate --prior '" + r.prior_export + "' --like '" + r.data + "' --cells test --out '" +
                       dir.file("x.h5ad") + "'");
  EXPECT_EQ(out.status, 2) << out.out;
  EXPECT_NE(out.out.find("--cells test needs the cell split of a run directory"), std::string::npos) << out.out;
  out = runBinary("generate --prior '" + r.prior_export + "' --like '" + r.data + "' --autoencoder '" + r.ae +
                  "' --out '" + dir.file("x.h5ad") + "'");
  EXPECT_EQ(out.status, 2) << out.out;
  EXPECT_NE(out.out.find("drop --autoencoder"), std::string::npos) << out.out;
  // A --like file with a gene the model lacks: the error points at the export's gene list, not at
  // the genes.txt of a run directory the user of an export may not have.
  auto extra = data::readH5ad(r.data);
  extra.var.index.push_back("NOT_A_MODEL_GENE");
  extra.var.columns.clear();  // per-gene annotations would need a row for the extra gene
  extra.varm.clear();
  extra.X.cols += 1;
  const auto extra_file = dir.file("extra.h5ad");
  data::writeH5ad(extra, extra_file);
  out = runBinary("generate --prior '" + r.prior_export + "' --like '" + extra_file + "' --out '" + dir.file("x.h5ad") + "'");
  EXPECT_EQ(out.status, 2) << out.out;
  EXPECT_NE(out.out.find("autoencoder.genes metadata of " + r.prior_export), std::string::npos) << out.out;
  EXPECT_EQ(out.out.find("genes.txt"), std::string::npos) << out.out;
  // Training a prior on an exported autoencoder: its run directory is needed.
  out = runBinary("train '" + r.prior + "/config.yaml' 'autoencoder=" + r.ae_export + "' run_dir=" + dir.file("p2"));
  EXPECT_EQ(out.status, 2) << out.out;
  EXPECT_NE(out.out.find("is an exported file"), std::string::npos) << out.out;
}

// Runs without an EMA export their trained weights: PCA (fitted, never averaged) and an FSQ
// autoencoder whose prior has no latent standardisation (codes).
TEST(Export, RunsWithoutEmaAndCodePriorsExportAndGenerateTheSame) {
  const auto& r = stage1Runs();
  const TempDir dir;
  const auto pca = dir.file("pca");
  std::ofstream(dir.file("pca.yaml")) << "task: stage1\nseed: 0\ndevice: cpu\nrun_dir: " << pca << "\n"
                                      << "data: {path: " << r.data << "}\nmodel: {family: pca, pca: {components: 4}}\n";
  auto out = runBinary("train '" + dir.file("pca.yaml") + "'");
  ASSERT_EQ(out.status, 0) << out.out;
  ASSERT_EQ(runBinary("export --run '" + pca + "' --out '" + dir.file("pca.safetensors") + "'").status, 0);
  const auto pca_file = core::loadSafetensors(dir.file("pca.safetensors"));
  EXPECT_EQ(pca_file.metadata.at("autoencoder.weights"), "model");
  expectSameTensors(pca_file, "autoencoder.",
                    core::loadSafetensors((fs::path(latestCheckpoint(pca)) / "model.safetensors").string()));

  const auto fsq = dir.file("fsq");
  std::ofstream(dir.file("fsq.yaml")) << "task: stage1\nseed: 0\ndevice: cpu\nrun_dir: " << fsq << "\n"
                                      << "data: {path: " << r.data << ", batch_size: 64}\n"
                                      << "model: {family: mcab, mcab: {width: 16, heads: 2, encoder_blocks: 1,"
                                      << " decoder_blocks: 1, latent_tokens: 4, latent_dim: 3}}\n"
                                      << "bottleneck: {kind: fsq, levels: [3, 3, 3]}\nhead: {kind: nb}\n"
                                      << "trainer: {max_steps: 6, log_every: 3}\n";
  ASSERT_EQ((out = runBinary("train '" + dir.file("fsq.yaml") + "'")).status, 0) << out.out;
  const auto prior = dir.file("ar");
  std::ofstream(dir.file("ar.yaml")) << "task: stage2\nseed: 0\ndevice: cpu\nrun_dir: " << prior
                                     << "\nautoencoder: " << fsq << "\ndata: {path: " << r.data
                                     << ", conditions: [perturbation], control: control, batch_size: 32}\n"
                                     << "prior: {kind: ar, backbone: {dim: 32, depth: 1, heads: 2}}\n"
                                     << "trainer: {max_steps: 4, log_every: 2, eval_every: 4}\n";
  ASSERT_EQ((out = runBinary("train '" + dir.file("ar.yaml") + "'")).status, 0) << out.out;
  ASSERT_EQ((out = runBinary("export --run '" + prior + "' --out '" + dir.file("ar.safetensors") + "'")).status, 0)
      << out.out;
  const auto ar_file = core::loadSafetensors(dir.file("ar.safetensors"));
  EXPECT_EQ(ar_file.metadata.at("prior.weights"), "model");
  EXPECT_FALSE(ar_file.contains("latent_stats.mean"));
  expectSameTensors(ar_file, "prior.",
                    core::loadSafetensors((fs::path(latestCheckpoint(prior)) / "model.safetensors").string()));
  for (const auto& [name, run] : {std::pair<std::string, std::string>{"dir", prior}, {"file", dir.file("ar.safetensors")}}) {
    out = runBinary("generate --prior '" + run + "' --like '" + r.data + "' --seed 2 --out '" + dir.file(name + ".h5ad") +
                    "'");
    ASSERT_EQ(out.status, 0) << out.out;
  }
  expectSameMatrix(dir.file("dir.h5ad"), dir.file("file.h5ad"));
}

// Acceptance of issue 8: both exports load in Python's safetensors, metadata included.
TEST(Export, BothExportsLoadInPythonSafetensors) {
  LATENTCELL_REQUIRE_PYTHON();
  const auto& r = stage2Runs();
  for (const auto& path : {r.ae_export, r.prior_export}) {
    const auto file = core::loadSafetensors(path);
    const auto command = "'" + test::pythonPath() +
                         "' -c 'import json, sys\n"
                         "from safetensors import safe_open\n"
                         "from safetensors.torch import load_file\n"
                         "tensors = load_file(sys.argv[1])\n"
                         "meta = safe_open(sys.argv[1], framework=\"pt\").metadata()\n"
                         "assert meta[\"format\"] == \"latentcell.export.v1\"\n"
                         "print(len(tensors), meta[\"kind\"], len(json.loads(meta[\"autoencoder.genes\"])))' '" +
                         path + "'";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char line[256] = {};
    const bool read = std::fgets(line, sizeof line, pipe) != nullptr;
    EXPECT_EQ(pclose(pipe), 0) << path;
    ASSERT_TRUE(read) << path;
    EXPECT_EQ(std::string(line), std::to_string(file.tensors.size()) + " " + file.metadata.at("kind") + " 20\n");
  }
}

// The ```python block of docs/export.md.
std::string docsSnippet() {
  const auto doc = readText(test::sourcePath("docs/export.md"));
  const auto start = doc.find("```python\n");
  if (start == std::string::npos) return "";
  const auto body = start + 10;
  return doc.substr(body, doc.find("```", body) - body);
}

// A stage-1 run with the architecture of make_golden.py's mcab_autoencoder_concat case (MCAB with
// concat count embedding and latent norm, bottleneck none, MSE head) trained by `latentcell train`,
// whose checkpoint EMA weights then get the golden encoder-decoder weights (the head keeps its
// trained ones). Exported, it must give the golden latent in latentcell and in the docs' snippet.
TEST(Export, TheDocsSnippetLoadsAnExportOfTheGoldenModelAndReproducesItsLatent) {
  LATENTCELL_REQUIRE_PYTHON();
  const auto snippet = docsSnippet();
  ASSERT_NE(snippet.find("safe_open"), std::string::npos) << "docs/export.md has no ```python block reading the export";
  const TempDir dir;
  ASSERT_EQ(test::runPython("tests/golden/make_golden.py", "'" + dir.file("golden") + "'"), 0);
  const auto golden_path = dir.file("golden/mcab_autoencoder_concat.safetensors");
  const auto golden = core::loadSafetensors(golden_path);

  const auto data = dir.file("cells.h5ad");
  auto out = runBinary("simulate --out '" + data + "' --cells 64 --genes 12 --perturbations 2 --seed 1");
  ASSERT_EQ(out.status, 0) << out.out;
  const auto run = dir.file("golden-run");
  const auto config = dir.file("golden.yaml");
  std::ofstream(config) << "task: stage1\nseed: 0\ndevice: cpu\nrun_dir: " << run << "\n"
                        << "data: {path: " << data << ", batch_size: 32}\n"
                        << "model: {family: mcab, mcab: {width: 16, heads: 4, cross_heads: 2, encoder_blocks: 1,"
                        << " decoder_blocks: 1, latent_tokens: 4, latent_dim: 6, count_embedding: concat,"
                        << " count_mlp_hidden: 8, multiple_of: 16, latent_norm: true}}\n"
                        << "bottleneck: {kind: none}\nhead: {kind: mse}\n"
                        << "trainer: {max_steps: 2, log_every: 1, ema: {enabled: true}}\n";
  out = runBinary("train '" + config + "'");
  ASSERT_EQ(out.status, 0) << out.out;
  const auto ema_path = (fs::path(latestCheckpoint(run)) / "ema.safetensors").string();
  auto ema = core::loadSafetensors(ema_path);
  std::map<std::string, at::Tensor> golden_weights;
  for (const auto& [name, t] : golden.tensors)
    if (name.rfind("weights.", 0) == 0) golden_weights["family." + name.substr(8)] = t;
  size_t replaced = 0;
  for (auto& [name, t] : ema.tensors) {
    if (name.rfind("family.", 0) != 0) continue;
    ASSERT_TRUE(golden_weights.count(name)) << name << " is not a weight of the golden case";
    ASSERT_EQ(t.sizes(), golden_weights[name].sizes()) << name;
    t = golden_weights[name];
    ++replaced;
  }
  ASSERT_EQ(replaced, golden_weights.size()) << "the golden case has weights the model lacks";
  core::saveSafetensors(ema_path, ema.tensors, ema.metadata);

  const auto exported = dir.file("golden.safetensors");
  out = runBinary("export --run '" + run + "' --out '" + exported + "'");
  ASSERT_EQ(out.status, 0) << out.out;

  // latentcell, loading the export: the golden latent within 1e-5.
  const auto model = train::loadStage1Run(exported, c10::Device(c10::kCPU));
  models::CellBatch batch;
  batch.gene_ids = golden.at("inputs.gene_ids");
  batch.counts = golden.at("inputs.counts");
  batch.padding_mask = batch.gene_ids.eq(0);
  torch::NoGradGuard no_grad;
  const auto latent = model.model->encodeLatent(batch);  // [2, 4, 6]
  const auto want = golden.at("outputs.latent");
  ASSERT_EQ(latent.sizes(), want.sizes());
  EXPECT_LE((latent - want).abs().max().item<double>(), 1e-5);

  // Python, with the documented snippet, run from the repository root as the docs say.
  const auto script = dir.file("check_export.py");
  std::ofstream(script) << snippet;
  const auto command = "cd '" + test::sourcePath("") + "' && '" + test::pythonPath() + "' '" + script + "' '" +
                       exported + "' '" + golden_path + "' > '" + dir.file("snippet.log") + "' 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << readText(dir.file("snippet.log"));
  const auto log = readText(dir.file("snippet.log"));
  EXPECT_NE(log.find("stage1 export: 12 genes, step 2, ema weights"), std::string::npos) << log;
  EXPECT_NE(log.find("latent[0, 0, 0] = "), std::string::npos) << log;
}

}  // namespace
}  // namespace latentcell
