// h5ad IO against the reference implementation in both directions: files written by anndata and
// h5py (every X storage and dtype, LZF and gzip, layers, raw, the anndata 0.7 layout) must read to
// exactly what anndata itself reads (tests/python/make_h5ad_fixtures.py), and files latentcell writes
// must read in anndata, warnings counted as errors (tests/python/check_h5ad.py). Both sides are
// compared through one JSON schema. Plus: exact C++ round trips, backed row reads, the real screens
// in ../shared/data, one-line errors naming the file for every kind of broken input, corrupted bytes
// that must never crash the reader, `latentcell data inspect`, and a pred/real pair written by
// latentcell accepted by `cell-eval run` (exit 0, results for every perturbation, no warnings).
#include "TestUtil.h"

#include "data/H5ad.h"
#include "data/Simulator.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>

using json = nlohmann::json;
using latentcell::test::TempDir;
using namespace latentcell::data;

namespace {

// ---- the JSON schema shared with make_h5ad_fixtures.py ---------------------------------------------

json csrJson(const CsrMatrix& m) {
  json j;
  j["rows"] = m.rows;
  j["cols"] = m.cols;
  j["indptr"] = m.indptr;
  j["indices"] = m.indices;
  json data = json::array();
  for (float v : m.data) data.push_back(static_cast<double>(v));
  j["data"] = data;
  return j;
}

json columnJson(const Column& c) {
  json j;
  const bool nullable = !c.missing.empty();
  auto values = [&](auto get) {
    json v = json::array();
    for (int64_t i = 0; i < c.size(); ++i) v.push_back(nullable && c.missing[i] ? json(nullptr) : json(get(i)));
    return v;
  };
  switch (c.kind) {
    case Column::Kind::Categorical:
      j = {{"kind", "categorical"}, {"categories", c.categories}, {"codes", c.codes}, {"ordered", c.ordered}};
      return j;
    case Column::Kind::String: j = {{"kind", "string"}, {"values", values([&](int64_t i) { return c.strings[i]; })}}; break;
    case Column::Kind::Int: j = {{"kind", "int"}, {"values", values([&](int64_t i) { return c.ints[i]; })}}; break;
    case Column::Kind::Bool:
      j = {{"kind", "bool"}, {"values", values([&](int64_t i) { return c.bools[i] != 0; })}};
      break;
    case Column::Kind::Float: {
      json v = json::array();
      for (double x : c.floats) v.push_back(std::isnan(x) ? json(nullptr) : json(x));
      j = {{"kind", "float"}, {"values", v}};
      break;
    }
  }
  if (nullable) j["nullable"] = true;
  return j;
}

json frameJson(const DataFrame& df) {
  json cols = json::array();
  for (const auto& [name, c] : df.columns) cols.push_back({name, columnJson(c)});
  return {{"index", df.index}, {"columns", cols}};
}

json adataJson(const AnnData& a) {
  json obsm = json::object();
  for (const auto& [k, m] : a.obsm) {
    json v = json::array();
    for (float x : m.values) v.push_back(static_cast<double>(x));
    obsm[k] = {{"rows", m.rows}, {"cols", m.cols}, {"values", v}};
  }
  return {{"n_obs", a.n_obs()},        {"n_vars", a.n_vars()},   {"X", csrJson(a.X)},
          {"whole", allWholeNumbers(a.X)}, {"obs", frameJson(a.obs)}, {"var", frameJson(a.var)},
          {"obsm", obsm},              {"uns_strings", a.uns_strings}, {"uns_numbers", a.uns_numbers}};
}

// The first place where two JSON values differ, as a path, or "" when equal (NaN never occurs: the
// schema writes missing values as null).
std::string firstDifference(const json& got, const json& want, const std::string& path) {
  if (got.is_number() && want.is_number()) {
    return got.get<double>() == want.get<double>() ? "" : path + ": " + got.dump() + " != " + want.dump();
  }
  if (got.type() != want.type()) return path + ": " + got.dump().substr(0, 200) + " != " + want.dump().substr(0, 200);
  if (got.is_object()) {
    for (const auto& [k, v] : want.items()) {
      if (!got.contains(k)) return path + "." + k + ": missing";
      if (auto d = firstDifference(got[k], v, path + "." + k); !d.empty()) return d;
    }
    for (const auto& [k, v] : got.items())
      if (!want.contains(k)) return path + "." + k + ": unexpected";
    return "";
  }
  if (got.is_array()) {
    if (got.size() != want.size())
      return path + ": length " + std::to_string(got.size()) + " != " + std::to_string(want.size());
    for (size_t i = 0; i < got.size(); ++i)
      if (auto d = firstDifference(got[i], want[i], path + "[" + std::to_string(i) + "]"); !d.empty()) return d;
    return "";
  }
  return got == want ? "" : path + ": " + got.dump() + " != " + want.dump();
}

void expectSameAs(const json& got, const json& want, const std::vector<std::string>& keys, const std::string& what) {
  for (const auto& k : keys) EXPECT_EQ(firstDifference(got[k], want[k], k), "") << what;
}

const std::vector<std::string> kAllKeys = {"n_obs", "n_vars",      "X",          "whole",
                                           "obs",   "var", "obsm", "uns_strings", "uns_numbers"};

// ---- fixtures ---------------------------------------------------------------------------------------

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

struct Fixtures {
  std::string dir;
  json expected;
  std::string file(const std::string& name) const { return dir + "/" + name; }
};

// Generated once per script version and shared by the test processes (ctest runs each test in its
// own process): the directory name carries a hash of the script, and appears atomically.
const Fixtures* fixtures() {
  static const std::optional<Fixtures> cached = []() -> std::optional<Fixtures> {
    if (latentcell::test::pythonPath().empty()) return std::nullopt;
    const std::string script = "tests/python/make_h5ad_fixtures.py";
    const size_t hash = std::hash<std::string>{}(readFile(latentcell::test::sourcePath(script)) +
                                                 latentcell::test::pythonPath());
    const auto dir = std::filesystem::temp_directory_path() / ("latentcell-h5ad-fixtures-" + std::to_string(hash));
    if (!std::filesystem::exists(dir / "expected.json")) {
      const auto tmp = dir.string() + ".tmp" + std::to_string(std::random_device{}());
      if (latentcell::test::runPython(script, "'" + tmp + "'") != 0) return std::nullopt;
      std::error_code ec;
      std::filesystem::rename(tmp, dir, ec);  // another process may have won the race
      std::filesystem::remove_all(tmp, ec);
    }
    Fixtures f{dir.string(), json::parse(readFile((dir / "expected.json").string()))};
    return f;
  }();
  return cached ? &*cached : nullptr;
}

#define LATENTCELL_REQUIRE_FIXTURES(fx)                                                        \
  LATENTCELL_REQUIRE_PYTHON();                                                                 \
  const Fixtures* fx = fixtures();                                                             \
  ASSERT_NE(fx, nullptr) << "tests/python/make_h5ad_fixtures.py failed (anndata and h5py are " \
                            "needed in the reference env)"

// The real screens: read from ../shared/data, skipped where that folder is absent.
std::string sharedData(const std::string& name) {
  return latentcell::test::sourcePath("../shared/data/" + name);
}
#define LATENTCELL_REQUIRE_SHARED(path)                                                           \
  if (!std::filesystem::exists(path))                                                             \
  GTEST_SKIP() << "real data not found at " << path                                               \
               << " (the ../shared/data folder next to the checkout is not public; other tests " \
                  "cover the same reader)"

// ---- an AnnData with every kind of column, built in C++ ------------------------------------------

AnnData sampleAnnData() {
  AnnData a;
  const int64_t n_obs = 23, n_vars = 9;
  std::mt19937 rng(3);
  a.X.rows = n_obs;
  a.X.cols = n_vars;
  a.X.indptr = {0};
  for (int64_t r = 0; r < n_obs; ++r) {
    for (int32_t c = 0; c < n_vars; ++c)
      if ((r * 7 + c * 3) % 4 == 0) {
        a.X.indices.push_back(c);
        a.X.data.push_back(static_cast<float>(1 + rng() % 50) / (r % 3 == 0 ? 4.0f : 1.0f));
      }
    a.X.indptr.push_back(a.X.nnz());
  }
  for (int64_t r = 0; r < n_obs; ++r) a.obs.index.push_back("cell-" + std::to_string(r) + "é");
  for (int64_t c = 0; c < n_vars; ++c) a.var.index.push_back("GENE" + std::to_string(c));

  Column cat;
  cat.kind = Column::Kind::Categorical;
  cat.categories = {"non-targeting", "STAT1", "JAK2"};
  for (int64_t r = 0; r < n_obs; ++r) cat.codes.push_back(r % 5 == 4 ? -1 : static_cast<int32_t>(r % 3));
  a.obs.columns.emplace_back("perturbation", cat);

  Column many;  // 200 categories: int16 codes
  many.kind = Column::Kind::Categorical;
  many.ordered = true;
  for (int i = 0; i < 200; ++i) many.categories.push_back("b" + std::to_string(i));
  for (int64_t r = 0; r < n_obs; ++r) many.codes.push_back(static_cast<int32_t>((r * 37) % 200));
  a.obs.columns.emplace_back("batch", many);

  Column s, f, i, b, ni, nb, ns;
  s.kind = Column::Kind::String;
  f.kind = Column::Kind::Float;
  i.kind = Column::Kind::Int;
  b.kind = Column::Kind::Bool;
  ni.kind = Column::Kind::Int;
  nb.kind = Column::Kind::Bool;
  ns.kind = Column::Kind::String;
  for (int64_t r = 0; r < n_obs; ++r) {
    s.strings.push_back("guide_" + std::to_string(r * 13));
    f.floats.push_back(r % 6 == 0 ? std::nan("") : 0.1 * static_cast<double>(r) - 1.0);
    i.ints.push_back(r * r - 100 + (r == 3 ? (int64_t{1} << 40) : 0));
    b.bools.push_back(r % 3 == 0);
    ni.ints.push_back(r % 4 == 0 ? 0 : r);
    ni.missing.push_back(r % 4 == 0);
    nb.bools.push_back(r % 2 == 0);
    nb.missing.push_back(r % 7 == 0);
    ns.strings.push_back(r % 5 == 0 ? "" : "s" + std::to_string(r));
    ns.missing.push_back(r % 5 == 0);
  }
  for (const auto& [name, c] : std::vector<std::pair<const char*, Column*>>{
           {"guide", &s}, {"score", &f}, {"n_umis", &i}, {"is_control", &b}, {"maybe_n", &ni}, {"maybe_b", &nb},
           {"maybe_s", &ns}})
    a.obs.columns.emplace_back(name, *c);
  Column hv;
  hv.kind = Column::Kind::Bool;
  for (int64_t c = 0; c < n_vars; ++c) hv.bools.push_back(c % 2);
  a.var.columns.emplace_back("highly_variable", hv);

  DenseMatrix emb{n_obs, 3, {}};
  for (int64_t k = 0; k < n_obs * 3; ++k) emb.values.push_back(static_cast<float>(k) * 0.25f - 3.0f);
  a.obsm["X_pca"] = emb;
  DenseMatrix loadings{n_vars, 2, {}};
  for (int64_t k = 0; k < n_vars * 2; ++k) loadings.values.push_back(static_cast<float>(k) / 3.0f);
  a.varm["PCs"] = loadings;
  a.uns_strings["title"] = "latentcell fixture ✓";
  a.uns_numbers["n_hvg"] = 7;
  a.uns_numbers["resolution"] = 0.1;
  return a;
}

std::string messageOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The error must name the file, mention each phrase, and be one line.
void expectError(const std::function<void()>& f, const std::string& file, const std::vector<std::string>& phrases) {
  const std::string msg = messageOf(f);
  ASSERT_FALSE(msg.empty()) << "no error for " << file;
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  for (const auto& p : phrases) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
}

CsrMatrix readAllRows(H5adRowReader& reader, int64_t step) {
  CsrMatrix all;
  all.cols = reader.n_vars();
  all.indptr = {0};
  for (int64_t b = 0; b < reader.n_obs(); b += step) {
    const auto part = reader.readRows(b, std::min(b + step, reader.n_obs()));
    EXPECT_EQ(part.rows, std::min(step, reader.n_obs() - b));
    for (int64_t r = 0; r < part.rows; ++r) all.indptr.push_back(all.nnz() + part.indptr[r + 1]);
    all.indices.insert(all.indices.end(), part.indices.begin(), part.indices.end());
    all.data.insert(all.data.end(), part.data.begin(), part.data.end());
    all.rows += part.rows;
  }
  return all;
}

using latentcell::test::runBinary;

}  // namespace

