// A differentiable squared MMD between two batches of cells, the distribution-matching term of
// SCALE's autoencoder objective (eq. 13: L = L_rec + lambda * L_MMD, with eq. 16's MMD^2).
//
// The kernel is a sum of Gaussian RBFs over several bandwidths, k(a, b) = sum_s exp(-|a-b|^2 /
// (2 s^2)), the form the evaluation uses (eval/DistributionMetrics.h), so a model trained with the
// term is pushed toward the quantity it is scored on. The estimate is the biased V-statistic of
// eq. 16 (expectations over independent pairs, self-pairs included): it is non-negative, so the
// loss never rewards pushing the sets apart. Squared distances come from |a|^2 + |b|^2 - 2 a.b,
// which has a finite gradient at a = b where a norm-based cdist would not, and needs [n, m] memory
// rather than [n, m, genes].
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace latentcell::heads {

// MMD^2 between x [n, d] and y [m, d] (any floating dtype, same device); a scalar tensor with a
// gradient to both. Throws std::invalid_argument on mismatched widths, empty sets or non-positive
// bandwidths.
at::Tensor mmdRbf(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& sigmas);

}  // namespace latentcell::heads
