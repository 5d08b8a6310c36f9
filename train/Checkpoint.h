// Checkpoint directories that are never half-written, keep-last-N, and the best-K by validation.
//
// A checkpoint is RUN/checkpoints/step-XXXXXXXX/. It is filled under a hidden temporary name,
// every file and the directory are fsynced, and only then renamed into place; `latest` is a
// symlink replaced by rename as well. A crash at any point leaves the previous checkpoint and
// `latest` intact; leftovers of an interrupted write are removed on the next start.
//
// The best checkpoints by a validation metric survive keep-last-N pruning. The trainer owns the
// ranking (it is part of the run state saved in each checkpoint, so a resumed run ranks the same);
// the manager receives it with every save and publishes it, before pruning, as best.yaml (metric,
// mode and the ranked steps with their values, rewritten by rename) and a `best` symlink to the
// first. Whatever the crash point, best.yaml and `best` name only directories that exist.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace latentcell::train {

// One entry of the best-K ranking: the checkpoint of `step` scored `value` on the metric.
struct RankedCheckpoint {
  int64_t step = 0;
  double value = 0;
};

// The best-K ranking, best first, and what it ranks by.
struct BestCheckpoints {
  std::string metric;
  std::string mode = "min";  // min or max
  std::vector<RankedCheckpoint> ranked;
};

class CheckpointManager {
 public:
  CheckpointManager(std::string run_dir, int64_t keep_last);

  // Writes the checkpoint of `step`: `write` fills the directory it is given; returns the final path.
  // The checkpoints of `best.ranked` are kept beyond the last N and published (see above); every
  // step in it must have a checkpoint once this one is written.
  std::string save(int64_t step, const std::function<void(const std::string& dir)>& write,
                   const BestCheckpoints& best = {});
  // The checkpoint `latest` points at, if any.
  std::optional<std::string> latest() const;
  // The checkpoint `best` points at, if any.
  std::optional<std::string> best() const;
  // best.yaml as last published (an empty ranking when there is none).
  BestCheckpoints readBest() const;
  // Complete checkpoints, oldest first.
  std::vector<std::string> list() const;
  const std::string& directory() const { return dir_; }
  // The directory name of the checkpoint of `step` (step-XXXXXXXX).
  static std::string name(int64_t step);

 private:
  void publishBest(const BestCheckpoints& best);
  std::optional<std::string> target(const std::string& link) const;

  std::string dir_;
  int64_t keep_last_;
};

// fsyncs a file or directory; errors name the path.
void fsyncPath(const std::string& path);

}  // namespace latentcell::train