// ---- C++ round trips --------------------------------------------------------------------------------

TEST(H5adRoundTrip, WriteThenReadIsExact) {
  TempDir dir;
  const auto path = dir.file("rt.h5ad");
  const AnnData a = sampleAnnData();
  writeH5ad(a, path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const AnnData b = readH5ad(path);
  expectSameAs(adataJson(b), adataJson(a), kAllKeys, path);
  EXPECT_EQ(b.obs.index_name, "_index");
  EXPECT_EQ(b.source, path);
  ASSERT_EQ(b.varm.count("PCs"), 1u);
  EXPECT_EQ(b.varm.at("PCs").values, a.varm.at("PCs").values);

  // Rewriting what was read gives the same file contents again (a fixed point).
  const auto again = dir.file("again.h5ad");
  writeH5ad(b, again);
  expectSameAs(adataJson(readH5ad(again)), adataJson(a), kAllKeys, again);

  // Without obsm, and with a frame that has no columns and no index.
  H5adReadOptions no_obsm;
  no_obsm.obsm = false;
  EXPECT_TRUE(readH5ad(path, no_obsm).obsm.empty());
  AnnData bare;
  bare.X = a.X;
  writeH5ad(bare, path);
  const auto c = readH5ad(path);
  EXPECT_EQ(c.obs.index.front(), "0");
  EXPECT_EQ(c.var.index.back(), "8");
  EXPECT_TRUE(c.obs.columns.empty());
}

TEST(H5adRoundTrip, InfoAndRowReaderOnWrittenFile) {
  TempDir dir;
  const auto path = dir.file("rows.h5ad");
  const AnnData a = sampleAnnData();
  writeH5ad(a, path);
  const auto info = inspectH5ad(path);
  EXPECT_EQ(info.storage, H5adStorage::Csr);
  EXPECT_EQ(info.dtype, "float32");
  EXPECT_EQ(info.rows, 23);
  EXPECT_EQ(info.cols, 9);
  EXPECT_EQ(info.stored, a.X.nnz());
  ASSERT_EQ(info.obsm.size(), 1u);
  EXPECT_EQ(info.obsm[0].second, "dense float32 23x3");

  H5adRowReader reader(path);
  EXPECT_EQ(reader.n_obs(), 23);
  EXPECT_EQ(reader.n_vars(), 9);
  for (int64_t step : {1, 5, 23, 100}) EXPECT_EQ(csrJson(readAllRows(reader, step)), csrJson(a.X)) << step;
  EXPECT_EQ(reader.readRows(4, 4).rows, 0);
  expectError([&] { reader.readRows(20, 24); }, path, {"rows [20, 24)", "23 rows"});
  H5adRowReader moved = std::move(reader);
  EXPECT_EQ(moved.readRows(0, 2).rows, 2);
}

TEST(H5adRoundTrip, AnndataReadsWhatWeWrite) {
  LATENTCELL_REQUIRE_PYTHON();
  TempDir dir;
  const auto path = dir.file("for_anndata.h5ad");
  const auto expected = dir.file("expected.json");
  const AnnData a = sampleAnnData();
  writeH5ad(a, path);
  writeFile(expected, adataJson(a).dump());
  EXPECT_EQ(latentcell::test::runPython("tests/python/check_h5ad.py", "'" + path + "' '" + expected + "'"), 0);
}

// cell-eval's own CLI on a real/pred pair that latentcell wrote (two simulated screens with the
// same genes and perturbations): it must exit 0, warn about nothing, and score every perturbation.
TEST(H5adRoundTrip, CellEvalRunAcceptsWhatWeWrite) {
  LATENTCELL_REQUIRE_PYTHON();
  TempDir dir;
  SimulatorOptions o;
  o.cells = 300;
  o.genes = 60;
  o.cell_types = 1;
  o.perturbations = 3;
  o.batches = 1;
  o.seed = 1;
  writeH5ad(simulate(o), dir.file("real.h5ad"));
  o.seed = 2;
  writeH5ad(simulate(o), dir.file("pred.h5ad"));
  const std::string cli = std::filesystem::path(latentcell::test::pythonPath()).parent_path() / "cell-eval";
  if (!std::filesystem::exists(cli)) GTEST_SKIP() << "cell-eval is not installed in the reference env";
  const std::string cmd = "'" + cli + "' run -ar '" + dir.file("real.h5ad") + "' -ap '" + dir.file("pred.h5ad") +
                          "' --pert-col perturbation --control-pert control --profile full --skip-metrics "
                          "clustering_agreement --num-threads 1 -o '" + dir.file("out") + "' > '" +
                          dir.file("log.txt") + "' 2>&1";
  const int raw = std::system(cmd.c_str());
  std::ifstream log_file(dir.file("log.txt"));
  const std::string log((std::istreambuf_iterator<char>(log_file)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 0) << log;
  EXPECT_EQ(log.find("Warning"), std::string::npos) << log;
  std::ifstream results(dir.file("out/results.csv"));
  ASSERT_TRUE(results) << "cell-eval wrote no results.csv";
  std::string header, line;
  std::getline(results, header);
  EXPECT_EQ(header.rfind("perturbation,overlap_at_N,", 0), 0u) << header;
  std::set<std::string> scored;
  while (std::getline(results, line)) scored.insert(line.substr(0, line.find(',')));
  EXPECT_EQ(scored, (std::set<std::string>{"pert_0", "pert_1", "pert_2"}));
  EXPECT_TRUE(std::filesystem::exists(dir.file("out/agg_results.csv")));
}

TEST(H5adRoundTrip, ConcurrentReadersAgree) {
  TempDir dir;
  const auto path = dir.file("threads.h5ad");
  writeH5ad(sampleAnnData(), path);
  const json want = adataJson(readH5ad(path));
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int k = 0; k < 5; ++k) {
        H5adRowReader reader(path);
        ok[t] += adataJson(readH5ad(path)) == want && csrJson(readAllRows(reader, 4)) == want["X"];
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 5));
}

