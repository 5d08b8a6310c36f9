// h5ad IO on the HDF5 C API (see H5ad.h).
//
// Every read goes through Array (a dataset or an attribute) which checks, before anything is
// allocated, that the element count is plausible for the bytes actually stored and that every
// filter of the dataset can be decoded; HDF5's type conversion then turns any integer or float dtype
// into ours (integers saturate, so a 64-bit index never wraps into range). Structure is validated
// (indptr monotone and consistent with the data, indices and codes in range, lengths matching the
// frame) before the values are trusted, and the global heap objects behind variable-length strings
// (contiguous datasets and attributes) are bounds-checked before libhdf5 1.10 (which does not check
// them) copies them. All HDF5 calls run under one mutex, taken by each public entry point; the
// helpers below assume it is held.
#include "data/H5ad.h"

#include "core/Logging.h"

#include <fmt/format.h>
#include <hdf5.h>
#include <liblzf/lzf.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

namespace latentcell::data {
namespace {

// ---- process-wide HDF5 state --------------------------------------------------------------------

std::mutex& hdf5Mutex() {
  static std::mutex m;
  return m;
}

constexpr H5Z_filter_t kLzfFilter = 32000;  // registered to h5py, used by scanpy's caches

// The LZF decoder as h5py's lzf_filter.c defines the format: cd_values = {filter revision, LZF API
// version, chunk size in bytes}. The chunk size is the output size; without it (vlen data, whose
// cd_values are empty) the size is guessed and doubled on E2BIG. LZF expands at most ~88x (a 3-byte
// back-reference yields 264 bytes), which bounds every guess so corrupt input cannot demand memory.
size_t lzfDecode(unsigned flags, size_t cd_nelmts, const unsigned cd_values[], size_t nbytes,
                 size_t* buf_size, void** buf) {
  if (!(flags & H5Z_FLAG_REVERSE)) return 0;  // decoder only: HDF5 never asks us to encode
  const size_t limit = std::min<size_t>(nbytes * 90 + 64, UINT_MAX);
  size_t size = (cd_nelmts >= 3 && cd_values[2] != 0) ? cd_values[2] : 4 * std::max(*buf_size, nbytes);
  size = std::min(size, limit);
  for (;;) {
    void* out = std::malloc(size);
    if (!out) return 0;
    errno = 0;
    const unsigned n = lzf_decompress(*buf, static_cast<unsigned>(nbytes), out, static_cast<unsigned>(size));
    if (n != 0) {
      std::free(*buf);
      *buf = out;
      *buf_size = size;
      return n;
    }
    std::free(out);
    if (errno != E2BIG || size >= limit) return 0;  // EINVAL: corrupt stream
    size = std::min(size * 2, limit);
  }
}

// Callers hold the mutex.
void initHdf5() {
  static bool done = false;
  if (done) return;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our one-line errors replace HDF5's stack dumps
  static const H5Z_class2_t lzf = {H5Z_CLASS_T_VERS, kLzfFilter, 0, 1, "lzf", nullptr, nullptr, lzfDecode};
  if (H5Zregister(&lzf) < 0) throw std::runtime_error("libhdf5 refused to register the LZF filter (32000)");
  done = true;
}

std::unique_lock<std::mutex> lockHdf5() {
  std::unique_lock<std::mutex> lock(hdf5Mutex());
  initHdf5();
  return lock;
}

// The innermost message of HDF5's error stack (the specific reason), on one line; clears the stack.
std::string hdf5Detail() {
  std::string detail;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
        auto& s = *static_cast<std::string*>(out);
        if (s.empty() && e->desc && *e->desc) s = e->desc;
        return 0;
      },
      &detail);
  H5Eclear2(H5E_DEFAULT);
  std::replace(detail.begin(), detail.end(), '\n', ' ');
  return detail;
}

// An HDF5 identifier that closes itself.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer close) : id_(id), close_(close) {}
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      close_ = o.close_;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  hid_t release() { return std::exchange(id_, -1); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

// An open file and its path: every message names the file.
struct H5File {
  std::string path;
  Id id;
  // What checkHeapReferences needs to read raw bytes: HDF5 addresses are relative to `base`.
  uint64_t base = 0, file_size = 0;
  size_t sizeof_addr = 8, sizeof_size = 8;
  mutable std::map<uint64_t, std::map<uint32_t, uint64_t>> heaps;  // checked collections: index -> size
  mutable std::set<uint64_t> checked_headers;                      // object headers whose attributes passed
  mutable std::set<uint64_t> checked_heaps;                        // group link name heaps that passed

  // `n` raw bytes at file offset `offset`, which must lie within the file.
  std::string readBytes(uint64_t offset, uint64_t n, const std::string& what) const {
    if (offset > file_size || n > file_size - offset)
      fail(what + " points beyond the end of the file; the file is truncated or corrupt: re-create or re-download it");
    std::string bytes(n, '\0');
    std::ifstream in(path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    if (!in.read(bytes.data(), static_cast<std::streamsize>(n))) fail("cannot read " + what + " from the file");
    return bytes;
  }

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(path + ": " + what); }
  // An HDF5 call failed on data that passed our checks: the library's reason and the likely cause.
  [[noreturn]] void failHdf5(const std::string& what) const {
    const std::string detail = hdf5Detail();
    fail(what + (detail.empty() ? "" : " (HDF5: " + detail + ")") +
         "; the file is truncated or corrupt: re-create or re-download it");
  }
};

H5File openFile(const std::string& path) {
  H5File f;
  f.path = path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) f.fail("no such file; check the path");
  if (std::filesystem::is_directory(path, ec)) f.fail("is a directory, not an .h5ad file");
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 < 0) {
    const std::string detail = hdf5Detail();
    f.fail("cannot open the file" + (detail.empty() ? "" : " (HDF5: " + detail + ")") + "; check its permissions");
  }
  if (is_hdf5 == 0)
    f.fail("not an HDF5 file (h5ad files are HDF5; is it a .csv, .loom or .zarr, or a partial download?)");
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) f.failHdf5("cannot open as HDF5");
  f.id = Id(id, H5Fclose);
  const Id fcpl(H5Fget_create_plist(id), H5Pclose);
  hsize_t userblock = 0;
  if (fcpl.get() < 0 || H5Pget_sizes(fcpl.get(), &f.sizeof_addr, &f.sizeof_size) < 0 ||
      H5Pget_userblock(fcpl.get(), &userblock) < 0)
    f.failHdf5("cannot read the file's creation properties");
  if ((f.sizeof_addr != 4 && f.sizeof_addr != 8) || (f.sizeof_size != 4 && f.sizeof_size != 8))
    f.fail(fmt::format("uses {}-byte addresses and {}-byte lengths; latentcell reads files with 4 or 8 (as h5py "
                       "writes them): re-write the file with anndata",
                       f.sizeof_addr, f.sizeof_size));
  f.base = userblock;
  f.file_size = std::filesystem::file_size(path);
  return f;
}

std::vector<std::string> splitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t end = std::min(path.find('/', start), path.size());
    if (end > start) parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

void checkGroupHeap(const H5File& f, hid_t group, const std::string& name);  // see "object headers"

