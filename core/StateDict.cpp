// State dict flattening and loading (see StateDict.h).
//
// loadStateDict validates everything before copying anything, so a failed load never leaves a
// module half old weights, half new ones. All problems go into one message: fixing a checkpoint
// one error per run is slow when a rename touched dozens of tensors.
#include "core/StateDict.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace latentcell::core {

namespace {

void collect(const torch::nn::Module& module, const std::string& prefix,
             std::vector<std::pair<std::string, at::Tensor>>& out) {
  // Undefined entries are optional slots (e.g. a Linear's bias when bias = false); PyTorch's
  // state_dict skips None the same way.
  for (const auto& p : module.named_parameters(/*recurse=*/false))
    if (p.value().defined()) out.emplace_back(prefix + p.key(), p.value().detach());
  for (const auto& b : module.named_buffers(/*recurse=*/false))
    if (b.value().defined()) out.emplace_back(prefix + b.key(), b.value().detach());
  for (const auto& c : module.named_children()) collect(*c.value(), prefix + c.key() + ".", out);
}

std::string shapeString(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

// Keeps the message readable when a whole subtree is missing.
std::string nameList(const std::vector<std::string>& names) {
  constexpr std::size_t kShown = 20;
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < kShown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > kShown) out += ", ... (" + std::to_string(names.size()) + " in total)";
  return out;
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> stateDict(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  collect(module, "", out);
  return out;
}

void loadStateDict(torch::nn::Module& module,
                   const std::vector<std::pair<std::string, at::Tensor>>& state, bool strict,
                   const std::string& source) {
  const auto targets = stateDict(module);
  std::map<std::string, const at::Tensor*> given;
  std::vector<std::string> duplicates, missing, unexpected, problems;
  for (const auto& [name, tensor] : state)
    if (!given.emplace(name, &tensor).second) duplicates.push_back(name);

  std::set<std::string> targetNames;
  std::vector<std::pair<at::Tensor, const at::Tensor*>> copies;
  for (const auto& [name, target] : targets) {
    targetNames.insert(name);
    const auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name);
      continue;
    }
    const at::Tensor& src = *it->second;
    if (!src.defined()) {
      problems.push_back("'" + name + "' is undefined");
    } else if (!src.sizes().equals(target.sizes())) {
      problems.push_back("shape mismatch for '" + name + "': module expects " +
                         shapeString(target.sizes()) + ", got " + shapeString(src.sizes()));
    } else {
      copies.emplace_back(target, &src);
    }
  }
  for (const auto& [name, tensor] : state)
    if (!targetNames.count(name)) unexpected.push_back(name);

  if (!duplicates.empty()) problems.push_back("duplicate names: " + nameList(duplicates));
  if (strict && !missing.empty()) problems.push_back("missing: " + nameList(missing));
  if (strict && !unexpected.empty()) problems.push_back("unexpected: " + nameList(unexpected));
  if (!problems.empty()) {
    std::string msg = "loadStateDict";
    if (!source.empty()) msg += " from '" + source + "'";
    msg += ": ";
    for (std::size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    if (!missing.empty() || !unexpected.empty())
      msg += " (names differ: check the checkpoint matches this model and config, or load with "
             "strict = false)";
    throw std::runtime_error(msg);
  }

  // The targets are detached views of the module's tensors, so copy_ writes the module's own
  // storage; copy_ also converts dtype and device. NoGradGuard keeps the copy out of autograd,
  // which would otherwise refuse in-place writes to leaf parameters that require grad.
  c10::NoGradGuard noGrad;
  for (auto& [target, src] : copies) target.copy_(*src);
}

}  // namespace latentcell::core