// ---- files written by anndata and h5py ----------------------------------------------------------------

TEST(H5adFixtures, EveryLayoutReadsAsAnndataReadsIt) {
  LATENTCELL_REQUIRE_FIXTURES(fx);
  ASSERT_EQ(fx->expected.size(), 13u);
  for (const auto& [name, want] : fx->expected.items()) {
    SCOPED_TRACE(name);
    const AnnData a = readH5ad(fx->file(name));
    expectSameAs(adataJson(a), want, kAllKeys, name);
    for (const auto& [matrix, m] : want["matrices"].items()) {
      H5adReadOptions options;
      options.matrix = matrix;
      const AnnData b = readH5ad(fx->file(name), options);
      json got = csrJson(b.X);
      json expect = m;
      if (matrix == "raw/X") {
        EXPECT_EQ(json(b.var.index), m["var_index"]) << matrix;
        expect.erase("var_index");
      }
      EXPECT_EQ(firstDifference(got, expect, matrix), "") << name;
      EXPECT_EQ(json(b.obs.index), want["obs"]["index"]);
    }
  }
}

TEST(H5adFixtures, StorageAndDtypeAsOnDisk) {
  LATENTCELL_REQUIRE_FIXTURES(fx);
  struct Case {
    const char* file;
    H5adStorage storage;
    const char* dtype;
  };
  for (const Case& c : {Case{"full.h5ad", H5adStorage::Csr, "float32"}, Case{"dense_int32.h5ad", H5adStorage::Dense, "int32"},
                        Case{"dense_float64.h5ad", H5adStorage::Dense, "float64"},
                        Case{"csr_int64.h5ad", H5adStorage::Csr, "int64"}, Case{"csr_uint32.h5ad", H5adStorage::Csr, "uint16"},
                        Case{"csc.h5ad", H5adStorage::Csc, "float32"}, Case{"lzf.h5ad", H5adStorage::Csr, "float32"}}) {
    const auto info = inspectH5ad(fx->file(c.file));
    EXPECT_EQ(info.storage, c.storage) << c.file;
    EXPECT_EQ(info.dtype, c.dtype) << c.file;
    EXPECT_EQ(info.rows, fx->expected[c.file]["n_obs"]) << c.file;
  }
  const auto full = inspectH5ad(fx->file("full.h5ad"), "layers/counts");
  EXPECT_EQ(full.dtype, "int64");
  EXPECT_EQ(full.layers, std::vector<std::string>{"counts"});
  EXPECT_TRUE(full.has_raw);
  const std::vector<std::pair<std::string, std::string>> obsm = {
      {"X_pca", "dense float64 300x5"}, {"X_umap", "dense float32 300x2"}, {"sparse_emb", "csr_matrix"}};
  EXPECT_EQ(full.obsm, obsm);
}

