// Checksummed section containers (see ShardFile.h).
#include "data/ShardFile.h"

#include "core/Crc32c.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace latentcell::data {
namespace {

constexpr size_t kHeaderBytes = 64;
constexpr size_t kEntryBytes = 48;
constexpr size_t kNameBytes = 24;
constexpr uint64_t kAlign = 64;
constexpr size_t kCrcField = 56;  // offset of the header crc inside the header
// More sections than any latentcell file has; bounds the table a corrupt header can claim.
constexpr uint32_t kMaxSections = 4096;

template <typename T>
void store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));  // x86-64 and aarch64 are little-endian, as the format is
}
template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t alignUp(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

std::string errnoText() { return std::strerror(errno); }

// CRC of the header (crc field taken as zero) followed by the section table.
uint32_t headerCrc(const uint8_t* header, size_t table_bytes) {
  uint8_t copy[kHeaderBytes];
  std::memcpy(copy, header, kHeaderBytes);
  store<uint32_t>(copy + kCrcField, 0);
  return core::crc32c(header + kHeaderBytes, table_bytes, core::crc32c(copy, kHeaderBytes));
}

bool validDtype(uint8_t d) { return d >= 1 && d <= 6; }

}  // namespace

size_t dtypeSize(ShardDtype dtype) {
  switch (dtype) {
    case ShardDtype::Bytes: return 1;
    case ShardDtype::U16: return 2;
    case ShardDtype::U32: return 4;
    case ShardDtype::I32: return 4;
    case ShardDtype::I64: return 8;
    case ShardDtype::F32: return 4;
  }
  return 1;
}

const char* dtypeName(ShardDtype dtype) {
  switch (dtype) {
    case ShardDtype::Bytes: return "bytes";
    case ShardDtype::U16: return "uint16";
    case ShardDtype::U32: return "uint32";
    case ShardDtype::I32: return "int32";
    case ShardDtype::I64: return "int64";
    case ShardDtype::F32: return "float32";
  }
  return "?";
}

// ---- writer -------------------------------------------------------------------------------------

ShardFileWriter::ShardFileWriter(std::string path, const char (&magic)[9], uint64_t dataset_id,
                                 const std::vector<ShardSectionSpec>& sections)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), dataset_id_(dataset_id) {
  std::memcpy(magic_, magic, 8);
  uint64_t offset = alignUp(kHeaderBytes + kEntryBytes * sections.size());
  for (const auto& spec : sections) {
    if (spec.name.empty() || spec.name.size() >= kNameBytes)
      throw std::invalid_argument(fmt::format("{}: section name '{}' must have 1 to {} characters", path_, spec.name,
                                              kNameBytes - 1));
    if (spec.count < 0) throw std::invalid_argument(fmt::format("{}: section '{}' has a negative size", path_, spec.name));
    const uint64_t bytes = static_cast<uint64_t>(spec.count) * dtypeSize(spec.dtype);
    sections_.push_back({spec, offset, bytes});
    offset = alignUp(offset + bytes);
  }
  size_ = offset;
  fd_ = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(fmt::format("{}: cannot create ({})", tmp_, errnoText()));
  // posix_fallocate reserves the blocks now, so a full disk fails here and not as a SIGBUS when a
  // page of the mapping is first written.
  if (const int err = ::posix_fallocate(fd_, 0, static_cast<off_t>(size_)); err != 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
    throw std::runtime_error(
        fmt::format("{}: cannot reserve {} bytes ({}); free disk space or choose another output directory", tmp_,
                    size_, std::strerror(err)));
  }
  void* m = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (m == MAP_FAILED) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
    throw std::runtime_error(fmt::format("{}: cannot map {} bytes ({})", tmp_, size_, errnoText()));
  }
  map_ = static_cast<uint8_t*>(m);
}

ShardFileWriter::~ShardFileWriter() {
  if (map_) ::munmap(map_, size_);
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void* ShardFileWriter::data(const std::string& name) {
  for (auto& s : sections_)
    if (s.spec.name == name) return map_ + s.offset;
  throw std::logic_error(fmt::format("{}: no section '{}'", path_, name));
}

void ShardFileWriter::commit() {
  uint8_t* header = map_;
  std::memset(header, 0, kHeaderBytes);
  std::memcpy(header, magic_, 8);
  store<uint32_t>(header + 8, kShardFormatVersion);
  store<uint32_t>(header + 12, static_cast<uint32_t>(sections_.size()));
  store<uint64_t>(header + 16, size_);
  store<uint64_t>(header + 24, dataset_id_);
  for (size_t i = 0; i < sections_.size(); ++i) {
    const auto& s = sections_[i];
    uint8_t* e = map_ + kHeaderBytes + i * kEntryBytes;
    std::memset(e, 0, kEntryBytes);
    std::memcpy(e, s.spec.name.data(), s.spec.name.size());
    e[kNameBytes] = static_cast<uint8_t>(s.spec.dtype);
    store<uint32_t>(e + 28, core::crc32c(map_ + s.offset, s.bytes));
    store<uint64_t>(e + 32, s.offset);
    store<uint64_t>(e + 40, s.bytes);
  }
  store<uint32_t>(header + kCrcField, headerCrc(header, kEntryBytes * sections_.size()));
  if (::msync(map_, size_, MS_SYNC) != 0)
    throw std::runtime_error(fmt::format("{}: cannot write ({})", tmp_, errnoText()));
  ::munmap(map_, size_);
  map_ = nullptr;
  if (::fsync(fd_) != 0) throw std::runtime_error(fmt::format("{}: cannot sync ({})", tmp_, errnoText()));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string why = errnoText();
    ::unlink(tmp_.c_str());
    throw std::runtime_error(fmt::format("{}: cannot move {} into place ({})", path_, tmp_, why));
  }
}

