// `latentcell generate --prior RUN (--like REAL.h5ad | --conditions FILE.csv) --out pred.h5ad
// [--predict sample|mean] [--guidance W] [--steps K] [--seed S] [--cells all|test]
// [--controls copy|generate] [--real-out F]`: virtual cells from a trained prior, shaped like a real
// experiment so that `cell-eval run` (or `latentcell evaluate`) compares the two directly, or for
// the combinations and counts of a conditions CSV (no real cells: every row is generated, on the
// autoencoder's genes).
//
// For every condition combination of REAL's perturbed cells (n cells each) the prior samples n
// latents, which the autoencoder's head decodes with library sizes drawn from the log-normal fitted
// on that combination's training cells (or its fallbacks, Stage2Task.h). The transport prior starts
// from REAL's control cells of the same context, encoded, in sets of the run's set size. Control
// cells are copied from REAL (or generated too). The output has REAL's var_names order and, row for
// row, REAL's obs: generated cell i of a group takes the obs of the group's i-th real cell, so the
// two files pair up by condition exactly as cell-eval expects.
//
// Values: counts when a count head samples; log1p(x / total * 1e4) otherwise (MSE and hurdle heads,
// and the mean of a count head, which is not a count).
//
// --cells test restricts REAL (which must then be the run's data file) to the run's held-out cells
// plus the control cells of their contexts: the split the prior never saw. --real-out writes those
// real cells in the prediction's value space, the matching real file for evaluation.
#include "core/Device.h"
#include "core/Logging.h"
#include "core/Random.h"
#include "data/H5ad.h"
#include "data/Preprocess.h"
#include "heads/OutputHead.h"
#include "train/Commands.h"
#include "train/Stage2Task.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <memory>
#include <set>
#include <string>

namespace latentcell::cli {

namespace {

// Where a user finds the model's gene list: the autoencoder run's genes.txt, or for an exported
// prior (which may be used far from the run it came from) the export's own metadata.
std::string genesSource(const std::string& prior, const std::string& autoencoder_run) {
  if (std::filesystem::is_regular_file(prior)) return "the autoencoder.genes metadata of " + prior;
  return autoencoder_run + "/genes.txt";
}

std::string contextKey(const std::vector<int64_t>& ids, int64_t skip) {
  std::string key;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (static_cast<int64_t>(k) == skip) continue;
    key += std::to_string(ids[k]) + ",";
  }
  return key;
}

void appendDense(data::CsrMatrix& m, const at::Tensor& rows) {  // rows [n, cols] float
  const auto dense = rows.to(torch::kFloat).cpu().contiguous();
  const auto* p = dense.data_ptr<float>();
  const int64_t n = dense.size(0), cols = dense.size(1);
  if (m.indptr.empty()) m.indptr.push_back(0);
  m.cols = cols;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t g = 0; g < cols; ++g) {
      const float v = p[i * cols + g];
      if (v != 0.0f) {
        m.indices.push_back(static_cast<int32_t>(g));
        m.data.push_back(v);
      }
    }
    m.indptr.push_back(static_cast<int64_t>(m.data.size()));
  }
  m.rows += n;
}

void appendCsrRows(data::CsrMatrix& m, const data::CsrMatrix& src, const std::vector<int64_t>& rows) {
  if (m.indptr.empty()) m.indptr.push_back(0);
  m.cols = src.cols;
  for (int64_t r : rows) {
    for (int64_t k = src.indptr[static_cast<size_t>(r)]; k < src.indptr[static_cast<size_t>(r) + 1]; ++k) {
      m.indices.push_back(src.indices[static_cast<size_t>(k)]);
      m.data.push_back(src.data[static_cast<size_t>(k)]);
    }
    m.indptr.push_back(static_cast<int64_t>(m.data.size()));
  }
  m.rows += static_cast<int64_t>(rows.size());
}