TEST(H5adFixtures, RowReaderMatchesWholeReads) {
  LATENTCELL_REQUIRE_FIXTURES(fx);
  for (const char* name : {"full.h5ad", "dense_int32.h5ad", "dense_float64.h5ad", "csr_int64.h5ad", "csr_uint32.h5ad",
                           "unsorted.h5ad", "gzip.h5ad", "lzf.h5ad", "dense_lzf.h5ad", "v07.h5ad"}) {
    H5adRowReader reader(fx->file(name));
    for (int64_t step : {7, 64, 1000})
      EXPECT_EQ(firstDifference(csrJson(readAllRows(reader, step)), fx->expected[name]["X"], "X"), "") << name << " " << step;
  }
  H5adRowReader raw(fx->file("lzf.h5ad"), "raw/X");
  EXPECT_EQ(firstDifference(csrJson(readAllRows(raw, 50)), [&] {
              json m = fx->expected["lzf.h5ad"]["matrices"]["raw/X"];
              m.erase("var_index");
              return m;
            }(), "raw/X"), "");
  expectError([&] { H5adRowReader csc(fx->file("csc.h5ad")); }, fx->file("csc.h5ad"), {"csc_matrix", "tocsr"});
}

TEST(H5adFixtures, BrokenFilesFailWithOneLineNamingTheFile) {
  LATENTCELL_REQUIRE_FIXTURES(fx);
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"bad_indices.h5ad", {"X/indices", "out of range", "12 genes"}},
      {"bad_indices_wrap.h5ad", {"X/indices", "out of range"}},
      {"bad_indptr_len.h5ad", {"X/indptr", "entries", "needs 61"}},
      {"bad_indptr_order.h5ad", {"X/indptr", "decreases"}},
      {"bad_encoding.h5ad", {"'coo_matrix'", "csr_matrix"}},
      {"bad_column.h5ad", {"obs/score", "'awkward-array'"}},
      {"bad_codes.h5ad", {"obs/perturbation/codes", "out of range for 3 categories"}},
      {"short_x.h5ad", {"obs has 60 rows but the matrix has 59"}},
      {"no_x.h5ad", {"no matrix X", "holds no expression data"}},
  };
  for (const auto& [name, phrases] : cases) {
    SCOPED_TRACE(name);
    const auto path = fx->file(name);
    expectError([&] { readH5ad(path); }, path, phrases);
  }
  // The row reader checks the same things when it reads the rows.
  expectError([&] { H5adRowReader(fx->file("bad_indices.h5ad")).readRows(0, 60); }, fx->file("bad_indices.h5ad"),
              {"out of range"});
  expectError([&] { H5adRowReader r(fx->file("bad_indptr_order.h5ad")); }, fx->file("bad_indptr_order.h5ad"),
              {"decreases"});

  const auto full = fx->file("full.h5ad");
  H5adReadOptions options;
  options.matrix = "layers/nope";
  expectError([&] { readH5ad(full, options); }, full, {"no matrix layers/nope", "X, layers/counts, raw/X"});
  options.matrix = "obsm/X_pca";
  expectError([&] { readH5ad(full, options); }, full, {"X, raw/X or layers/<name>"});
  const AnnData a = readH5ad(full);
  expectError([&] { a.obsColumn("condition"); }, full, {"'condition'", "perturbation"});
}