// Whether `path` (relative to `loc`) names an object. The components are looked up one group at a
// time (H5Lexists fails on a missing intermediate group), each group's link heap checked first.
bool exists(const H5File& f, hid_t loc, const std::string& path) {
  const auto parts = splitPath(path);
  if (parts.empty()) return false;
  Id opened;
  hid_t group = loc;
  std::string where;
  for (size_t i = 0; i < parts.size(); ++i) {
    checkGroupHeap(f, group, where.empty() ? "the root group" : where);
    if (H5Lexists(group, parts[i].c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    where += (where.empty() ? "" : "/") + parts[i];
    if (i + 1 == parts.size()) break;
    const hid_t next = H5Oopen(group, parts[i].c_str(), H5P_DEFAULT);
    if (next < 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    opened = Id(next, H5Oclose);
    if (H5Iget_type(next) != H5I_GROUP) return false;
    group = next;
  }
  const bool found = H5Oexists_by_name(group, parts.back().c_str(), H5P_DEFAULT) > 0;
  H5Eclear2(H5E_DEFAULT);
  return found;
}

Id openObject(const H5File& f, hid_t loc, const std::string& key, const std::string& name) {
  if (!exists(f, loc, key)) f.fail(name + " not found; the file does not hold it");
  const hid_t id = H5Oopen(loc, key.c_str(), H5P_DEFAULT);
  if (id < 0) f.failHdf5("cannot open " + name);
  return Id(id, H5Oclose);
}

bool isGroup(hid_t obj) { return H5Iget_type(obj) == H5I_GROUP; }
bool isDataset(hid_t obj) { return H5Iget_type(obj) == H5I_DATASET; }

std::string dtypeName(hid_t type) {
  const size_t bits = 8 * H5Tget_size(type);
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: return fmt::format("{}int{}", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    case H5T_FLOAT: return fmt::format("float{}", bits);
    case H5T_ENUM: return H5Tget_nmembers(type) == 2 ? "bool" : "enum";
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_REFERENCE: return "reference";
    default: return "unsupported";
  }
}

template <class T>
hid_t nativeType() {
  if constexpr (std::is_same_v<T, float>) return H5T_NATIVE_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return H5T_NATIVE_DOUBLE;
  else if constexpr (std::is_same_v<T, int8_t>) return H5T_NATIVE_INT8;
  else if constexpr (std::is_same_v<T, int32_t>) return H5T_NATIVE_INT32;
  else if constexpr (std::is_same_v<T, int64_t>) return H5T_NATIVE_INT64;
  else static_assert(sizeof(T) == 0, "no HDF5 type for T");
}

void checkObjectHeader(const H5File& f, hid_t obj, const std::string& owner);  // see "object headers"

// A dataset or an attribute: both are typed arrays with a dataspace and are read the same way.
class Array {
 public:
  static Array dataset(const H5File& f, Id id, std::string name) {
    checkObjectHeader(f, id.get(), name);
    Array a(f, std::move(name), false);
    a.id_ = std::move(id);
    a.init(H5Dget_type(a.id_.get()), H5Dget_space(a.id_.get()));
    a.checkStorage();
    return a;
  }
  static Array dataset(const H5File& f, hid_t loc, const std::string& key, const std::string& name) {
    Id obj = openObject(f, loc, key, name);
    if (!isDataset(obj.get())) f.fail(name + " is a group where an array was expected; the file layout is not h5ad");
    return dataset(f, std::move(obj), name);
  }
  static Array attribute(const H5File& f, hid_t obj, const std::string& attr, const std::string& owner) {
    Array a(f, owner + " attribute '" + attr + "'", true);
    a.owner_ = obj;
    a.attr_name_ = attr;
    checkObjectHeader(f, obj, owner);
    const hid_t id = H5Aopen(obj, attr.c_str(), H5P_DEFAULT);
    if (id < 0) f.failHdf5("cannot open " + a.name_);
    a.id_ = Id(id, H5Aclose);
    a.init(H5Aget_type(id), H5Aget_space(id));
    return a;
  }

  const std::string& name() const { return name_; }
  hid_t id() const { return id_.get(); }
  hid_t type() const { return type_.get(); }
  H5T_class_t typeClass() const { return H5Tget_class(type_.get()); }
  int rank() const { return static_cast<int>(dims_.size()); }
  const std::vector<hsize_t>& dims() const { return dims_; }
  int64_t size() const { return size_; }
  bool scalar() const { return scalar_; }
  std::string dtype() const { return dtypeName(type_.get()); }
  [[noreturn]] void fail(const std::string& what) const { f_->fail(name_ + (what[0] == '[' ? "" : " ") + what); }

  void read(hid_t memtype, void* buf) const {
    if (size_ == 0) return;
    const herr_t r = attr_ ? H5Aread(id_.get(), memtype, buf)
                           : H5Dread(id_.get(), memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (r < 0) f_->failHdf5("cannot read " + name_);
  }
  // Entries [first, first + count) along the first axis (with all of the other axes), of a dataset.
  void readRows(hid_t memtype, void* buf, int64_t first, int64_t count) const {
    if (count == 0) return;
    if (attr_ || dims_.empty() || first < 0 || count < 0 || static_cast<hsize_t>(first + count) > dims_[0])
      fail(fmt::format("has no rows [{}, {})", first, first + count));
    std::vector<hsize_t> start(dims_.size(), 0), extent = dims_;
    start[0] = static_cast<hsize_t>(first);
    extent[0] = static_cast<hsize_t>(count);
    Id file_space(H5Scopy(space_.get()), H5Sclose);
    Id mem_space(H5Screate_simple(rank(), extent.data(), nullptr), H5Sclose);
    if (file_space.get() < 0 || mem_space.get() < 0 ||
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, extent.data(), nullptr) < 0 ||
        H5Dread(id_.get(), memtype, mem_space.get(), file_space.get(), H5P_DEFAULT, buf) < 0)
      f_->failHdf5("cannot read " + name_);
  }
  hid_t space() const { return space_.get(); }
  bool isAttribute() const { return attr_; }
  const H5File* file() const { return f_; }
  hid_t owner() const { return owner_; }                       // attributes: the object holding it
  const std::string& attributeName() const { return attr_name_; }  // attributes: its name

 private:
  Array(const H5File& f, std::string name, bool attr) : f_(&f), name_(std::move(name)), attr_(attr) {}

  void init(hid_t type, hid_t space) {
    type_ = Id(type, H5Tclose);
    space_ = Id(space, H5Sclose);
    if (type < 0 || space < 0) f_->failHdf5("cannot read the type of " + name_);
    const H5S_class_t cls = H5Sget_simple_extent_type(space);
    scalar_ = cls == H5S_SCALAR;
    const int ndims = H5Sget_simple_extent_ndims(space);
    if (ndims < 0 || ndims > 32) f_->failHdf5("cannot read the shape of " + name_);
    dims_.resize(ndims);
    if (ndims > 0) H5Sget_simple_extent_dims(space, dims_.data(), nullptr);
    uint64_t n = cls == H5S_NULL ? 0 : 1;
    for (hsize_t d : dims_) {
      if (d != 0 && n > (uint64_t{1} << 62) / d) fail("claims an impossible number of elements; the file is corrupt");
      n *= d;
    }
    size_ = static_cast<int64_t>(n);
  }

  // Compressed chunks hold at most ~1000x their size (deflate's limit; LZF's is ~90x), so a dataset
  // claiming more elements than that is corrupt, and must not drive an allocation.
  void checkStorage() const {
    Id plist(H5Dget_create_plist(id_.get()), H5Pclose);
    const int nfilters = plist.get() < 0 ? 0 : H5Pget_nfilters(plist.get());
    for (int i = 0; i < nfilters; ++i) {
      unsigned flags = 0, config = 0;
      size_t nvalues = 0;
      char filter_name[64] = {};
      const H5Z_filter_t id = H5Pget_filter2(plist.get(), static_cast<unsigned>(i), &flags, &nvalues, nullptr,
                                             sizeof(filter_name), filter_name, &config);
      if (id < 0) f_->failHdf5("cannot read the filters of " + name_);
      if (H5Zfilter_avail(id) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        fail(fmt::format("is compressed with HDF5 filter {} ('{}'), which latentcell cannot decode; re-write "
                         "the file with gzip or lzf (adata.write_h5ad(path, compression='gzip'))",
                         id, filter_name));
      }
    }
    const uint64_t stored = H5Dget_storage_size(id_.get());
    const uint64_t element = std::max<size_t>(H5Tget_size(type_.get()), 1);
    const uint64_t plausible = stored * 1100 + (uint64_t{1} << 20);
    if (static_cast<uint64_t>(size_) > plausible / element)
      fail(fmt::format("claims {} elements but only {} bytes are stored; the file is truncated or corrupt: "
                       "re-create or re-download it",
                       size_, stored));
  }

  const H5File* f_;
  std::string name_;
  bool attr_;
  hid_t owner_ = -1;  // not owned: the caller keeps the object open while the attribute is read
  std::string attr_name_;
  Id id_, type_, space_;
  std::vector<hsize_t> dims_;
  int64_t size_ = 0;
  bool scalar_ = false;
};

void requireNumeric(const Array& a) {
  const auto cls = a.typeClass();
  if (cls != H5T_INTEGER && cls != H5T_FLOAT)
    a.fail("has dtype " + a.dtype() + " where numbers were expected; the file layout is not h5ad");
}
void requireInteger(const Array& a) {
  if (a.typeClass() != H5T_INTEGER)
    a.fail("has dtype " + a.dtype() + " where integers were expected; the file layout is not h5ad");
}
void requireVector(const Array& a) {
  if (a.rank() != 1) a.fail(fmt::format("is {}-D where a 1-D array was expected; the file layout is not h5ad", a.rank()));
}

// Any integer or float dtype, converted by HDF5 (integers saturate rather than wrap).
template <class T>
std::vector<T> readNumbers(const Array& a) {
  requireNumeric(a);
  std::vector<T> out(static_cast<size_t>(a.size()));
  a.read(nativeType<T>(), out.data());
  return out;
}

template <class T>
std::vector<T> readNumberRows(const Array& a, int64_t first, int64_t count, int64_t width = 1) {
  std::vector<T> out(static_cast<size_t>(count * width));
  a.readRows(nativeType<T>(), out.data(), first, count);
  return out;
}

uint64_t littleEndian(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// The objects of the global heap collection at `addr` (index -> size), parsed the way libhdf5's H5HG
// parses them but with bounds checks.
const std::map<uint32_t, uint64_t>& heapCollection(const H5File& f, uint64_t addr, const Array& a) {
  if (const auto it = f.heaps.find(addr); it != f.heaps.end()) return it->second;
  auto corrupt = [&](const char* why) {
    a.fail(fmt::format("points into a corrupt global heap collection at byte {} ({}); the file is corrupt: "
                       "re-create or re-download it",
                       addr, why));
  };
  const uint64_t header = 8 + f.sizeof_size, object_header = 8 + f.sizeof_size;
  const std::string head = f.readBytes(f.base + addr, header, a.name() + "'s strings");
  if (head.compare(0, 4, "GCOL") != 0 || head[4] != 1) corrupt("no collection signature");
  const uint64_t size = littleEndian(head.data() + 8, f.sizeof_size);
  if (size < header) corrupt("impossible size");
  const std::string bytes = f.readBytes(f.base + addr, size, a.name() + "'s strings");
  std::map<uint32_t, uint64_t> objects;
  for (uint64_t p = header; p < size;) {
    if (size - p < object_header) break;  // too small for an object: free space, as H5HG reads it
    const auto index = static_cast<uint32_t>(littleEndian(bytes.data() + p, 2));
    const uint64_t object_size = littleEndian(bytes.data() + p + 8, f.sizeof_size);
    if (object_size > size) corrupt("object larger than its collection");
    // Index 0 is the free space, whose size includes its header; objects are padded to 8 bytes.
    const uint64_t extent = index > 0 ? object_header + ((object_size + 7) & ~uint64_t{7}) : object_size;
    if (extent == 0) corrupt("empty free-space record");
    if (index > 0) {
      if (object_header + object_size > size - p) corrupt("object beyond its collection");
      objects[index] = object_size;
    }
    p += extent;
  }
  return f.heaps.emplace(addr, std::move(objects)).first->second;
}

// libhdf5 1.10 trusts a global heap collection's object table (where variable-length strings live)
// and the heap references that point into it: a corrupt size or index makes it copy out of bounds.
// So before variable-length strings are read, every element's reference (4-byte length, address,
// 4-byte index, as the format stores it) is checked against the collection. `raw` holds them.
void checkHeapReferences(const H5File& f, const Array& a, const std::string& raw) {
  const size_t element = 4 + f.sizeof_addr + 4;
  for (int64_t i = 0; i < a.size(); ++i) {
    const char* p = raw.data() + i * element;
    const uint64_t length = littleEndian(p, 4);
    const uint64_t addr = littleEndian(p + 4, f.sizeof_addr);
    const auto index = static_cast<uint32_t>(littleEndian(p + 4 + f.sizeof_addr, 4));
    if (addr == 0) continue;  // HDF5's null reference: nothing is read
    const auto& objects = heapCollection(f, addr, a);
    const auto it = objects.find(index);
    if (it == objects.end() || it->second != length)
      a.fail(fmt::format("[{}] points to a missing global heap object; the file is corrupt: re-create or "
                         "re-download it",
                         i));
  }
}

// The raw references of a contiguous dataset, read from the file; nullopt for chunked and compact
// datasets, which offer no raw access and stay with libhdf5's own checks.
std::optional<std::string> rawDatasetReferences(const H5File& f, const Array& a) {
  const haddr_t offset = H5Dget_offset(a.id());
  if (offset == HADDR_UNDEF) {
    H5Eclear2(H5E_DEFAULT);
    return std::nullopt;
  }
  return f.readBytes(f.base + offset, static_cast<uint64_t>(a.size()) * (4 + f.sizeof_addr + 4), a.name());
}

// ---- object headers -------------------------------------------------------------------------
//
// libhdf5 1.10 decodes attribute messages without checking that their fields fit the message (found
// by fuzz_h5ad: a heap overflow inside H5Aexists; libhdf5 2.0 reports "ran off end of input buffer"),
// and it has no API for an attribute's raw data. So latentcell reads the object headers of the
// objects whose attributes it uses itself, as the HDF5 file format specification lays them out
// (version 1 and 2 headers, continuation chunks, attribute messages of versions 1 to 3), every read
// bounds-checked: attribute messages whose name, datatype or dataspace run past the message, and
// datatypes (of datasets and attributes) with implausible sizes, are rejected before libhdf5 uses
// them, and the heap references of string attributes are found there.
// Attributes in dense storage (a fractal heap: objects with many attributes, which h5py and anndata
// do not write) and shared messages are left to libhdf5. HDF5 >= 1.12 addresses objects by tokens
// and checks its own decoding, so there the headers are not read.

// An attribute message's name and where its values start, inside its object header chunk.
struct AttributeMessage {
  std::string name;
  uint64_t values_at = 0, end = 0;  // offsets in the chunk
};

// Where the datatype encoding at `at` in `b` ends, checked to stay below `limit`, with the sizes of
// its members plausible (libhdf5 1.10 copies enum values and array elements, and allocates
// conversion buffers, with the sizes the file claims: fuzz_h5ad found an enum whose 2048-byte base
// type overflowed its message, and a string dataset whose 1.7 GB character type made every read
// allocate gigabytes). Compound types, which h5ad files do not use, are taken at their declared
// length. `corrupt` throws.
template <typename Byte, typename Field, typename Corrupt>
uint64_t datatypeEnd(const std::string& b, uint64_t at, uint64_t limit, int depth, const Byte& byte, const Field& field,
                     const Corrupt& corrupt) {
  if (depth > 8 || at > limit || limit - at < 8) corrupt("a datatype is malformed");
  const uint64_t cls = byte(b, at) & 0x0F, version = byte(b, at) >> 4;
  const uint64_t bits = field(b, at + 1, 3), size = field(b, at + 4, 4);
  uint64_t end = at + 8;
  const auto need = [&](uint64_t n) {
    if (n > limit - end) corrupt("a datatype runs past its message");
    end += n;
  };
  const auto atomic = [&](uint64_t properties, bool bit_layout) {
    if (size == 0 || size > 64) corrupt("a number type has an implausible size");
    need(properties);
    // Bit offset and precision (the first two properties) must lie within the size.
    if (bit_layout && field(b, at + 8, 2) + field(b, at + 10, 2) > 8 * size)
      corrupt("a number type has more bits than bytes");
  };
  switch (cls) {
    case 0: atomic(4, true); break;    // integer: offset, precision
    case 1: atomic(12, true); break;   // float: offset, precision, exponent and mantissa layout, bias
    case 2: atomic(2, false); break;   // time
    case 4: atomic(4, true); break;    // bitfield
    case 3:                            // fixed-length string
    case 6:                            // compound: taken at its declared length, not parsed
    case 7: break;                     // reference
    case 5: need(bits & 0xFF); break;  // opaque: its tag, padding included
    case 8: {                          // enum: base type, names, values
      const uint64_t members = bits & 0xFFFF;
      end = datatypeEnd(b, end, limit, depth + 1, byte, field, corrupt);
      const uint64_t base_size = field(b, at + 8 + 4, 4);
      if (base_size == 0 || base_size > 8 || base_size != size) corrupt("an enum has an implausible base type");
      for (uint64_t m = 0; m < members; ++m) {  // NUL-terminated names, padded to 8 before version 3
        uint64_t n = 0;
        while (byte(b, end + n) != 0) ++n;
        need(version >= 3 ? n + 1 : (n + 8) / 8 * 8);
      }
      if (members > (limit - end) / base_size) corrupt("enum values run past their message");
      end += members * base_size;
      break;
    }
    case 9: end = datatypeEnd(b, end, limit, depth + 1, byte, field, corrupt); break;  // vlen: base type
    case 10: {  // array: rank, dimensions (and permutations before version 3), base type
      const uint64_t rank = byte(b, end);
      need(version >= 3 ? 1 : 4);
      need(rank * (version >= 3 ? 4 : 8));
      end = datatypeEnd(b, end, limit, depth + 1, byte, field, corrupt);
      break;
    }
    default: corrupt("a datatype of unknown class");
  }
  return end;
}

// Walks the object header of `obj`: calls `message(chunk, type, data, size)` for every message and
// `attribute(chunk, attribute message)` for every attribute message, whose framing it checks first;
// stops when either returns true. Corrupt framing throws, naming `owner`.
template <typename OnMessage, typename OnAttribute>
void visitObjectHeader(const H5File& f, hid_t obj, const std::string& owner, OnMessage&& message,
                       OnAttribute&& attribute) {
#if H5_VERSION_GE(1, 12, 0)
  return;
#else
  H5O_info_t info;
  if (H5Oget_info2(obj, &info, H5O_INFO_BASIC) < 0) f.failHdf5("cannot locate the object header of " + owner);
  const std::string what = owner + "'s object header";
  const auto corrupt = [&](const char* why) {
    f.fail(fmt::format("{} has a corrupt object header ({}); the file is corrupt: re-create or re-download it", owner,
                       why));
  };
  const uint64_t start = f.base + info.addr;
  if (start >= f.file_size) corrupt("it lies beyond the end of the file");
  const std::string prefix = f.readBytes(start, std::min<uint64_t>(34, f.file_size - start), what);
  const auto byte = [&](const std::string& b, uint64_t at) -> uint64_t {
    if (at >= b.size()) corrupt("a field lies beyond its chunk");
    return static_cast<unsigned char>(b[at]);
  };
  const auto field = [&](const std::string& b, uint64_t at, size_t n) {
    if (at > b.size() || n > b.size() - at) corrupt("a field lies beyond its chunk");
    return littleEndian(b.data() + at, n);
  };
  const bool v2 = prefix.compare(0, 4, "OHDR") == 0;
  size_t message_header = 8;
  std::vector<std::pair<uint64_t, uint64_t>> chunks;  // [begin, end) in the file, messages only
  if (v2) {
    if (byte(prefix, 4) != 2) corrupt("unknown version");
    const uint64_t flags = byte(prefix, 5);
    uint64_t p = 6 + ((flags & 0x20) ? 16 : 0) + ((flags & 0x10) ? 4 : 0);
    const size_t width = size_t{1} << (flags & 3);
    const uint64_t size = field(prefix, p, width);
    p += width;
    message_header = (flags & 0x04) ? 6 : 4;
    chunks.emplace_back(start + p, start + p + size);
  } else {
    if (byte(prefix, 0) != 1) corrupt("unknown version");
    chunks.emplace_back(start + 16, start + 16 + field(prefix, 8, 4));
  }
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (c >= 256) corrupt("too many continuation chunks");
    const auto [begin, end] = chunks[c];
    if (end < begin) corrupt("a chunk of negative size");
    std::string b = f.readBytes(begin, end - begin, what);
    uint64_t p = 0;
    if (v2 && c > 0) {  // continuation chunks: signature, messages, checksum
      if (b.size() < 8 || b.compare(0, 4, "OCHK") != 0) corrupt("a continuation chunk without its signature");
      p = 4;
      b.resize(b.size() - 4);
    }
    while (p + message_header <= b.size()) {
      const uint64_t type = v2 ? byte(b, p) : field(b, p, 2);
      const uint64_t size = v2 ? field(b, p + 1, 2) : field(b, p + 2, 2);
      const uint64_t flags = v2 ? byte(b, p + 3) : byte(b, p + 4);
      const uint64_t data = p + message_header;
      if (size > b.size() - data) corrupt("a message runs past its chunk");
      if (message(b, type, data, size)) return;
      if (type == 0x03 && !(flags & 0x02)) datatypeEnd(b, data, data + size, 0, byte, field, corrupt);  // datatype
      if (type == 0x10) {  // continuation: address and length of the next chunk
        const uint64_t addr = field(b, data, f.sizeof_addr), length = field(b, data + f.sizeof_addr, f.sizeof_size);
        if (addr > f.file_size || length > f.file_size) corrupt("a continuation beyond the file");
        chunks.emplace_back(f.base + addr, f.base + addr + length);
      } else if (type == 0x0C && !(flags & 0x02)) {  // an attribute (not a shared message)
        const uint64_t version = byte(b, data);
        if (version < 1 || version > 3) corrupt("an attribute message of unknown version");
        if (size < 8) corrupt("an attribute message shorter than its fields");
        const uint64_t name_size = field(b, data + 2, 2), type_size = field(b, data + 4, 2),
                       space_size = field(b, data + 6, 2);
        const auto pad = [&](uint64_t n) { return version == 1 ? (n + 7) / 8 * 8 : n; };
        AttributeMessage m;
        m.end = data + size;
        const uint64_t name_at = data + (version == 3 ? 9 : 8);
        m.values_at = name_at + pad(name_size) + pad(type_size) + pad(space_size);
        if (name_size == 0 || m.values_at > m.end) corrupt("an attribute's name, type or shape runs past its message");
        const size_t name_length = strnlen(b.data() + name_at, name_size);
        if (name_length == name_size) corrupt("an attribute name without its terminating NUL");
        m.name.assign(b.data() + name_at, name_length);
        // The values must fit the message: elements (from the dataspace) times the element size
        // (from the datatype; a variable-length element is a heap reference). libhdf5 1.10 copies
        // them without checking. Shared datatypes or dataspaces live elsewhere and are left alone.
        const uint64_t attr_flags = version == 1 ? 0 : byte(b, data + 1);
        if (!(attr_flags & 0x03)) {
          const uint64_t type_at = name_at + pad(name_size), space_at = type_at + pad(type_size);
          if (type_size < 8 || space_size < 4) corrupt("an attribute's datatype or dataspace is too short");
          datatypeEnd(b, type_at, type_at + type_size, 0, byte, field, corrupt);
          const uint64_t type_class = byte(b, type_at) & 0x0F;
          const uint64_t element = type_class == 9 ? 4 + f.sizeof_addr + 4 : field(b, type_at + 4, 4);
          const uint64_t space_version = byte(b, space_at), rank = byte(b, space_at + 1);
          const uint64_t dims_at = space_at + (space_version == 1 ? 8 : 4);
          if ((space_version != 1 && space_version != 2) || rank > 32 ||
              dims_at + rank * f.sizeof_size > space_at + space_size)
            corrupt("an attribute's dataspace is malformed");
          uint64_t elements = space_version == 2 && byte(b, space_at + 3) == 2 ? 0 : 1;  // type 2: null
          for (uint64_t d = 0; d < rank; ++d) {
            const uint64_t extent = field(b, dims_at + d * f.sizeof_size, f.sizeof_size);
            if (extent != 0 && elements > (m.end - m.values_at) / extent) corrupt("an attribute's values run past its message");
            elements *= extent;
          }
          if (element != 0 && elements > (m.end - m.values_at) / element)
            corrupt("an attribute's values run past its message");
        }
        if (attribute(b, m)) return;
      }
      p = data + size;
    }
  }
#endif
}

// Checks the datatype and attribute messages of `obj` before libhdf5 decodes or converts with them;
// each object header is read once per file.
void checkObjectHeader(const H5File& f, hid_t obj, const std::string& owner) {
#if !H5_VERSION_GE(1, 12, 0)
  H5O_info_t info;
  if (H5Oget_info2(obj, &info, H5O_INFO_BASIC) < 0) f.failHdf5("cannot locate the object header of " + owner);
  if (!f.checked_headers.insert(info.addr).second) return;
  visitObjectHeader(
      f, obj, owner, [](const std::string&, uint64_t, uint64_t, uint64_t) { return false; },
      [](const std::string&, const AttributeMessage&) { return false; });
#endif
}

// H5Aexists after checkObjectHeader.
bool hasAttribute(const H5File& f, hid_t obj, const std::string& owner, const char* attr) {
  checkObjectHeader(f, obj, owner);
  const htri_t r = H5Aexists(obj, attr);
  if (r < 0) H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

// The raw heap references of a string attribute, from its owner's object header; nullopt when the
// header holds no such message (see above).
std::optional<std::string> rawAttributeReferences(const H5File& f, const Array& a) {
  const uint64_t data_bytes = static_cast<uint64_t>(a.size()) * (4 + f.sizeof_addr + 4);
  std::optional<std::string> raw;
  visitObjectHeader(
      f, a.owner(), a.name(), [](const std::string&, uint64_t, uint64_t, uint64_t) { return false; },
      [&](const std::string& chunk, const AttributeMessage& m) {
        if (m.name != a.attributeName()) return false;
        if (data_bytes > m.end - m.values_at) a.fail("has more values than its message holds; the file is corrupt");
        raw = chunk.substr(m.values_at, data_bytes);
        return true;
      });
  return raw;
}

// Old-style groups (what h5py and anndata write) keep their link names in a local heap, whose free
// list libhdf5 1.10 follows without a cycle check and whose size it allocates before reading
// (fuzz_h5ad: a looping free list made it allocate until the machine ran out of memory; a claimed
// size of 2.9 GB in a 38 KB file). So before latentcell looks anything up in a group, the group's
// heap must lie inside the file and its free list must stay inside the heap without looping.
void checkGroupHeap(const H5File& f, hid_t group, const std::string& name) {
#if !H5_VERSION_GE(1, 12, 0)
  std::optional<uint64_t> heap;
  visitObjectHeader(
      f, group, name,
      [&](const std::string& chunk, uint64_t type, uint64_t data, uint64_t size) {
        if (type != 0x11) return false;  // symbol table: B-tree address, local heap address
        if (size < 2 * f.sizeof_addr) f.fail(name + " has a corrupt symbol table message; the file is corrupt");
        heap = littleEndian(chunk.data() + data + f.sizeof_addr, f.sizeof_addr);
        return true;
      },
      [](const std::string&, const AttributeMessage&) { return false; });
  if (!heap || !f.checked_heaps.insert(*heap).second) return;  // new-style groups have no local heap
  const auto corrupt = [&](const char* why) {
    f.fail(fmt::format("{} has a corrupt link name heap ({}); the file is corrupt: re-create or re-download it", name,
                       why));
  };
  const size_t ss = f.sizeof_size;
  const std::string head = f.readBytes(f.base + *heap, 8 + 2 * ss + f.sizeof_addr, name + "'s link name heap");
  if (head.compare(0, 4, "HEAP") != 0 || head[4] != 0) corrupt("no heap signature");
  const uint64_t size = littleEndian(head.data() + 8, ss);
  uint64_t free_block = littleEndian(head.data() + 8 + ss, ss);
  const uint64_t data_addr = littleEndian(head.data() + 8 + 2 * ss, f.sizeof_addr);
  if (data_addr > f.file_size || size > f.file_size - data_addr) corrupt("it runs past the end of the file");
  const std::string data = f.readBytes(f.base + data_addr, size, name + "'s link name heap");
  const uint64_t none = ss == 8 ? ~uint64_t{0} : 0xFFFFFFFFu;  // libhdf5 ends the list with 1 or all ones
  std::set<uint64_t> seen;
  while (free_block != 1 && free_block != none) {
    if (!seen.insert(free_block).second) corrupt("its free list loops");
    if (free_block >= size || size - free_block < 2 * ss) corrupt("its free list points outside it");
    const uint64_t next = littleEndian(data.data() + free_block, ss);
    if (littleEndian(data.data() + free_block + ss, ss) > size - free_block) corrupt("a free block runs past it");
    free_block = next;
  }
#endif
}

std::vector<std::string> readStrings(const Array& a) {
  if (a.typeClass() != H5T_STRING) a.fail("has dtype " + a.dtype() + " where strings were expected");
  const size_t n = static_cast<size_t>(a.size());
  std::vector<std::string> out(n);
  if (H5Tis_variable_str(a.type()) > 0) {
    Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(a.type()));  // HDF5 does not convert between character sets
    const auto raw = a.isAttribute() ? rawAttributeReferences(*a.file(), a) : rawDatasetReferences(*a.file(), a);
    if (raw) checkHeapReferences(*a.file(), a, *raw);
    std::vector<char*> ptrs(n, nullptr);
    // The library allocates the strings (also when the read fails half-way): always give them back.
    struct Reclaim {
      hid_t type, space;
      std::vector<char*>& ptrs;
      ~Reclaim() {
        if (ptrs.empty()) return;
#if H5_VERSION_GE(1, 12, 0)
        H5Treclaim(type, space, H5P_DEFAULT, ptrs.data());
#else  // Debian's 1.10 declares H5Treclaim but does not export it
        H5Dvlen_reclaim(type, space, H5P_DEFAULT, ptrs.data());
#endif
      }
    } reclaim{mem.get(), a.space(), ptrs};
    a.read(mem.get(), ptrs.data());
    for (size_t i = 0; i < n; ++i)
      if (ptrs[i]) out[i] = ptrs[i];
  } else {
    const size_t len = H5Tget_size(a.type());
    Id mem(H5Tcopy(a.type()), H5Tclose);
    std::vector<char> buf(n * len);
    a.read(mem.get(), buf.data());
    const bool space_padded = H5Tget_strpad(a.type()) == H5T_STR_SPACEPAD;
    for (size_t i = 0; i < n; ++i) {
      const char* s = buf.data() + i * len;
      size_t l = strnlen(s, len);
      if (space_padded)
        while (l > 0 && s[l - 1] == ' ') --l;
      out[i].assign(s, l);
    }
  }
  return out;
}

// Booleans as h5py writes them (an HDF5 enum FALSE/TRUE over int8), or plain integers.
std::vector<uint8_t> readBools(const Array& a) {
  std::vector<uint8_t> out(static_cast<size_t>(a.size()));
  if (a.typeClass() == H5T_ENUM) {
    Id native(H5Tget_native_type(a.type(), H5T_DIR_ASCEND), H5Tclose);
    const size_t width = native.get() < 0 ? 0 : H5Tget_size(native.get());
    if (H5Tget_nmembers(a.type()) != 2 || width == 0 || width > 8)
      a.fail("is an enum that is not a boolean; latentcell reads only h5py's FALSE/TRUE enum");
    std::vector<unsigned char> raw(out.size() * width);
    a.read(native.get(), raw.data());
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = std::any_of(raw.begin() + i * width, raw.begin() + (i + 1) * width, [](unsigned char b) { return b != 0; });
    return out;
  }
  requireInteger(a);
  const auto v = readNumbers<int64_t>(a);
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] != 0;
  return out;
}

// An index or category array as text, whatever its dtype.
std::vector<std::string> readText(const Array& a) {
  std::vector<std::string> out;
  switch (a.typeClass()) {
    case H5T_STRING: return readStrings(a);
    case H5T_INTEGER:
      for (int64_t v : readNumbers<int64_t>(a)) out.push_back(std::to_string(v));
      return out;
    case H5T_FLOAT:
      for (double v : readNumbers<double>(a)) out.push_back(fmt::format("{}", v));
      return out;
    case H5T_ENUM:
      for (uint8_t v : readBools(a)) out.push_back(v ? "True" : "False");
      return out;
    default: a.fail("has dtype " + a.dtype() + ", which cannot be read as labels");
  }
}

std::optional<std::string> stringAttr(const H5File& f, hid_t obj, const std::string& owner, const char* attr) {
  if (!hasAttribute(f, obj, owner, attr)) return std::nullopt;
  const Array a = Array::attribute(f, obj, attr, owner);
  const auto v = readStrings(a);
  if (v.size() != 1) a.fail(fmt::format("holds {} strings where one was expected", v.size()));
  return v[0];
}

std::optional<bool> boolAttr(const H5File& f, hid_t obj, const std::string& owner, const char* attr) {
  if (!hasAttribute(f, obj, owner, attr)) return std::nullopt;
  const Array a = Array::attribute(f, obj, attr, owner);
  const auto v = readBools(a);
  if (v.size() != 1) a.fail(fmt::format("holds {} values where one boolean was expected", v.size()));
  return v[0] != 0;
}

std::string encodingType(const H5File& f, hid_t obj, const std::string& name) {
  return stringAttr(f, obj, name, "encoding-type").value_or("");
}

[[noreturn]] void failEncoding(const H5File& f, const std::string& name, const std::string& encoding,
                               const std::string& supported) {
  f.fail(fmt::format("{} has encoding-type '{}', which latentcell cannot read (supported: {}); convert or "
                     "drop it in Python and re-write the file",
                     name, encoding, supported));
}

std::vector<std::string> memberNames(const H5File& f, hid_t group, const std::string& name) {
  checkGroupHeap(f, group, name);
  H5G_info_t info;
  if (H5Gget_info(group, &info) < 0) f.failHdf5("cannot list " + name);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) f.failHdf5("cannot list " + name);
    std::string s(static_cast<size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size(), H5P_DEFAULT);
    s.resize(static_cast<size_t>(len));
    names.push_back(std::move(s));
  }
  return names;
}

