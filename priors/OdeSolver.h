// Integrators for dx/dt = v(x, t), the sampling ODE of the flow-matching and transport priors
// (notes sec. 5).
//
//   euler   fixed steps, one evaluation each
//   heun    fixed steps, two evaluations each (explicit trapezoid); with final_euler the last step
//           is Euler, so the field is never evaluated at the end time (JiT's sampler: an
//           x-predicting field divides by 1 - t)
//   dopri5  adaptive Dormand-Prince 5(4) with the 5th-order solution propagated, FSAL, error
//           norm RMS(err / (atol + rtol * max(|x0|, |x1|))) over the whole batch (one step size
//           for the batch, as torchdiffeq's solver that scLDM's public code uses), Hairer's
//           initial step and step-size controller
//
// The whole batch is one ODE state: every sample sees the same t, so t is a double.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

namespace latentcell::priors {

using VelocityField = std::function<at::Tensor(const at::Tensor& x, double t)>;

enum class OdeMethod { Euler, Heun, Dopri5 };
OdeMethod parseOdeMethod(const std::string& name);
const char* toString(OdeMethod method);

struct OdeOptions {
  OdeMethod method = OdeMethod::Dopri5;
  int64_t steps = 100;       // euler, heun
  bool final_euler = false;  // heun: make the last step an Euler step
  double atol = 1e-5;        // dopri5
  double rtol = 1e-5;        // dopri5
  int64_t max_steps = 10000; // dopri5: accepted plus rejected steps before giving up
};

struct OdeResult {
  at::Tensor x;             // the state at t1
  int64_t evaluations = 0;  // calls of the field
  int64_t accepted = 0;     // steps taken
  int64_t rejected = 0;     // dopri5 steps retried with a smaller step
};

// Integrates from (x0, t0) to t1 > t0. dopri5 failing to reach t1 within max_steps throws
// std::runtime_error saying where it stopped and how to relax the tolerances.
OdeResult integrate(const VelocityField& field, const at::Tensor& x0, double t0, double t1, const OdeOptions& options);

}  // namespace latentcell::priors