TEST(H5adFixtures, TruncatedCopiesFail) {
  LATENTCELL_REQUIRE_FIXTURES(fx);
  TempDir dir;
  const std::string bytes = readFile(fx->file("full.h5ad"));
  for (size_t keep : {size_t{100}, bytes.size() / 3, bytes.size() - 200}) {
    const auto path = dir.file("cut" + std::to_string(keep) + ".h5ad");
    writeFile(path, bytes.substr(0, keep));
    expectError([&] { readH5ad(path); }, path, {"truncated or corrupt"});
  }
}

// ---- the real screens ---------------------------------------------------------------------------------

TEST(H5adRealData, Papalexi2021Screen) {
  const auto path = sharedData("papalexi2021_thp1_eccite_299genes.h5ad");
  LATENTCELL_REQUIRE_SHARED(path);
  const AnnData a = readH5ad(path);
  EXPECT_EQ(a.n_obs(), 20729);
  EXPECT_EQ(a.n_vars(), 299);
  EXPECT_EQ(a.X.nnz(), 1390126);
  EXPECT_TRUE(allWholeNumbers(a.X));
  EXPECT_EQ(*std::max_element(a.X.data.begin(), a.X.data.end()), 278.0f);
  EXPECT_NO_THROW(requireCounts(a, path));
  const Column& p = a.obsColumn("perturbation");
  ASSERT_EQ(p.kind, Column::Kind::Categorical);
  // anndata reads 27 categories: unassigned, non-targeting and 25 targets (the README's "26 targets"
  // is one too many).
  EXPECT_EQ(p.categories.size(), 27u);
  std::map<std::string, int64_t> counts;
  for (int32_t c : p.codes) ++counts[c < 0 ? "" : p.categories[c]];
  EXPECT_EQ(counts["unassigned"], 4636);
  EXPECT_EQ(counts["non-targeting"], 1912);
  EXPECT_EQ(counts["IFNGR1"], 1056);
  EXPECT_EQ(counts["SPI1"], 33);
  EXPECT_EQ(counts.count(""), 0u);
  EXPECT_EQ(a.obsColumn("is_control").kind, Column::Kind::Bool);
  const Column& rep = a.obsColumn("bio_rep");
  EXPECT_EQ(std::set<std::string>(rep.categories.begin(), rep.categories.end()),
            (std::set<std::string>{"rep_1", "rep_2", "rep_3"}));
  // n_counts is the sum of X per cell.
  const Column& n_counts = a.obsColumn("n_counts");
  for (int64_t r : {int64_t{0}, int64_t{777}, a.n_obs() - 1}) {
    double sum = 0;
    for (int64_t k = a.X.indptr[r]; k < a.X.indptr[r + 1]; ++k) sum += a.X.data[k];
    EXPECT_EQ(sum, n_counts.kind == Column::Kind::Float ? n_counts.floats[r] : static_cast<double>(n_counts.ints[r]));
  }
  const auto info = inspectH5ad(path);
  EXPECT_EQ(info.dtype, "float32");
  ASSERT_EQ(info.obsm.size(), 1u);
  EXPECT_EQ(info.obsm[0], (std::pair<std::string, std::string>{"grna_counts", "csr_matrix"}));
  EXPECT_TRUE(a.obsm.empty());  // sparse obsm is skipped

  // Backed reads in blocks and a write/read round trip both reproduce X exactly.
  H5adRowReader reader(path);
  const json x = csrJson(a.X);
  EXPECT_EQ(csrJson(readAllRows(reader, 4096)), x);
  TempDir dir;
  writeH5ad(a, dir.file("copy.h5ad"));
  expectSameAs(adataJson(readH5ad(dir.file("copy.h5ad"))), adataJson(a), kAllKeys, "copy");
}

