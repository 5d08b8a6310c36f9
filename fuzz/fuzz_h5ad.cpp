// libFuzzer target for the h5ad reader: any bytes must end in an AnnData or a std::exception, never in
// a crash, a hang or a sanitizer report. The input is written to a temporary file because the reader
// opens paths, as users do. Not part of the CMake build (it needs clang); from the repository root:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address -DFMT_HEADER_ONLY=1 -I. -isystem TORCH/include \
//     -I/usr/include/hdf5/serial fuzz/fuzz_h5ad.cpp data/H5ad.cpp data/AnnData.cpp build/core/liblatentcell_log.a \
//     -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5 -llzf -lspdlog -lfmt -o fuzz_h5ad
//   ASAN_OPTIONS=allocator_may_return_null=1 ./fuzz_h5ad -max_len=70000 CORPUS   # CORPUS: small .h5ad files
// (TORCH: the torch wheel's directory, whose include/ has the fmt headers the code is built with.)
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
