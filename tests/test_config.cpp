// Tests for core/Config: typed configs from YAML plus command line overrides.
//
// The error tests check the parts of each message a user needs to act on (the dotted key, the
// file or override, the allowed values) rather than whole strings, so wording can improve
// without churn; every message must also stay on one line, since the CLI prints it as-is.
#include "core/Config.h"
#include "train/Recipe.h"
#include "train/SmokeTask.h"
#include "train/Stage1Task.h"
#include "train/Stage2Task.h"

#include "TestUtil.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using latentcell::core::applyOverrides;
using latentcell::core::ConfigError;
using latentcell::core::ConfigSection;
using latentcell::core::ConfigVisitor;
using latentcell::core::describeConfig;
using latentcell::core::dumpConfig;
using latentcell::core::loadConfigFile;
using latentcell::core::loadConfigText;
using latentcell::core::validateConfig;

struct OptimConfig : ConfigSection {
  double lr = 1e-3;
  int64_t steps = 100;
  void visit(ConfigVisitor& v) override {
    v.field("lr", lr, "learning rate");
    v.field("steps", steps, "number of optimizer steps");
  }
  void validate() const override {
    if (steps <= 0) reject("steps", "must be positive, got " + std::to_string(steps));
  }
};

struct NormConfig : ConfigSection {
  double eps = 1e-6;
  void visit(ConfigVisitor& v) override { v.field("eps", eps, "added to the variance"); }
};

struct ModelConfig : ConfigSection {
  std::string kind = "mlp";
  std::vector<int64_t> dims{64, 32};
  std::vector<double> dropouts{0.1};
  std::vector<std::string> tags;
  bool bias = true;
  NormConfig norm;
  void visit(ConfigVisitor& v) override {
    v.choice("kind", kind, {"mlp", "dit"}, "backbone architecture");
    v.field("dims", dims, "hidden layer widths");
    v.field("dropouts", dropouts, "dropout per layer");
    v.field("tags", tags, "free-form labels");
    v.field("bias", bias, "use bias terms");
    v.section("norm", norm, "normalization");
  }
};

struct RootConfig : ConfigSection {
  std::string name = "run";
  int64_t seed = 0;
  bool verbose = false;
  double scale = 1.0;
  OptimConfig optim;
  ModelConfig model;
  void visit(ConfigVisitor& v) override {
    v.field("name", name, "run name");
    v.field("seed", seed, "random seed");
    v.field("verbose", verbose, "chatty logging");
    v.field("scale", scale, "output scale");
    v.section("optim", optim, "optimizer settings");
    v.section("model", model, "model settings");
  }
};

// A temp file with a unique name, removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& content, const std::string& suffix = ".yaml") {
    static std::atomic<int> counter{0};
    std::random_device rd;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = (std::filesystem::temp_directory_path() /
             ("latentcell_cfg_" + std::string(info ? info->name() : "x") + "_" +
              std::to_string(rd()) + "_" + std::to_string(counter++) + suffix))
                .string();
    std::ofstream out(path_, std::ios::binary);
    out << content;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The ConfigError message of `f`; fails the test if `f` does not throw one or the message spans
// more than one line.
std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
    EXPECT_FALSE(msg.empty());
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ConfigError, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected ConfigError, nothing was thrown";
  return {};
}

std::string fileError(const std::string& yaml, std::string* path = nullptr,
                      const std::vector<std::string>& overrides = {}) {
  TempFile f(yaml);
  if (path) *path = f.path();
  RootConfig c;
  return errorOf([&] { loadConfigFile(c, f.path(), overrides); });
}

std::string overrideError(const std::vector<std::string>& overrides) {
  RootConfig c;
  return errorOf([&] { applyOverrides(c, overrides); });
}

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "'" << (needle) << "' not found in: " << (haystack)

bool sameBits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b));
}

