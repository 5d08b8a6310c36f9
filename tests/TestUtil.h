// Helpers shared by the test binaries: temporary directories and the reference Python env.
#pragma once

#include "data/AnnData.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <sys/wait.h>

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

struct BinaryRun {
  int status = -1;
  std::string out;  // stdout and stderr together, unless stderr was redirected
};

// Runs the latentcell binary with `args` (shell-quoted by the caller) and captures its output;
// `stderr_redirect` "2>/dev/null" keeps only stdout (logging goes to stderr).
inline BinaryRun runBinary(const std::string& args, const std::string& stderr_redirect = "2>&1") {
  const std::string cmd = std::string("'") + LATENTCELL_BINARY + "' " + args + " " + stderr_redirect;
  BinaryRun r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

// The message of the exception `f` throws, or "(no error)".
inline std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// A CSR matrix from dense rows (zeros dropped), for small hand-made cases.
inline data::CsrMatrix csrFromDense(const std::vector<std::vector<float>>& rows) {
  data::CsrMatrix m;
  m.rows = static_cast<int64_t>(rows.size());
  m.cols = rows.empty() ? 0 : static_cast<int64_t>(rows[0].size());
  m.indptr.push_back(0);
  for (const auto& r : rows) {
    for (size_t j = 0; j < r.size(); ++j)
      if (r[j] != 0) {
        m.indices.push_back(static_cast<int32_t>(j));
        m.data.push_back(r[j]);
      }
    m.indptr.push_back(static_cast<int64_t>(m.data.size()));
  }
  return m;
}

}  // namespace latentcell::test

// Skips the current test when the reference Python env is missing, saying how to get it.
#define LATENTCELL_REQUIRE_PYTHON()                                                           \
  do {                                                                                        \
    if (latentcell::test::pythonPath().empty())                                               \
      GTEST_SKIP() << "reference Python env not found (run scripts/setup.sh, or configure "   \
                      "with -DLATENTCELL_PYTHON=/path/to/python with torch and safetensors)"; \
  } while (0)
