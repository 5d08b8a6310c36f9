// libFuzzer target for the h5ad reader: any bytes must end in an AnnData or a std::exception, never in
// a crash, a hang or a sanitizer report. The input is written to a temporary file because the reader
// opens paths, as users do. Built with clang by cmake/Fuzz.cmake (fuzz/CMakeLists.txt), seeded with
// simulated files by fuzz/make_corpus.sh and run by fuzz/run_fuzzer.sh; docs/data.md has the commands.
//
// libhdf5 itself is not instrumented: the fuzzer steers by coverage of latentcell's reader, and
// mutations reach libhdf5's own parsing as they come. Its leaks on failed opens are suppressed
// (fuzz/lsan.supp); a crash anywhere, libhdf5 included, fails the run. Inputs that once crashed
// inside libhdf5 are kept in fuzz/regressions/h5ad/ (docs/data.md, "Fuzzing").
#include "data/H5ad.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    char dir[] = "/tmp/latentcell-fuzz-XXXXXX";
    if (!mkdtemp(dir)) std::abort();
    return std::string(dir) + "/input.h5ad";
  }();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    (void)latentcell::data::readH5ad(path);
  } catch (const std::exception&) {
  }
  try {
    latentcell::data::H5adRowReader reader(path);
    (void)reader.readRows(0, std::min<int64_t>(reader.n_obs(), 16));
  } catch (const std::exception&) {
  }
  return 0;
}
