// Tests for the sharded on-disk format (data/ShardFile, data/ShardConvert, data/ShardDataset) and
// `latentcell data convert`: h5ad -> shards -> rows is exact (values, var names, obs, the map back to
// h5ad rows), the dtypes follow the values, condition groups are contiguous, correctly labelled and
// linked to the control cells of their context, the order is deterministic by seed, and every kind of
// damage (flipped byte in any section, truncation, bad magic, other version, a shard of another
// conversion, a missing shard) is an error naming the file and the problem, exit 2 from the binary.
#include "TestUtil.h"

#include "data/H5ad.h"
#include "data/ShardConvert.h"
#include "data/ShardDataset.h"
#include "data/Simulator.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace latentcell::data;
using latentcell::test::errorOf;
using latentcell::test::runBinary;
using latentcell::test::TempDir;
namespace fs = std::filesystem;

namespace {

AnnData screen(uint64_t seed = 5) {
  SimulatorOptions o;
  o.cells = 700;
  o.genes = 60;
  o.cell_types = 3;
  o.perturbations = 4;
  o.batches = 2;
  o.seed = seed;
  return simulate(o);
}

ShardConvertOptions grouped() {
  ShardConvertOptions o;
  o.condition = "perturbation";
  o.control = "control";
  o.context = {"cell_type", "batch"};
  o.shard_cells = 128;  // 6 shards, groups crossing shard boundaries
  o.chunk_cells = 100;
  o.seed = 11;
  return o;
}

// Row r of a CSR matrix as (index, value) pairs.
std::vector<std::pair<int32_t, float>> row(const CsrMatrix& m, int64_t r) {
  std::vector<std::pair<int32_t, float>> out;
  for (int64_t k = m.indptr[r]; k < m.indptr[r + 1]; ++k) out.emplace_back(m.indices[k], m.data[k]);
  return out;
}

void expectRowsMatchSource(const ShardDataset& d, const AnnData& a) {
  ASSERT_EQ(d.cells(), a.n_obs());
  ASSERT_EQ(d.genes(), a.n_vars());
  EXPECT_EQ(d.nnz(), a.X.nnz());
  EXPECT_EQ(d.varNames(), a.var.index);
  const auto src = d.sourceRows();
  EXPECT_EQ(std::set<int64_t>(src.begin(), src.end()).size(), static_cast<size_t>(a.n_obs()));  // a permutation
  const CsrMatrix all = d.rows(0, d.cells());
  for (int64_t p = 0; p < d.cells(); ++p) {
    ASSERT_EQ(row(all, p), row(a.X, src[p])) << "cell " << p << " (h5ad row " << src[p] << ")";
    ASSERT_EQ(d.rowNnz(p), a.X.indptr[src[p] + 1] - a.X.indptr[src[p]]);
  }
  // Stored obs columns decode to the h5ad's values.
  for (const auto& c : d.obs()) {
    const Column& orig = a.obsColumn(c.name);
    for (int64_t p = 0; p < d.cells(); ++p) ASSERT_EQ(c.categories.at(c.codes[p]), orig.text(src[p])) << c.name;
  }
}

void flipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

// Offset of a section's bytes, from the file's section table (see ShardFile.h for the layout).
uint64_t sectionOffset(const std::string& path, const std::string& name) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> head(64);
  f.read(head.data(), 64);
  uint32_t count = 0;
  std::memcpy(&count, head.data() + 12, 4);
  for (uint32_t i = 0; i < count; ++i) {
    std::vector<char> e(48);
    f.read(e.data(), 48);
    if (std::string(e.data()) == name) {
      uint64_t off = 0;
      std::memcpy(&off, e.data() + 32, 8);
      return off;
    }
  }
  ADD_FAILURE() << "no section " << name << " in " << path;
  return 0;
}

void copyDir(const std::string& from, const std::string& to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

}  // namespace

