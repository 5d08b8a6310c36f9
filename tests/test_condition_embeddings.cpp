// External condition embeddings read the same from CSV, TSV, both safetensors layouts and h5ad, and
// bad files fail with messages naming the file and the problem.
#include "TestUtil.h"
#include "core/Safetensors.h"
#include "data/ConditionEmbeddings.h"
#include "data/H5ad.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

using namespace latentcell::data;
using latentcell::test::TempDir;

namespace {

const std::vector<std::string> kNames = {"STAT1", "JAK2", "IFNGR1"};

torch::Tensor expected() { return torch::tensor({{0.5f, -1.0f}, {2.0f, 0.25f}, {-3.5f, 1e-3f}}); }

void expectTable(const EmbeddingTable& t) {
  EXPECT_EQ(t.names(), kNames);
  EXPECT_TRUE(torch::equal(t.vectors(), expected()));
  EXPECT_EQ(t.dim(), 2);
}

void expectError(const std::function<void()>& f, const std::vector<std::string>& phrases) {
  try {
    f();
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    for (const auto& p : phrases) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(ConditionEmbeddings, SameTableFromEveryFormat) {
  TempDir dir;
  std::ofstream(dir.file("e.csv")) << "gene,d0,d1\nSTAT1,0.5,-1\nJAK2,2,0.25\nIFNGR1,-3.5,0.001\n";
  expectTable(loadEmbeddingTable(dir.file("e.csv")));
  std::ofstream(dir.file("e.tsv")) << "STAT1\t0.5\t-1\nJAK2\t2\t0.25\nIFNGR1\t-3.5\t0.001\n";
  expectTable(loadEmbeddingTable(dir.file("e.tsv")));

  latentcell::core::saveSafetensors(dir.file("m.safetensors"), {{"embeddings", expected()}},
                                    {{"names", R"(["STAT1","JAK2","IFNGR1"])"}});
  expectTable(loadEmbeddingTable(dir.file("m.safetensors")));
  latentcell::core::saveSafetensors(dir.file("v.safetensors"),
                                    {{"STAT1", expected()[0]}, {"JAK2", expected()[1]}, {"IFNGR1", expected()[2]}});
  expectTable(loadEmbeddingTable(dir.file("v.safetensors")));

  AnnData a;
  a.X = latentcell::test::csrFromDense({{0.5f, -1.0f}, {2.0f, 0.25f}, {-3.5f, 1e-3f}});
  a.obs.index = kNames;
  a.var.index = {"d0", "d1"};
  a.obsm["esm2"] = DenseMatrix{3, 2, {0.5f, -1.0f, 2.0f, 0.25f, -3.5f, 1e-3f}};
  writeH5ad(a, dir.file("e.h5ad"));
  expectTable(loadEmbeddingTable(dir.file("e.h5ad")));
  expectTable(loadEmbeddingTable(dir.file("e.h5ad"), "esm2"));
}

TEST(ConditionEmbeddings, LookupByNameAndMissingNames) {
  EmbeddingTable t(kNames, expected(), "mem");
  auto rows = t.lookup({"IFNGR1", "STAT1"});
  EXPECT_TRUE(torch::equal(rows, torch::stack({expected()[2], expected()[0]})));
  expectError([&] { t.lookup({"STAT1", "TP53", "MYC"}); }, {"mem", "2 name(s)", "TP53", "MYC"});
  std::vector<uint8_t> missing;
  auto partial = t.lookup({"TP53", "JAK2"}, &missing);
  EXPECT_EQ(missing, (std::vector<uint8_t>{1, 0}));
  EXPECT_TRUE(torch::equal(partial[0], torch::zeros({2})));
}

TEST(ConditionEmbeddings, BadFilesNameTheFileAndProblem) {
  TempDir dir;
  expectError([&] { loadEmbeddingTable(dir.file("none.csv")); }, {"none.csv", "does not exist"});
  std::ofstream(dir.file("ragged.csv")) << "A,1,2\nB,3\n";
  expectError([&] { loadEmbeddingTable(dir.file("ragged.csv")); }, {"ragged.csv:2", "1 values where earlier lines have 2"});
  std::ofstream(dir.file("dup.csv")) << "A,1\nA,2\n";
  expectError([&] { loadEmbeddingTable(dir.file("dup.csv")); }, {"dup.csv", "'A' appears more than once"});
  std::ofstream(dir.file("nan.csv")) << "A,nan\n";
  expectError([&] { loadEmbeddingTable(dir.file("nan.csv")); }, {"nan.csv", "NaN"});
  std::ofstream(dir.file("bad.csv")) << "A,1\nB,x\n";
  expectError([&] { loadEmbeddingTable(dir.file("bad.csv")); }, {"bad.csv:2", "not a number"});
  std::ofstream(dir.file("e.npy")) << "x";
  expectError([&] { loadEmbeddingTable(dir.file("e.npy")); }, {"e.npy", "unknown embedding file type"});
  latentcell::core::saveSafetensors(dir.file("nonames.safetensors"), {{"embeddings", expected()}});
  expectError([&] { loadEmbeddingTable(dir.file("nonames.safetensors")); }, {"nonames.safetensors", "'names'"});
}
