// Baseline predictions (see Baselines.h). Group means are accumulated in one pass over TRAIN's CSR
// rows into a [groups, genes] float64 table, groups being the (context, perturbation) pairs; every
// kind is then a combination of rows of that table, so no cell is densified.
#include "eval/Baselines.h"

#include "core/Logging.h"
#include "data/Preprocess.h"
#include "eval/CellEvalSuite.h"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace latentcell::eval {
namespace {

using Key = std::pair<std::string, std::string>;  // (context, perturbation)

// Sums and cell counts of log1p values per (context, perturbation) group.
struct GroupMeans {
  std::map<Key, std::vector<double>> sums;  // [genes] per group
  std::map<Key, int64_t> cells;

  void add(const Key& key, const data::CsrMatrix& x, int64_t row) {
    auto& s = sums[key];
    if (s.empty()) s.assign(size_t(x.cols), 0.0);
    for (int64_t k = x.indptr[row]; k < x.indptr[row + 1]; ++k) s[size_t(x.indices[k])] += x.data[k];
    ++cells[key];
  }
  bool has(const Key& key) const { return cells.count(key) > 0; }
  std::vector<double> mean(const Key& key) const {
    std::vector<double> m = sums.at(key);
    for (double& v : m) v /= double(cells.at(key));
    return m;
  }
};

// The labels of `column` in `adata`, or one empty context for every cell when `column` is empty.
std::vector<std::string> labels(const data::AnnData& adata, const std::string& column) {
  std::vector<std::string> out(size_t(adata.n_obs()));
  if (column.empty()) return out;
  const data::Column& c = adata.obsColumn(column);
  for (int64_t i = 0; i < adata.n_obs(); ++i) out[size_t(i)] = c.text(i);
  return out;
}

std::string contextText(const std::string& context, const std::string& celltypeCol) {
  return celltypeCol.empty() ? std::string("all cells") : celltypeCol + "='" + context + "'";
}

void addTo(std::vector<double>& acc, const std::vector<double>& v, double scale) {
  for (size_t g = 0; g < acc.size(); ++g) acc[g] += scale * v[g];
}

}  // namespace

BaselineKind parseBaselineKind(const std::string& name) {
  if (name == "cell-mean") return BaselineKind::CellMean;
  if (name == "perturb-mean") return BaselineKind::PerturbMean;
  if (name == "context-mean") return BaselineKind::ContextMean;
  throw std::invalid_argument("unknown baseline kind '" + name + "': use cell-mean, perturb-mean or context-mean");
}

const char* baselineKindName(BaselineKind kind) {
  switch (kind) {
    case BaselineKind::CellMean: return "cell-mean";
    case BaselineKind::PerturbMean: return "perturb-mean";
    case BaselineKind::ContextMean: return "context-mean";
  }
  return "?";
}

