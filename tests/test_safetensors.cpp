// Tests for core/Safetensors and core/StateDict: round trips over every supported dtype, the
// error paths of the loader (corrupt files crafted byte by byte, so each check is exercised
// without relying on the writer), state dict flattening/loading, and interop with the Python
// safetensors package in both directions (tests/python/safetensors_interop.py), because a
// C++-only round trip cannot catch a writer and reader that agree with each other but not with
// the format.
#include "core/Safetensors.h"
#include "core/StateDict.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#ifndef LATENTCELL_PYTHON
#define LATENTCELL_PYTHON ""
#endif
#ifndef LATENTCELL_SOURCE_DIR
#define LATENTCELL_SOURCE_DIR ""
#endif

namespace fs = std::filesystem;
using latentcell::core::loadSafetensors;
using latentcell::core::loadStateDict;
using latentcell::core::NamedTensors;
using latentcell::core::saveSafetensors;
using latentcell::core::stateDict;

namespace {

// Bit-exact comparison: torch::equal treats -0.0 and 0.0 as equal, and a dtype or shape
// mismatch should be reported as such rather than as a value difference.
void expectSameTensor(const at::Tensor& got, const at::Tensor& want, const std::string& name) {
  SCOPED_TRACE("tensor " + name);
  ASSERT_TRUE(got.defined());
  EXPECT_EQ(got.scalar_type(), want.scalar_type());
  EXPECT_EQ(got.sizes(), want.sizes());
  if (got.scalar_type() != want.scalar_type() || got.sizes() != want.sizes()) return;
  EXPECT_TRUE(got.device().is_cpu());
  const at::Tensor g = got.contiguous(), w = want.cpu().contiguous();
  ASSERT_EQ(g.nbytes(), w.nbytes());
  if (g.nbytes() > 0) {
    EXPECT_EQ(std::memcmp(g.const_data_ptr(), w.const_data_ptr(), g.nbytes()), 0)
        << "got " << g << "\nwant " << w;
  }
}

std::string readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void writeFile(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << p;
}

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A file with the given header text and data bytes; headerLen overrides the length field.
std::string craft(const std::string& header, const std::string& data,
                  std::optional<std::uint64_t> headerLen = std::nullopt) {
  return le64(headerLen.value_or(header.size())) + header + data;
}

std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * sizeof(float), '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

// Quotes for /bin/sh: paths may contain spaces.
std::string shellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The reference values, identical to expected_tensors() in tests/python/safetensors_interop.py.
NamedTensors interopTensors() {
  const auto i64 = torch::kInt64;
  return {
      {"f64", torch::tensor({0.1, -2.5, 1e300}, torch::kFloat64)},
      {"f32", torch::tensor({-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f}).reshape({2, 3})},
      {"bf16", torch::tensor({1.0f, -2.0f, 0.5f, 3.140625f}).to(torch::kBFloat16)},
      {"f16", torch::tensor({65504.0f, std::ldexp(1.0f, -14), 1.0f, -0.0f}).to(torch::kFloat16)},
      {"i64", torch::tensor({std::numeric_limits<std::int64_t>::min(),
                             std::numeric_limits<std::int64_t>::max(), std::int64_t{0},
                             std::int64_t{42}},
                            i64)},
      {"i32", torch::tensor({INT32_MIN, INT32_MAX, 7, -7}, torch::kInt32).reshape({2, 2})},
      {"i16", torch::tensor({-32768, 32767, 3}).to(torch::kInt16)},
      {"i8", torch::tensor({-128, 127, -1}).to(torch::kInt8)},
      {"u8", torch::tensor({0, 255, 128}).to(torch::kUInt8)},
      {"bool", torch::tensor({true, false, true}, torch::kBool)},
      {"scalar", torch::scalar_tensor(7.25, torch::kFloat32)},
      {"empty", torch::zeros({0, 3}, torch::kFloat32)},
  };
}

std::map<std::string, std::string> interopMetadata(const std::string& writer) {
  return {{"writer", writer}, {"format", "pt"}, {"note", "h\u00e9llo \u2713"}};
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::random_device rd;
    dir_ = fs::temp_directory_path() /
           ("latentcell_st_" + std::string(info->name()) + "_" + std::to_string(::getpid()) + "_" +
            std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Asserts that loading `bytes` fails with a one-line message naming the file and `phrase`.
  void expectLoadError(const std::string& bytes, const std::string& phrase) {
    const std::string p = path("corrupt.safetensors");
    writeFile(p, bytes);
    expectError([&] { loadSafetensors(p); }, p, phrase);
  }

  static void expectError(const std::function<void()>& fn, const std::string& file,
                          const std::string& phrase) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing '" << phrase << "'";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << "message lacks the file: " << msg;
      EXPECT_NE(msg.find(phrase), std::string::npos) << "message lacks '" << phrase << "': " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
    }
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_F(SafetensorsTest, RoundTripEveryDtypeWithMetadata) {
  NamedTensors tensors = interopTensors();
  // Random payloads on top of the hand-picked edge values, and odd sizes so that the 8-byte
  // header padding and unaligned data offsets are exercised.
  torch::manual_seed(0);
  tensors.emplace_back("rand_f32", torch::randn({3, 5, 7}));
  tensors.emplace_back("rand_bf16", torch::randn({13}).to(torch::kBFloat16));
  tensors.emplace_back("rand_u8", torch::randint(0, 256, {5}).to(torch::kUInt8));
  tensors.emplace_back("empty_mid", torch::zeros({2, 0, 3}, torch::kInt64));
  tensors.emplace_back("scalar_bool", torch::scalar_tensor(true, torch::kBool));
  const auto meta = interopMetadata("cpp");
  const std::string p = path("all.safetensors");
  saveSafetensors(p, tensors, meta);
  EXPECT_FALSE(fs::exists(p + ".tmp")) << "temporary file left behind";

  const auto data = loadSafetensors(p);
  EXPECT_EQ(data.source, p);
  EXPECT_EQ(data.metadata, meta);
  ASSERT_EQ(data.tensors.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    // The writer lays data out in argument order and the reader returns data order.
    EXPECT_EQ(data.tensors[i].first, tensors[i].first);
    expectSameTensor(data.at(tensors[i].first), tensors[i].second, tensors[i].first);
  }
  EXPECT_TRUE(data.contains("bf16"));
  EXPECT_FALSE(data.contains("nope"));
  expectError([&] { (void)data.at("nope"); }, p, "no tensor 'nope'");

  // Header layout: length field, JSON object, padded with spaces to a multiple of 8.
  const std::string bytes = readFile(p);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ(bytes.find("\"__metadata__\""), 9u) << "metadata should come first";
}

TEST_F(SafetensorsTest, LoadedTensorsOwnTheirMemory) {
  const std::string p = path("own.safetensors");
  saveSafetensors(p, {{"x", torch::arange(4, torch::kFloat32)}});
  auto data = loadSafetensors(p);
  fs::remove(p);  // the tensor must not depend on the file
  data.tensors[0].second.add_(1);
  expectSameTensor(data.at("x"), torch::arange(1, 5, torch::kFloat32), "x");
}

TEST_F(SafetensorsTest, NonContiguousAndGradInputs) {
  const auto base = torch::arange(24, torch::kFloat32).reshape({4, 6});
  const auto transposed = base.t();                                       // strides swapped
  const auto strided = base.index({torch::indexing::Slice(), torch::indexing::Slice(1, 6, 2)});
  const auto offsetView = base[2];                                        // storage offset
  auto withGrad = torch::ones({2, 2}, torch::requires_grad());
  ASSERT_FALSE(transposed.is_contiguous());
  ASSERT_FALSE(strided.is_contiguous());
  const std::string p = path("views.safetensors");
  saveSafetensors(p, {{"t", transposed}, {"s", strided}, {"o", offsetView}, {"g", withGrad}});
  const auto data = loadSafetensors(p);
  expectSameTensor(data.at("t"), transposed.contiguous(), "t");
  expectSameTensor(data.at("s"), strided.contiguous(), "s");
  expectSameTensor(data.at("o"), offsetView.contiguous(), "o");
  expectSameTensor(data.at("g"), withGrad.detach(), "g");
  EXPECT_FALSE(data.at("g").requires_grad());
}

TEST_F(SafetensorsTest, CudaTensorsAreSavedFromHost) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto x = torch::randn({3, 4}, torch::kCUDA).to(torch::kBFloat16);
  const std::string p = path("cuda.safetensors");
  saveSafetensors(p, {{"x", x}});
  expectSameTensor(loadSafetensors(p).at("x"), x.cpu(), "x");
}

TEST_F(SafetensorsTest, SaveRejectsBadInput) {
  const std::string p = path("bad.safetensors");
  const auto x = torch::zeros({2});
  expectError([&] { saveSafetensors(p, {{"a", x}, {"a", x}}); }, p, "duplicate tensor name 'a'");
  expectError([&] { saveSafetensors(p, {{"__metadata__", x}}); }, p, "reserved");
  expectError([&] { saveSafetensors(p, {{"u", at::Tensor()}}); }, p, "'u' is undefined");
  expectError([&] { saveSafetensors(p, {{"c", torch::zeros({2}, torch::kComplexFloat)}}); }, p,
              "unsupported dtype");
  expectError([&] { saveSafetensors(path("no/such/dir/x.safetensors"), {{"a", x}}); },
              path("no/such/dir/x.safetensors"), "cannot create");
  EXPECT_FALSE(fs::exists(p)) << "a failed save must not create the file";
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(SafetensorsTest, SaveReplacesExistingFile) {
  const std::string p = path("replace.safetensors");
  saveSafetensors(p, {{"a", torch::zeros({100})}});
  saveSafetensors(p, {{"b", torch::ones({1})}});
  const auto data = loadSafetensors(p);
  ASSERT_EQ(data.tensors.size(), 1u);
  expectSameTensor(data.at("b"), torch::ones({1}), "b");
}

// ---------------------------------------------------------------------------------------------
// Loader error paths, on files crafted byte by byte

TEST_F(SafetensorsTest, MissingFile) {
  const std::string p = path("does_not_exist.safetensors");
  expectError([&] { loadSafetensors(p); }, p, "does not exist");
}

TEST_F(SafetensorsTest, TruncatedBeforeHeaderLength) {
  expectLoadError(std::string("\x10\x00\x00", 3), "truncated");
}

TEST_F(SafetensorsTest, HeaderLengthTooBig) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  expectLoadError(craft(header, floats({1}), 1'000'000), "larger than");
  expectLoadError(craft(header, floats({1}), std::numeric_limits<std::uint64_t>::max()),
                  "larger than");
}

TEST_F(SafetensorsTest, TruncatedData) {
  // A valid header whose last tensor's bytes were cut off.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expectLoadError(craft(header, floats({1}).substr(0, 4)), "past the 4-byte data buffer");
}

TEST_F(SafetensorsTest, InvalidJson) {
  expectLoadError(craft(R"({"a":{"dtype":"F32",)", ""), "not valid JSON");
  expectLoadError(craft("[1, 2]", ""), "expected an object");
  expectLoadError(craft("{\"a\":\n{\"dtype\":\"F32\",\x01}}", ""), "not valid JSON");
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expectLoadError(craft(R"({"a":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}})", "x"),
                  "unknown dtype 'F8_E9'");
  expectLoadError(craft(R"({"a":{"dtype":3,"shape":[1],"data_offsets":[0,1]}})", "x"),
                  "no string \"dtype\"");
}

TEST_F(SafetensorsTest, OffsetsMismatchShape) {
  // 2x3 F32 needs 24 bytes; the offsets claim 20.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})";
  expectLoadError(craft(header, std::string(20, '\0')), "needs 24 bytes");
  expectLoadError(
      craft(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')),
      "non-negative integers");
  expectLoadError(
      craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", std::string(4, '\0')),
      "end before begin");
  expectLoadError(
      craft(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", std::string(1, '\0')),
      "data_offsets");
}

TEST_F(SafetensorsTest, OverlappingOffsets) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expectLoadError(craft(header, std::string(12, '\0')), "overlaps tensor 'a'");
}

TEST_F(SafetensorsTest, GapsAndTrailingBytes) {
  const std::string gap = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  expectLoadError(craft(gap, std::string(8, '\0')), "gap in the data buffer");
  const std::string trailing = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  expectLoadError(craft(trailing, std::string(8, '\0')), "trailing bytes");
}

TEST_F(SafetensorsTest, BadMetadataAndDuplicates) {
  expectLoadError(craft(R"({"__metadata__":{"epoch":3}})", ""), "metadata must map strings");
  expectLoadError(craft(R"({"__metadata__":["x"]})", ""), "__metadata__ must be an object");
  const std::string dup = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  expectLoadError(craft(dup, "xy"), "names 'a' twice");
  expectLoadError(craft(R"({"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                        std::string("\x01\x02", 2)),
                  "byte value 2");
}

TEST_F(SafetensorsTest, AcceptsMinimalHandWrittenFile) {
  // Unpadded header, no metadata, zero-size tensor sharing an offset with a non-empty one: all
  // valid per the format even though our writer never produces them.
  const std::string header = R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                             R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  const std::string p = path("min.safetensors");
  writeFile(p, craft(header, floats({2.5f, -1.0f})));
  const auto data = loadSafetensors(p);
  ASSERT_EQ(data.tensors.size(), 3u);
  EXPECT_EQ(data.tensors[0].first, "a");  // data order, not header order
  EXPECT_TRUE(data.metadata.empty());
  expectSameTensor(data.at("a"), torch::scalar_tensor(2.5f), "a");
  expectSameTensor(data.at("b"), torch::tensor({-1.0f}), "b");
  expectSameTensor(data.at("e"), torch::zeros({0}), "e");
}

// ---------------------------------------------------------------------------------------------
// State dicts

struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    seq = register_module("seq", torch::nn::Sequential(torch::nn::Linear(3, 4),
                                                       torch::nn::Linear(torch::nn::LinearOptions(
                                                           4, 2).bias(false))));
    scale = register_parameter("scale", torch::ones({2}));
    steps = register_buffer("steps", torch::zeros({}, torch::kInt64));
  }
  torch::nn::Sequential seq{nullptr};
  at::Tensor scale, steps;
};
TORCH_MODULE(Tiny);

