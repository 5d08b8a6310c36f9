"""Diagnostic for docs/results.md (stage 1): how much of an NB model's log1p-space error is the
point prediction rather than the model.

`latentcell reconstruct --predict mean` writes the NB mean mu, and the evaluator scores log1p(mu / l * 1e4)
against log1p(x / l * 1e4). By Jensen's inequality log1p of the mean is not the mean of log1p, and for
sparse genes the gap is large. This prints PCC and MSE (as `latentcell evaluate --profile reconstruction`
defines them) of log1p(mu / l * 1e4) and of the model's predictive mean of the scored value,
E[log1p(X / l * 1e4)] with X ~ NB(mu, theta_g) (theta from var['nb_theta']), summed over X = 0..K.

Usage: python scripts/stage1_nb_log1p_mean.py RUN_DIR  (after `latentcell reconstruct --cells val
--predict mean --out RUN_DIR/recon-val.h5ad --real-out RUN_DIR/real-val.h5ad`, as scripts/stage1_results.sh does)
"""
import sys

import anndata as ad
import numpy as np
from scipy.special import gammaln

run = sys.argv[1]
pred = ad.read_h5ad(f"{run}/recon-val.h5ad")
real = ad.read_h5ad(f"{run}/real-val.h5ad")
if pred.uns.get("reconstruction_space", "counts") != "counts" or "nb_theta" not in pred.var:
    sys.exit(f"{run}: not an NB reconstruction (needs counts and var['nb_theta'])")
x = real.X.toarray().astype(np.float64)  # [cells, genes]
mu = pred.X.toarray().astype(np.float64)  # [cells, genes]
theta = pred.var["nb_theta"].to_numpy(np.float64)  # [genes]
library = x.sum(1, keepdims=True)  # [cells, 1]
scale = np.where(library > 0, 1e4 / np.where(library > 0, library, 1), 0.0)  # l = 0: all zeros
target = np.log1p(x * scale)


def pcc(a, b):  # per gene across cells, nan-mean over genes
    am, bm = a - a.mean(0), b - b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (am * bm).sum(0) / np.sqrt((am**2).sum(0) * (bm**2).sum(0))
    return np.nanmean(np.clip(r, -1, 1))


k = np.arange(int(max(x.max(), 1) * 4) + 1, dtype=np.float64)  # support 0..K, K = 4 x the largest count
expected = np.empty_like(mu)
t = theta[:, None]  # [genes, 1]
for i in range(mu.shape[0]):
    m = mu[i][:, None]  # [genes, 1]
    log_pmf = (gammaln(k + t) - gammaln(t) - gammaln(k + 1) + t * np.log(t / (t + m))
               + k * np.log(np.maximum(m / (t + m), 1e-300)))  # [genes, K + 1]
    expected[i] = (np.exp(log_pmf) * np.log1p(k * scale[i])).sum(1)
for name, value in [("log1p(mu / l * 1e4)", np.log1p(mu * scale)), ("E[log1p(X / l * 1e4)], X ~ NB", expected)]:
    print(f"{run}: {name:32s} PCC {pcc(target, value):.4f}  MSE {((target - value) ** 2).mean():.4f}")
