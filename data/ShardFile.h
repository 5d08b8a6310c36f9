// The container of latentcell's sharded on-disk format: a versioned header, a table of named
// sections, and the sections themselves, each 64-byte aligned and checksummed (CRC-32C).
//
// Both kinds of file of a shard directory (see ShardDataset.h) are such containers, so one writer
// and one validating reader serve them. The reader memory-maps the file and trusts nothing before
// it has checked, in order: the size against the fixed header, the magic (which kind of file), the
// format version, the header's own checksum, the size the header records (a truncated copy fails
// here), that every section lies inside the file with a whole number of elements, and, unless told
// not to, every section's checksum. Each failure is a ShardFormatError naming the file and what is
// wrong; it derives from std::invalid_argument because a corrupt input exits 2, like a bad config.
//
// The writer fills sections in place (callers write cells at scattered offsets through data()),
// then commit() checksums them, writes the header, fsyncs and renames the file into place, so a
// crash or an error leaves no half-written file under the final name.
//
// Layout, all integers little-endian:
//   [0, 64)       header: magic[8], version u32, section count u32, file bytes u64, dataset id u64,
//                 reserved[24], header crc u32 (over the header with this field zero, then the table),
//                 reserved u32
//   [64, 64+48n)  section table: name[24] (NUL-padded), dtype u8, pad[3], crc u32, offset u64, bytes u64
//   then          the sections at their offsets
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace latentcell::data {

class ShardFormatError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Version of the container and of the files in a shard directory; bump it on any layout change.
constexpr uint32_t kShardFormatVersion = 1;

enum class ShardDtype : uint8_t { Bytes = 1, U16 = 2, U32 = 3, I32 = 4, I64 = 5, F32 = 6 };
size_t dtypeSize(ShardDtype dtype);
const char* dtypeName(ShardDtype dtype);

struct ShardSectionSpec {
  std::string name;  // at most 23 characters
  ShardDtype dtype = ShardDtype::Bytes;
  int64_t count = 0;  // elements
};

class ShardFileWriter {
 public:
  // Creates PATH.tmp of the final size with the sections laid out (their bytes zero).
  ShardFileWriter(std::string path, const char (&magic)[9], uint64_t dataset_id,
                  const std::vector<ShardSectionSpec>& sections);
  ~ShardFileWriter();  // without commit(): removes PATH.tmp
  ShardFileWriter(const ShardFileWriter&) = delete;
  ShardFileWriter& operator=(const ShardFileWriter&) = delete;

  // The writable bytes of a section (in its dtype).
  void* data(const std::string& name);
  template <typename T>
  T* as(const std::string& name) {
    return static_cast<T*>(data(name));
  }
  // Checksums every section, writes the header, syncs and renames PATH.tmp to PATH.
  void commit();
  const std::string& path() const { return path_; }

 private:
  struct Section {
    ShardSectionSpec spec;
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  std::string path_;
  std::string tmp_;
  char magic_[8];
  uint64_t dataset_id_ = 0;
  std::vector<Section> sections_;
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  size_t size_ = 0;
};

// A validated, read-only mapping of one container file. Movable; unmaps on destruction.
class MappedShardFile {
 public:
  // verify_data: also check every section's checksum (reads the whole file); the header, the table
  // and the sizes are always checked.
  MappedShardFile(const std::string& path, const char (&magic)[9], const std::string& kind, bool verify_data);
  ~MappedShardFile();
  MappedShardFile(MappedShardFile&& other) noexcept;
  MappedShardFile& operator=(MappedShardFile&& other) noexcept;
  MappedShardFile(const MappedShardFile&) = delete;
  MappedShardFile& operator=(const MappedShardFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t datasetId() const { return dataset_id_; }
  uint64_t bytes() const { return size_; }
  bool has(const std::string& name) const;
  // The section's elements; a missing section or another dtype is a ShardFormatError.
  template <typename T>
  std::span<const T> get(const std::string& name, ShardDtype dtype) const {
    const auto raw = section(name, dtype);
    return {reinterpret_cast<const T*>(raw.data()), raw.size() / sizeof(T)};
  }
  ShardDtype dtypeOf(const std::string& name) const;
  // Raises a ShardFormatError "PATH: what" (for checks of the contents by the caller).
  [[noreturn]] void fail(const std::string& what) const;

 private:
  struct Section {
    std::string name;
    ShardDtype dtype;
    uint32_t crc;
    uint64_t offset;
    uint64_t bytes;
  };
  std::span<const uint8_t> section(const std::string& name, ShardDtype dtype) const;
  const Section* find(const std::string& name) const;
  void unmap();

  std::string path_;
  std::string kind_;  // "shard index" / "shard", for messages
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  uint64_t dataset_id_ = 0;
  std::vector<Section> sections_;
};

}  // namespace latentcell::data