TEST_F(SafetensorsTest, StateDictNamesAndOrder) {
  Tiny m;
  std::vector<std::string> names;
  for (const auto& [n, t] : stateDict(*m)) {
    names.push_back(n);
    EXPECT_FALSE(t.requires_grad()) << n;
  }
  // PyTorch order: own parameters, own buffers, then children; no entry for the absent bias.
  const std::vector<std::string> want = {"scale", "steps", "seq.0.weight", "seq.0.bias",
                                         "seq.1.weight"};
  EXPECT_EQ(names, want);
}

TEST_F(SafetensorsTest, StateDictRoundTripThroughFile) {
  torch::manual_seed(1);
  Tiny a, b;
  {
    torch::NoGradGuard g;
    a->steps.fill_(17);
    a->scale.mul_(3);
  }
  const std::string p = path("tiny.safetensors");
  saveSafetensors(p, stateDict(*a), {{"step", "17"}});
  const auto data = loadSafetensors(p);
  loadStateDict(*b, data.tensors, /*strict=*/true, p);
  const auto sa = stateDict(*a), sb = stateDict(*b);
  ASSERT_EQ(sa.size(), sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) expectSameTensor(sb[i].second, sa[i].second, sa[i].first);
  // Parameters keep their identity and autograd flag; only values changed.
  EXPECT_TRUE(b->scale.requires_grad());
  EXPECT_EQ(b->steps.item<std::int64_t>(), 17);
}

