// Safetensors reader/writer (see Safetensors.h for the format and the contract).
//
// Loading validates the whole header before touching tensor data, the same checks the reference
// Rust implementation makes (contiguous, non-overlapping offsets that exactly cover the data
// buffer; byte sizes that agree with dtype x shape), so a file accepted here is also accepted by
// safetensors.torch and vice versa. Tensor bytes are read straight into freshly allocated
// tensors, which then own their memory without a second full-file buffer.
#include "core/Safetensors.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace latentcell::core {

// The file stores little-endian bytes and we copy them verbatim into tensors.
static_assert(std::endian::native == std::endian::little,
              "safetensors IO copies raw bytes and assumes a little-endian host");

namespace {

using ordered_json = nlohmann::ordered_json;

constexpr const char* kMetadataKey = "__metadata__";
// The reference implementation refuses headers above 100 MB; a larger length is corruption, and
// refusing it up front avoids allocating whatever a garbage length field asks for.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  std::size_t bytes;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},
    {"BF16", at::kBFloat16, 2}, {"I64", at::kLong, 8}, {"I32", at::kInt, 4},
    {"I16", at::kShort, 2},  {"I8", at::kChar, 1},  {"U8", at::kByte, 1},
    {"BOOL", at::kBool, 1},
};

const DtypeInfo* dtypeByName(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtypeByType(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

std::string supportedDtypes() {
  std::string out;
  for (const auto& d : kDtypes) out += (out.empty() ? "" : " ") + std::string(d.name);
  return out;
}

// Error messages are promised to be one line (they end up in logs and CLI output), but they
// embed names and JSON parser text that may contain control characters.
std::string oneLine(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

[[noreturn]] void loadError(const std::string& path, const std::string& problem) {
  throw std::runtime_error(oneLine("loadSafetensors: '" + path + "': " + problem));
}

[[noreturn]] void saveError(const std::string& path, const std::string& problem) {
  throw std::runtime_error(oneLine("saveSafetensors: '" + path + "': " + problem));
}

std::string shapeString(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// ---------------------------------------------------------------------------------------------
// Writing

void writeAll(int fd, const void* data, std::size_t size, const std::string& tmp) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // Large single writes are allowed to be partial; cap them so progress is steady.
    const std::size_t chunk = std::min<std::size_t>(size, std::size_t{1} << 30);
    const ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      saveError(tmp, std::string("write failed: ") + std::strerror(errno) +
                         "; check free disk space and permissions");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Closes and removes the temporary file unless released, so a failed save leaves nothing behind.
struct TmpFile {
  int fd = -1;
  std::string path;
  bool keep = false;
  ~TmpFile() {
    if (fd >= 0) ::close(fd);
    if (!keep) ::unlink(path.c_str());
  }
};

}  // namespace

void saveSafetensors(const std::string& path, const NamedTensors& tensors,
                     const std::map<std::string, std::string>& metadata) {
  struct Entry {
    const std::string* name;
    const at::Tensor* tensor;
    const DtypeInfo* dtype;
    std::uint64_t bytes;
  };
  std::vector<Entry> entries;
  entries.reserve(tensors.size());
  std::set<std::string> seen;
  std::uint64_t offset = 0;

  ordered_json header = ordered_json::object();
  // Metadata first, as the reference writer does, so `head -c` on a file shows it.
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = std::move(meta);
  }
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey)
      saveError(path, "'__metadata__' is reserved for the metadata map and cannot name a tensor");
    if (!seen.insert(name).second)
      saveError(path, "duplicate tensor name '" + name + "'; every tensor needs a unique name");
    if (!tensor.defined()) saveError(path, "tensor '" + name + "' is undefined");
    if (tensor.layout() != at::kStrided)
      saveError(path, "tensor '" + name + "' is not dense (layout " +
                          c10::toString(tensor.layout()) + "); call .to_dense() first");
    const DtypeInfo* dtype = dtypeByType(tensor.scalar_type());
    if (!dtype)
      saveError(path, "tensor '" + name + "' has unsupported dtype " +
                          std::string(c10::toString(tensor.scalar_type())) +
                          "; supported: " + supportedDtypes() + " (convert it before saving)");
    const std::uint64_t bytes = static_cast<std::uint64_t>(tensor.numel()) * dtype->bytes;
    ordered_json info = ordered_json::object();
    info["dtype"] = dtype->name;
    info["shape"] = tensor.sizes().vec();
    info["data_offsets"] = {offset, offset + bytes};
    header[name] = std::move(info);
    entries.push_back({&name, &tensor, dtype, bytes});
    offset += bytes;
  }

  std::string headerText;
  try {
    headerText = header.dump();
  } catch (const nlohmann::json::exception& e) {
    // dump() rejects strings that are not valid UTF-8, which the format forbids too.
    saveError(path, std::string("a tensor name or metadata entry is not valid UTF-8 (") + e.what() +
                        ")");
  }
  // Padding to 8 bytes keeps the data buffer aligned for every supported dtype when the file is
  // memory-mapped; the reference writer pads with spaces the same way.
  headerText.append((8 - headerText.size() % 8) % 8, ' ');
  const std::uint64_t headerLen = headerText.size();

  TmpFile tmp;
  tmp.path = path + ".tmp";
  tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (tmp.fd < 0) {
    tmp.keep = true;  // nothing was created, so there is nothing to remove
    saveError(path, "cannot create '" + tmp.path + "': " + std::strerror(errno) +
                        "; check that the directory exists and is writable");
  }
  unsigned char lenBytes[8];
  std::memcpy(lenBytes, &headerLen, 8);  // little-endian host, see static_assert above
  writeAll(tmp.fd, lenBytes, 8, tmp.path);
  writeAll(tmp.fd, headerText.data(), headerText.size(), tmp.path);
  for (const Entry& e : entries) {
    // Converted one at a time so saving a large GPU model needs only one tensor's worth of
    // extra host memory.
    const at::Tensor cpu = e.tensor->detach().to(at::kCPU).contiguous();
    if (e.bytes > 0) writeAll(tmp.fd, cpu.const_data_ptr(), e.bytes, tmp.path);
  }
  if (::fsync(tmp.fd) != 0)
    saveError(path, "fsync of '" + tmp.path + "' failed: " + std::strerror(errno));
  const int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0)
    saveError(path, "close of '" + tmp.path + "' failed: " + std::strerror(errno));
  if (::rename(tmp.path.c_str(), path.c_str()) != 0)
    saveError(path, "cannot rename '" + tmp.path + "' to it: " + std::strerror(errno));
  tmp.keep = true;

  // Make the rename itself durable. Best effort: some filesystems refuse fsync on directories,
  // and the data is already safely on disk under one of the two names.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