// A conditions CSV (header: the prior's condition columns, in any order, and n) as an AnnData with no
// expression: each row's combination n times, as categorical obs columns.
data::AnnData conditionsTable(const std::string& path, const std::vector<data::Vocabulary>& vocabularies,
                              const std::vector<std::string>& genes) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + ": cannot open the conditions CSV");
  auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) {
      while (!cell.empty() && (cell.back() == '\r' || cell.back() == ' ')) cell.pop_back();
      while (!cell.empty() && cell.front() == ' ') cell.erase(cell.begin());
      cells.push_back(cell);
    }
    return cells;
  };
  std::string line;
  std::getline(in, line);
  const auto header = split(line);
  auto find = [&](const std::string& name) {
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      throw std::invalid_argument(path + ": the header has no column '" + name + "'; it needs n and one column per " +
                                  "condition of the prior");
    }
    return static_cast<size_t>(it - header.begin());
  };
  const size_t n_col = find("n");
  std::vector<size_t> cols;
  for (const auto& v : vocabularies) cols.push_back(find(v.column));
  data::AnnData out;
  out.var.index = genes;
  out.X.cols = static_cast<int64_t>(genes.size());
  out.X.indptr.push_back(0);
  std::vector<std::vector<std::string>> values(vocabularies.size());
  for (int64_t row = 2; std::getline(in, line); ++row) {
    if (line.empty()) continue;
    const auto cells = split(line);
    if (cells.size() != header.size()) {
      throw std::invalid_argument(path + ":" + std::to_string(row) + ": " + std::to_string(cells.size()) +
                                  " fields, the header has " + std::to_string(header.size()));
    }
    int64_t n = 0;
    try {
      n = std::stoll(cells[n_col]);
    } catch (const std::exception&) {
      n = -1;
    }
    if (n <= 0) throw std::invalid_argument(path + ":" + std::to_string(row) + ": n must be a positive integer");
    for (size_t k = 0; k < vocabularies.size(); ++k) vocabularies[k].id(cells[cols[k]]);  // unknown values throw
    for (int64_t i = 0; i < n; ++i) {
      out.obs.index.push_back("generated-" + std::to_string(out.X.rows));
      for (size_t k = 0; k < vocabularies.size(); ++k) values[k].push_back(cells[cols[k]]);
      out.X.indptr.push_back(0);
      ++out.X.rows;
    }
  }
  if (out.X.rows == 0) throw std::invalid_argument(path + " lists no cells to generate");
  for (size_t k = 0; k < vocabularies.size(); ++k) {
    data::Column column;
    column.kind = data::Column::Kind::String;
    column.strings = std::move(values[k]);
    out.obs.columns.emplace_back(vocabularies[k].column, std::move(column));
  }
  out.source = path;
  return out;
}

}  // namespace