// ---- matrices -----------------------------------------------------------------------------------

struct Matrix {
  H5adStorage storage = H5adStorage::Csr;
  int64_t rows = 0, cols = 0;
  std::optional<Array> data, indices, indptr;  // dense: data only (2-D)
};

std::string availableMatrices(const H5File& f) {
  std::string list;
  auto add = [&](const std::string& s) { list += (list.empty() ? "" : ", ") + s; };
  if (exists(f, f.id.get(), "X")) add("X");
  if (exists(f, f.id.get(), "layers")) {
    const Id layers = openObject(f, f.id.get(), "layers", "layers");
    if (isGroup(layers.get()))
      for (const auto& n : memberNames(f, layers.get(), "layers")) add("layers/" + n);
  }
  if (exists(f, f.id.get(), "raw/X")) add("raw/X");
  return list.empty() ? "none" : list;
}

Matrix openMatrix(const H5File& f, const std::string& name) {
  const bool layer = name.rfind("layers/", 0) == 0 && name.size() > 7 && name.find('/', 7) == std::string::npos;
  if (name != "X" && name != "raw/X" && !layer)
    f.fail("cannot read matrix '" + name + "': choose X, raw/X or layers/<name> (the file holds: " +
           availableMatrices(f) + ")");
  if (!exists(f, f.id.get(), name)) {
    const std::string available = availableMatrices(f);
    f.fail("has no matrix " + name +
           (available == "none" ? " and no other (no layers, no raw/X): it holds no expression data"
                                : " (the file holds: " + available + "); choose one of those"));
  }
  Id obj = openObject(f, f.id.get(), name, name);
  Matrix m;
  if (isDataset(obj.get())) {
    Array a = Array::dataset(f, std::move(obj), name);
    if (a.rank() != 2) a.fail(fmt::format("is {}-D; a matrix must be 2-D (cells x genes)", a.rank()));
    requireNumeric(a);
    m.storage = H5adStorage::Dense;
    m.rows = static_cast<int64_t>(a.dims()[0]);
    m.cols = static_cast<int64_t>(a.dims()[1]);
    m.data = std::move(a);
  } else {
    // anndata >= 0.7 names the format in encoding-type; older h5sparse files in h5sparse_format.
    std::string encoding = encodingType(f, obj.get(), name);
    if (encoding.empty()) {
      const auto legacy = stringAttr(f, obj.get(), name, "h5sparse_format");
      if (legacy) encoding = *legacy + "_matrix";
    }
    if (encoding == "csr_matrix") m.storage = H5adStorage::Csr;
    else if (encoding == "csc_matrix") m.storage = H5adStorage::Csc;
    else failEncoding(f, name, encoding, "csr_matrix, csc_matrix, dense array");
    const char* shape_attr = hasAttribute(f, obj.get(), name, "shape") ? "shape" : "h5sparse_shape";
    if (!hasAttribute(f, obj.get(), name, shape_attr)) f.fail(name + " has no 'shape' attribute; the sparse matrix group is incomplete");
    const Array shape_array = Array::attribute(f, obj.get(), shape_attr, name);
    const auto shape = readNumbers<int64_t>(shape_array);
    if (shape.size() != 2 || shape[0] < 0 || shape[1] < 0)
      shape_array.fail("is not a shape of two non-negative sizes; the file is corrupt");
    m.rows = shape[0];
    m.cols = shape[1];
    auto part = [&](const char* key) {
      Array a = Array::dataset(f, obj.get(), key, name + "/" + key);
      requireVector(a);
      return a;
    };
    m.data = part("data");
    m.indices = part("indices");
    m.indptr = part("indptr");
    requireNumeric(*m.data);
    requireInteger(*m.indices);
    requireInteger(*m.indptr);
    const int64_t major = m.storage == H5adStorage::Csr ? m.rows : m.cols;
    if (m.indptr->size() != major + 1)
      m.indptr->fail(fmt::format("has {} entries but the {} shape {}x{} needs {}; the file is corrupt",
                                 m.indptr->size(), encoding, m.rows, m.cols, major + 1));
    if (m.data->size() != m.indices->size())
      m.indices->fail(fmt::format("has {} entries but {}/data has {}; the file is corrupt", m.indices->size(),
                                  name, m.data->size()));
  }
  if (m.cols > INT32_MAX) f.fail(fmt::format("{} has {} genes; latentcell supports at most {}", name, m.cols, INT32_MAX));
  return m;
}

