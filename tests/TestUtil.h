// Helpers shared by the test binaries: temporary directories and the reference Python env.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace latentcell::test {

// A fresh directory under the system temp dir, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("latentcell-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The reference Python interpreter configured at build time ("" when absent).
inline std::string pythonPath() {
  const std::string p = LATENTCELL_PYTHON;
  return (!p.empty() && std::filesystem::exists(p)) ? p : std::string();
}

inline std::string sourcePath(const std::string& rel) {
  return std::string(LATENTCELL_SOURCE_DIR) + "/" + rel;
}

// Runs `python SCRIPT ARGS` and returns its exit status.
inline int runPython(const std::string& script, const std::string& args) {
  const std::string cmd = "'" + pythonPath() + "' '" + sourcePath(script) + "' " + args;
  return std::system(cmd.c_str());
}

}  // namespace latentcell::test

// Skips the current test when the reference Python env is missing, saying how to get it.
#define LATENTCELL_REQUIRE_PYTHON()                                                           \
  do {                                                                                        \
    if (latentcell::test::pythonPath().empty())                                               \
      GTEST_SKIP() << "reference Python env not found (run scripts/setup.sh, or configure "   \
                      "with -DLATENTCELL_PYTHON=/path/to/python with torch and safetensors)"; \
  } while (0)