TEST(Shards, H5adToShardsToRowsIsExact) {
  TempDir dir;
  const AnnData a = screen();
  const std::string h5ad = dir.file("screen.h5ad"), out = dir.file("shards");
  writeH5ad(a, h5ad);
  const auto report = convertH5adToShards(h5ad, out, grouped());
  EXPECT_EQ(report.cells, 700);
  EXPECT_EQ(report.shards, 6);
  EXPECT_EQ(report.values, ShardDtype::U16);  // whole counts < 65536
  EXPECT_EQ(report.indices, ShardDtype::U16);
  EXPECT_FALSE(fs::exists(out + ".partial"));
  const ShardDataset d(out);
  EXPECT_EQ(d.shards(), 6);
  EXPECT_TRUE(d.wholeNumbers());
  EXPECT_EQ(d.source(), h5ad);
  expectRowsMatchSource(d, a);
  // Gathering in any order, with repeats, gives the same rows.
  const std::vector<int64_t> picks = {699, 0, 127, 128, 128, 350};
  const CsrMatrix g = d.gather(picks);
  for (size_t i = 0; i < picks.size(); ++i) EXPECT_EQ(row(g, i), row(a.X, d.sourceRows()[picks[i]]));
  // Dense rows agree with the sparse ones.
  std::vector<float> dense(picks.size() * d.genes());
  d.gatherDense(picks, dense.data());
  for (size_t i = 0; i < picks.size(); ++i)
    for (const auto& [j, v] : row(g, i)) EXPECT_EQ(dense[i * d.genes() + j], v);
  // Ungrouped, a single shard, the default obs columns (every categorical one).
  ShardConvertOptions plain;
  const auto r2 = convertH5adToShards(h5ad, dir.file("plain"), plain);
  EXPECT_EQ(r2.shards, 1);
  EXPECT_EQ(r2.groups, 1);
  const ShardDataset p(dir.file("plain"));
  expectRowsMatchSource(p, a);
  EXPECT_EQ(p.obs().size(), 3u);  // cell_type, perturbation, batch
}

TEST(Shards, DtypesFollowTheValues) {
  TempDir dir;
  // Fractional values are kept exactly as float32, and so are counts with --float-values.
  AnnData a;
  a.X = latentcell::test::csrFromDense({{0.5f, 0, 2}, {0, 0, 0}, {1e6f, 3, 0}});
  a.obs.index = {"a", "b", "c"};
  a.var.index = {"g0", "g1", "g2"};
  a.source = "memory";
  EXPECT_EQ(writeShards(a, dir.file("frac"), {}).values, ShardDtype::F32);
  ShardDataset frac(dir.file("frac"));
  EXPECT_FALSE(frac.wholeNumbers());
  expectRowsMatchSource(frac, a);
  a.X.data = {1, 2, 70000, 3};  // whole, but beyond uint16
  EXPECT_EQ(writeShards(a, dir.file("big"), {}).values, ShardDtype::F32);
  expectRowsMatchSource(ShardDataset(dir.file("big")), a);
  a.X.data = {1, 2, 7, 3};
  ShardConvertOptions f;
  f.float_values = true;
  EXPECT_EQ(writeShards(a, dir.file("forced"), f).values, ShardDtype::F32);
  EXPECT_EQ(writeShards(a, dir.file("small"), {}).values, ShardDtype::U16);
  // More than 65536 genes need 32-bit indices.
  AnnData wide;
  wide.X.rows = 2;
  wide.X.cols = 70000;
  wide.X.indptr = {0, 2, 3};
  wide.X.indices = {5, 69999, 65536};
  wide.X.data = {1, 2, 3};
  wide.obs.index = {"x", "y"};
  for (int j = 0; j < 70000; ++j) wide.var.index.push_back("g" + std::to_string(j));
  EXPECT_EQ(writeShards(wide, dir.file("wide"), {}).indices, ShardDtype::U32);
  expectRowsMatchSource(ShardDataset(dir.file("wide")), wide);
}

