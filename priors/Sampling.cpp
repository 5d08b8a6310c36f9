// Random draws shared by the priors (see Sampling.h).
#include "priors/Sampling.h"

#include <ATen/ATen.h>

#include <limits>
#include <stdexcept>
#include <string>

namespace latentcell::priors {
namespace {

c10::Device drawDevice(const c10::Device& device, const std::optional<at::Generator>& gen) {
  return gen.has_value() ? gen->device() : device;
}

}  // namespace

at::Tensor uniform(c10::IntArrayRef shape, const c10::Device& device, std::optional<at::Generator> gen) {
  auto opts = at::TensorOptions().dtype(at::kFloat).device(drawDevice(device, gen));
  return at::rand(shape, gen, opts).to(device);
}

at::Tensor normal(c10::IntArrayRef shape, const c10::Device& device, std::optional<at::Generator> gen) {
  auto opts = at::TensorOptions().dtype(at::kFloat).device(drawDevice(device, gen));
  return at::randn(shape, gen, opts).to(device);
}

at::Tensor sampleCategorical(const at::Tensor& logits, double temperature, int64_t top_k, at::Generator& gen) {
  if (temperature < 0) {
    throw std::invalid_argument("sampling temperature must be >= 0, got " + std::to_string(temperature));
  }
  const int64_t classes = logits.size(-1);
  auto flat = logits.reshape({-1, classes}).to(at::kFloat);  // [rows, classes]
  if (temperature == 0) return flat.argmax(-1).view(logits.sizes().slice(0, logits.dim() - 1));
  flat = flat / temperature;
  if (top_k > 0 && top_k < classes) {
    auto kth = std::get<0>(flat.topk(top_k, -1)).select(-1, top_k - 1).unsqueeze(-1);  // [rows, 1]
    flat = flat.masked_fill(flat.lt(kth), -std::numeric_limits<float>::infinity());
  }
  auto probs = at::softmax(flat, -1).to(gen.device());                                // [rows, classes]
  auto drawn = at::multinomial(probs, 1, /*replacement=*/false, gen).squeeze(-1);     // [rows]
  return drawn.to(logits.device()).view(logits.sizes().slice(0, logits.dim() - 1));
}

}  // namespace latentcell::priors