TEST(H5adRealData, Pbmc3kSubset) {
  const auto path = sharedData("pbmc3k_cd8t_cd14mono_946genes.h5ad");
  LATENTCELL_REQUIRE_SHARED(path);
  const AnnData a = readH5ad(path);
  EXPECT_EQ(a.n_obs(), 787);
  EXPECT_EQ(a.n_vars(), 946);
  EXPECT_EQ(a.X.nnz(), 335177);
  EXPECT_EQ(*std::max_element(a.X.data.begin(), a.X.data.end()), 419.0f);
  const Column& ct = a.obsColumn("cell_type");
  std::map<std::string, int64_t> counts;
  for (int32_t c : ct.codes) ++counts[ct.categories.at(c)];
  EXPECT_EQ(counts, (std::map<std::string, int64_t>{{"CD14+ Monocytes", 479}, {"CD8 T cells", 308}}));
}

// ---- errors without Python ------------------------------------------------------------------------------

TEST(H5adErrors, NotAnH5adFile) {
  TempDir dir;
  const auto missing = dir.file("missing.h5ad");
  expectError([&] { readH5ad(missing); }, missing, {"no such file"});
  expectError([&] { H5adRowReader r(missing); }, missing, {"no such file"});
  const auto text = dir.file("cells.csv");
  writeFile(text, "cell,gene,count\nc1,g1,3\n");
  expectError([&] { readH5ad(text); }, text, {"not an HDF5 file"});
  const auto empty = dir.file("empty.h5ad");
  writeFile(empty, "");
  expectError([&] { readH5ad(empty); }, empty, {"not an HDF5 file"});
  expectError([&] { readH5ad(dir.path().string()); }, dir.path().string(), {"directory"});
}

