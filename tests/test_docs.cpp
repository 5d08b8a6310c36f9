// Documentation that is generated from, or must follow, the code: the config reference is the
// binary's own output byte for byte, and the user guide has a section for every subcommand.
#include "TestUtil.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::test {
namespace {

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// stdout only (logging goes to stderr), and the exit status.
BinaryRun runStdout(const std::string& args) { return runBinary(args, "2>/dev/null"); }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// "line N: expected `...`, committed `...`" for the first line where the two differ.
std::string firstDifference(const std::string& generated, const std::string& committed) {
  const auto a = lines(generated), b = lines(committed);
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const std::string x = i < a.size() ? a[i] : "(end of output)", y = i < b.size() ? b[i] : "(end of file)";
    if (x != y) return "line " + std::to_string(i + 1) + ": binary prints `" + x + "`, file has `" + y + "`";
  }
  return "the files differ in their final newline";
}

TEST(ConfigReference, CommittedFileIsTheBinarysOutput) {
  const auto run = runStdout("config reference");
  ASSERT_EQ(run.status, 0) << run.out;
  const std::string committed = readFile(sourcePath("docs/config-reference.md"));
  EXPECT_TRUE(run.out == committed)
      << "docs/config-reference.md is not what `latentcell config reference` prints ("
      << firstDifference(run.out, committed) << "): regenerate with scripts/config_reference.sh";
}

TEST(ConfigReference, EachTaskSectionIsPartOfTheDocumentAndNamesItsKeys) {
  const std::string whole = runStdout("config reference").out;
  for (const std::string task : {"smoke", "stage1", "stage2"}) {
    const auto section = runStdout("config reference --task " + task);
    ASSERT_EQ(section.status, 0) << task;
    EXPECT_EQ(section.out.rfind("## `task: " + task + "`\n", 0), 0u) << section.out.substr(0, 200);
    EXPECT_NE(whole.find(section.out), std::string::npos) << task;
    // The key `task` itself defaults to the name that selects the section.
    EXPECT_NE(section.out.find("| `task` | one of: " + task + " | `\"" + task + "\"` |"), std::string::npos) << task;
  }
  EXPECT_NE(whole.find("| `trainer.max_steps` | int |"), std::string::npos);
  EXPECT_NE(whole.find("| `finetune.init_from` | string |"), std::string::npos);
}

TEST(ConfigReference, DefaultsLoadBackAsTheTasksConfig) {
  // `config defaults NAME` is a starting file: `train` must read it as NAME's struct (its `task`
  // picks the struct, and every key must be known to it). An unknown override is rejected after the
  // file has been read and before anything runs, so the error must name the override, not the file.
  // The error lists the top-level keys of the struct the file was read as.
  const std::pair<const char*, const char*> keys_of[] = {
      {"smoke", "known top-level keys: task, seed, device, run_dir, model, data, trainer"},
      {"stage1", "known top-level keys: task, seed, device, run_dir, data, model, bottleneck, head, trainer"},
      {"stage2", "known top-level keys: task, seed, device, run_dir, autoencoder, data, prior, finetune, trainer"}};
  TempDir dir;
  for (const auto& [name, keys] : keys_of) {
    const std::string task = name;
    const auto dump = runStdout("config defaults " + task);
    ASSERT_EQ(dump.status, 0) << task;
    const std::string path = dir.file(task + ".yaml");
    std::ofstream(path) << dump.out;
    const auto bad = runBinary("train '" + path + "' no_such_key=1");
    EXPECT_EQ(bad.status, 2) << bad.out;
    EXPECT_NE(bad.out.find("unknown key 'no_such_key' in command line override"), std::string::npos) << bad.out;
    EXPECT_NE(bad.out.find(keys), std::string::npos) << bad.out;
    EXPECT_EQ(bad.out.find(path + ":"), std::string::npos) << "the file itself was rejected: " << bad.out;
  }
  const auto unknown = runBinary("config defaults stage9");
  EXPECT_NE(unknown.status, 0);
  EXPECT_NE(unknown.out.find("stage9"), std::string::npos) << unknown.out;
}

TEST(UserGuide, HasASectionForEverySubcommand) {
  const auto help = runBinary("--help");
  ASSERT_EQ(help.status, 0) << help.out;
  const auto at = help.out.find("\nSubcommands:\n");
  ASSERT_NE(at, std::string::npos) << help.out;
  const std::string guide = readFile(sourcePath("docs/user-guide.md"));
  ASSERT_FALSE(guide.empty());
  int commands = 0;
  for (const auto& line : lines(help.out.substr(at))) {
    std::istringstream words(line);
    std::string name;
    if (line.empty() || line[0] != ' ' || !(words >> name)) continue;
    ++commands;
    EXPECT_NE(guide.find("### `latentcell " + name), std::string::npos)
        << "docs/user-guide.md has no section `### `latentcell " << name << "...`";
  }
  EXPECT_GE(commands, 10) << help.out;
}

}  // namespace
}  // namespace latentcell::test
