// Checkpoint directories that are never half-written.
//
// A checkpoint is RUN/checkpoints/step-XXXXXXXX/. It is filled under a hidden temporary name,
// every file and the directory are fsynced, and only then renamed into place; `latest` is a
// symlink replaced by rename as well. A crash at any point leaves the previous checkpoint and
// `latest` intact; leftovers of an interrupted write are removed on the next start.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace latentcell::train {

class CheckpointManager {
 public:
  CheckpointManager(std::string run_dir, int64_t keep_last);

  // Writes the checkpoint of `step`: `write` fills the directory it is given; returns the final path.
  std::string save(int64_t step, const std::function<void(const std::string& dir)>& write);
  // The checkpoint `latest` points at, if any.
  std::optional<std::string> latest() const;
  // Complete checkpoints, oldest first.
  std::vector<std::string> list() const;
  const std::string& directory() const { return dir_; }

 private:
  std::string dir_;
  int64_t keep_last_;
};

// fsyncs a file or directory; errors name the path.
void fsyncPath(const std::string& path);

}  // namespace latentcell::train