// indptr must start at 0, never decrease, and end at the number of stored entries.
void checkIndptr(const Array& a, const std::vector<int64_t>& indptr, int64_t nnz) {
  if (indptr.front() != 0) a.fail(fmt::format("starts at {} instead of 0; the file is corrupt", indptr.front()));
  for (size_t i = 0; i + 1 < indptr.size(); ++i)
    if (indptr[i + 1] < indptr[i])
      a.fail(fmt::format("decreases at position {} ({} -> {}); the file is corrupt", i + 1, indptr[i], indptr[i + 1]));
  if (indptr.back() != nnz)
    a.fail(fmt::format("ends at {} but {} entries are stored; the file is corrupt", indptr.back(), nnz));
}

template <class I>
void checkIndices(const Array& a, const std::vector<I>& indices, int64_t bound, int64_t offset, const char* what) {
  for (size_t k = 0; k < indices.size(); ++k)
    if (indices[k] < 0 || indices[k] >= bound)
      a.fail(fmt::format("[{}] = {} is out of range for {} {}; the file is corrupt", offset + static_cast<int64_t>(k),
                         static_cast<int64_t>(indices[k]), bound, what));
}

// Column ids as int32, checked against `bound`. 64-bit and unsigned ids are read wide first, so that an
// error reports the stored value (HDF5 would have saturated it).
std::vector<int32_t> readColumnIds(const Array& a, int64_t bound, int64_t first, int64_t count) {
  const size_t width = H5Tget_size(a.type());
  if (width < 4 || (width == 4 && H5Tget_sign(a.type()) != H5T_SGN_NONE)) {
    auto ids = readNumberRows<int32_t>(a, first, count);
    checkIndices(a, ids, bound, first, "genes");
    return ids;
  }
  const auto wide = readNumberRows<int64_t>(a, first, count);
  checkIndices(a, wide, bound, first, "genes");
  return std::vector<int32_t>(wide.begin(), wide.end());
}

