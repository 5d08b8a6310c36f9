// libFuzzer target for the shard reader (data/ShardDataset, data/ShardFile): any bytes must end in a
// dataset whose every row reads, or a std::exception, never in a crash, a hang or a sanitizer report.
//
// An input is a one-shard directory packed as: flags (1 byte), the index's length (uint32 LE), the
// index file, then the shard file (fuzz/make_corpus.sh packs seeds from `latentcell data convert`).
// Random bytes almost never carry valid CRC-32Cs, so flags choose how deep a run goes:
//   bit 0  recompute every checksum the mutated files claim (header and sections) before opening, so
//          mutations of sizes, offsets, JSON metadata, groups and indptr reach the structural checks
//   bit 1  open with checksum verification (otherwise only headers are checked, and the row reads'
//          own index checks are what stands between corrupt bytes and memory)
// The checksum fix-up below repeats the container layout of data/ShardFile.h on purpose: it must
// work on files too broken for the reader.
#include "data/ShardDataset.h"

#include "core/Crc32c.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <vector>
#include <unistd.h>

namespace {

uint64_t readU64(const std::vector<uint8_t>& f, size_t at) {
  uint64_t v;
  std::memcpy(&v, f.data() + at, 8);
  return v;
}

// Rewrites the section and header checksums of a container, as far as its table fits the bytes.
void fixChecksums(std::vector<uint8_t>& f) {
  if (f.size() < 64) return;
  uint32_t count;
  std::memcpy(&count, f.data() + 12, 4);
  const size_t table = 48 * static_cast<size_t>(std::min<uint32_t>(count, 4096));
  if (64 + table > f.size()) return;
  for (size_t e = 64; e < 64 + table; e += 48) {
    const uint64_t offset = readU64(f, e + 32), bytes = readU64(f, e + 40);
    if (offset > f.size() || bytes > f.size() - offset) continue;
    const uint32_t crc = latentcell::core::crc32c(f.data() + offset, bytes);
    std::memcpy(f.data() + e + 28, &crc, 4);
  }
  std::memset(f.data() + 56, 0, 4);
  const uint32_t crc = latentcell::core::crc32c(f.data() + 64, table, latentcell::core::crc32c(f.data(), 64));
  std::memcpy(f.data() + 56, &crc, 4);
}

void writeFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/latentcell-fuzz-shards-XXXXXX";
    if (!mkdtemp(tmpl)) std::abort();
    return std::string(tmpl);
  }();
  if (size < 5) return 0;
  const uint8_t flags = data[0];
  uint32_t index_len;
  std::memcpy(&index_len, data + 1, 4);
  index_len = std::min<uint32_t>(index_len, static_cast<uint32_t>(size - 5));
  std::vector<uint8_t> index(data + 5, data + 5 + index_len), shard(data + 5 + index_len, data + size);
  if (flags & 1) {
    fixChecksums(index);
    fixChecksums(shard);
  }
  writeFile(dir + "/index.lcs", index);
  writeFile(dir + "/shard-00000.lcs", shard);

  try {
    latentcell::data::ShardOpenOptions options;
    options.verify_checksums = (flags & 2) != 0;
    const latentcell::data::ShardDataset d(dir, options);
    for (int64_t begin = 0; begin < d.cells(); begin += 64) (void)d.rows(begin, std::min(d.cells(), begin + 64));
    const std::vector<int64_t> some = {0, d.cells() - 1};
    if (d.cells() > 0 && d.genes() <= 100000) {
      std::vector<float> dense(2 * static_cast<size_t>(d.genes()));
      d.gatherDense(some, dense.data());
    }
    // What the reader promises after a successful open, used unchecked so that ASan sees a breach
    // (a throwing .at() would be swallowed below).
    volatile size_t sink = 0;
    for (const auto& g : d.groups())
      if (g.control >= 0) sink = sink + d.groups()[static_cast<size_t>(g.control)].context.size();
    for (const auto& c : d.obs())
      for (int32_t code : c.codes)
        if (code >= 0) sink = sink + c.categories[static_cast<size_t>(code)].size();
  } catch (const std::exception&) {
  }
  return 0;
}