TEST(Shards, GroupRangesAreContiguousLabelledAndLinkedToTheirControls) {
  TempDir dir;
  const AnnData a = screen();
  writeShards(a, dir.file("s"), grouped());
  const ShardDataset d(dir.file("s"));
  const auto& pert = d.obsColumn("perturbation");
  const auto& type = d.obsColumn("cell_type");
  const auto& batch = d.obsColumn("batch");
  EXPECT_EQ(d.conditionColumn(), "perturbation");
  EXPECT_EQ(d.controlLabel(), "control");
  EXPECT_EQ(d.contextColumns(), (std::vector<std::string>{"cell_type", "batch"}));

  // One group per (cell type, batch, perturbation) present, counted from the h5ad itself.
  std::map<std::vector<std::string>, int64_t> expected;
  for (int64_t i = 0; i < a.n_obs(); ++i)
    ++expected[{a.obsColumn("cell_type").text(i), a.obsColumn("batch").text(i), a.obsColumn("perturbation").text(i)}];
  ASSERT_EQ(d.groups().size(), expected.size());
  int64_t next = 0;
  std::vector<int32_t> previous_context;
  for (size_t g = 0; g < d.groups().size(); ++g) {
    const CellGroup& grp = d.groups()[g];
    EXPECT_EQ(grp.begin, next);
    next = grp.end;
    const std::vector<std::string> key = {type.categories[grp.context[0]], batch.categories[grp.context[1]],
                                          pert.categories[grp.condition]};
    EXPECT_EQ(grp.size(), expected.at(key)) << key[0] << " " << key[1] << " " << key[2];
    for (int64_t c = grp.begin; c < grp.end; ++c) {
      ASSERT_EQ(pert.codes[c], grp.condition);
      ASSERT_EQ(type.codes[c], grp.context[0]);
      ASSERT_EQ(batch.codes[c], grp.context[1]);
    }
    // The control group opens its context; every other group points back to it.
    const bool opens_context = grp.context != previous_context;
    previous_context = grp.context;
    EXPECT_EQ(grp.is_control, key[2] == "control");
    if (opens_context) {
      EXPECT_TRUE(grp.is_control) << "context " << key[0] << "/" << key[1] << " has no control first";
    }
    if (!grp.is_control) {
      ASSERT_GE(grp.control, 0);
      const CellGroup& ctl = d.groups()[grp.control];
      EXPECT_TRUE(ctl.is_control);
      EXPECT_EQ(ctl.context, grp.context);
      EXPECT_EQ(pert.categories[ctl.condition], "control");
    } else {
      EXPECT_EQ(grp.control, -1);
    }
  }
  EXPECT_EQ(next, d.cells());
}

TEST(Shards, CellOrderIsDeterministicBySeed) {
  TempDir dir;
  const AnnData a = screen();
  auto o = grouped();
  writeShards(a, dir.file("a"), o);
  writeShards(a, dir.file("b"), o);
  o.seed = 12;
  writeShards(a, dir.file("c"), o);
  const ShardDataset da(dir.file("a")), db(dir.file("b")), dc(dir.file("c"));
  const auto sa = da.sourceRows(), sb = db.sourceRows(), sc = dc.sourceRows();
  EXPECT_TRUE(std::equal(sa.begin(), sa.end(), sb.begin(), sb.end()));
  EXPECT_FALSE(std::equal(sa.begin(), sa.end(), sc.begin(), sc.end()));
  // Another seed reorders cells within groups only: the groups are the same ranges.
  ASSERT_EQ(da.groups().size(), dc.groups().size());
  for (size_t g = 0; g < da.groups().size(); ++g) {
    EXPECT_EQ(da.groups()[g].begin, dc.groups()[g].begin);
    EXPECT_EQ(da.groups()[g].end, dc.groups()[g].end);
  }
}