data::AnnData makeBaseline(const data::AnnData& train, const data::AnnData& like, const BaselineOptions& options,
                           BaselineReport* report) {
  BaselineReport local;
  BaselineReport& r = report ? *report : local;
  const std::string& control = options.controlPert;
  const std::vector<std::string> trainPerts = labels(train, options.pertCol);
  const std::vector<std::string> likePerts = labels(like, options.pertCol);
  const std::vector<std::string> trainContexts = labels(train, options.celltypeCol);
  const std::vector<std::string> likeContexts = labels(like, options.celltypeCol);

  data::CsrMatrix trainX = train.X, likeX = like.X;
  r.trainNormalised = toCellEvalLogSpace(trainX, "train", train.source);
  r.likeNormalised = toCellEvalLogSpace(likeX, "like", like.source);
  // Library sizes are taken over all of TRAIN's genes (above); then TRAIN's genes follow LIKE's.
  const std::set<std::string> trainGenes(train.var.index.begin(), train.var.index.end());
  std::vector<std::string> missing;
  for (const auto& g : like.var.index)
    if (!trainGenes.count(g)) missing.push_back(g);
  if (!missing.empty())
    throw std::invalid_argument("train (" + train.source + ") lacks " + std::to_string(missing.size()) + " of the " +
                                std::to_string(like.var.index.size()) + " genes of like (" + like.source +
                                "), first '" + missing.front() + "'; both files must measure like's genes");
  trainX = data::selectGenes(trainX, data::mapGenes(train.var.index, like.var.index));
  const int64_t genes = likeX.cols;

  GroupMeans groups;
  for (int64_t i = 0; i < trainX.rows; ++i) groups.add({trainContexts[size_t(i)], trainPerts[size_t(i)]}, trainX, i);
  GroupMeans likeControls;
  for (int64_t i = 0; i < likeX.rows; ++i)
    if (likePerts[size_t(i)] == control) likeControls.add({likeContexts[size_t(i)], control}, likeX, i);
  if (likeControls.cells.empty())
    throw std::invalid_argument("like (" + like.source + ") has no control cells ('" + control + "' in obs['" +
                                options.pertCol + "']); pass the control's label with --control-pert");

  // The perturbation-independent pieces of each kind.
  std::vector<double> cellMean;                             // cell-mean
  std::map<std::string, std::vector<double>> contextMean;   // context-mean, by context
  std::map<std::string, std::vector<double>> delta;         // perturb-mean, delta_p by perturbation
  std::vector<double> averageDelta;                         // perturb-mean, for unseen perturbations
  if (options.kind == BaselineKind::CellMean || options.kind == BaselineKind::ContextMean) {
    std::map<std::string, std::pair<std::vector<double>, int64_t>> byContext;  // sums, cells
    cellMean.assign(size_t(genes), 0.0);
    int64_t cells = 0;
    for (const auto& [key, sums] : groups.sums) {
      if (key.second == control) continue;
      auto& [s, n] = byContext[key.first];
      if (s.empty()) s.assign(size_t(genes), 0.0);
      addTo(s, sums, 1.0);
      addTo(cellMean, sums, 1.0);
      n += groups.cells.at(key);
      cells += groups.cells.at(key);
    }
    if (cells == 0)
      throw std::invalid_argument("train (" + train.source + ") has no perturbed cells (every cell is '" + control +
                                  "' in obs['" + options.pertCol + "']); a mean baseline needs perturbed cells");
    for (double& v : cellMean) v /= double(cells);
    for (auto& [context, sn] : byContext) {
      for (double& v : sn.first) v /= double(sn.second);
      contextMean[context] = std::move(sn.first);
    }
  } else {
    // delta_{c,p} for every (c, p) with training cells of p and training controls in c.
    std::map<std::string, std::pair<std::vector<double>, int64_t>> deltaSums;  // by p: sum over c, #c
    for (const auto& [key, n] : groups.cells) {
      if (key.second == control || !groups.has({key.first, control})) continue;
      auto& [s, contexts] = deltaSums[key.second];
      if (s.empty()) s.assign(size_t(genes), 0.0);
      addTo(s, groups.mean(key), 1.0);
      addTo(s, groups.mean({key.first, control}), -1.0);
      ++contexts;
    }
    if (deltaSums.empty())
      throw std::invalid_argument("train (" + train.source + ") has no perturbation with control cells in the same " +
                                  (options.celltypeCol.empty() ? std::string("file")
                                                               : "context (obs['" + options.celltypeCol + "'])") +
                                  "; perturb-mean needs '" + control + "' cells next to perturbed ones");
    averageDelta.assign(size_t(genes), 0.0);
    for (auto& [p, sc] : deltaSums) {
      for (double& v : sc.first) v /= double(sc.second);
      addTo(averageDelta, sc.first, 1.0 / double(deltaSums.size()));
      delta[p] = std::move(sc.first);
    }
  }

  // One prediction per (context, perturbation) of LIKE's non-control cells.
  std::map<Key, std::vector<float>> predictions;
  for (int64_t i = 0; i < likeX.rows; ++i) {
    const Key key{likeContexts[size_t(i)], likePerts[size_t(i)]};
    if (key.second == control || predictions.count(key)) continue;
    std::vector<double> v;
    switch (options.kind) {
      case BaselineKind::CellMean:
        v = cellMean;
        break;
      case BaselineKind::ContextMean: {
        const auto it = contextMean.find(key.first);
        if (it == contextMean.end())
          throw std::invalid_argument("train (" + train.source + ") has no perturbed cells of " +
                                      contextText(key.first, options.celltypeCol) +
                                      ", which like (" + like.source + ") has; context-mean needs them "
                                      "(use cell-mean or perturb-mean for unseen contexts)");
        v = it->second;
        break;
      }
      case BaselineKind::PerturbMean: {
        const Key trainControl{key.first, control};
        if (groups.has(trainControl)) {
          v = groups.mean(trainControl);
        } else if (likeControls.has(trainControl)) {
          v = likeControls.mean(trainControl);
          r.controlsFromLike.push_back(key.first);
        } else {
          throw std::invalid_argument("neither train (" + train.source + ") nor like (" + like.source +
                                      ") has control cells of " + contextText(key.first, options.celltypeCol) +
                                      "; perturb-mean starts from that context's control mean");
        }
        const auto it = delta.find(key.second);
        if (it == delta.end()) {
          addTo(v, averageDelta, 1.0);
          if (std::find(r.unseenPerturbations.begin(), r.unseenPerturbations.end(), key.second) ==
              r.unseenPerturbations.end())
            r.unseenPerturbations.push_back(key.second);
        } else {
          addTo(v, it->second, 1.0);
        }
        // Control mean + a shift learned elsewhere can fall below zero for a gene the context barely
        // expresses; log1p expression cannot, and evaluators (cell-eval) reject negative values.
        for (auto& x : v) x = std::max(x, 0.0);
        break;
      }
    }
    predictions[key] = std::vector<float>(v.begin(), v.end());
  }
  if (!r.unseenPerturbations.empty())
    core::logWarn("perturb-mean: {} perturbation(s) of like have no training cells (first: '{}'); they get the "
                  "average training effect",
                  r.unseenPerturbations.size(), r.unseenPerturbations.front());
  if (!r.controlsFromLike.empty())
    core::logWarn("perturb-mean: train has no control cells of {} context(s) (first: '{}'); their control mean "
                  "comes from like's control cells",
                  r.controlsFromLike.size(), r.controlsFromLike.front());

  data::AnnData out;
  out.obs = like.obs;
  out.var = like.var;
  out.uns_strings["baseline"] = baselineKindName(options.kind);
  data::CsrMatrix& x = out.X;
  x.rows = likeX.rows;
  x.cols = genes;
  x.indptr.assign(1, 0);
  for (int64_t i = 0; i < likeX.rows; ++i) {
    if (likePerts[size_t(i)] == control) {
      const int64_t begin = likeX.indptr[i], end = likeX.indptr[i + 1];
      x.indices.insert(x.indices.end(), likeX.indices.begin() + begin, likeX.indices.begin() + end);
      x.data.insert(x.data.end(), likeX.data.begin() + begin, likeX.data.begin() + end);
      ++r.controlCells;
    } else {
      const std::vector<float>& v = predictions.at({likeContexts[size_t(i)], likePerts[size_t(i)]});
      for (int64_t g = 0; g < genes; ++g)
        if (v[size_t(g)] != 0.0f) x.indices.push_back(int32_t(g)), x.data.push_back(v[size_t(g)]);
      ++r.predictedCells;
    }
    x.indptr.push_back(int64_t(x.data.size()));
  }
  return out;
}

}  // namespace latentcell::eval