// scipy allows unsorted column indices and duplicates (which it sums); CsrMatrix promises neither.
void canonicalize(CsrMatrix& m) {
  bool sorted = true;
  for (int64_t r = 0; r < m.rows && sorted; ++r)
    for (int64_t k = m.indptr[r] + 1; k < m.indptr[r + 1]; ++k)
      if (m.indices[k] <= m.indices[k - 1]) {
        sorted = false;
        break;
      }
  if (sorted) return;
  std::vector<std::pair<int32_t, float>> row;
  int64_t out = 0;
  for (int64_t r = 0; r < m.rows; ++r) {
    row.clear();
    for (int64_t k = m.indptr[r]; k < m.indptr[r + 1]; ++k) row.emplace_back(m.indices[k], m.data[k]);
    std::stable_sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    m.indptr[r] = out;
    for (const auto& [c, v] : row) {
      if (out > m.indptr[r] && m.indices[out - 1] == c) {
        m.data[out - 1] += v;
      } else {
        m.indices[out] = c;
        m.data[out] = v;
        ++out;
      }
    }
  }
  m.indptr[m.rows] = out;
  m.indices.resize(out);
  m.data.resize(out);
}

void appendDenseRows(CsrMatrix& out, const std::vector<float>& block, int64_t nrows) {
  for (int64_t r = 0; r < nrows; ++r) {
    const float* row = block.data() + r * out.cols;
    for (int64_t c = 0; c < out.cols; ++c)
      if (row[c] != 0.0f) {
        out.indices.push_back(static_cast<int32_t>(c));
        out.data.push_back(row[c]);
      }
    out.indptr.push_back(static_cast<int64_t>(out.data.size()));
  }
}

// Dense rows [begin, end) as CSR, read in blocks so that a large dense X never exists twice.
CsrMatrix readDenseRows(const Matrix& m, int64_t begin, int64_t end) {
  CsrMatrix out;
  out.rows = end - begin;
  out.cols = m.cols;
  out.indptr.reserve(static_cast<size_t>(out.rows) + 1);
  out.indptr.push_back(0);
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(m.cols, 1));
  for (int64_t r = begin; r < end; r += block) {
    const int64_t n = std::min(block, end - r);
    appendDenseRows(out, readNumberRows<float>(*m.data, r, n, m.cols), n);
  }
  return out;
}

CsrMatrix readMatrix(const Matrix& m) {
  if (m.storage == H5adStorage::Dense) return readDenseRows(m, 0, m.rows);
  auto indptr = readNumbers<int64_t>(*m.indptr);
  checkIndptr(*m.indptr, indptr, m.data->size());
  CsrMatrix x;
  x.rows = m.rows;
  x.cols = m.cols;
  if (m.storage == H5adStorage::Csr) {
    x.indptr = std::move(indptr);
    x.indices = readColumnIds(*m.indices, m.cols, 0, m.indices->size());
    x.data = readNumbers<float>(*m.data);
  } else {
    // CSC -> CSR by counting sort; columns are visited in order, so each row comes out sorted.
    const auto rows = readNumbers<int64_t>(*m.indices);
    checkIndices(*m.indices, rows, m.rows, 0, "cells");
    const auto values = readNumbers<float>(*m.data);
    x.indptr.assign(static_cast<size_t>(m.rows) + 1, 0);
    for (int64_t r : rows) ++x.indptr[r + 1];
    for (int64_t r = 0; r < m.rows; ++r) x.indptr[r + 1] += x.indptr[r];
    std::vector<int64_t> next(x.indptr.begin(), x.indptr.end() - 1);
    x.indices.resize(rows.size());
    x.data.resize(rows.size());
    for (int64_t c = 0; c < m.cols; ++c)
      for (int64_t k = indptr[c]; k < indptr[c + 1]; ++k) {
        const int64_t pos = next[rows[k]]++;
        x.indices[pos] = static_cast<int32_t>(c);
        x.data[pos] = values[k];
      }
  }
  canonicalize(x);
  return x;
}

// ---- data frames --------------------------------------------------------------------------------

std::vector<int32_t> readCodes(const Array& a, size_t n_categories) {
  requireInteger(a);
  requireVector(a);
  auto codes = readNumbers<int32_t>(a);
  for (size_t i = 0; i < codes.size(); ++i)
    if (codes[i] < -1 || codes[i] >= static_cast<int64_t>(n_categories))
      a.fail(fmt::format("[{}] = {} is out of range for {} categories; the file is corrupt", i, codes[i], n_categories));
  return codes;
}