// ---- reader -------------------------------------------------------------------------------------

MappedShardFile::MappedShardFile(const std::string& path, const char (&magic)[9], const std::string& kind,
                                 bool verify_data)
    : path_(path), kind_(kind) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(fmt::format("cannot open the {} ({})", kind_, errnoText()));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(fmt::format("the {} is not a regular file", kind_));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < kHeaderBytes) {
    ::close(fd);
    fail(fmt::format("truncated {}: {} bytes, smaller than the {}-byte header (re-run latentcell data convert)",
                     kind_, size_, kHeaderBytes));
  }
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) fail(fmt::format("cannot map the {} ({})", kind_, errnoText()));
  map_ = static_cast<const uint8_t*>(m);

  try {
    if (std::memcmp(map_, magic, 8) != 0)
      fail(fmt::format("bad magic: not a latentcell {} file (expected '{}'; make shards with latentcell data convert)",
                       kind_, std::string(magic, 8)));
    const uint32_t version = load<uint32_t>(map_ + 8);
    if (version != kShardFormatVersion)
      fail(fmt::format("{} format version {} is not the version {} this latentcell reads (re-run latentcell data "
                       "convert with this build, or use the latentcell that wrote it)",
                       kind_, version, kShardFormatVersion));
    const uint32_t count = load<uint32_t>(map_ + 12);
    if (count > kMaxSections || kHeaderBytes + kEntryBytes * static_cast<size_t>(count) > size_)
      fail(fmt::format("corrupt {} header: it lists {} sections, more than the file holds", kind_, count));
    const uint32_t stored_crc = load<uint32_t>(map_ + kCrcField);
    const uint32_t crc = headerCrc(map_, kEntryBytes * count);
    if (stored_crc != crc)
      fail(fmt::format("{} header checksum mismatch (stored {:#010x}, computed {:#010x}): the file is corrupt, "
                       "re-run latentcell data convert",
                       kind_, stored_crc, crc));
    const uint64_t recorded = load<uint64_t>(map_ + 16);
    if (recorded != size_)
      fail(fmt::format("{} has {} bytes but its header records {}: the file is {}; re-run latentcell data convert",
                       kind_, size_, recorded, size_ < recorded ? "truncated" : "damaged"));
    dataset_id_ = load<uint64_t>(map_ + 24);
    for (uint32_t i = 0; i < count; ++i) {
      const uint8_t* e = map_ + kHeaderBytes + i * kEntryBytes;
      Section s;
      s.name.assign(reinterpret_cast<const char*>(e), strnlen(reinterpret_cast<const char*>(e), kNameBytes));
      if (!validDtype(e[kNameBytes])) fail(fmt::format("{} section {} has an unknown dtype {}", kind_, i, e[kNameBytes]));
      s.dtype = static_cast<ShardDtype>(e[kNameBytes]);
      s.crc = load<uint32_t>(e + 28);
      s.offset = load<uint64_t>(e + 32);
      s.bytes = load<uint64_t>(e + 40);
      if (s.offset % kAlign != 0 || s.offset > size_ || s.bytes > size_ - s.offset || s.bytes % dtypeSize(s.dtype) != 0)
        fail(fmt::format("{} section '{}' (offset {}, {} bytes) does not fit the {}-byte file", kind_, s.name,
                         s.offset, s.bytes, size_));
      sections_.push_back(std::move(s));
    }
    if (verify_data)
      for (const auto& s : sections_) {
        const uint32_t c = core::crc32c(map_ + s.offset, s.bytes);
        if (c != s.crc)
          fail(fmt::format("checksum mismatch in {} section '{}' (stored {:#010x}, computed {:#010x}): the file is "
                           "corrupt, re-run latentcell data convert",
                           kind_, s.name, s.crc, c));
      }
  } catch (...) {
    unmap();
    throw;
  }
}

MappedShardFile::~MappedShardFile() { unmap(); }

MappedShardFile::MappedShardFile(MappedShardFile&& o) noexcept
    : path_(std::move(o.path_)),
      kind_(std::move(o.kind_)),
      map_(std::exchange(o.map_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      dataset_id_(o.dataset_id_),
      sections_(std::move(o.sections_)) {}

MappedShardFile& MappedShardFile::operator=(MappedShardFile&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    kind_ = std::move(o.kind_);
    map_ = std::exchange(o.map_, nullptr);
    size_ = std::exchange(o.size_, 0);
    dataset_id_ = o.dataset_id_;
    sections_ = std::move(o.sections_);
  }
  return *this;
}

void MappedShardFile::unmap() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
  map_ = nullptr;
}

void MappedShardFile::fail(const std::string& what) const { throw ShardFormatError(path_ + ": " + what); }

const MappedShardFile::Section* MappedShardFile::find(const std::string& name) const {
  for (const auto& s : sections_)
    if (s.name == name) return &s;
  return nullptr;
}

bool MappedShardFile::has(const std::string& name) const { return find(name) != nullptr; }

ShardDtype MappedShardFile::dtypeOf(const std::string& name) const {
  const Section* s = find(name);
  if (!s) fail(fmt::format("the {} has no section '{}'", kind_, name));
  return s->dtype;
}

std::span<const uint8_t> MappedShardFile::section(const std::string& name, ShardDtype dtype) const {
  const Section* s = find(name);
  if (!s) fail(fmt::format("the {} has no section '{}'", kind_, name));
  if (s->dtype != dtype)
    fail(fmt::format("{} section '{}' holds {}, expected {}", kind_, name, dtypeName(s->dtype), dtypeName(dtype)));
  return {map_ + s->offset, s->bytes};
}

}  // namespace latentcell::data
