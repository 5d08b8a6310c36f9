// TensorBoard event files (see TensorBoardWriter.h).
//
// Protobuf wire format used here: a field key is (number << 3 | wire type); wire type 0 = varint,
// 1 = 64-bit, 2 = length-delimited, 5 = 32-bit; little-endian fixed-width values.
#include "train/TensorBoardWriter.h"

#include "core/Crc32c.h"

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <unistd.h>

namespace latentcell::train {
namespace {

void putVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

template <typename T>
void putFixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // x86-64 and aarch64 are little-endian, as the format is
  out.append(bytes, sizeof(T));
}

void putBytesField(std::string& out, int field, const std::string& bytes) {
  putVarint(out, static_cast<uint64_t>(field) << 3 | 2);
  putVarint(out, bytes.size());
  out += bytes;
}

double wallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Event{wall_time = 1 (double), step = 2 (int64)} plus the caller's payload fields.
std::string eventHeader(int64_t step) {
  std::string e;
  putVarint(e, 1 << 3 | 1);
  putFixed(e, wallTime());
  putVarint(e, 2 << 3 | 0);
  putVarint(e, static_cast<uint64_t>(step));
  return e;
}

}  // namespace

uint32_t maskedCrc32c(const void* data, size_t size) {
  const uint32_t c = core::crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::filesystem::create_directories(dir);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = (std::filesystem::path(dir) /
           fmt::format("events.out.tfevents.{}.{}.{}", static_cast<int64_t>(wallTime()), host, getpid()))
              .string();
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw std::runtime_error("cannot create TensorBoard event file " + path_);
  auto e = eventHeader(0);
  putBytesField(e, 3, "brain.Event:2");  // file_version
  writeRecord(e);
}

void TensorBoardWriter::addScalar(const std::string& tag, double value, int64_t step) {
  std::string v;  // Summary.Value{tag = 1, simple_value = 2 (float)}
  putBytesField(v, 1, tag);
  putVarint(v, 2 << 3 | 5);
  putFixed(v, static_cast<float>(value));
  std::string summary;  // Summary{repeated Value value = 1}
  putBytesField(summary, 1, v);
  auto e = eventHeader(step);
  putBytesField(e, 5, summary);  // Event.summary
  writeRecord(e);
}

void TensorBoardWriter::flush() { out_.flush(); }

// TFRecord framing: length (uint64), masked CRC of the length, data, masked CRC of the data.
void TensorBoardWriter::writeRecord(const std::string& data) {
  std::string header;
  putFixed(header, static_cast<uint64_t>(data.size()));
  std::string rec = header;
  putFixed(rec, maskedCrc32c(header.data(), header.size()));
  rec += data;
  putFixed(rec, maskedCrc32c(data.data(), data.size()));
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
}

}  // namespace latentcell::train
