// `latentcell data <tool>`: tools for h5ad files and shard directories. Each tool is one add*Tool
// function registering a sub-subcommand of `data`.
//
// `data inspect FILE`: what a user needs to know before training on a file: its shape, how X is
// stored (CSR/CSC/dense, on-disk dtype) and whether it holds whole numbers (raw counts), and each
// obs/var column with its kind and, for label-like columns, the count of every value. Given a shard
// directory it opens it (verifying every checksum) and prints its shape, dtypes and groups.
//
// `data convert IN.h5ad OUT_DIR`: the sharded on-disk format (data/ShardDataset.h) for fast
// shuffled and condition-grouped loading.
#include "data/H5ad.h"
#include "data/ShardConvert.h"
#include "data/ShardDataset.h"
#include "train/Commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace latentcell::cli {
namespace {

using data::Column;

// Label-like columns with at most this many distinct values list each with its count.
constexpr size_t kMaxListed = 50;

const char* kindName(Column::Kind kind) {
  switch (kind) {
    case Column::Kind::Categorical: return "categorical";
    case Column::Kind::String: return "string";
    case Column::Kind::Float: return "float";
    case Column::Kind::Int: return "int";
    case Column::Kind::Bool: return "bool";
  }
  return "?";
}

bool isMissing(const Column& c, int64_t i) {
  if (!c.missing.empty() && c.missing[i]) return true;
  if (c.kind == Column::Kind::Categorical) return c.codes[i] < 0;
  if (c.kind == Column::Kind::Float) return std::isnan(c.floats[i]);
  return false;
}

std::string describeColumn(const std::string& name, const Column& c) {
  const int64_t n = c.size();
  int64_t missing = 0;
  for (int64_t i = 0; i < n; ++i) missing += isMissing(c, i);
  const std::string missing_text = missing ? fmt::format(", {} missing", missing) : "";
  std::string out = fmt::format("  {}  {}", name, kindName(c.kind));

  if (c.kind == Column::Kind::Float || c.kind == Column::Kind::Int) {
    double lo = 0, hi = 0;
    bool any = false;
    for (int64_t i = 0; i < n; ++i) {
      if (isMissing(c, i)) continue;
      const double v = c.kind == Column::Kind::Float ? c.floats[i] : static_cast<double>(c.ints[i]);
      lo = any ? std::min(lo, v) : v;
      hi = any ? std::max(hi, v) : v;
      any = true;
    }
    return out + (any ? fmt::format(", min {} max {}", lo, hi) : "") + missing_text + "\n";
  }

  // Values with their counts: categories in their declared order (unused ones included), other
  // labels sorted.
  std::vector<std::pair<std::string, int64_t>> counts;
  if (c.kind == Column::Kind::Categorical) {
    std::vector<int64_t> per(c.categories.size(), 0);
    for (int32_t code : c.codes)
      if (code >= 0) ++per[code];
    for (size_t k = 0; k < per.size(); ++k) counts.emplace_back(c.categories[k], per[k]);
    out += fmt::format(", {} categories{}", c.categories.size(), c.ordered ? " (ordered)" : "");
  } else {
    std::map<std::string, int64_t> seen;
    for (int64_t i = 0; i < n; ++i)
      if (!isMissing(c, i)) ++seen[c.text(i)];
    counts.assign(seen.begin(), seen.end());
    out += fmt::format(", {} distinct values", counts.size());
  }
  out += missing_text + "\n";
  if (counts.size() > kMaxListed) return out;
  size_t width = 0;
  for (const auto& [value, count] : counts) width = std::max(width, value.size());
  for (const auto& [value, count] : counts) out += fmt::format("    {:<{}}  {}\n", value, width, count);
  return out;
}

std::string describeFrame(const char* what, const data::DataFrame& df) {
  std::string out = fmt::format("{} columns: {}\n", what, df.columns.size());
  for (const auto& [name, column] : df.columns) out += describeColumn(name, column);
  return out;
}

std::string describeShards(const data::ShardDataset& d) {
  std::string out;
  out += fmt::format("shards   {} ({} files, checksums verified)\n", d.dir(), d.shards());
  out += fmt::format("source   {}\n", d.source());
  out += fmt::format("n_obs    {}\n", d.cells());
  out += fmt::format("n_vars   {}\n", d.genes());
  out += fmt::format("nnz      {}\n", d.nnz());
  out += fmt::format("values   {}, whole numbers: {}\n", data::dtypeName(d.valueDtype()), d.wholeNumbers() ? "yes" : "no");
  std::string context;
  for (const auto& c : d.contextColumns()) context += (context.empty() ? "" : ", ") + c;
  out += fmt::format("groups   {} (condition: {}, control: {}, context: {})\n", d.groups().size(),
                     d.conditionColumn().empty() ? "none" : d.conditionColumn(),
                     d.controlLabel().empty() ? "none" : d.controlLabel(), context.empty() ? "none" : context);
  out += fmt::format("obs columns: {}\n", d.obs().size());
  for (const auto& c : d.obs()) out += fmt::format("  {}  {} categories\n", c.name, c.categories.size());
  return out;
}

Command addInspectTool(CLI::App& data_app) {
  struct Args {
    std::string file;
    std::string matrix = "X";
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = data_app.add_subcommand(
      "inspect", "Summarise an h5ad file (shape, storage, counts check, obs/var columns) or a shard directory");
  cmd.app->add_option("file", args->file, "the .h5ad file or shard directory")->required();
  cmd.app->add_option("--matrix", args->matrix, "matrix to inspect: X, layers/<name> or raw/X")->capture_default_str();
  cmd.run = [args] {
    if (std::filesystem::is_directory(args->file)) {
      std::cout << describeShards(data::ShardDataset(args->file));
      return 0;
    }
    const auto info = data::inspectH5ad(args->file, args->matrix);
    data::H5adReadOptions options;
    options.matrix = args->matrix;
    options.obsm = false;  // listed from `info`, which also names the sparse entries
    const auto adata = data::readH5ad(args->file, options);

    std::string out;
    out += fmt::format("file     {}\n", args->file);
    out += fmt::format("n_obs    {}\n", adata.n_obs());
    out += fmt::format("n_vars   {}\n", adata.n_vars());
    out += fmt::format("nnz      {}\n", adata.X.nnz());
    out += fmt::format("{:<8} {} {}, whole numbers: {}\n", info.matrix, data::storageName(info.storage), info.dtype,
                       data::allWholeNumbers(adata.X) ? "yes" : "no");
    std::string layers;
    for (const auto& l : info.layers) layers += (layers.empty() ? "" : ", ") + l;
    out += fmt::format("layers   {}\n", layers.empty() ? "none" : layers);
    out += fmt::format("raw      {}\n", info.has_raw ? "yes (raw/X)" : "no");
    out += describeFrame("obs", adata.obs);
    out += describeFrame("var", adata.var);
    out += fmt::format("obsm: {}\n", info.obsm.size());
    for (const auto& [key, how] : info.obsm) out += fmt::format("  {}  {}\n", key, how);
    std::cout << out;
    return 0;
  };
  return cmd;
}

Command addConvertTool(CLI::App& data_app) {
  struct Args {
    std::string in, out;
    data::ShardConvertOptions options;
  };
  auto args = std::make_shared<Args>();
  auto& o = args->options;
  Command cmd;
  cmd.app = data_app.add_subcommand("convert", "Convert an h5ad file to memory-mapped CSR shards for fast loading");
  cmd.app->add_option("in", args->in, "the .h5ad file")->required();
  cmd.app->add_option("out", args->out, "output directory (must not exist, or be empty)")->required();
  cmd.app->add_option("--matrix", o.matrix, "counts to convert: X, layers/<name> or raw/X")->capture_default_str();
  cmd.app->add_option("--condition", o.condition, "obs column grouping cells into contiguous ranges, e.g. perturbation");
  cmd.app->add_option("--control", o.control, "control label of the condition column, e.g. control");
  cmd.app->add_option("--context", o.context,
                      "obs columns the matched control cells share with a condition, e.g. cell_type,batch")
      ->delimiter(',');
  cmd.app->add_option("--obs", o.obs, "obs columns to store besides the grouping ones (default: every categorical)")
      ->delimiter(',');
  cmd.app->add_option("--shard-cells", o.shard_cells, "cells per shard file")->capture_default_str();
  cmd.app->add_option("--chunk-cells", o.chunk_cells, "cells read from the h5ad at a time")->capture_default_str();
  cmd.app->add_option("--seed", o.seed, "seed of the cell order within groups")->capture_default_str();
  cmd.app->add_flag("--float-values", o.float_values, "store float32 values even when uint16 holds them exactly");
  cmd.run = [args] {
    const auto r = data::convertH5adToShards(args->in, args->out, args->options);
    std::cout << fmt::format(
        "wrote {}: {} cells x {} genes, {} entries in {} shards ({} indices, {} values), {} groups, {:.1f} MiB\n",
        args->out, r.cells, r.genes, r.nnz, r.shards, data::dtypeName(r.indices), data::dtypeName(r.values), r.groups,
        static_cast<double>(r.bytes) / (1 << 20));
    return 0;
  };
  return cmd;
}

}  // namespace

Command addDataCommand(CLI::App& parent) {
  Command cmd;
  cmd.app = parent.add_subcommand("data", "Tools for h5ad files and shard directories (inspect, convert)");
  cmd.app->require_subcommand(1);
  auto tools = std::make_shared<std::vector<Command>>();
  tools->push_back(addInspectTool(*cmd.app));
  tools->push_back(addConvertTool(*cmd.app));
  cmd.run = [tools] {
    for (const auto& tool : *tools)
      if (tool.app->parsed()) return tool.run();
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