namespace {

struct ParsedEntry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin, end;
};

std::uint64_t parseUnsigned(const std::string& path, const std::string& name, const char* field,
                            const ordered_json& v) {
  if (!v.is_number_unsigned())
    loadError(path, "tensor '" + name + "': " + field + " must hold non-negative integers, got " +
                        v.dump());
  return v.get<std::uint64_t>();
}

ParsedEntry parseEntry(const std::string& path, const std::string& name,
                       const ordered_json& info) {
  if (!info.is_object())
    loadError(path, "header entry '" + name + "' is not an object (got " +
                        std::string(info.type_name()) + ")");
  ParsedEntry e;
  e.name = name;
  const auto dt = info.find("dtype");
  if (dt == info.end() || !dt->is_string())
    loadError(path, "tensor '" + name + "' has no string \"dtype\" field");
  e.dtype = dtypeByName(dt->get<std::string>());
  if (!e.dtype)
    loadError(path, "tensor '" + name + "' has unknown dtype '" + dt->get<std::string>() +
                        "'; supported: " + supportedDtypes());

  const auto sh = info.find("shape");
  if (sh == info.end() || !sh->is_array())
    loadError(path, "tensor '" + name + "' has no array \"shape\" field");
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : *sh) {
    const std::uint64_t dim = parseUnsigned(path, name, "shape", d);
    if (dim > static_cast<std::uint64_t>(INT64_MAX)) overflow = true;
    overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
    e.shape.push_back(static_cast<std::int64_t>(dim));
  }
  std::uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, e.dtype->bytes, &nbytes);
  if (overflow) loadError(path, "tensor '" + name + "' has an absurdly large shape " + sh->dump());

  const auto off = info.find("data_offsets");
  if (off == info.end() || !off->is_array() || off->size() != 2)
    loadError(path, "tensor '" + name + "' needs \"data_offsets\": [begin, end]");
  e.begin = parseUnsigned(path, name, "data_offsets", (*off)[0]);
  e.end = parseUnsigned(path, name, "data_offsets", (*off)[1]);
  if (e.end < e.begin)
    loadError(path, "tensor '" + name + "' has data_offsets [" + std::to_string(e.begin) + ", " +
                        std::to_string(e.end) + "] with end before begin");
  if (e.end - e.begin != nbytes)
    loadError(path, "tensor '" + name + "': data_offsets [" + std::to_string(e.begin) + ", " +
                        std::to_string(e.end) + "] span " + std::to_string(e.end - e.begin) +
                        " bytes but dtype " + e.dtype->name + " with shape " +
                        shapeString(e.shape) + " needs " + std::to_string(nbytes) + " bytes");
  return e;
}

}  // namespace