TEST(H5adErrors, TruncatedFilesFail) {
  TempDir dir;
  const auto path = dir.file("good.h5ad");
  writeH5ad(sampleAnnData(), path);
  const std::string bytes = readFile(path);
  for (size_t keep : {size_t{8}, size_t{600}, bytes.size() / 2, bytes.size() - 1}) {
    const auto cut = dir.file("cut.h5ad");
    writeFile(cut, bytes.substr(0, keep));
    expectError([&] { readH5ad(cut); }, cut, {});
    expectError([&] { H5adRowReader r(cut); }, cut, {});
  }
}

// libhdf5 1.10 copies variable-length strings out of a global heap collection without bounds checks;
// the reader checks the heap objects a string dataset points to first. Corrupt the size, then the
// index, of the heap object that holds one obs name.
TEST(H5adErrors, CorruptGlobalHeapObjectsAreCaught) {
  TempDir dir;
  const auto path = dir.file("good.h5ad");
  writeH5ad(sampleAnnData(), path);
  const std::string bytes = readFile(path);
  const std::string name = "cell-7é";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  // A heap object: index (2 bytes), reference count (2), reserved (4), size (8), then the data.
  const size_t header = at - 16;
  ASSERT_EQ(static_cast<unsigned char>(bytes[header + 8]), name.size());
  const auto bad = dir.file("bad.h5ad");

  // The collection is shared by every string of the file: the first reader of it reports it.
  std::string big_size = bytes;
  big_size[header + 8] = '\xff';
  big_size[header + 11] = '\x7f';
  writeFile(bad, big_size);
  expectError([&] { readH5ad(bad); }, bad, {"corrupt global heap collection"});

  std::string wrong_index = bytes;
  wrong_index[header] = wrong_index[header + 1] = '\xff';
  writeFile(bad, wrong_index);
  expectError([&] { readH5ad(bad); }, bad, {"obs/_index[7]", "missing global heap object"});

  // The same behind an attribute (found by fuzz_h5ad: libhdf5 1.10 then copied from a null object):
  // its reference lives in the object header, which latentcell parses to check it.
  const size_t value = bytes.find("csr_matrix");
  ASSERT_NE(value, std::string::npos);
  std::string attribute = bytes;
  attribute[value - 16] = attribute[value - 15] = '\xff';
  writeFile(bad, attribute);
  expectError([&] { readH5ad(bad); }, bad, {"X attribute 'encoding-type'[0]", "missing global heap object"});
  expectError([&] { H5adRowReader reader(bad); }, bad, {"attribute 'encoding-type'", "missing global heap object"});
}

// An attribute message whose name runs past the message (found by fuzz_h5ad: libhdf5 1.10 decodes it
// without bounds and overflows inside H5Aexists) is rejected before libhdf5 decodes it.
TEST(H5adErrors, CorruptAttributeMessagesAreCaught) {
  TempDir dir;
  const auto path = dir.file("good.h5ad");
  writeH5ad(sampleAnnData(), path);
  std::string bytes = readFile(path);
  // Every attribute named encoding-type; libhdf5 1.10 writes version-1 messages: version, reserved,
  // name size (2 bytes), datatype size, dataspace size, then the name. X is the first object whose
  // attributes are read.
  const std::string attr = "encoding-type";
  int corrupted = 0;
  for (size_t at = bytes.find(attr); at != std::string::npos; at = bytes.find(attr, at + 1)) {
    if (bytes[at - 8] != 1 || static_cast<unsigned char>(bytes[at - 6]) != attr.size() + 1) continue;
    bytes[at - 6] = bytes[at - 5] = '\x7f';
    ++corrupted;
  }
  ASSERT_GT(corrupted, 5);
  const auto bad = dir.file("bad.h5ad");
  writeFile(bad, bytes);
  expectError([&] { readH5ad(bad); }, bad, {": X has a corrupt object header", "runs past its message"});
  expectError([&] { inspectH5ad(bad); }, bad, {"X has a corrupt object header"});
  expectError([&] { H5adRowReader reader(bad); }, bad, {"X has a corrupt object header"});
}

// Every input that fuzz_h5ad found crashing or exhausting memory inside libhdf5 1.10.8 (kept in
// fuzz/regressions/h5ad/) ends in a one-line error naming the file, here too without clang.
TEST(H5adErrors, FuzzFindsFailWithOneLine) {
  const std::string dir = latentcell::test::sourcePath("fuzz/regressions/h5ad");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string path = entry.path().string();
    expectError([&] { readH5ad(path); }, path, {"the file is corrupt"});
    // The row reader reads X alone, which some of these files have intact.
    const std::string msg = messageOf([&] {
      H5adRowReader reader(path);
      reader.readRows(0, reader.n_obs());
    });
    if (!msg.empty()) {
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    }
    ++files;
  }
  EXPECT_GE(files, 5);
}