void expectSame(const RootConfig& a, const RootConfig& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.verbose, b.verbose);
  EXPECT_TRUE(sameBits(a.scale, b.scale)) << a.scale << " vs " << b.scale;
  EXPECT_TRUE(sameBits(a.optim.lr, b.optim.lr)) << a.optim.lr << " vs " << b.optim.lr;
  EXPECT_EQ(a.optim.steps, b.optim.steps);
  EXPECT_EQ(a.model.kind, b.model.kind);
  EXPECT_EQ(a.model.dims, b.model.dims);
  ASSERT_EQ(a.model.dropouts.size(), b.model.dropouts.size());
  for (size_t i = 0; i < a.model.dropouts.size(); ++i) {
    EXPECT_TRUE(sameBits(a.model.dropouts[i], b.model.dropouts[i]))
        << i << ": " << a.model.dropouts[i] << " vs " << b.model.dropouts[i];
  }
  EXPECT_EQ(a.model.tags, b.model.tags);
  EXPECT_EQ(a.model.bias, b.model.bias);
  EXPECT_TRUE(sameBits(a.model.norm.eps, b.model.norm.eps));
}

// ---------------------------------------------------------------------------------------------
// Loading.

TEST(Config, DefaultsKeptWhenKeysAbsent) {
  TempFile f("seed: 7\n");
  RootConfig c;
  loadConfigFile(c, f.path());
  EXPECT_EQ(c.seed, 7);
  RootConfig d;
  d.seed = 7;
  expectSame(c, d);
}

TEST(Config, EmptyFileAndEmptySectionKeepDefaults) {
  TempFile empty("");
  RootConfig c;
  loadConfigFile(c, empty.path());
  expectSame(c, RootConfig{});

  TempFile commentedOut("optim:\n  # lr: 0.5\nmodel:\n");
  loadConfigFile(c, commentedOut.path());
  expectSame(c, RootConfig{});
}

TEST(Config, NestedSections) {
  TempFile f(
      "optim:\n"
      "  lr: 0.25\n"
      "model:\n"
      "  norm:\n"
      "    eps: 1.0e-5\n");
  RootConfig c;
  loadConfigFile(c, f.path());
  EXPECT_EQ(c.optim.lr, 0.25);
  EXPECT_EQ(c.optim.steps, 100);  // sibling default kept
  EXPECT_EQ(c.model.norm.eps, 1e-5);
  EXPECT_EQ(c.model.kind, "mlp");
}

TEST(Config, EveryFieldTypeFromYaml) {
  TempFile f(
      "name: \"my run: 1\"\n"
      "seed: -42\n"
      "verbose: true\n"
      "scale: 2.5\n"
      "optim: {lr: 3e-4, steps: +9000}\n"
      "model:\n"
      "  kind: dit\n"
      "  dims:\n"
      "    - 1\n"
      "    - 2\n"
      "    - 3\n"
      "  dropouts: [0.0, 0.5, 1]\n"
      "  tags: [a, 'b c', \"true\"]\n"
      "  bias: False\n");
  RootConfig c;
  loadConfigFile(c, f.path());
  EXPECT_EQ(c.name, "my run: 1");
  EXPECT_EQ(c.seed, -42);
  EXPECT_TRUE(c.verbose);
  EXPECT_EQ(c.scale, 2.5);
  EXPECT_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.optim.steps, 9000);
  EXPECT_EQ(c.model.kind, "dit");
  EXPECT_EQ(c.model.dims, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(c.model.dropouts, (std::vector<double>{0.0, 0.5, 1.0}));
  EXPECT_EQ(c.model.tags, (std::vector<std::string>{"a", "b c", "true"}));
  EXPECT_FALSE(c.model.bias);
}

TEST(Config, SpecialDoubles) {
  RootConfig c;
  applyOverrides(c, {"scale=.inf", "optim.lr=-.inf", "model.dropouts=[.nan, 1e-300]"});
  EXPECT_EQ(c.scale, std::numeric_limits<double>::infinity());
  EXPECT_EQ(c.optim.lr, -std::numeric_limits<double>::infinity());
  ASSERT_EQ(c.model.dropouts.size(), 2u);
  EXPECT_TRUE(std::isnan(c.model.dropouts[0]));
  EXPECT_EQ(c.model.dropouts[1], 1e-300);
}

