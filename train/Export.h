// Exported models: a trained run as one self-contained safetensors file (`latentcell export`).
//
// A run directory is the trainer's working state (optimizer, RNG, every kept checkpoint); what a
// user ships is one file that Python's `safetensors` reads and that `reconstruct`, `encode` and
// `generate` accept in place of the run directory. The file holds the weights a run directory
// loads (EMA weights when the run kept them, byte for byte) under one prefix per model, and
// everything else that loading needs in the string metadata, so nothing is looked up elsewhere:
//   tensors   autoencoder.<name>       the stage-1 autoencoder's state dict
//             prior.<name>             stage 2: the prior's state dict
//             latent_stats.mean/std    stage 2, continuous latents: the latent standardisation
//   metadata  format, kind (stage1 | stage2), latentcell_version, git_commit (of the exporter)
//             autoencoder.config / .genes / .checkpoint / .step / .weights / .meta / .weights_crc32c
//             stage 2: prior.config / .checkpoint / .step / .weights / .meta, vocabularies,
//             library_sizes
// Keys are listed with their meaning in docs/export.md. The cell split is not exported: it indexes
// the rows of the training file, which a user of the model does not have.
#pragma once

#include "core/Safetensors.h"

#include <cstdint>
#include <string>

namespace latentcell::train {

// The value of the `format` metadata key.
inline constexpr const char* kExportFormat = "latentcell.export.v1";

// A read and checked export file.
struct ExportFile {
  std::string path;
  std::string kind;  // stage1 | stage2
  core::SafetensorsData data;

  // The metadata value `key`; throws std::invalid_argument naming the key and the file.
  const std::string& meta(const std::string& key) const;
  // The tensors named `prefix`<name>, as <name> in file order (shared storage, not copies).
  core::SafetensorsData tensorsUnder(const std::string& prefix) const;
};

// True when `path` names a regular file (an export) rather than a run directory.
bool isExportFile(const std::string& path);

// Reads `path`; a file that is not a latentcell export (no or another `format`) is a
// std::invalid_argument saying to pass a run directory or an exported file.
ExportFile readExport(const std::string& path);

struct ExportSummary {
  std::string kind;
  int64_t tensors = 0;
  int64_t bytes = 0;  // of the tensors' data
};

// Writes the run in `run_dir` (stage 1 or stage 2, from its config.yaml) to `out`: loads it as the
// commands do (so a run that would not load is not exported), then copies the weights files'
// tensors and the run's records. The file is written under a temporary name and renamed.
ExportSummary exportRun(const std::string& run_dir, const std::string& out);

}  // namespace latentcell::train