Column readCategorical(const H5File& f, hid_t group, const std::string& name) {
  Column c;
  c.kind = Column::Kind::Categorical;
  const Array categories = Array::dataset(f, group, "categories", name + "/categories");
  requireVector(categories);
  c.categories = readText(categories);
  c.codes = readCodes(Array::dataset(f, group, "codes", name + "/codes"), c.categories.size());
  c.ordered = boolAttr(f, group, name, "ordered").value_or(false);
  return c;
}

// anndata 0.7: the codes dataset carries an object reference to its categories (__categories/<col>).
Column readOldCategorical(const H5File& f, const Array& codes, const std::string& name) {
  const hid_t obj = codes.id();
  const Array ref_attr = Array::attribute(f, obj, "categories", name);
  if (ref_attr.typeClass() != H5T_REFERENCE || ref_attr.size() != 1)
    ref_attr.fail("is not an object reference; the file layout is not h5ad");
  hobj_ref_t ref{};
  ref_attr.read(H5T_STD_REF_OBJ, &ref);
  Id target(H5Rdereference2(obj, H5P_DEFAULT, H5R_OBJECT, &ref), H5Oclose);
  if (target.get() < 0) f.failHdf5("the categories of " + name + " point nowhere");
  if (!isDataset(target.get())) f.fail("the categories of " + name + " are not an array; the file layout is not h5ad");
  const Array categories = Array::dataset(f, std::move(target), name + " categories");
  requireVector(categories);
  Column c;
  c.kind = Column::Kind::Categorical;
  c.categories = readText(categories);
  c.codes = readCodes(codes, c.categories.size());
  // 0.7 put `ordered` on the categories dataset.
  c.ordered = boolAttr(f, categories.id(), categories.name(), "ordered").value_or(false);
  return c;
}

Column readNullable(const H5File& f, hid_t group, const std::string& name, const std::string& encoding) {
  const Array values = Array::dataset(f, group, "values", name + "/values");
  const Array mask = Array::dataset(f, group, "mask", name + "/mask");
  requireVector(values);
  requireVector(mask);
  if (mask.size() != values.size())
    mask.fail(fmt::format("has {} entries but {}/values has {}; the file is corrupt", mask.size(), name, values.size()));
  Column c;
  c.missing = readBools(mask);
  if (encoding == "nullable-integer") {
    c.kind = Column::Kind::Int;
    requireInteger(values);
    c.ints = readNumbers<int64_t>(values);
  } else if (encoding == "nullable-boolean") {
    c.kind = Column::Kind::Bool;
    c.bools = readBools(values);
  } else {
    c.kind = Column::Kind::String;
    c.strings = readStrings(values);
  }
  return c;
}

Column readPlainColumn(const Array& a) {
  requireVector(a);
  Column c;
  switch (a.typeClass()) {
    case H5T_STRING:
      c.kind = Column::Kind::String;
      c.strings = readStrings(a);
      break;
    case H5T_INTEGER:
      c.kind = Column::Kind::Int;
      c.ints = readNumbers<int64_t>(a);
      break;
    case H5T_FLOAT:
      c.kind = Column::Kind::Float;
      c.floats = readNumbers<double>(a);
      break;
    case H5T_ENUM:
      c.kind = Column::Kind::Bool;
      c.bools = readBools(a);
      break;
    default: a.fail("has dtype " + a.dtype() + ", which latentcell cannot read as a column; drop it in Python and re-write the file");
  }
  return c;
}

Column readColumn(const H5File& f, hid_t frame, const std::string& key, const std::string& name, int64_t rows) {
  Id obj = openObject(f, frame, key, name);
  const std::string encoding = encodingType(f, obj.get(), name);
  Column c;
  if (isGroup(obj.get())) {
    if (encoding == "categorical") c = readCategorical(f, obj.get(), name);
    else if (encoding == "nullable-integer" || encoding == "nullable-boolean" || encoding == "nullable-string-array")
      c = readNullable(f, obj.get(), name, encoding);
    else
      failEncoding(f, name, encoding,
                   "categorical, string-array, array, nullable-integer, nullable-boolean, nullable-string-array");
  } else {
    if (!encoding.empty() && encoding != "array" && encoding != "string-array")
      failEncoding(f, name, encoding,
                   "categorical, string-array, array, nullable-integer, nullable-boolean, nullable-string-array");
    const Array a = Array::dataset(f, std::move(obj), name);
    c = hasAttribute(f, a.id(), name, "categories") ? readOldCategorical(f, a, name) : readPlainColumn(a);
  }
  if (c.size() != rows)
    f.fail(fmt::format("{} has {} values but the frame has {} rows; the file is corrupt", name, c.size(), rows));
  return c;
}

DataFrame readFrame(const H5File& f, const std::string& name, int64_t rows) {
  DataFrame df;
  if (!exists(f, f.id.get(), name)) {
    // anndata names rows 0..n-1 when a file has no frame.
    for (int64_t i = 0; i < rows; ++i) df.index.push_back(std::to_string(i));
    return df;
  }
  const Id g = openObject(f, f.id.get(), name, name);
  if (!isGroup(g.get()))
    f.fail(name + " is a single array (the pre-0.7 compound layout); re-write the file with anndata >= 0.7");
  const std::string encoding = encodingType(f, g.get(), name);
  if (!encoding.empty() && encoding != "dataframe") failEncoding(f, name, encoding, "dataframe");
  const auto index_name = stringAttr(f, g.get(), name, "_index");
  if (!index_name) f.fail(name + " has no '_index' attribute naming its index; re-write the file with anndata");
  df.index_name = *index_name;
  const Array index = Array::dataset(f, g.get(), *index_name, name + "/" + *index_name);
  requireVector(index);
  df.index = readText(index);
  if (static_cast<int64_t>(df.index.size()) != rows)
    f.fail(fmt::format("{} has {} rows but the matrix has {}; the file is corrupt (shapes of X and {} disagree)", name,
                       df.index.size(), rows, name));
  std::vector<std::string> order;
  if (hasAttribute(f, g.get(), name, "column-order")) {
    const Array a = Array::attribute(f, g.get(), "column-order", name);
    if (a.typeClass() == H5T_STRING) order = readStrings(a);
    else if (a.size() != 0) a.fail("is neither a list of names nor empty; the file layout is not h5ad");
  }
  for (const auto& col : order) df.columns.emplace_back(col, readColumn(f, g.get(), col, name + "/" + col, rows));
  return df;
}

// ---- obsm, uns ----------------------------------------------------------------------------------

std::string describeEntry(const H5File& f, Id obj, const std::string& name) {
  if (isDataset(obj.get())) {
    const Array a = Array::dataset(f, std::move(obj), name);
    std::string shape;
    for (hsize_t d : a.dims()) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    return "dense " + a.dtype() + " " + shape;
  }
  const std::string encoding = encodingType(f, obj.get(), name);
  return encoding.empty() ? "group" : encoding;
}

std::map<std::string, DenseMatrix> readDenseMap(const H5File& f, const std::string& name, int64_t rows) {
  std::map<std::string, DenseMatrix> out;
  if (!exists(f, f.id.get(), name)) return out;
  const Id g = openObject(f, f.id.get(), name, name);
  if (!isGroup(g.get())) {
    core::logDebug("{}: skipping {}: not a group of arrays", f.path, name);
    return out;
  }
  for (const auto& key : memberNames(f, g.get(), name)) {
    const std::string full = name + "/" + key;
    Id obj = openObject(f, g.get(), key, full);
    if (!isDataset(obj.get())) {
      core::logDebug("{}: skipping {} ({}): only dense arrays are loaded", f.path, full, describeEntry(f, std::move(obj), full));
      continue;
    }
    const Array a = Array::dataset(f, std::move(obj), full);
    const auto cls = a.typeClass();
    if (a.rank() != 2 || (cls != H5T_INTEGER && cls != H5T_FLOAT)) {
      core::logDebug("{}: skipping {} ({}-D {}): only 2-D numeric arrays are loaded", f.path, full, a.rank(), a.dtype());
      continue;
    }
    if (static_cast<int64_t>(a.dims()[0]) != rows)
      a.fail(fmt::format("has {} rows but the matrix has {}; the file is corrupt", a.dims()[0], rows));
    DenseMatrix m;
    m.rows = rows;
    m.cols = static_cast<int64_t>(a.dims()[1]);
    m.values = readNumbers<float>(a);
    out.emplace(key, std::move(m));
  }
  return out;
}

void readUns(const H5File& f, AnnData& adata) {
  if (!exists(f, f.id.get(), "uns")) return;
  const Id g = openObject(f, f.id.get(), "uns", "uns");
  if (!isGroup(g.get())) return;
  for (const auto& key : memberNames(f, g.get(), "uns")) {
    const std::string full = "uns/" + key;
    Id obj = openObject(f, g.get(), key, full);
    if (!isDataset(obj.get())) {
      core::logDebug("{}: skipping {}: only scalar strings and numbers are loaded", f.path, full);
      continue;
    }
    const Array a = Array::dataset(f, std::move(obj), full);
    const auto cls = a.typeClass();
    if (!a.scalar()) {
      core::logDebug("{}: skipping {} ({}-D {}): only scalars are loaded", f.path, full, a.rank(), a.dtype());
    } else if (cls == H5T_STRING) {
      adata.uns_strings[key] = readStrings(a).at(0);
    } else if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
      adata.uns_numbers[key] = readNumbers<double>(a).at(0);
    } else if (cls == H5T_ENUM) {
      adata.uns_numbers[key] = readBools(a).at(0);
    } else {
      core::logDebug("{}: skipping {} ({})", f.path, full, a.dtype());
    }
  }
}

H5adInfo describe(const H5File& f, const std::string& name, const Matrix& m) {
  H5adInfo info;
  info.matrix = name;
  info.storage = m.storage;
  info.dtype = m.data->dtype();
  info.rows = m.rows;
  info.cols = m.cols;
  info.stored = m.storage == H5adStorage::Dense ? m.rows * m.cols : m.data->size();
  if (exists(f, f.id.get(), "layers")) {
    const Id g = openObject(f, f.id.get(), "layers", "layers");
    if (isGroup(g.get())) info.layers = memberNames(f, g.get(), "layers");
  }
  info.has_raw = exists(f, f.id.get(), "raw/X");
  if (exists(f, f.id.get(), "obsm")) {
    const Id g = openObject(f, f.id.get(), "obsm", "obsm");
    if (isGroup(g.get()))
      for (const auto& key : memberNames(f, g.get(), "obsm")) {
        info.obsm.emplace_back(key, describeEntry(f, openObject(f, g.get(), key, "obsm/" + key), "obsm/" + key));
      }
  }
  return info;
}

// ---- writing ------------------------------------------------------------------------------------