Command addGenerateCommand(CLI::App& parent) {
  struct Args {
    std::string prior, like, conditions, out, real_out, autoencoder, predict = "sample", cells = "all",
        controls = "copy", device = "auto";
    double guidance = -1;
    int64_t steps = 0, seed = 0, batch_size = 512;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("generate", "Generate cells with a trained prior, shaped like a real h5ad");
  cmd.app->add_option("--prior", args->prior, "stage-2 run directory, or its `latentcell export` file")->required();
  auto* like = cmd.app->add_option("--like", args->like,
                                    "real h5ad whose condition combinations and cell counts to generate");
  auto* conditions = cmd.app->add_option(
      "--conditions", args->conditions,
      "CSV with one column per condition of the prior and a column n: generate n cells of each row's combination");
  like->excludes(conditions);
  conditions->excludes(like);
  cmd.app->add_option("--out", args->out, "output .h5ad")->required();
  cmd.app->add_option("--real-out", args->real_out, "also write the real cells compared against, in the same space");
  cmd.app->add_option("--predict", args->predict, "sample from the head, or its mean")
      ->check(CLI::IsMember({"sample", "mean"}));
  cmd.app->add_option("--guidance", args->guidance, "classifier-free guidance weight w (flow prior; default: config)");
  cmd.app->add_option("--steps", args->steps, "sampler steps (default: config)");
  cmd.app->add_option("--seed", args->seed, "seed of the sampler, the library sizes and the head's draws");
  cmd.app->add_option("--cells", args->cells, "all of --like, or the run's held-out test cells (same file)")
      ->check(CLI::IsMember({"all", "test"}));
  cmd.app->add_option("--controls", args->controls, "copy the real control cells, or generate them")
      ->check(CLI::IsMember({"copy", "generate"}));
  cmd.app->add_option("--autoencoder", args->autoencoder, "decode with this stage-1 run (must be the prior's own)");
  cmd.app->add_option("--batch-size", args->batch_size, "cells (or sets) sampled per call")->check(CLI::PositiveNumber);
  cmd.app->add_option("--device", args->device, "auto, cpu, cuda or cuda:N");
  cmd.run = [args] {
    const auto device = core::resolveDevice(args->device);
    if (args->cells == "test") train::requireRunDirectory(args->prior, "--cells test");
    auto run = train::loadStage2Run(args->prior, device, args->autoencoder);
    auto& ae = run.autoencoder;
    const auto& c = run.config;
    const int64_t key = run.perturbation_key;

    if (args->like.empty() && args->conditions.empty()) {
      throw std::invalid_argument("generate needs --like REAL.h5ad or --conditions FILE.csv: what to generate");
    }
    const bool from_csv = !args->conditions.empty();
    const bool jit_prior = std::string(run.prior->kindName()) == "jit";
    if (from_csv && (jit_prior || args->cells == "test" || !args->real_out.empty())) {
      throw std::invalid_argument(std::string("--conditions lists no real cells: ") +
                                  (jit_prior ? "the transport prior starts from real control cells" :
                                   args->cells == "test" ? "--cells test selects cells of a real file"
                                                         : "--real-out has nothing to write") +
                                  "; pass --like REAL.h5ad instead");
    }

    // REAL in its own gene order (the output's), and on the autoencoder's genes (to encode controls).
    // A conditions CSV stands in for REAL: its rows, n times each, with no expression.
    data::H5adReadOptions read;
    read.matrix = ae.config.data.matrix;
    read.obsm = false;
    auto real = from_csv ? conditionsTable(args->conditions, run.vocabularies, ae.genes) : data::readH5ad(args->like, read);
    auto mapped = from_csv ? train::Stage1Data{} : train::loadRunData(ae, args->like);  // every model gene present
    if (from_csv) args->controls = "generate";
    if (!from_csv &&
        (mapped.rows.size() != static_cast<size_t>(real.n_obs()) || real.n_vars() != static_cast<int64_t>(ae.genes.size()))) {
      throw std::invalid_argument(
          args->like + " has " + std::to_string(real.n_vars()) + " genes and " + std::to_string(real.n_obs()) +
          " cells, the autoencoder models " + std::to_string(ae.genes.size()) + " genes and keeps " +
          std::to_string(mapped.rows.size()) + " cells: pass a file on exactly the model's genes (" + genesSource(args->prior, args->autoencoder.empty() ? c.autoencoder : args->autoencoder) +
          ") without the autoencoder's excluded cells");
    }
    std::map<std::string, int64_t> ae_index;
    for (size_t g = 0; g < ae.genes.size(); ++g) ae_index[ae.genes[g]] = static_cast<int64_t>(g);
    std::vector<int64_t> to_real_order;  // output column j <- model gene to_real_order[j]
    for (const auto& name : real.var.index) to_real_order.push_back(ae_index.at(name));
    const auto order = torch::tensor(to_real_order);

    // Cells of REAL to reproduce: after the prior's exclusions, optionally only the test split.
    std::vector<int64_t> rows;
    if (from_csv) {
      for (int64_t i = 0; i < real.n_obs(); ++i) rows.push_back(i);
    } else {
      rows = train::priorCellRows(c, real.obs, real.source);
    }
    const auto kept_obs = data::takeRows(real.obs, rows);
    const auto ids = data::conditionIds(run.vocabularies, kept_obs);  // [cells, keys]; unknown values throw
    auto idsOf = [&](int64_t i) {
      std::vector<int64_t> v(static_cast<size_t>(ids.size(1)));
      for (int64_t k = 0; k < ids.size(1); ++k) v[static_cast<size_t>(k)] = ids.index({i, k}).item<int64_t>();
      return v;
    };
    std::vector<int64_t> selected;  // positions into `rows`
    if (args->cells == "test") {
      const auto split = data::loadSplit(args->prior, static_cast<int64_t>(rows.size()));
      const auto test = split.indices(data::SplitPart::Test);
      if (test.empty()) throw std::invalid_argument(args->prior + " has no held-out test cells (data.holdout is empty)");
      std::set<std::string> contexts;
      for (int64_t i : test) contexts.insert(contextKey(idsOf(i), key));
      std::set<int64_t> chosen(test.begin(), test.end());
      for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i)
        if (idsOf(i)[static_cast<size_t>(key)] == 0 && contexts.count(contextKey(idsOf(i), key))) chosen.insert(i);
      selected.assign(chosen.begin(), chosen.end());
    } else {
      for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i) selected.push_back(i);
    }

    // Groups: condition combination -> positions, in first-seen order.
    std::vector<std::vector<int64_t>> groups;
    std::vector<int64_t> controls;
    std::map<std::string, size_t> group_of;
    for (int64_t i : selected) {
      const auto v = idsOf(i);
      if (v[static_cast<size_t>(key)] == 0 && args->controls == "copy") {
        controls.push_back(i);
        continue;
      }
      auto [it, added] = group_of.emplace(contextKey(v, -1), groups.size());
      if (added) groups.emplace_back();
      groups[it->second].push_back(i);
    }

    auto options = run.prior->defaultSamplerOptions();
    if (args->guidance >= 0) options.guidance = args->guidance;
    if (args->steps > 0) options.steps = args->steps;
    const auto mode = heads::parsePredictMode(args->predict);
    auto gen = core::makeGenerator(static_cast<uint64_t>(args->seed), device);
    auto host_gen = core::makeGenerator(static_cast<uint64_t>(args->seed) + 1);
    const bool jit = jit_prior;
    const int64_t set_size = c.data.set_size;

    // Transport prior: the encoded, standardised control cells of each context in REAL.
    std::map<std::string, at::Tensor> control_latents;
    if (jit) {
      std::map<std::string, std::vector<int64_t>> by_context;  // context -> rows of `mapped`
      for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i)
        if (idsOf(i)[static_cast<size_t>(key)] == 0) by_context[contextKey(idsOf(i), key)].push_back(rows[static_cast<size_t>(i)]);
      for (const auto& [ctx, cells] : by_context) {
        std::vector<at::Tensor> parts;
        train::forEachBatch(ae, mapped, cells, args->batch_size, device,
                            [&](const std::vector<int64_t>&, const models::CellBatch& b) {
                              parts.push_back(ae.model->encodeLatent(b));
                            });
        const auto z = torch::cat(parts, 0);  // [cells, L, d]
        control_latents[ctx] = ((z - run.latent_mean) / run.latent_std).flatten(1);  // [cells, L d]
      }
    }

    torch::NoGradGuard no_grad;
    data::AnnData out;
    std::vector<int64_t> out_rows;  // positions into `rows`, in output order
    int64_t generated = 0;
    for (const auto& group : groups) {
      const auto cond = idsOf(group.front());
      const int64_t n = static_cast<int64_t>(group.size());
      const auto cond_tensor = torch::tensor(cond).to(device);  // [keys]
      std::vector<at::Tensor> parts;
      if (jit) {
        const auto ctx = contextKey(cond, key);
        auto it = control_latents.find(ctx);
        if (it == control_latents.end()) {
          throw std::invalid_argument(args->like + " has no control cells in the context of " +
                                      kept_obs.index[static_cast<size_t>(group.front())] +
                                      ": the transport prior starts from them; include that context's controls");
        }
        const int64_t sets = (n + set_size - 1) / set_size;
        for (int64_t s0 = 0; s0 < sets; s0 += args->batch_size) {
          const int64_t m = std::min(args->batch_size, sets - s0);
          const auto pick = torch::randint(it->second.size(0), {m * set_size}, host_gen, torch::kLong).to(device);
          priors::SampleRequest request;
          request.conditions = cond_tensor;
          request.control = it->second.index_select(0, pick).reshape({m, set_size, -1});  // [m, set, L d]
          parts.push_back(run.prior->sample(request, m, options, gen).reshape({m * set_size, -1}));
        }
      } else {
        for (int64_t s0 = 0; s0 < n; s0 += args->batch_size) {
          const int64_t m = std::min(args->batch_size, n - s0);
          priors::SampleRequest request;
          request.conditions = cond_tensor;
          parts.push_back(run.prior->sample(request, m, options, gen));
        }
      }
      const auto latents = torch::cat(parts, 0).slice(0, 0, n);
      const auto& fit = run.library.lookup(cond, key);
      const auto library =
          (torch::randn({n}, host_gen, torch::kDouble) * fit.std + fit.mean).exp().to(torch::kFloat).to(device);  // [n]
      const auto pred = ae.model->predict(train::toAutoencoderLatent(run, latents), library, mode, gen);  // [n, genes]
      appendDense(out.X, pred.index_select(1, order.to(device)));
      out_rows.insert(out_rows.end(), group.begin(), group.end());
      generated += n;
    }

    // A count head's mean is not a count: evaluators (cell-eval) read non-integer values as log1p
    // data and refuse them above 15. Means are written log1p-normalised, like the MSE and hurdle heads.
    const bool count_head = ae.model->valueSpace() == heads::ValueSpace::Counts;
    const bool counts = count_head && mode == heads::PredictMode::Sample;
    if (count_head && !counts && out.X.rows > 0) out.X = data::log1p(data::normalizeTotal(out.X, 1e4));
    auto inSpace = [&](const data::CsrMatrix& m) { return counts ? m : data::log1p(data::normalizeTotal(m, 1e4)); };
    std::vector<int64_t> control_rows;
    for (int64_t i : controls) control_rows.push_back(rows[static_cast<size_t>(i)]);
    const auto real_controls = inSpace(data::takeRows(real.X, control_rows));
    std::vector<int64_t> all(static_cast<size_t>(real_controls.rows));
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
    appendCsrRows(out.X, real_controls, all);
    out_rows.insert(out_rows.end(), controls.begin(), controls.end());
    if (out.X.indptr.empty()) throw std::invalid_argument(args->like + ": no cells to generate");

    std::vector<int64_t> file_rows;
    for (int64_t i : out_rows) file_rows.push_back(rows[static_cast<size_t>(i)]);
    out.obs = data::takeRows(real.obs, file_rows);
    data::removeUnusedCategories(out.obs);
    out.var.index = real.var.index;
    out.uns_strings["latentcell_value_space"] = counts ? "counts" : "log1p_normalized";
    out.uns_strings["latentcell_prior"] = args->prior;
    out.uns_strings["latentcell_predict"] = args->predict;
    out.uns_numbers["latentcell_guidance"] = options.guidance;
    out.uns_numbers["latentcell_seed"] = static_cast<double>(args->seed);
    data::writeH5ad(out, args->out);
    if (!args->real_out.empty()) {
      data::AnnData r;
      r.X = inSpace(data::takeRows(real.X, file_rows));
      r.obs = out.obs;
      r.var.index = real.var.index;
      data::writeH5ad(r, args->real_out);
    }
    // Copied controls are kept apart from the groups; generated ones are part of them.
    int64_t control_cells = 0;
    for (int64_t i : selected) control_cells += idsOf(i)[static_cast<size_t>(key)] == 0 ? 1 : 0;
    core::logInfo("generated {} cells in {} condition groups ({} prior, {} head {}, {} written), {} control cells {} -> {}",
                  generated, groups.size(), run.prior->kindName(), count_head ? "count" : "log1p", args->predict,
                  counts ? "counts" : "log1p-normalised",
                  control_cells, args->controls == "copy" ? "copied" : "generated (counted above)", args->out);
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
