// Atomic checkpoint directories (see Checkpoint.h).
#include "train/Checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace latentcell::train {
namespace {

constexpr const char* kPrefix = "step-";
constexpr const char* kTmpPrefix = ".tmp-step-";

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

std::string CheckpointManager::save(int64_t step, const std::function<void(const std::string&)>& write) {
  const auto name = fmt::format("{}{:08d}", kPrefix, step);
  const auto tmp = fs::path(dir_) / (std::string(kTmpPrefix) + name.substr(5));
  const auto final_path = fs::path(dir_) / name;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write(tmp.string());
  for (const auto& entry : fs::directory_iterator(tmp)) fsyncPath(entry.path().string());
  fsyncPath(tmp.string());
  if (fs::exists(final_path)) fs::remove_all(final_path);  // rewriting the same step after a resume
  fs::rename(tmp, final_path);
  // Point `latest` at it: a new symlink renamed over the old one is atomic.
  const auto link_tmp = fs::path(dir_) / ".latest.tmp";
  fs::remove(link_tmp);
  fs::create_symlink(name, link_tmp);
  fs::rename(link_tmp, fs::path(dir_) / "latest");
  fsyncPath(dir_);

  auto all = list();
  const auto keep = static_cast<size_t>(std::max<int64_t>(keep_last_, 1));
  for (size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(all[i]);
  return final_path.string();
}

std::optional<std::string> CheckpointManager::latest() const {
  const auto link = fs::path(dir_) / "latest";
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