SafetensorsData loadSafetensors(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    loadError(path, "file does not exist; check the path (relative paths resolve against '" +
                        std::filesystem::current_path(ec).string() + "')");
  if (std::filesystem::is_directory(path, ec))
    loadError(path, "is a directory, not a safetensors file");
  const std::uint64_t fileSize = std::filesystem::file_size(path, ec);
  if (ec) loadError(path, "cannot determine file size: " + ec.message());

  std::ifstream in(path, std::ios::binary);
  if (!in) loadError(path, std::string("cannot open for reading: ") + std::strerror(errno));

  if (fileSize < 8)
    loadError(path, "file is truncated: " + std::to_string(fileSize) +
                        " bytes, too short for the 8-byte header length; re-save or re-download it");
  unsigned char lenBytes[8];
  if (!in.read(reinterpret_cast<char*>(lenBytes), 8)) loadError(path, "read of header length failed");
  std::uint64_t headerLen = 0;
  std::memcpy(&headerLen, lenBytes, 8);
  if (headerLen > fileSize - 8)
    loadError(path, "header length " + std::to_string(headerLen) + " bytes is larger than the " +
                        std::to_string(fileSize - 8) +
                        " bytes after the length field; the file is truncated or not safetensors");
  if (headerLen > kMaxHeaderBytes)
    loadError(path, "header length " + std::to_string(headerLen) +
                        " bytes exceeds the 100 MB limit; the file is corrupt or not safetensors");

  std::string headerText(headerLen, '\0');
  if (!in.read(headerText.data(), static_cast<std::streamsize>(headerLen)))
    loadError(path, "read of the " + std::to_string(headerLen) + "-byte header failed");

  // nlohmann keeps only the last of duplicate keys; a duplicated tensor name would otherwise
  // surface later as a confusing gap in the offsets.
  std::set<std::string> keys;
  std::string duplicate;
  ordered_json header;
  try {
    header = ordered_json::parse(
        headerText,
        [&](int depth, ordered_json::parse_event_t event, ordered_json& parsed) {
          if (event == ordered_json::parse_event_t::key && depth == 1 && duplicate.empty() &&
              !keys.insert(parsed.get<std::string>()).second)
            duplicate = parsed.get<std::string>();
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    loadError(path, std::string("header is not valid JSON (") + e.what() +
                        "); the file is corrupt or not safetensors");
  }
  if (!header.is_object())
    loadError(path, "header JSON is a " + std::string(header.type_name()) + ", expected an object");
  if (!duplicate.empty()) loadError(path, "header names '" + duplicate + "' twice");

  SafetensorsData out;
  out.source = path;
  std::vector<ParsedEntry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object())
        loadError(path, "__metadata__ must be an object of string to string, got " +
                            std::string(value.type_name()));
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          loadError(path, "__metadata__ value for '" + k + "' is a " +
                              std::string(v.type_name()) +
                              ", but metadata must map strings to strings");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    entries.push_back(parseEntry(path, name, value));
  }

  // The data buffer must be tiled exactly: sorted by position, each tensor starts where the
  // previous one ended, the first at 0 and the last at the end of the file. Zero-byte tensors
  // sort before a non-empty one at the same offset.
  std::stable_sort(entries.begin(), entries.end(), [](const ParsedEntry& a, const ParsedEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const std::uint64_t dataSize = fileSize - 8 - headerLen;
  std::uint64_t cursor = 0;
  const std::string* prev = nullptr;
  for (const ParsedEntry& e : entries) {
    if (e.end > dataSize)
      loadError(path, "tensor '" + e.name + "' data_offsets end " + std::to_string(e.end) +
                          " is past the " + std::to_string(dataSize) +
                          "-byte data buffer; the file is truncated, re-save or re-download it");
    if (e.begin < cursor)
      loadError(path, "tensor '" + e.name + "' overlaps tensor '" + *prev + "' (begins at byte " +
                          std::to_string(e.begin) + ", before " + std::to_string(cursor) + ")");
    if (e.begin > cursor)
      loadError(path, "gap in the data buffer: bytes [" + std::to_string(cursor) + ", " +
                          std::to_string(e.begin) + ") before tensor '" + e.name +
                          "' belong to no tensor");
    cursor = e.end;
    prev = &e.name;
  }
  if (cursor != dataSize)
    loadError(path, "data buffer has " + std::to_string(dataSize - cursor) +
                        " trailing bytes not covered by any tensor (tensors end at byte " +
                        std::to_string(cursor) + " of " + std::to_string(dataSize) + ")");

  // Offsets are now known to be sequential, so one forward pass reads every tensor.
  out.tensors.reserve(entries.size());
  for (const ParsedEntry& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype->type));
    const std::uint64_t bytes = e.end - e.begin;
    if (bytes > 0 &&
        !in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes)))
      loadError(path, "read of tensor '" + e.name + "' failed (file changed while loading?)");
    if (e.dtype->type == at::kBool) {
      // torch assumes bools are 0 or 1; any other byte is undefined behaviour downstream.
      const auto* p = static_cast<const unsigned char*>(t.const_data_ptr());
      for (std::uint64_t i = 0; i < bytes; ++i)
        if (p[i] > 1)
          loadError(path, "BOOL tensor '" + e.name + "' holds byte value " +
                              std::to_string(p[i]) + " at element " + std::to_string(i) +
                              "; only 0 and 1 are valid");
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

const at::Tensor& SafetensorsData::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  std::string known;
  const std::size_t shown = std::min<std::size_t>(tensors.size(), 8);
  for (std::size_t i = 0; i < shown; ++i) known += (i ? ", " : "") + tensors[i].first;
  if (tensors.size() > shown) known += ", ... (" + std::to_string(tensors.size()) + " in total)";
  throw std::runtime_error(oneLine("safetensors: no tensor '" + name + "' in '" +
                                   (source.empty() ? std::string("<in memory>") : source) +
                                   "'; it has: " + (known.empty() ? "no tensors" : known)));
}

bool SafetensorsData::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(),
                     [&](const auto& p) { return p.first == name; });
}

}  // namespace latentcell::core
