// Atomic checkpoint directories (see Checkpoint.h).
#include "train/Checkpoint.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace latentcell::train {
namespace {

constexpr const char* kPrefix = "step-";
constexpr const char* kTmpPrefix = ".tmp-step-";
constexpr const char* kBestFile = "best.yaml";

// Points `link` (in `dir`) at `target`: a new symlink renamed over the old one is atomic.
void replaceSymlink(const fs::path& dir, const std::string& link, const std::string& target) {
  const auto tmp = dir / ("." + link + ".tmp");
  fs::remove(tmp);
  fs::create_symlink(target, tmp);
  fs::rename(tmp, dir / link);
}

}  // namespace

void fsyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(fmt::format("cannot open '{}' to sync it: {}", path, std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error(fmt::format("fsync of '{}' failed: {}", path, std::strerror(errno)));
}

CheckpointManager::CheckpointManager(std::string run_dir, int64_t keep_last)
    : dir_((fs::path(run_dir) / "checkpoints").string()), keep_last_(keep_last) {
  fs::create_directories(dir_);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const auto name = entry.path().filename().string();
    if (name.rfind(kTmpPrefix, 0) == 0) fs::remove_all(entry.path());  // an interrupted write
  }
}

std::string CheckpointManager::name(int64_t step) { return fmt::format("{}{:08d}", kPrefix, step); }

std::string CheckpointManager::save(int64_t step, const std::function<void(const std::string&)>& write,
                                    const BestCheckpoints& best) {
  const auto final_name = name(step);
  const auto tmp = fs::path(dir_) / (std::string(kTmpPrefix) + final_name.substr(5));
  const auto final_path = fs::path(dir_) / final_name;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write(tmp.string());
  for (const auto& entry : fs::directory_iterator(tmp)) fsyncPath(entry.path().string());
  fsyncPath(tmp.string());
  if (fs::exists(final_path)) fs::remove_all(final_path);  // rewriting the same step after a resume
  fs::rename(tmp, final_path);
  replaceSymlink(dir_, "latest", final_name);
  if (!best.ranked.empty()) publishBest(best);
  fsyncPath(dir_);

  // Prune only once every pointer names the checkpoints that stay.
  std::set<std::string> kept;
  for (const auto& r : best.ranked) kept.insert((fs::path(dir_) / name(r.step)).string());
  auto all = list();
  const auto keep = static_cast<size_t>(std::max<int64_t>(keep_last_, 1));
  for (size_t i = 0; i + keep < all.size(); ++i) {
    if (kept.count(all[i]) == 0) fs::remove_all(all[i]);
  }
  return final_path.string();
}

void CheckpointManager::publishBest(const BestCheckpoints& best) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "metric" << YAML::Value << best.metric << YAML::Key << "mode" << YAML::Value
      << best.mode << YAML::Key << "checkpoints" << YAML::Value << YAML::BeginSeq;
  for (const auto& r : best.ranked) {
    if (!fs::is_directory(fs::path(dir_) / name(r.step))) {
      throw std::logic_error(fmt::format("best checkpoint of step {} was never written", r.step));
    }
    out << YAML::BeginMap << YAML::Key << "step" << YAML::Value << r.step << YAML::Key << "value" << YAML::Value
        << r.value << YAML::Key << "path" << YAML::Value << name(r.step) << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  const auto tmp = fs::path(dir_) / ".best.yaml.tmp";
  {
    std::ofstream file(tmp, std::ios::trunc);
    file << out.c_str() << '\n';
    if (!file) throw std::runtime_error(fmt::format("cannot write '{}'", tmp.string()));
  }
  fsyncPath(tmp.string());
  fs::rename(tmp, fs::path(dir_) / kBestFile);
  replaceSymlink(dir_, "best", name(best.ranked.front().step));
}

std::optional<std::string> CheckpointManager::target(const std::string& link_name) const {
  const auto link = fs::path(dir_) / link_name;
  std::error_code ec;
  if (!fs::is_symlink(link, ec)) return std::nullopt;
  const auto target = fs::path(dir_) / fs::read_symlink(link);
  if (!fs::is_directory(target)) {
    throw std::runtime_error(fmt::format("'{}' points at '{}', which does not exist; remove the link to "
                                         "resume from the newest checkpoint in {}",
                                         link.string(), target.string(), dir_));
  }
  return target.string();
}

std::optional<std::string> CheckpointManager::latest() const { return target("latest"); }

std::optional<std::string> CheckpointManager::best() const { return target("best"); }

BestCheckpoints CheckpointManager::readBest() const {
  BestCheckpoints best;
  const auto path = fs::path(dir_) / kBestFile;
  if (!fs::exists(path)) return best;
  try {
    const auto doc = YAML::LoadFile(path.string());
    best.metric = doc["metric"].as<std::string>();
    best.mode = doc["mode"].as<std::string>();
    for (const auto& entry : doc["checkpoints"]) {
      best.ranked.push_back({entry["step"].as<int64_t>(), entry["value"].as<double>()});
    }
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(fmt::format("cannot read '{}': {}", path.string(), e.what()));
  }
  return best;
}

std::vector<std::string> CheckpointManager::list() const {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const auto name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) == 0 && entry.is_directory()) out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());  // zero-padded step numbers sort in step order
  return out;
}

}  // namespace latentcell::train