TEST(H5adErrors, WriteFailuresLeaveNoFile) {
  TempDir dir;
  const auto nowhere = dir.file("no/such/dir/out.h5ad");
  expectError([&] { writeH5ad(sampleAnnData(), nowhere); }, nowhere, {"cannot write"});
  EXPECT_FALSE(std::filesystem::exists(nowhere + ".tmp"));

  const auto path = dir.file("bad.h5ad");
  AnnData a = sampleAnnData();
  a.X.indices[3] = 9;
  expectError([&] { writeH5ad(a, path); }, path, {"out of range for 9 genes"});
  a = sampleAnnData();
  a.obs.columns[0].second.codes[0] = 3;
  expectError([&] { writeH5ad(a, path); }, path, {"'perturbation'", "code 3"});
  a = sampleAnnData();
  a.obsm["X_pca"].rows = 5;
  expectError([&] { writeH5ad(a, path); }, path, {"obsm['X_pca']"});
  a = sampleAnnData();
  a.obs.columns.emplace_back("a/b", a.obs.columns[2].second);
  expectError([&] { writeH5ad(a, path); }, path, {"'a/b'"});
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  // A failed write keeps the previous file intact.
  writeH5ad(sampleAnnData(), path);
  a = sampleAnnData();
  a.obs.index.pop_back();
  expectError([&] { writeH5ad(a, path); }, path, {"obs has 22 names"});
  EXPECT_EQ(readH5ad(path).n_obs(), 23);
}

// ---- value checks ---------------------------------------------------------------------------------------

TEST(H5adValues, CountChecksNameTheCellAndGene) {
  AnnData a = sampleAnnData();
  EXPECT_FALSE(allWholeNumbers(a.X));  // rows 0, 3, ... are divided by 4
  const auto bad = firstNonCount(a.X);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->row % 3, 0);
  EXPECT_NE(bad->value, std::floor(bad->value));
  EXPECT_FALSE(firstNonCount(a.X, /*whole=*/false).has_value());
  expectError([&] { requireCounts(a, "screen.h5ad"); }, "screen.h5ad",
              {"'cell-" + std::to_string(bad->row) + "é'", "'GENE" + std::to_string(bad->col) + "'", "layers/counts"});

  for (auto& v : a.X.data) v = std::round(v) + 1;
  EXPECT_TRUE(allWholeNumbers(a.X));
  EXPECT_NO_THROW(requireCounts(a, "screen.h5ad"));
  a.X.data[5] = -1;
  EXPECT_EQ(firstNonCount(a.X, false)->value, -1.0f);
  a.X.data[5] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(allWholeNumbers(a.X));
  const auto inf = firstNonCount(a.X, false);
  ASSERT_TRUE(inf.has_value());
  EXPECT_EQ(inf->col, a.X.indices[5]);
}

// ---- latentcell data inspect -----------------------------------------------------------------------------

TEST(H5adCli, DataInspectPrintsShapesAndCounts) {
  TempDir dir;
  const auto path = dir.file("inspect.h5ad");
  writeH5ad(sampleAnnData(), path);
  const auto r = runBinary("data inspect '" + path + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* re : {R"(n_obs\s+23\n)", R"(n_vars\s+9\n)", R"(nnz\s+\d+\n)", R"(X\s+csr float32, whole numbers: no)",
                         R"(perturbation  categorical, 3 categories, 4 missing)", R"(\n\s+non-targeting\s+7\n)",
                         R"(\n\s+STAT1\s+6\n)", R"(\n\s+JAK2\s+6\n)", R"(batch  categorical, 200 categories \(ordered\))",
                         R"(guide  string, 23 distinct values)", R"(is_control  bool, 2 distinct values\n\s+False\s+15\n\s+True\s+8)",
                         R"(maybe_n  int, min 1 max 22, 6 missing)", R"(var columns: 1)", R"(X_pca  dense float32 23x3)"})
    EXPECT_TRUE(std::regex_search(r.out, std::regex(re))) << re << " in\n" << r.out;
  EXPECT_EQ(r.out.find("b199"), std::string::npos) << "more than 50 categories must not be listed";

  const auto missing = dir.file("missing.h5ad");
  const auto e = runBinary("data inspect '" + missing + "'");
  EXPECT_EQ(e.status, 1);
  EXPECT_EQ(e.out, "error: " + missing + ": no such file; check the path\n");
}

TEST(H5adCli, DataInspectOnAnndataFixture) {
  LATENTCELL_REQUIRE_FIXTURES(fx);
  const auto r = runBinary("data inspect '" + fx->file("lzf.h5ad") + "' --matrix layers/counts");
  ASSERT_EQ(r.status, 0) << r.out;
  const json& want = fx->expected["lzf.h5ad"];
  const json& pert = want["obs"]["columns"][0][1];
  ASSERT_EQ(pert["kind"], "categorical");
  std::map<int, int> counts;
  for (int c : pert["codes"]) ++counts[c];
  for (size_t k = 0; k < pert["categories"].size(); ++k) {
    const std::string line = "\n    " + pert["categories"][k].get<std::string>();
    const std::regex re(line + R"(\s+)" + std::to_string(counts[static_cast<int>(k)]) + "\n");
    EXPECT_TRUE(std::regex_search(r.out, re)) << line << " in\n" << r.out;
  }
  EXPECT_NE(r.out.find("layers/counts csr int64, whole numbers: yes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sparse_emb  csr_matrix"), std::string::npos) << r.out;
}
