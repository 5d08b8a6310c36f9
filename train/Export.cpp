// Exported models (see Export.h). Writing reads the run's files rather than the loaded modules'
// state, so that the exported tensors are the bytes of the checkpoint's weights file; the run is
// loaded first all the same, so that a run the commands would refuse is refused here too.
#include "train/Export.h"

#include "core/BuildInfo.h"
#include "core/Config.h"
#include "core/Crc32c.h"
#include "train/Stage1Task.h"
#include "train/Stage2Task.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace latentcell::train {

namespace {

std::string readText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read " + path.string());
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The step of a checkpoint directory named by CheckpointManager::name (step-XXXXXXXX).
std::string stepOf(const std::string& checkpoint) {
  const auto name = fs::path(checkpoint).filename().string();
  const std::string prefix = "step-";
  if (name.rfind(prefix, 0) != 0) throw std::runtime_error(checkpoint + " is not a checkpoint directory (step-N)");
  return std::to_string(std::stoll(name.substr(prefix.size())));
}

// One model's tensors (its checkpoint's weights file, under `prefix`) and records.
void addModel(const std::string& prefix, const std::string& run_dir, const std::string& checkpoint,
              core::NamedTensors& tensors, std::map<std::string, std::string>& metadata) {
  const auto weights = checkpointWeights(checkpoint);
  for (auto& [name, t] : core::loadSafetensors(weights).tensors) tensors.emplace_back(prefix + "." + name, t);
  metadata[prefix + ".config"] = readText(fs::path(run_dir) / "config.yaml");
  metadata[prefix + ".checkpoint"] = fs::path(checkpoint).filename().string();
  metadata[prefix + ".step"] = stepOf(checkpoint);
  metadata[prefix + ".weights"] = fs::path(weights).filename() == "ema.safetensors" ? "ema" : "model";
  const auto meta = fs::path(checkpoint) / "meta.yaml";
  metadata[prefix + ".meta"] = fs::exists(meta) ? readText(meta) : "";
}

void addAutoencoder(const Stage1Run& run, const std::string& run_dir, core::NamedTensors& tensors,
                    std::map<std::string, std::string>& metadata) {
  addModel("autoencoder", run_dir, run.checkpoint, tensors, metadata);
  metadata["autoencoder.genes"] = nlohmann::json(run.genes).dump();
  // The checksum a stage-2 run records of its autoencoder (autoencoder.json), so that a prior run
  // directory can be decoded with this export (`generate --autoencoder`) under the same check.
  const auto weights = readText(checkpointWeights(run.checkpoint));
  metadata["autoencoder.weights_crc32c"] = std::to_string(core::crc32c(weights.data(), weights.size()));
}

}  // namespace

const std::string& ExportFile::meta(const std::string& key) const {
  const auto it = data.metadata.find(key);
  if (it == data.metadata.end()) {
    throw std::invalid_argument(path + " lacks the metadata key '" + key + "': re-export it with `latentcell export`");
  }
  return it->second;
}

core::SafetensorsData ExportFile::tensorsUnder(const std::string& prefix) const {
  core::SafetensorsData out;
  out.source = path + " [" + prefix + "*]";
  for (const auto& [name, t] : data.tensors)
    if (name.rfind(prefix, 0) == 0) out.tensors.emplace_back(name.substr(prefix.size()), t);
  return out;
}

bool isExportFile(const std::string& path) { return fs::is_regular_file(path); }

ExportFile readExport(const std::string& path) {
  ExportFile file;
  file.path = path;
  file.data = core::loadSafetensors(path);
  const auto format = file.data.metadata.find("format");
  if (format == file.data.metadata.end() || format->second != kExportFormat) {
    throw std::invalid_argument(path + " is not a latentcell export (its metadata has " +
                                (format == file.data.metadata.end() ? std::string("no 'format'")
                                                                    : "format '" + format->second + "'") +
                                ", expected '" + kExportFormat +
                                "'): pass a run directory or a file written by `latentcell export`");
  }
  file.kind = file.meta("kind");
  if (file.kind != "stage1" && file.kind != "stage2") {
    throw std::invalid_argument(path + ": unknown export kind '" + file.kind + "' (stage1 or stage2)");
  }
  return file;
}

ExportSummary exportRun(const std::string& run_dir, const std::string& out) {
  if (isExportFile(run_dir)) {
    throw std::invalid_argument(run_dir + " is a file, not a run directory: pass the directory of a `latentcell train` run");
  }
  if (!fs::is_directory(run_dir)) throw std::invalid_argument("run directory " + run_dir + " does not exist");
  const auto parent = fs::path(out).parent_path();
  if (!parent.empty() && !fs::is_directory(parent)) {
    throw std::invalid_argument("--out " + out + ": directory " + parent.string() + " does not exist; create it first");
  }
  const auto config_path = (fs::path(run_dir) / "config.yaml").string();
  if (!fs::exists(config_path)) {
    throw std::invalid_argument(run_dir + " has no config.yaml: pass the directory of a `latentcell train` run");
  }
  const auto task = core::peekConfigString(config_path, "task");
  const auto info = core::buildInfo();
  std::map<std::string, std::string> metadata = {{"format", kExportFormat},
                                                 {"latentcell_version", info.latentcell_version},
                                                 {"git_commit", info.git_commit + (info.git_dirty ? "-dirty" : "")}};
  core::NamedTensors tensors;
  const c10::Device cpu(c10::kCPU);
  if (task == "stage1") {
    const auto run = loadStage1Run(run_dir, cpu);
    metadata["kind"] = "stage1";
    addAutoencoder(run, run_dir, tensors, metadata);
  } else if (task == "stage2") {
    const auto run = loadStage2Run(run_dir, cpu);
    metadata["kind"] = "stage2";
    addModel("prior", run_dir, run.checkpoint, tensors, metadata);
    addAutoencoder(run.autoencoder, run.config.autoencoder, tensors, metadata);
    metadata["vocabularies"] = readText(fs::path(run_dir) / "vocabularies.json");
    metadata["library_sizes"] = readText(fs::path(run_dir) / "library_sizes.json");
    if (run.latent_mean.defined()) {
      for (auto& [name, t] : core::loadSafetensors((fs::path(run_dir) / "latent_stats.safetensors").string()).tensors)
        tensors.emplace_back("latent_stats." + name, t);
    }
  } else {
    throw std::invalid_argument(run_dir + " is a '" + task + "' run; only stage1 and stage2 runs can be exported");
  }
  core::saveSafetensors(out, tensors, metadata);
  ExportSummary summary{metadata["kind"], static_cast<int64_t>(tensors.size()), 0};
  for (const auto& [name, t] : tensors) summary.bytes += static_cast<int64_t>(t.nbytes());
  return summary;
}

}  // namespace latentcell::train