// Writes one file; every failure names the final path (the temporary one is an implementation detail).
class Writer {
 public:
  explicit Writer(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& what) const {
    const std::string detail = hdf5Detail();
    throw std::runtime_error(path_ + ": cannot write " + what + (detail.empty() ? "" : " (HDF5: " + detail + ")") +
                             "; check that the folder exists and is writable, and the free disk space");
  }
  hid_t check(hid_t id, const std::string& what) const {
    if (id < 0) fail(what);
    return id;
  }

  Id group(hid_t loc, const std::string& name, const char* encoding, const char* version) const {
    Id g(check(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), name), H5Gclose);
    setEncoding(g.get(), encoding, version, name);
    return g;
  }

  void setEncoding(hid_t obj, const char* type, const char* version, const std::string& name) const {
    setString(obj, "encoding-type", type, name);
    setString(obj, "encoding-version", version, name);
  }

  void setString(hid_t obj, const char* attr, const std::string& value, const std::string& name) const {
    const Id type = stringType();
    Id space(H5Screate(H5S_SCALAR), H5Sclose);
    Id a(check(H5Acreate2(obj, attr, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), name + " attribute " + attr),
         H5Aclose);
    const char* p = value.c_str();
    if (H5Awrite(a.get(), type.get(), &p) < 0) fail(name + " attribute " + attr);
  }

  // column-order: the names as strings, or (as anndata writes it) an empty float64 array.
  void setNames(hid_t obj, const char* attr, const std::vector<std::string>& names, const std::string& name) const {
    const hsize_t n = names.size();
    Id space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    const Id type = names.empty() ? Id(H5Tcopy(H5T_IEEE_F64LE), H5Tclose) : stringType();
    Id a(check(H5Acreate2(obj, attr, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), name + " attribute " + attr),
         H5Aclose);
    if (names.empty()) return;
    std::vector<const char*> ptrs;
    for (const auto& s : names) ptrs.push_back(s.c_str());
    if (H5Awrite(a.get(), type.get(), ptrs.data()) < 0) fail(name + " attribute " + attr);
  }

  void setShape(hid_t obj, int64_t rows, int64_t cols, const std::string& name) const {
    const hsize_t n = 2;
    const int64_t shape[2] = {rows, cols};
    Id space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    Id a(check(H5Acreate2(obj, "shape", H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), name + " shape"),
         H5Aclose);
    if (H5Awrite(a.get(), H5T_NATIVE_INT64, shape) < 0) fail(name + " shape");
  }

  void setBool(hid_t obj, const char* attr, bool value, const std::string& name) const {
    const Id type = boolType();
    Id space(H5Screate(H5S_SCALAR), H5Sclose);
    Id a(check(H5Acreate2(obj, attr, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), name + " attribute " + attr),
         H5Aclose);
    const int8_t v = value ? 1 : 0;
    if (H5Awrite(a.get(), type.get(), &v) < 0) fail(name + " attribute " + attr);
  }

  // A dataset of `dims` (empty: scalar) from `buf` in `mem_type`, stored as `file_type`.
  Id dataset(hid_t loc, const std::string& key, hid_t file_type, hid_t mem_type, const void* buf,
             const std::vector<hsize_t>& dims, const std::string& name) const {
    Id space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
             H5Sclose);
    Id d(check(H5Dcreate2(loc, key.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), name),
         H5Dclose);
    hsize_t n = 1;
    for (hsize_t x : dims) n *= x;
    if (n > 0 && H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) fail(name);
    return d;
  }

  void array(hid_t loc, const std::string& key, hid_t file_type, hid_t mem_type, const void* buf,
             const std::vector<hsize_t>& dims, const std::string& name) const {
    const Id d = dataset(loc, key, file_type, mem_type, buf, dims, name);
    setEncoding(d.get(), "array", "0.2.0", name);
  }

  void strings(hid_t loc, const std::string& key, const std::vector<std::string>& values, const std::string& name) const {
    std::vector<const char*> ptrs;
    for (const auto& s : values) ptrs.push_back(s.c_str());
    const Id type = stringType();
    const Id d = dataset(loc, key, type.get(), type.get(), ptrs.data(), {values.size()}, name);
    setEncoding(d.get(), "string-array", "0.2.0", name);
  }

  void bools(hid_t loc, const std::string& key, const std::vector<uint8_t>& values, const std::string& name) const {
    std::vector<int8_t> v(values.begin(), values.end());
    for (auto& b : v) b = b ? 1 : 0;
    const Id type = boolType();
    array(loc, key, type.get(), type.get(), v.data(), {v.size()}, name);
  }

  Id stringType() const {  // h5py's str: variable-length UTF-8
    Id t(check(H5Tcopy(H5T_C_S1), "a string type"), H5Tclose);
    if (H5Tset_size(t.get(), H5T_VARIABLE) < 0 || H5Tset_cset(t.get(), H5T_CSET_UTF8) < 0) fail("a string type");
    return t;
  }
  Id boolType() const {  // h5py's bool: enum FALSE = 0, TRUE = 1 over int8
    Id t(check(H5Tenum_create(H5T_NATIVE_INT8), "a bool type"), H5Tclose);
    int8_t v = 0;
    H5Tenum_insert(t.get(), "FALSE", &v);
    v = 1;
    if (H5Tenum_insert(t.get(), "TRUE", &v) < 0) fail("a bool type");
    return t;
  }

 private:
  std::string path_;
};

void writeColumn(const Writer& w, hid_t frame, const std::string& key, const Column& c, const std::string& name) {
  const std::vector<hsize_t> dims = {static_cast<hsize_t>(c.size())};
  const bool nullable = !c.missing.empty();
  switch (c.kind) {
    case Column::Kind::Categorical: {
      const Id g = w.group(frame, key, "categorical", "0.2.0");
      w.setBool(g.get(), "ordered", c.ordered, name);
      w.strings(g.get(), "categories", c.categories, name + "/categories");
      // pandas picks the narrowest code type for the number of categories; anndata keeps it.
      const size_t n = c.categories.size();
      const hid_t code_type = n < 127 ? H5T_STD_I8LE : n < 32767 ? H5T_STD_I16LE : H5T_STD_I32LE;
      w.array(g.get(), "codes", code_type, H5T_NATIVE_INT32, c.codes.data(), dims, name + "/codes");
      return;
    }
    case Column::Kind::Float:
      w.array(frame, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, c.floats.data(), dims, name);
      return;
    case Column::Kind::String:
    case Column::Kind::Int:
    case Column::Kind::Bool: break;
  }
  if (!nullable) {
    if (c.kind == Column::Kind::String) w.strings(frame, key, c.strings, name);
    else if (c.kind == Column::Kind::Int) w.array(frame, key, H5T_STD_I64LE, H5T_NATIVE_INT64, c.ints.data(), dims, name);
    else w.bools(frame, key, c.bools, name);
    return;
  }
  // Nullable columns: values (a neutral value where missing, as anndata writes) and a mask.
  const char* encoding = c.kind == Column::Kind::String ? "nullable-string-array"
                         : c.kind == Column::Kind::Int  ? "nullable-integer"
                                                        : "nullable-boolean";
  const Id g = w.group(frame, key, encoding, "0.1.0");
  if (c.kind == Column::Kind::String) {
    auto values = c.strings;
    for (size_t i = 0; i < values.size(); ++i)
      if (c.missing[i]) values[i].clear();
    w.strings(g.get(), "values", values, name + "/values");
  } else if (c.kind == Column::Kind::Int) {
    auto values = c.ints;
    for (size_t i = 0; i < values.size(); ++i)
      if (c.missing[i]) values[i] = 0;
    w.array(g.get(), "values", H5T_STD_I64LE, H5T_NATIVE_INT64, values.data(), dims, name + "/values");
  } else {
    auto values = c.bools;
    for (size_t i = 0; i < values.size(); ++i)
      if (c.missing[i]) values[i] = 0;
    w.bools(g.get(), "values", values, name + "/values");
  }
  w.bools(g.get(), "mask", c.missing, name + "/mask");
}

std::vector<std::string> rangeIndex(int64_t n) {
  std::vector<std::string> index;
  for (int64_t i = 0; i < n; ++i) index.push_back(std::to_string(i));
  return index;
}

void writeFrame(const Writer& w, hid_t file, const std::string& name, const DataFrame& df, int64_t rows) {
  const Id g = w.group(file, name, "dataframe", "0.2.0");
  const std::string index_name = df.index_name.empty() ? "_index" : df.index_name;
  w.setString(g.get(), "_index", index_name, name);
  std::vector<std::string> order;
  for (const auto& [key, c] : df.columns) order.push_back(key);
  w.setNames(g.get(), "column-order", order, name);
  w.strings(g.get(), index_name, df.index.empty() ? rangeIndex(rows) : df.index, name + "/" + index_name);
  for (const auto& [key, c] : df.columns) writeColumn(w, g.get(), key, c, name + "/" + key);
}

void writeDenseMap(const Writer& w, hid_t file, const std::string& name, const std::map<std::string, DenseMatrix>& map) {
  const Id g = w.group(file, name, "dict", "0.1.0");
  for (const auto& [key, m] : map)
    w.array(g.get(), key, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, m.values.data(),
            {static_cast<hsize_t>(m.rows), static_cast<hsize_t>(m.cols)}, name + "/" + key);
}