TEST_F(SafetensorsTest, LoadStateDictConvertsDtype) {
  Tiny a, b;
  auto sd = stateDict(*a);
  for (auto& [n, t] : sd)
    if (t.is_floating_point()) t = t.to(torch::kFloat64);
  loadStateDict(*b, sd);
  EXPECT_EQ(b->scale.scalar_type(), torch::kFloat32);
  expectSameTensor(stateDict(*b)[2].second, stateDict(*a)[2].second, "seq.0.weight");
}

TEST_F(SafetensorsTest, LoadStateDictStrictErrors) {
  Tiny m;
  const std::string src = "ckpt/model.safetensors";

  auto missing = stateDict(*m);
  missing.erase(missing.begin() + 3);  // seq.0.bias
  expectError([&] { loadStateDict(*m, missing, true, src); }, src, "missing: seq.0.bias");
  EXPECT_NO_THROW(loadStateDict(*m, missing, /*strict=*/false, src));

  auto unexpected = stateDict(*Tiny());
  unexpected.emplace_back("seq.2.weight", torch::zeros({1}));
  expectError([&] { loadStateDict(*m, unexpected, true, src); }, src, "unexpected: seq.2.weight");
  EXPECT_NO_THROW(loadStateDict(*m, unexpected, /*strict=*/false, src));

  const auto before = m->scale.clone();
  auto shape = stateDict(*m);
  shape[2].second = torch::zeros({4, 5});
  shape[0].second = torch::full({2}, 9.0f);
  // Shape mismatches are errors even when not strict, and nothing is copied on failure.
  expectError([&] { loadStateDict(*m, shape, false, src); }, src,
              "shape mismatch for 'seq.0.weight': module expects [4, 3], got [4, 5]");
  EXPECT_TRUE(torch::equal(m->scale, before));

  // All problems are reported together.
  auto both = missing;
  both.emplace_back("extra", torch::zeros({1}));
  try {
    loadStateDict(*m, both, true, src);
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing: seq.0.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected: extra"), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------------------------------------
// Interop with the Python safetensors package

class SafetensorsPythonTest : public SafetensorsTest {
 protected:
  void SetUp() override {
    SafetensorsTest::SetUp();
    python_ = LATENTCELL_PYTHON;
    script_ = std::string(LATENTCELL_SOURCE_DIR) + "/tests/python/safetensors_interop.py";
    if (python_.empty() || !fs::exists(python_))
      GTEST_SKIP() << "reference Python env not found (set LATENTCELL_PYTHON); it needs torch, "
                      "safetensors and numpy, e.g. the venv scripts/setup.sh creates";
    ASSERT_TRUE(fs::exists(script_)) << "missing " << script_;
  }

  // Runs the interop script; returns its exit code and leaves its output in `log`.
  int runScript(const std::string& mode, const std::string& file, std::string& log) {
    const std::string logPath = path("python.log");
    const std::string cmd = shellQuote(python_) + " " + shellQuote(script_) + " " + mode + " " +
                            shellQuote(file) + " > " + shellQuote(logPath) + " 2>&1";
    const int status = std::system(cmd.c_str());
    log = readFile(logPath);
    if (status == -1 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  }

  std::string python_, script_;
};

TEST_F(SafetensorsPythonTest, ReadsFileWrittenByPython) {
  const std::string p = path("from_python.safetensors");
  std::string log;
  ASSERT_EQ(runScript("write", p, log), 0) << log;
  const auto data = loadSafetensors(p);
  EXPECT_EQ(data.metadata, interopMetadata("python"));
  const auto want = interopTensors();
  EXPECT_EQ(data.tensors.size(), want.size());
  for (const auto& [name, tensor] : want) {
    ASSERT_TRUE(data.contains(name)) << name;
    expectSameTensor(data.at(name), tensor, name);
  }
}

TEST_F(SafetensorsPythonTest, PythonReadsFileWrittenByCpp) {
  const std::string p = path("from_cpp.safetensors");
  saveSafetensors(p, interopTensors(), interopMetadata("cpp"));
  std::string log;
  EXPECT_EQ(runScript("check", p, log), 0) << log;
}

}  // namespace