TEST(Config, EveryFieldTypeFromOverrides) {
  RootConfig c;
  applyOverrides(
      c, {"name=hello world", "seed=123", "verbose=true", "scale=0.125", "optim.lr=1e-8",
          "optim.steps=5", "model.kind=dit", "model.dims=[4,5]", "model.dropouts=[0.1, 0.2]",
          "model.tags=[x, \"y,z\"]", "model.bias=false", "model.norm.eps=1e-3"});
  EXPECT_EQ(c.name, "hello world");
  EXPECT_EQ(c.seed, 123);
  EXPECT_TRUE(c.verbose);
  EXPECT_EQ(c.scale, 0.125);
  EXPECT_EQ(c.optim.lr, 1e-8);
  EXPECT_EQ(c.optim.steps, 5);
  EXPECT_EQ(c.model.kind, "dit");
  EXPECT_EQ(c.model.dims, (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(c.model.dropouts, (std::vector<double>{0.1, 0.2}));
  EXPECT_EQ(c.model.tags, (std::vector<std::string>{"x", "y,z"}));
  EXPECT_FALSE(c.model.bias);
  EXPECT_EQ(c.model.norm.eps, 1e-3);
}

TEST(Config, OverrideEdgeValues) {
  RootConfig c;
  applyOverrides(
      c, {"name=", "model.tags=[]", "model.dims=[]", "optim={lr: 0.5, steps: 2}", "model.norm={}"});
  EXPECT_EQ(c.name, "");
  EXPECT_TRUE(c.model.tags.empty());
  EXPECT_TRUE(c.model.dims.empty());
  EXPECT_EQ(c.optim.lr, 0.5);  // a whole section as a flow mapping
  EXPECT_EQ(c.optim.steps, 2);
  applyOverrides(c, {"name=a=b"});  // only the first '=' separates
  EXPECT_EQ(c.name, "a=b");
}

TEST(Config, OverridesTakePrecedenceOverFile) {
  TempFile f("seed: 1\noptim:\n  lr: 0.5\n  steps: 10\n");
  RootConfig c;
  loadConfigFile(c, f.path(), {"optim.lr=0.25", "seed=2", "seed=3"});
  EXPECT_EQ(c.optim.lr, 0.25);
  EXPECT_EQ(c.optim.steps, 10);  // from the file
  EXPECT_EQ(c.seed, 3);          // the last override wins
}

TEST(Config, Lists) {
  TempFile f("model:\n  dims: []\n  tags:\n    - one\n    - two\n  dropouts: [1e-8, 0.1]\n");
  RootConfig c;
  loadConfigFile(c, f.path());
  EXPECT_TRUE(c.model.dims.empty());
  EXPECT_EQ(c.model.tags, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(c.model.dropouts, (std::vector<double>{1e-8, 0.1}));

  std::string msg = fileError("model:\n  dims: [1, 2, x]\n");
  EXPECT_CONTAINS(msg, "'model.dims[2]'");
  EXPECT_CONTAINS(msg, "must be an integer");
  EXPECT_CONTAINS(msg, ":2");  // line of the element

  msg = fileError("model:\n  dims: 3\n");
  EXPECT_CONTAINS(msg, "'model.dims'");
  EXPECT_CONTAINS(msg, "list of integers");

  msg = overrideError({"model.tags=[a, [b]]"});
  EXPECT_CONTAINS(msg, "'model.tags[1]'");
  EXPECT_CONTAINS(msg, "must be a string");
}

TEST(Config, Choices) {
  RootConfig c;
  applyOverrides(c, {"model.kind=dit"});
  EXPECT_EQ(c.model.kind, "dit");

  std::string path;
  std::string msg = fileError("model:\n  kind: transformer\n", &path);
  EXPECT_CONTAINS(msg, "'model.kind'");
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "mlp, dit");
  EXPECT_CONTAINS(msg, "'transformer'");

  msg = overrideError({"model.kind=cnn"});
  EXPECT_CONTAINS(msg, "'model.kind'");
  EXPECT_CONTAINS(msg, "command line override 'model.kind=cnn'");
  EXPECT_CONTAINS(msg, "mlp, dit");
}

TEST(Config, ChoiceDefaultOutsideItsChoicesIsCaught) {
  struct Bad : ConfigSection {
    std::string mode = "fast";
    void visit(ConfigVisitor& v) override { v.choice("mode", mode, {"slow", "exact"}, ""); }
  } bad;
  std::string msg = errorOf([&] { applyOverrides(bad, {}); });
  EXPECT_CONTAINS(msg, "'mode'");
  EXPECT_CONTAINS(msg, "default");
}

// ---------------------------------------------------------------------------------------------
// Dump and describe.

TEST(Config, DumpLoadRoundTrip) {
  RootConfig a;
  a.name = "quote \" backslash \\ newline \n tab \t colon: x # not a comment";
  a.seed = std::numeric_limits<int64_t>::min();
  a.verbose = true;
  a.scale = 1.0 / 3.0;
  a.optim.lr = 0.1;
  a.optim.steps = std::numeric_limits<int64_t>::max();
  a.model.kind = "dit";
  a.model.dims = {1, -2, 0};
  a.model.dropouts = {1e-8,
                      0.1,
                      -0.0,
                      5e-324,
                      1.7976931348623157e308,
                      123456789.0,
                      std::numeric_limits<double>::infinity()};
  a.model.tags = {"", "true", "null", "1e3", "[x]", "ünïcode", "- dash"};
  a.model.bias = false;
  a.model.norm.eps = 1e-12;

  std::string yaml = dumpConfig(a);
  TempFile f(yaml);
  RootConfig b;
  loadConfigFile(b, f.path());
  expectSame(a, b);
  EXPECT_EQ(dumpConfig(b), yaml);  // stable: dumping the reload gives identical text

  RootConfig c;  // from memory, e.g. a resolved config kept in a checkpoint
  loadConfigText(c, yaml, "checkpoint");
  expectSame(a, c);
}

TEST(Config, DumpDefaultsRoundTripAndLooksLikeYaml) {
  RootConfig a;
  std::string yaml = dumpConfig(a);
  EXPECT_CONTAINS(yaml, "optim:  # optimizer settings\n  lr: 0.001  # learning rate\n");
  EXPECT_CONTAINS(yaml, "    eps: 1e-06");
  EXPECT_CONTAINS(yaml, "tags: []");
  EXPECT_CONTAINS(yaml, "scale: 1.0");
  RootConfig b;
  b.seed = 99;
  loadConfigText(b, yaml, "dump");
  expectSame(a, b);
}

TEST(Config, DescribeListsDottedKeys) {
  RootConfig c;
  std::string md = describeConfig(c);
  EXPECT_EQ(md.rfind("| Key | Type | Default | Description |\n", 0), 0u);
  EXPECT_CONTAINS(md, "| `optim.lr` | float | `0.001` | learning rate |");
  EXPECT_CONTAINS(md, "| `optim.steps` | int | `100` | number of optimizer steps |");
  EXPECT_CONTAINS(md, "| `model.norm.eps` | float |");
  EXPECT_CONTAINS(md, "| `model.dims` | list[int] | `[64, 32]` |");
  EXPECT_CONTAINS(md, "| `model.kind` | one of: mlp, dit | `\"mlp\"` |");
  EXPECT_CONTAINS(md, "| `model` | section |");
  EXPECT_CONTAINS(md, "| `verbose` | bool | `false` |");
}

// ---------------------------------------------------------------------------------------------
// Errors.

TEST(ConfigErrors, UnknownTopLevelKey) {
  std::string path;
  std::string msg = fileError("seed: 1\nbogus: 2\n", &path);
  EXPECT_CONTAINS(msg, "unknown key 'bogus'");
  EXPECT_CONTAINS(msg, path + ":2");
  EXPECT_CONTAINS(msg, "known top-level keys: name, seed, verbose, scale, optim, model");
}

TEST(ConfigErrors, UnknownNestedKey) {
  std::string path;
  std::string msg = fileError("optim:\n  lrr: 0.1\n", &path);
  EXPECT_CONTAINS(msg, "unknown key 'optim.lrr'");
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "did you mean 'optim.lr'?");
  EXPECT_CONTAINS(msg, "known keys under 'optim': lr, steps");

  msg = fileError("model:\n  norm:\n    epsilon: 1\n", &path);
  EXPECT_CONTAINS(msg, "unknown key 'model.norm.epsilon'");
  EXPECT_CONTAINS(msg, path + ":3");
}

TEST(ConfigErrors, DuplicateKey) {
  std::string path;
  std::string msg = fileError("seed: 1\nseed: 2\n", &path);
  EXPECT_CONTAINS(msg, "duplicate key 'seed'");
  EXPECT_CONTAINS(msg, path + ":2");
}

TEST(ConfigErrors, WrongTypes) {
  std::string path;
  std::string msg = fileError("optim:\n  steps: abc\n", &path);
  EXPECT_CONTAINS(msg, "'optim.steps' in " + path + ":2 must be an integer, got 'abc'");

  msg = fileError("optim:\n  steps: 1.5\n");  // never truncated to 1
  EXPECT_CONTAINS(msg, "'optim.steps'");
  EXPECT_CONTAINS(msg, "must be an integer, got '1.5'");

  msg = fileError("optim:\n  steps: '5'\n");  // a quoted number is a string in YAML
  EXPECT_CONTAINS(msg, "'optim.steps'");
  EXPECT_CONTAINS(msg, "quoted");

  msg = fileError("verbose: yes\n");  // YAML 1.1 booleans are rejected
  EXPECT_CONTAINS(msg, "'verbose'");
  EXPECT_CONTAINS(msg, "must be true or false, got 'yes'");

  msg = fileError("verbose: 1\n");
  EXPECT_CONTAINS(msg, "must be true or false");

  msg = fileError("optim:\n  lr: fast\n");
  EXPECT_CONTAINS(msg, "'optim.lr'");
  EXPECT_CONTAINS(msg, "must be a number, got 'fast'");

  msg = fileError("name:\n");
  EXPECT_CONTAINS(msg, "'name'");
  EXPECT_CONTAINS(msg, "must be a string");

  msg = fileError("name: [a]\n");
  EXPECT_CONTAINS(msg, "must be a string, got a list");

  msg = fileError("optim: 3\n");
  EXPECT_CONTAINS(msg, "'optim'");
  EXPECT_CONTAINS(msg, "section");
  EXPECT_CONTAINS(msg, "lr, steps");

  msg = fileError("seed: 99999999999999999999\n");
  EXPECT_CONTAINS(msg, "'seed'");
  EXPECT_CONTAINS(msg, "out of range");

  msg = fileError("- 1\n- 2\n");
  EXPECT_CONTAINS(msg, "top level");
}

TEST(ConfigErrors, WrongTypeFromOverride) {
  std::string msg = overrideError({"optim.steps=1.5"});
  EXPECT_CONTAINS(msg, "'optim.steps' in command line override 'optim.steps=1.5'");
  EXPECT_CONTAINS(msg, "must be an integer");

  msg = overrideError({"verbose=on"});
  EXPECT_CONTAINS(msg, "'verbose'");
  EXPECT_CONTAINS(msg, "true or false");

  msg = overrideError({"optim.lr.x=1"});  // descending into a field
  EXPECT_CONTAINS(msg, "'optim.lr'");
  EXPECT_CONTAINS(msg, "got a mapping");
}

TEST(ConfigErrors, MissingFile) {
  const std::string path =
      (std::filesystem::temp_directory_path() / "latentcell_cfg_does_not_exist_3141.yaml").string();
  RootConfig c;
  std::string msg = errorOf([&] { loadConfigFile(c, path); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "does not exist");

  msg = errorOf([&] { loadConfigFile(c, std::filesystem::temp_directory_path().string()); });
  EXPECT_CONTAINS(msg, "is a directory");
}

TEST(ConfigErrors, YamlSyntaxError) {
  std::string path;
  std::string msg = fileError("seed: 1\noptim: [1,\n  lr: 2\n", &path);
  EXPECT_CONTAINS(msg, "YAML syntax error");
  EXPECT_CONTAINS(msg, path + ":");
}

TEST(ConfigErrors, BadOverrideSyntax) {
  std::string msg = overrideError({"optim.lr"});
  EXPECT_CONTAINS(msg, "'optim.lr'");
  EXPECT_CONTAINS(msg, "missing '='");

  msg = overrideError({"=3"});
  EXPECT_CONTAINS(msg, "'=3'");
  EXPECT_CONTAINS(msg, "empty key");

  msg = overrideError({"a..b=1"});
  EXPECT_CONTAINS(msg, "'a..b=1'");
  EXPECT_CONTAINS(msg, "empty path segment");

  msg = overrideError({"optim.=1"});
  EXPECT_CONTAINS(msg, "empty path segment");

  msg = overrideError({"--seed=1"});
  EXPECT_CONTAINS(msg, "leading dashes");

  msg = overrideError({"model.dims=[1,"});
  EXPECT_CONTAINS(msg, "'model.dims=[1,'");
  EXPECT_CONTAINS(msg, "not valid YAML");

  // Syntax is checked before the file is read, and names the override, not the file.
  TempFile f("seed: 1\n");
  RootConfig c;
  msg = errorOf([&] { loadConfigFile(c, f.path(), {"seed"}); });
  EXPECT_CONTAINS(msg, "bad command line override 'seed'");
}

TEST(ConfigErrors, OverrideToUnknownKey) {
  std::string msg = overrideError({"optim.lrr=3"});
  EXPECT_CONTAINS(msg, "unknown key 'optim.lrr'");
  EXPECT_CONTAINS(msg, "command line override 'optim.lrr=3'");
  EXPECT_CONTAINS(msg, "known keys under 'optim': lr, steps");

  TempFile f("seed: 1\n");
  RootConfig c;
  msg = errorOf([&] { loadConfigFile(c, f.path(), {"nosuch.key=1"}); });
  EXPECT_CONTAINS(msg, "unknown key 'nosuch'");
  EXPECT_CONTAINS(msg, "command line");
}

TEST(ConfigErrors, ValidateFailureNamesKey) {
  std::string path;
  std::string msg = fileError("optim:\n  steps: -3\n", &path);
  EXPECT_CONTAINS(msg, "'optim.steps' in " + path + ":2 is invalid: must be positive, got -3");

  msg = overrideError({"optim.steps=0"});
  EXPECT_CONTAINS(msg, "'optim.steps'");
  EXPECT_CONTAINS(msg, "command line override 'optim.steps=0'");
  EXPECT_CONTAINS(msg, "must be positive");

  RootConfig c;
  c.optim.steps = -1;
  msg = errorOf([&] { validateConfig(c); });
  EXPECT_CONTAINS(msg, "'optim.steps' is invalid: must be positive");
}

TEST(ConfigErrors, DeclarationMistakes) {
  struct Dup : ConfigSection {
    int64_t a = 0, b = 0;
    void visit(ConfigVisitor& v) override {
      v.field("a", a, "");
      v.field("a", b, "");
    }
  } dup;
  EXPECT_CONTAINS(errorOf([&] { applyOverrides(dup, {}); }), "declared twice");

  struct Dotted : ConfigSection {
    int64_t a = 0;
    void visit(ConfigVisitor& v) override { v.field("a.b", a, ""); }
  } dotted;
  EXPECT_CONTAINS(errorOf([&] { (void)dumpConfig(dotted); }), "invalid key 'a.b'");
}

TEST(ConfigErrors, MessagesStayOnOneLine) {
  // Values with newlines are echoed escaped; errorOf checks for '\n'.
  std::string msg = fileError("seed: \"1\\n2\"\n");
  EXPECT_CONTAINS(msg, "'seed'");
  msg = fileError("seed: |\n  multi\n  line\n");
  EXPECT_CONTAINS(msg, "multi\\nline");
}

// Every recipe in configs/ loads into the config struct its `task` names and passes validation, so a
// renamed key or a bad value in a shipped recipe fails here rather than in a user's run.
TEST(Recipes, EveryShippedConfigLoadsAndValidates) {
  int64_t checked = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(latentcell::test::sourcePath("configs"))) {
    if (entry.path().extension() != ".yaml") continue;
    const auto path = entry.path().string();
    const auto task = latentcell::core::peekConfigString(path, "task");
    SCOPED_TRACE(path);
    if (task == "stage1") {
      latentcell::train::Stage1Config c;
      EXPECT_NO_THROW(loadConfigFile(c, path));
    } else if (task == "stage2") {
      latentcell::train::Stage2Config c;
      EXPECT_NO_THROW(loadConfigFile(c, path));
    } else if (task == "recipe") {
      // Loads the recipe and both stage configs with everything the run passes them; the data file
      // is replaced by one that exists everywhere, since the real screen is not part of a clone.
      EXPECT_NO_THROW(latentcell::train::loadRecipe(
          path, {"data.path=" + latentcell::test::sourcePath("CMakeLists.txt")}));
    } else {
      latentcell::train::SmokeConfig c;
      EXPECT_NO_THROW(loadConfigFile(c, path));
    }
    ++checked;
  }
  EXPECT_GE(checked, 31);  // smoke, 14 stage-1 and 8 stage-2 configs, 8 recipes
}

}  // namespace