// Everything the writer relies on, checked before a file is created.
void validateForWrite(const AnnData& a, const std::string& path) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": cannot write: " + what); };
  const CsrMatrix& x = a.X;
  if (x.rows < 0 || x.cols < 0 || x.cols > INT32_MAX) fail(fmt::format("X has an invalid shape {}x{}", x.rows, x.cols));
  if (static_cast<int64_t>(x.indptr.size()) != x.rows + 1 || x.indptr.front() != 0 || x.indptr.back() != x.nnz() ||
      x.indices.size() != x.data.size())
    fail(fmt::format("X is not a consistent CSR matrix ({} rows, {} indptr entries, {} indices, {} values)", x.rows,
                     x.indptr.size(), x.indices.size(), x.data.size()));
  for (int64_t r = 0; r < x.rows; ++r)
    if (x.indptr[r + 1] < x.indptr[r]) fail(fmt::format("X indptr decreases at row {}", r));
  for (size_t k = 0; k < x.indices.size(); ++k)
    if (x.indices[k] < 0 || x.indices[k] >= x.cols)
      fail(fmt::format("X index {} at entry {} is out of range for {} genes", x.indices[k], k, x.cols));
  auto checkKey = [&](const std::string& key, const std::string& where) {
    if (key.empty() || key.find('/') != std::string::npos || key == "." )
      fail(where + " has the key '" + key + "'; keys must be non-empty and contain no '/'");
  };
  auto checkFrame = [&](const DataFrame& df, const char* what, int64_t rows) {
    if (!df.index.empty() && static_cast<int64_t>(df.index.size()) != rows)
      fail(fmt::format("{} has {} names but X has {} {}", what, df.index.size(), rows, what[0] == 'o' ? "rows" : "columns"));
    const std::string index_name = df.index_name.empty() ? "_index" : df.index_name;
    checkKey(index_name, std::string(what) + " index name");
    std::vector<std::string> seen;
    for (const auto& [key, c] : df.columns) {
      checkKey(key, what);
      if (key == index_name) fail(std::string(what) + " has a column named like its index ('" + key + "'); rename it");
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) fail(std::string(what) + " has two columns '" + key + "'");
      seen.push_back(key);
      if (c.size() != rows) fail(fmt::format("{} column '{}' has {} values but there are {}", what, key, c.size(), rows));
      if (!c.missing.empty() && static_cast<int64_t>(c.missing.size()) != rows)
        fail(fmt::format("{} column '{}' has a missing-mask of {} entries for {} rows", what, key, c.missing.size(), rows));
      if (!c.missing.empty() && (c.kind == Column::Kind::Categorical || c.kind == Column::Kind::Float))
        fail(fmt::format("{} column '{}' is {} with a missing-mask; mark missing values with code -1 / NaN instead", what,
                         key, c.kind == Column::Kind::Categorical ? "categorical" : "float"));
      if (c.kind == Column::Kind::Categorical)
        for (int32_t code : c.codes)
          if (code < -1 || code >= static_cast<int64_t>(c.categories.size()))
            fail(fmt::format("{} column '{}' has code {} for {} categories", what, key, code, c.categories.size()));
    }
  };
  checkFrame(a.obs, "obs", x.rows);
  checkFrame(a.var, "var", x.cols);
  auto checkMap = [&](const std::map<std::string, DenseMatrix>& map, const char* what, int64_t rows) {
    for (const auto& [key, m] : map) {
      checkKey(key, what);
      if (m.rows != rows || m.cols < 0 || static_cast<int64_t>(m.values.size()) != m.rows * m.cols)
        fail(fmt::format("{}['{}'] is {}x{} with {} values; it needs {} rows", what, key, m.rows, m.cols, m.values.size(), rows));
    }
  };
  checkMap(a.obsm, "obsm", x.rows);
  checkMap(a.varm, "varm", x.cols);
  for (const auto& [key, v] : a.uns_strings) {
    checkKey(key, "uns");
    if (a.uns_numbers.count(key)) fail("uns has '" + key + "' both as a string and as a number");
  }
  for (const auto& [key, v] : a.uns_numbers) checkKey(key, "uns");
}

void writeFile(const Writer& w, hid_t file, const AnnData& a) {
  w.setEncoding(file, "anndata", "0.1.0", "the root group");
  {
    const Id x = w.group(file, "X", "csr_matrix", "0.1.0");
    w.setShape(x.get(), a.X.rows, a.X.cols, "X");
    const std::vector<hsize_t> nnz = {static_cast<hsize_t>(a.X.nnz())};
    w.dataset(x.get(), "data", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, a.X.data.data(), nnz, "X/data");
    w.dataset(x.get(), "indices", H5T_STD_I32LE, H5T_NATIVE_INT32, a.X.indices.data(), nnz, "X/indices");
    // scipy (and so anndata) keeps 32-bit indptr while the entries fit.
    w.dataset(x.get(), "indptr", a.X.nnz() <= INT32_MAX ? H5T_STD_I32LE : H5T_STD_I64LE, H5T_NATIVE_INT64,
              a.X.indptr.data(), {a.X.indptr.size()}, "X/indptr");
  }
  for (const char* empty : {"layers", "obsp", "varp"}) w.group(file, empty, "dict", "0.1.0");
  writeFrame(w, file, "obs", a.obs, a.X.rows);
  writeFrame(w, file, "var", a.var, a.X.cols);
  writeDenseMap(w, file, "obsm", a.obsm);
  writeDenseMap(w, file, "varm", a.varm);
  const Id uns = w.group(file, "uns", "dict", "0.1.0");
  for (const auto& [key, value] : a.uns_strings) {
    const Id type = w.stringType();
    const char* p = value.c_str();
    const Id d = w.dataset(uns.get(), key, type.get(), type.get(), &p, {}, "uns/" + key);
    w.setEncoding(d.get(), "string", "0.2.0", "uns/" + key);
  }
  for (const auto& [key, value] : a.uns_numbers) {
    const Id d = w.dataset(uns.get(), key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, {}, "uns/" + key);
    w.setEncoding(d.get(), "numeric-scalar", "0.2.0", "uns/" + key);
  }
}

}  // namespace

// ---- public API ---------------------------------------------------------------------------------

const char* storageName(H5adStorage storage) {
  switch (storage) {
    case H5adStorage::Csr: return "csr";
    case H5adStorage::Csc: return "csc";
    case H5adStorage::Dense: return "dense";
  }
  return "?";
}

AnnData readH5ad(const std::string& path, const H5adReadOptions& options) {
  const auto lock = lockHdf5();
  const H5File f = openFile(path);
  const Matrix m = openMatrix(f, options.matrix);
  const bool raw = options.matrix == "raw/X";
  AnnData a;
  a.source = path;
  if (options.matrix_values) {
    a.X = readMatrix(m);
  } else {
    a.X.rows = m.rows;
    a.X.cols = m.cols;
  }
  a.obs = readFrame(f, "obs", a.X.rows);
  a.var = readFrame(f, raw ? "raw/var" : "var", a.X.cols);
  if (options.obsm) {
    a.obsm = readDenseMap(f, "obsm", a.X.rows);
    a.varm = readDenseMap(f, raw ? "raw/varm" : "varm", a.X.cols);
  }
  readUns(f, a);
  return a;
}

H5adInfo inspectH5ad(const std::string& path, const std::string& matrix) {
  const auto lock = lockHdf5();
  const H5File f = openFile(path);
  return describe(f, matrix, openMatrix(f, matrix));
}

void writeH5ad(const AnnData& adata, const std::string& path) {
  validateForWrite(adata, path);
  const std::string tmp = path + ".tmp";
  const Writer w(path);
  const auto lock = lockHdf5();
  try {
    Id file(w.check(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "the file " + tmp), H5Fclose);
    writeFile(w, file.get(), adata);
    // Closing flushes: a full disk shows up here, before the rename.
    if (H5Fclose(file.release()) < 0) w.fail("the file " + tmp);
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw std::runtime_error(path + ": cannot move " + tmp + " into place (" + ec.message() + ")");
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

struct H5adRowReader::Impl {
  H5File file;
  Matrix matrix;
  H5adInfo info;
  std::vector<int64_t> indptr;  // CSR: the whole row pointer, validated once
};

H5adRowReader::H5adRowReader(const std::string& path, const std::string& matrix) {
  const auto lock = lockHdf5();
  auto impl = std::make_unique<Impl>(Impl{openFile(path), {}, {}, {}});
  impl->matrix = openMatrix(impl->file, matrix);
  impl->info = describe(impl->file, matrix, impl->matrix);
  if (impl->matrix.storage == H5adStorage::Csc)
    impl->file.fail(matrix + " is a csc_matrix (column-major), which cannot be read by rows; load it whole with "
                             "readH5ad, or re-write it as CSR in Python (adata.X = adata.X.tocsr())");
  if (impl->matrix.storage == H5adStorage::Csr) {
    impl->indptr = readNumbers<int64_t>(*impl->matrix.indptr);
    checkIndptr(*impl->matrix.indptr, impl->indptr, impl->matrix.data->size());
  }
  impl_ = std::move(impl);
}

H5adRowReader::~H5adRowReader() {
  if (impl_) {
    const auto lock = lockHdf5();
    impl_.reset();
  }
}

H5adRowReader::H5adRowReader(H5adRowReader&&) noexcept = default;

H5adRowReader& H5adRowReader::operator=(H5adRowReader&& other) noexcept {
  if (this != &other) {
    {
      const auto lock = lockHdf5();
      impl_.reset();
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}

int64_t H5adRowReader::n_obs() const { return impl_->matrix.rows; }
int64_t H5adRowReader::n_vars() const { return impl_->matrix.cols; }
const H5adInfo& H5adRowReader::info() const { return impl_->info; }

CsrMatrix H5adRowReader::readRows(int64_t begin, int64_t end) {
  const auto lock = lockHdf5();
  const Matrix& m = impl_->matrix;
  if (begin < 0 || end < begin || end > m.rows)
    impl_->file.fail(fmt::format("cannot read rows [{}, {}) of {}: it has {} rows", begin, end, impl_->info.matrix, m.rows));
  if (m.storage == H5adStorage::Dense) return readDenseRows(m, begin, end);
  const int64_t lo = impl_->indptr[begin], hi = impl_->indptr[end];
  CsrMatrix out;
  out.rows = end - begin;
  out.cols = m.cols;
  out.indptr.assign(impl_->indptr.begin() + begin, impl_->indptr.begin() + end + 1);
  for (auto& p : out.indptr) p -= lo;
  out.indices = readColumnIds(*m.indices, m.cols, lo, hi - lo);
  out.data = readNumberRows<float>(*m.data, lo, hi - lo);
  canonicalize(out);
  return out;
}

// ---- value checks -------------------------------------------------------------------------------

bool allWholeNumbers(const CsrMatrix& m) {
  return std::all_of(m.data.begin(), m.data.end(), [](float v) { return std::isfinite(v) && std::floor(v) == v; });
}

std::optional<BadValue> firstNonCount(const CsrMatrix& m, bool whole) {
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t k = m.indptr[r]; k < m.indptr[r + 1]; ++k) {
      const float v = m.data[k];
      if (!std::isfinite(v) || v < 0 || (whole && std::floor(v) != v)) return BadValue{r, m.indices[k], v};
    }
  return std::nullopt;
}

void requireCounts(const AnnData& adata, const std::string& source) {
  const auto bad = firstNonCount(adata.X);
  if (!bad) return;
  auto label = [](const std::vector<std::string>& names, int64_t i) {
    return i < static_cast<int64_t>(names.size()) ? "'" + names[i] + "' " : std::string();
  };
  throw std::invalid_argument(fmt::format(
      "{}: X does not hold raw counts: cell {}(row {}), gene {}(column {}) is {}; count likelihoods need non-negative "
      "whole numbers: use the raw counts (e.g. matrix layers/counts or raw/X)",
      source, label(adata.obs.index, bad->row), bad->row, label(adata.var.index, bad->col), bad->col, bad->value));
}

}  // namespace latentcell::data
