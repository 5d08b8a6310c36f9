// Condition encoder (see ConditionEncoder.h).
#include "priors/ConditionEncoder.h"

#include "core/Init.h"
#include "data/ConditionEmbeddings.h"
#include "priors/Sampling.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

namespace latentcell::priors {

ConditionColumnSpec externalColumn(const std::string& name, const std::vector<std::string>& labels,
                                   const data::EmbeddingTable& table, bool missing_as_null) {
  ConditionColumnSpec spec{name, labels, {}, {}};
  spec.external = table.lookup(labels, &spec.missing);  // [labels, ext_dim]
  std::vector<std::string> absent;
  for (size_t i = 0; i < labels.size(); ++i)
    if (spec.missing[i]) absent.push_back(labels[i]);
  if (!absent.empty() && !missing_as_null) {
    const size_t shown = std::min<size_t>(absent.size(), 10);
    throw std::invalid_argument(fmt::format(
        "condition column '{}': {} label(s) have no external embedding ({}{}); add them to the embedding "
        "file or set conditioning.missing_as_null: true to give them the learned null vector",
        name, absent.size(), fmt::join(absent.begin(), absent.begin() + static_cast<long>(shown), ", "),
        absent.size() > shown ? ", ..." : ""));
  }
  return spec;
}

DropoutMode parseDropoutMode(const std::string& name) {
  if (name == "joint") return DropoutMode::Joint;
  if (name == "additive") return DropoutMode::Additive;
  throw std::invalid_argument("condition dropout mode must be 'joint' or 'additive', got '" + name + "'");
}

ConditionColumnImpl::ConditionColumnImpl(const ConditionColumnSpec& spec, int64_t dim)
    : external_(spec.external.defined()), vocab_(static_cast<int64_t>(spec.labels.size())) {
  torch::NoGradGuard no_grad;
  if (!external_) {
    // DiT's LabelEmbedder: N(0, 0.02), one extra row for the null label.
    table = register_parameter("table", at::empty({vocab_ + 1, dim}));
    torch::nn::init::normal_(table, 0.0, 0.02);
    return;
  }
  if (spec.external.dim() != 2 || spec.external.size(0) != vocab_) {
    throw std::invalid_argument(fmt::format("condition column '{}': external embeddings must be [{}, dim], got {}",
                                            spec.name, vocab_, spec.external.sizes()));
  }
  vectors = register_buffer("vectors", spec.external.to(at::kFloat).clone());
  auto keep = at::ones({vocab_}, at::TensorOptions().dtype(at::kBool));
  for (int64_t i = 0; i < static_cast<int64_t>(spec.missing.size()); ++i)
    if (spec.missing[static_cast<size_t>(i)]) keep[i] = false;
  present = register_buffer("present", keep);
  proj = register_module("proj", torch::nn::Linear(spec.external.size(1), dim));
  core::xavierUniform(proj);
  null_embedding = register_parameter("null_embedding", at::empty({dim}));
  torch::nn::init::normal_(null_embedding, 0.0, 0.02);
}

at::Tensor ConditionColumnImpl::forward(const at::Tensor& ids, const at::Tensor& null) {
  auto is_null = ids.lt(0);                                                      // [batch]
  if (null.defined()) is_null = is_null.logical_or(null);
  if (!external_) return table.index_select(0, at::where(is_null, vocab_, ids));  // [batch, dim]
  auto safe = ids.clamp_min(0);                                                  // [batch]
  is_null = is_null.logical_or(present.index_select(0, safe).logical_not());
  auto projected = proj(vectors.index_select(0, safe));                          // [batch, dim]
  return at::where(is_null.unsqueeze(1), null_embedding.unsqueeze(0), projected);
}

ConditionEncoderImpl::ConditionEncoderImpl(const ConditionEncoderOptions& options,
                                           const std::vector<ConditionColumnSpec>& columns_spec)
    : options_(options) {
  if (options_.dim <= 0) throw std::invalid_argument("ConditionEncoder: dim must be positive");
  if (options_.dropout < 0 || options_.dropout > 1) {
    throw std::invalid_argument("ConditionEncoder: dropout must be in [0, 1], got " + std::to_string(options_.dropout));
  }
  if (options_.timestep) time_embed = register_module("time_embed", core::TimestepEmbedding(options_.dim));
  columns = register_module("columns", torch::nn::ModuleList());
  for (const auto& spec : columns_spec) {
    if (spec.labels.empty()) {
      throw std::invalid_argument("ConditionEncoder: condition column '" + spec.name + "' has an empty vocabulary");
    }
    auto column = ConditionColumn(spec, options_.dim);
    columns->push_back(column);
    column_modules_.push_back(column);
    names_.push_back(spec.name);
    vocab_sizes_.push_back(static_cast<int64_t>(spec.labels.size()));
  }
}

void ConditionEncoderImpl::checkIds(const at::Tensor& ids) const {
  if (!ids.defined() || ids.dim() != 2 || ids.size(1) != keys() || ids.scalar_type() != at::kLong) {
    throw std::invalid_argument(fmt::format(
        "condition ids must be a [batch, {}] int64 tensor (columns: {}), got {}", keys(), fmt::join(names_, ", "),
        ids.defined() ? fmt::format("{} {}", ids.sizes(), c10::toString(ids.scalar_type())) : "none"));
  }
  if (ids.size(0) == 0 || keys() == 0) return;
  auto max_ids = std::get<0>(ids.max(0)).cpu();  // [keys]
  for (int64_t k = 0; k < keys(); ++k) {
    const int64_t m = max_ids[k].item<int64_t>();
    if (m >= vocab_sizes_[static_cast<size_t>(k)]) {
      throw std::invalid_argument(fmt::format(
          "condition column '{}': id {} is outside its vocabulary of {} labels (was the prior trained on "
          "another dataset? use that run's vocabularies)",
          names_[static_cast<size_t>(k)], m, vocab_sizes_[static_cast<size_t>(k)]));
    }
  }
}

at::Tensor ConditionEncoderImpl::embedKeys(const at::Tensor& ids, const at::Tensor& null) {
  checkIds(ids);
  const int64_t batch = ids.size(0);
  std::vector<at::Tensor> parts;
  for (int64_t k = 0; k < keys(); ++k) {
    parts.push_back(column_modules_[static_cast<size_t>(k)]->forward(
        ids.select(1, k), null.defined() ? null.select(1, k) : at::Tensor()));  // [batch, dim]
  }
  if (parts.empty()) {
    auto opts = at::TensorOptions().dtype(at::kFloat).device(ids.device());
    return at::zeros({batch, 0, options_.dim}, opts);
  }
  return at::stack(parts, 1);  // [batch, keys, dim]
}

at::Tensor ConditionEncoderImpl::forward(const at::Tensor& ids, const at::Tensor& null, const at::Tensor& t) {
  if (options_.timestep != t.defined()) {
    throw std::invalid_argument(options_.timestep ? "ConditionEncoder: this prior is time-conditioned; pass t"
                                                  : "ConditionEncoder: this prior has no timestep embedding");
  }
  auto c = embedKeys(ids, null).sum(1);  // [batch, dim]
  if (t.defined()) c = c + timeEmbedding(t);
  return c;
}

at::Tensor ConditionEncoderImpl::timeEmbedding(const at::Tensor& t) {
  if (!time_embed) throw std::invalid_argument("ConditionEncoder: this prior has no timestep embedding");
  return time_embed(t.to(at::kFloat) * options_.time_scale);  // [batch, dim]
}

at::Tensor ConditionEncoderImpl::sampleDropout(int64_t batch, const c10::Device& device,
                                               std::optional<at::Generator> gen) const {
  if (options_.dropout <= 0 || keys() == 0) {
    return at::zeros({batch, keys()}, at::TensorOptions().dtype(at::kBool).device(device));
  }
  if (options_.dropout_mode == DropoutMode::Joint) {
    return uniform({batch, 1}, device, gen).lt(options_.dropout).expand({batch, keys()}).contiguous();
  }
  return uniform({batch, keys()}, device, gen).lt(options_.dropout);
}

}  // namespace latentcell::priors
