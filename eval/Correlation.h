// Pearson and Spearman correlation of two equally long samples with the NaN conventions of scipy's
// pearsonr / spearmanr and polars' corr, shared by the cell-eval suite and the reconstruction metrics.
#pragma once

#include <vector>

namespace latentcell::eval {

// Pearson's r in float64, clipped to [-1, 1]; NaN for fewer than 2 points or a constant side.
double pearson(const std::vector<double>& a, const std::vector<double>& b);

// 1-based ranks with ties averaged (scipy's rankdata(method="average"), polars' spearman ranks).
std::vector<double> averageRanks(const std::vector<double>& v);

// Spearman's rho: Pearson of the average ranks; NaN for fewer than 2 points or a constant side.
double spearman(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace latentcell::eval