TEST(Shards, DamagedFilesFailNamingTheFileAndTheProblem) {
  TempDir dir;
  const AnnData a = screen();
  const std::string good = dir.file("good");
  writeShards(a, good, grouped());
  int variant = 0;
  // A fresh copy of the good directory, damaged by `damage`, and the open error.
  auto openDamaged = [&](const std::function<void(const std::string&)>& damage, bool verify = true) {
    const std::string d = dir.file("bad" + std::to_string(variant++));
    copyDir(good, d);
    damage(d);
    ShardOpenOptions o;
    o.verify_checksums = verify;
    std::string msg;
    try {
      ShardDataset ds(d, o);
      ds.rows(0, ds.cells());
      msg = "(no error)";
    } catch (const ShardFormatError& e) {
      msg = e.what();
    }
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  };
  const auto contains = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  const std::string shard = "/shard-00002.lcs";

  for (const char* section : {"values", "indices", "indptr", "shape"}) {
    const auto msg = openDamaged([&](const std::string& d) { flipByte(d + shard, sectionOffset(d + shard, section) + 3); });
    EXPECT_TRUE(contains(msg, "shard-00002.lcs: checksum mismatch in shard section '" + std::string(section) + "'"))
        << msg;
  }
  for (const char* section : {"meta", "source_row", "groups", "obs.0", "shard_first"}) {
    const auto msg =
        openDamaged([&](const std::string& d) { flipByte(d + "/index.lcs", sectionOffset(d + "/index.lcs", section) + 1); });
    EXPECT_TRUE(contains(msg, "index.lcs: checksum mismatch in shard index section '" + std::string(section) + "'"))
        << msg;
  }
  // The header and the section table are always checked.
  EXPECT_TRUE(contains(openDamaged([&](const std::string& d) { flipByte(d + shard, 0); }), "bad magic")) << "magic";
  EXPECT_TRUE(contains(openDamaged([&](const std::string& d) { flipByte(d + shard, 8); }, false), "format version"));
  EXPECT_TRUE(contains(openDamaged([&](const std::string& d) { flipByte(d + shard, 70); }, false), "header checksum"));
  const auto truncated = openDamaged([&](const std::string& d) {
    fs::resize_file(d + shard, fs::file_size(d + shard) - 100);
  });
  EXPECT_TRUE(contains(truncated, "shard-00002.lcs") && contains(truncated, "truncated")) << truncated;
  EXPECT_TRUE(contains(openDamaged([&](const std::string& d) { fs::resize_file(d + shard, 10); }), "truncated"));
  EXPECT_TRUE(contains(openDamaged([&](const std::string& d) { fs::remove(d + shard); }), "cannot open the shard"));
  EXPECT_TRUE(contains(openDamaged([&](const std::string& d) { fs::remove(d + "/index.lcs"); }), "index.lcs"));
  // A shard of another conversion of the same data.
  writeShards(a, dir.file("other"), grouped());
  EXPECT_TRUE(contains(openDamaged([&](const std::string& d) { fs::copy_file(dir.file("other") + shard, d + shard,
                                                                             fs::copy_options::overwrite_existing); }),
                       "another conversion"));
  // Unverified, a corrupt gene index is still caught when the row is read, never used.
  const auto unverified = openDamaged(
      [&](const std::string& d) {
        const uint64_t off = sectionOffset(d + shard, "indices");
        std::fstream f(d + shard, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(off + 2));
        const uint16_t bad = 0xffff;
        f.write(reinterpret_cast<const char*>(&bad), 2);
      },
      false);
  EXPECT_TRUE(contains(unverified, "out of range or not ascending")) << unverified;
  EXPECT_EQ(openDamaged([](const std::string&) {}, true), "(no error)");
}

TEST(Shards, BadConversionInputsFailWithOneLine) {
  TempDir dir;
  AnnData a = screen();
  a.source = "screen.h5ad";
  auto o = grouped();
  o.control = "no-such-label";
  EXPECT_NE(errorOf([&] { writeShards(a, dir.file("x"), o); }).find("control label 'no-such-label' is not a value"),
            std::string::npos);
  o = grouped();
  o.context = {"donor"};
  EXPECT_NE(errorOf([&] { writeShards(a, dir.file("x"), o); }).find("donor"), std::string::npos);
  AnnData neg = a;
  neg.X.data[5] = -1;
  EXPECT_NE(errorOf([&] { writeShards(neg, dir.file("x"), grouped()); }).find("is -1"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir.file("x"))) << "a failed conversion left its output";
  EXPECT_FALSE(fs::exists(dir.file("x.partial")));
  writeShards(a, dir.file("x"), grouped());
  EXPECT_NE(errorOf([&] { writeShards(a, dir.file("x"), grouped()); }).find("exists and is not an empty directory"),
            std::string::npos);
}

TEST(Shards, CommandLineConvertAndInspect) {
  TempDir dir;
  const std::string h5ad = dir.file("screen.h5ad"), out = dir.file("shards");
  writeH5ad(screen(), h5ad);
  auto r = runBinary("data convert '" + h5ad + "' '" + out +
                     "' --condition perturbation --control control --context cell_type,batch --shard-cells 300");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("700 cells x 60 genes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 shards"), std::string::npos) << r.out;
  r = runBinary("data inspect '" + out + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("n_obs    700"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("condition: perturbation, control: control, context: cell_type, batch"), std::string::npos)
      << r.out;
  // Input errors exit 2 with one line.
  flipByte(out + "/shard-00001.lcs", sectionOffset(out + "/shard-00001.lcs", "values"));
  for (const std::string& args :
       {"data inspect '" + out + "'",
        "data convert '" + h5ad + "' '" + out + "'",
        "data convert '" + h5ad + "' '" + dir.file("o2") + "' --condition perturbation --control ctrl"}) {
    r = runBinary(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.out;
    EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  }
}
