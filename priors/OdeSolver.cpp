// ODE integrators (see OdeSolver.h).
#include "priors/OdeSolver.h"

#include <ATen/ATen.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace latentcell::priors {
namespace {

// Dormand-Prince 5(4) tableau (Hairer, Norsett & Wanner, Table II.5.2).
constexpr double kC2 = 1.0 / 5, kC3 = 3.0 / 10, kC4 = 4.0 / 5, kC5 = 8.0 / 9;
constexpr double kA21 = 1.0 / 5;
constexpr double kA31 = 3.0 / 40, kA32 = 9.0 / 40;
constexpr double kA41 = 44.0 / 45, kA42 = -56.0 / 15, kA43 = 32.0 / 9;
constexpr double kA51 = 19372.0 / 6561, kA52 = -25360.0 / 2187, kA53 = 64448.0 / 6561, kA54 = -212.0 / 729;
constexpr double kA61 = 9017.0 / 3168, kA62 = -355.0 / 33, kA63 = 46732.0 / 5247, kA64 = 49.0 / 176,
                 kA65 = -5103.0 / 18656;
// 5th-order weights (also the last row of A: FSAL).
constexpr double kB1 = 35.0 / 384, kB3 = 500.0 / 1113, kB4 = 125.0 / 192, kB5 = -2187.0 / 6784, kB6 = 11.0 / 84;
// 5th minus 4th order weights: the local error estimate.
constexpr double kE1 = kB1 - 5179.0 / 57600, kE3 = kB3 - 7571.0 / 16695, kE4 = kB4 - 393.0 / 640,
                 kE5 = kB5 - -92097.0 / 339200, kE6 = kB6 - 187.0 / 2100, kE7 = -1.0 / 40;

constexpr double kSafety = 0.9, kMinFactor = 0.2, kMaxFactor = 10.0;

double rms(const at::Tensor& x) { return std::sqrt(x.to(at::kDouble).square().mean().item<double>()); }

OdeResult fixedSteps(const VelocityField& field, const at::Tensor& x0, double t0, double t1, const OdeOptions& o) {
  if (o.steps <= 0) throw std::invalid_argument("ODE solver: steps must be positive, got " + std::to_string(o.steps));
  OdeResult r;
  at::Tensor x = x0;
  const double dt = (t1 - t0) / static_cast<double>(o.steps);
  for (int64_t i = 0; i < o.steps; ++i) {
    const double t = t0 + static_cast<double>(i) * dt;
    auto k1 = field(x, t);
    ++r.evaluations;
    const bool euler = o.method == OdeMethod::Euler || (o.final_euler && i == o.steps - 1);
    if (euler) {
      x = x + dt * k1;
    } else {
      auto k2 = field(x + dt * k1, t + dt);
      ++r.evaluations;
      x = x + (0.5 * dt) * (k1 + k2);
    }
    ++r.accepted;
  }
  r.x = x;
  return r;
}

OdeResult dopri5(const VelocityField& field, const at::Tensor& x0, double t0, double t1, const OdeOptions& o) {
  if (o.atol <= 0 || o.rtol < 0) throw std::invalid_argument("dopri5: atol must be positive and rtol >= 0");
  OdeResult r;
  at::Tensor x = x0;
  double t = t0;
  auto k1 = field(x, t);
  ++r.evaluations;

  // Initial step (Hairer, Norsett & Wanner II.4): h ~ 0.01 |x| / |f|, refined by a second-derivative
  // estimate from one Euler trial step.
  auto scale = o.atol + o.rtol * x.abs();
  const double d0 = rms(x / scale), d1 = rms(k1 / scale);
  double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  h0 = std::min(h0, t1 - t0);
  auto f_trial = field(x + h0 * k1, t + h0);
  ++r.evaluations;
  const double d2 = rms((f_trial - k1) / scale) / h0;
  const double h1 = std::max(d1, d2) <= 1e-15 ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / std::max(d1, d2), 1.0 / 5);
  double h = std::min(100 * h0, h1);

  const double end_tol = 1e-12 * std::max(1.0, std::abs(t1));
  while (t1 - t > end_tol) {
    if (r.accepted + r.rejected >= o.max_steps) {
      throw std::runtime_error(fmt::format(
          "dopri5 did not reach t = {} within {} steps (stopped at t = {:.6g}, step {:.3g}); raise max_steps or "
          "relax atol/rtol (now {:g}/{:g})",
          t1, o.max_steps, t, h, o.atol, o.rtol));
    }
    h = std::min(h, t1 - t);
    auto k2 = field(x + h * (kA21 * k1), t + kC2 * h);
    auto k3 = field(x + h * (kA31 * k1 + kA32 * k2), t + kC3 * h);
    auto k4 = field(x + h * (kA41 * k1 + kA42 * k2 + kA43 * k3), t + kC4 * h);
    auto k5 = field(x + h * (kA51 * k1 + kA52 * k2 + kA53 * k3 + kA54 * k4), t + kC5 * h);
    auto k6 = field(x + h * (kA61 * k1 + kA62 * k2 + kA63 * k3 + kA64 * k4 + kA65 * k5), t + h);
    auto x5 = x + h * (kB1 * k1 + kB3 * k3 + kB4 * k4 + kB5 * k5 + kB6 * k6);
    auto k7 = field(x5, t + h);
    r.evaluations += 6;
    auto err = h * (kE1 * k1 + kE3 * k3 + kE4 * k4 + kE5 * k5 + kE6 * k6 + kE7 * k7);
    const double ratio = rms(err / (o.atol + o.rtol * at::maximum(x.abs(), x5.abs())));
    if (!std::isfinite(ratio)) {
      throw std::runtime_error(fmt::format("dopri5: the velocity field is not finite at t = {:.6g}", t));
    }
    const bool accept = ratio <= 1.0;
    if (accept) {
      t += h;
      x = x5;
      k1 = k7;
      ++r.accepted;
    } else {
      ++r.rejected;
    }
    double factor = ratio == 0.0 ? kMaxFactor : std::clamp(kSafety * std::pow(ratio, -1.0 / 5), kMinFactor, kMaxFactor);
    if (!accept) factor = std::min(factor, 1.0);
    h *= factor;
  }
  r.x = x;
  return r;
}

}  // namespace

OdeMethod parseOdeMethod(const std::string& name) {
  if (name == "euler") return OdeMethod::Euler;
  if (name == "heun") return OdeMethod::Heun;
  if (name == "dopri5") return OdeMethod::Dopri5;
  throw std::invalid_argument("ODE solver must be one of euler, heun, dopri5; got '" + name + "'");
}

const char* toString(OdeMethod method) {
  switch (method) {
    case OdeMethod::Euler: return "euler";
    case OdeMethod::Heun: return "heun";
    case OdeMethod::Dopri5: return "dopri5";
  }
  return "?";
}

OdeResult integrate(const VelocityField& field, const at::Tensor& x0, double t0, double t1, const OdeOptions& options) {
  if (!(t1 > t0)) throw std::invalid_argument("ODE solver: t1 must be greater than t0");
  if (options.method == OdeMethod::Dopri5) return dopri5(field, x0, t0, t1, options);
  return fixedSteps(field, x0, t0, t1, options);
}

}  // namespace latentcell::priors
