// TensorBoard event files with scalar summaries, so `tensorboard --logdir RUN_DIR` shows the curves.
//
// An event file is a TFRecord stream of serialized `Event` protos. Scalars need only three message
// types (Event{wall_time, step, file_version | summary}, Summary{value}, Value{tag, simple_value}),
// so they are encoded by hand instead of pulling protobuf and TensorFlow's .proto files into the
// build. Records carry masked CRC-32C checksums (core/Crc32c.h).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace latentcell::train {

class TensorBoardWriter {
 public:
  // Creates DIR/events.out.tfevents.<time>.<host>.<pid> and writes the file-version record.
  explicit TensorBoardWriter(const std::string& dir);
  void addScalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void writeRecord(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

// TFRecord's masked form of the CRC-32C of `data`.
uint32_t maskedCrc32c(const void* data, size_t size);

}  // namespace latentcell::train
