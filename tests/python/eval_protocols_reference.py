"""References for latentcell's distribution and reconstruction protocols (eval/DistributionSuite,
eval/ReconstructionSuite), computed with scanpy, sklearn, POT, scipy and numpy on fixed inputs made here.

Used by tests/test_eval_metrics.cpp and tests/test_reconstruction_metrics.cpp:
  distribution OUT    OUT/dist_real.h5ad, OUT/dist_pred.h5ad (counts, 2 cell types, 4 perturbations + control),
                      OUT/dist_pred_log.h5ad (the same prediction normalize_total(1e4) + log1p'd), and the
                      expected tables OUT/dist_hvg.csv (60 seurat_v3 genes, 10 PCs, conditions within cell types)
                      and OUT/dist_default.csv (all genes, 30 PCs, conditions = perturbations, log1p prediction)
  reconstruction OUT  OUT/rec_real.h5ad (counts), OUT/rec_pred.h5ad (NB means with var['nb_theta'], one gene
                      Poisson), OUT/rec_pred_moments.h5ad (the same means, no theta), OUT/rec_pred_log.h5ad
                      (log1p predictions declared in uns), and OUT/rec_theta.csv, OUT/rec_moments.csv,
                      OUT/rec_log.csv, the expected reconstruction.csv tables

Every number is an independent implementation of the protocol's definition (scanpy's HVG/normalisation,
sklearn's PCA, POT's ot.emd2, scipy's sqrtm, nbinom/poisson logpmf, mannwhitneyu, false_discovery_control,
spearmanr, sklearn's r2_score), never a transcription of the C++ code.
"""

import os
import sys

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from scipy import linalg, stats
from scipy.spatial.distance import cdist

SIGMAS = [0.01, 0.1, 1.0, 10.0, 100.0]
CONTROL = "non-targeting"


def fmt(v):
    return "NaN" if v is None or not np.isfinite(v) else repr(float(v))


def screen(rng, genes, celltypes, perts, cells):
    """Negative-binomial counts with cell-type programmes and perturbation effects."""
    base = rng.gamma(0.8, 1.5, genes) + 0.05
    rows, obs = [], []
    for ct in celltypes:
        programme = np.exp(rng.normal(0.0, 0.6, genes))
        for p in perts:
            effect = np.ones(genes) if p == CONTROL else np.exp(rng.normal(0.0, 0.5, genes) * (rng.random(genes) < 0.3))
            n = cells[p]
            lib = rng.lognormal(0.0, 0.3, (n, 1))
            mu = base * programme * effect * lib
            theta = 4.0
            rows.append(rng.poisson(rng.gamma(theta, mu / theta)))
            obs += [(ct, p)] * n
    x = np.vstack(rows).astype(np.float32)
    obs = pd.DataFrame(obs, columns=["celltype", "target"], index=[f"cell{i}" for i in range(len(obs))])
    obs = obs.astype("category")
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{i:03d}" for i in range(genes)]))


# ---- distribution -----------------------------------------------------------------------------------------------

def mmd2(x, y, biased):
    if biased:
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]

    def k(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2.0 * s * s)) for s in SIGMAS)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if biased:
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean())


def frechet(x, y):
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    d = x.mean(0) - y.mean(0)
    return d @ d + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)


def distribution_table(real, pred, pred_counts, n_hvg, k, celltype_col, path):
    import ot
    from sklearn.decomposition import PCA

    real = real.copy()
    pred = pred.copy()
    mask = np.ones(real.n_vars, bool)
    if n_hvg is not None:
        sc.pp.highly_variable_genes(real, flavor="seurat_v3", n_top_genes=n_hvg)
        mask = real.var["highly_variable"].to_numpy()
    sc.pp.normalize_total(real, target_sum=1e4)
    sc.pp.log1p(real)
    if pred_counts:
        sc.pp.normalize_total(pred, target_sum=1e4)
        sc.pp.log1p(pred)
    xr = real.X.toarray()[:, mask].astype(np.float64)
    xp = pred.X.toarray()[:, mask].astype(np.float64)
    pca = PCA(n_components=k, svd_solver="full").fit(xr)
    zr, zp = pca.transform(xr), pca.transform(xp)

    def key(adata):
        ct = adata.obs[celltype_col].astype(str).to_numpy() if celltype_col else np.full(adata.n_obs, "")
        return ct, adata.obs["target"].astype(str).to_numpy()

    ctr, pr = key(real)
    ctp, pp = key(pred)
    lines, rows = [], []
    for ct, p in sorted(set(zip(ctr, pr))):
        if p == CONTROL:
            continue
        x, y = zr[(ctr == ct) & (pr == p)], zp[(ctp == ct) & (pp == p)]
        a, b = ot.unif(len(x)), ot.unif(len(y))
        row = [ot.emd2(a, b, ot.dist(x, y, metric="euclidean"), numItermax=10**7),
               np.sqrt(ot.emd2(a, b, ot.dist(x, y, metric="sqeuclidean"), numItermax=10**7)),
               mmd2(x, y, True), mmd2(x, y, False), frechet(x, y)]
        rows.append(row)
        lines.append(([ct] if celltype_col else []) + [p, str(len(x)), str(len(y))] + [fmt(v) for v in row])
    mean = np.nanmean(np.array(rows), axis=0)
    total = [str(sum(int(l[-7]) for l in lines)), str(sum(int(l[-6]) for l in lines))]
    lines.append(([""] if celltype_col else []) + ["(mean)"] + total + [fmt(v) for v in mean])
    header = (["celltype"] if celltype_col else []) + ["perturbation", "n_real", "n_pred", "w1", "w2", "mmd2_rbf",
                                                       "mmd2_rbf_unbiased", "fd"]
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for l in lines:
            f.write(",".join(l) + "\n")


def distribution(out):
    rng = np.random.default_rng(2024)
    perts = [CONTROL, "pA", "pB", "pC", "pD"]
    real = screen(rng, 150, ["T", "B"], perts, {CONTROL: 40, "pA": 25, "pB": 30, "pC": 18, "pD": 22})
    pred = screen(rng, 150, ["T", "B"], perts, {CONTROL: 35, "pA": 28, "pB": 20, "pC": 24, "pD": 15})
    pred.obs_names = [f"pred{i}" for i in range(pred.n_obs)]
    real.write_h5ad(os.path.join(out, "dist_real.h5ad"))
    pred.write_h5ad(os.path.join(out, "dist_pred.h5ad"))
    log = pred.copy()
    sc.pp.normalize_total(log, target_sum=1e4)
    sc.pp.log1p(log)
    log.write_h5ad(os.path.join(out, "dist_pred_log.h5ad"))
    distribution_table(real, pred, True, 60, 10, "celltype", os.path.join(out, "dist_hvg.csv"))
    distribution_table(real, log, False, None, 30, None, os.path.join(out, "dist_default.csv"))


# ---- reconstruction ---------------------------------------------------------------------------------------------

def top_k(fdr, u, half, k):
    order = np.lexsort((np.arange(len(fdr)), -np.abs(u - half), fdr))  # last key sorts first
    return set(order[:k].tolist())


def de(values, target, ref):
    """Mann-Whitney U per gene (scipy, asymptotic, continuity), BH, and pdex's log2 fold change."""
    v = values.astype(np.float32)
    t, r = v[target], v[ref]
    u, p = stats.mannwhitneyu(t, r, alternative="two-sided", method="asymptotic", use_continuity=True, axis=0)
    p = np.where(np.isnan(p), 1.0, p)  # constant genes: p = 1 (pdex)
    fdr = stats.false_discovery_control(p, method="bh")
    mt, mr = np.expm1(t.astype(np.float64).mean(0)), np.expm1(r.astype(np.float64).mean(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log2(mt / mr)
    lfc = np.where(np.isnan(lfc), 0.0, lfc)
    return fdr, u, lfc


def reconstruction_table(real_counts, pred, space, theta, obs, path, k=100):
    from sklearn.metrics import r2_score

    x = real_counts.astype(np.float64)
    lib = x.sum(1, keepdims=True)
    real_log = np.log1p(x / lib * 1e4)
    if space == "counts":
        mu = pred.astype(np.float64)
        pred_log = np.log1p(mu / lib * 1e4)
        if theta is None:  # moments given mu
            num, den = (mu ** 2).sum(0), ((x - mu) ** 2 - mu).sum(0)
            theta = np.where((den > 0) & (num > 0), num / np.where(den > 0, den, 1.0), np.inf)
        ll = np.empty_like(x)
        for g in range(x.shape[1]):
            if np.isinf(theta[g]):
                ll[:, g] = stats.poisson.logpmf(x[:, g], mu[:, g])
            else:
                ll[:, g] = stats.nbinom.logpmf(x[:, g], theta[g], theta[g] / (theta[g] + mu[:, g]))
        nll = -ll.sum(1)
    else:
        pred_log = pred.astype(np.float64)
        nll = None

    def cell_metrics(rows):
        a, b = real_log[rows], pred_log[rows]
        r = []
        for g in range(a.shape[1]):
            if a[:, g].std() == 0 or b[:, g].std() == 0:
                continue
            r.append(stats.pearsonr(a[:, g], b[:, g])[0])
        return [nll[rows].mean() if nll is not None else np.nan, np.mean(r) if len(r) else np.nan,
                ((a - b) ** 2).mean(), r2_score(a.sum(0), b.sum(0))]

    keys = list(zip(obs["celltype"].astype(str), obs["target"].astype(str)))
    groups = sorted(set(keys))
    kk = min(k, x.shape[1])
    lines, recalls, rhos = [], [], []
    for key in groups:
        rows = np.array([i for i, kv in enumerate(keys) if kv == key])
        vals = cell_metrics(rows)
        rec = rho = np.nan
        ctrl = np.array([i for i, kv in enumerate(keys) if kv == (key[0], CONTROL)])
        if key[1] != CONTROL and len(ctrl):
            fr, ur, lr = de(real_log, rows, ctrl)
            fp, up, lp = de(pred_log, rows, ctrl)
            half = 0.5 * len(rows) * len(ctrl)
            rec = len(top_k(fr, ur, half, kk) & top_k(fp, up, half, kk)) / kk
            ok = np.isfinite(lr) & np.isfinite(lp)
            rho = stats.spearmanr(lr[ok], lp[ok])[0]
            recalls.append(rec)
            rhos.append(rho)
        lines.append([key[0], key[1], str(len(rows))] + [fmt(v) for v in vals + [rec, rho]])
    allv = cell_metrics(np.arange(len(keys)))
    lines.append(["", "(all)", str(len(keys))] + [fmt(v) for v in allv + [np.mean(recalls), np.mean(rhos)]])
    with open(path, "w") as f:
        f.write("celltype,perturbation,n_cells,nb_error,pcc,mse,r2_sum,deg_recall_at_100,logfc_spearman\n")
        for l in lines:
            f.write(",".join(l) + "\n")


def reconstruction(out):
    rng = np.random.default_rng(77)
    perts = [CONTROL, "pA", "pB", "pC"]
    real = screen(rng, 130, ["T", "B"], perts, {CONTROL: 45, "pA": 30, "pB": 25, "pC": 12})
    x = real.X.toarray().astype(np.float64)
    # A reconstruction: smoothed counts (towards the cell-type/perturbation mean), noisy, never 0.
    keys = real.obs["celltype"].astype(str) + "|" + real.obs["target"].astype(str)
    mu = np.empty_like(x)
    for k in keys.unique():
        rows = np.flatnonzero(keys == k)
        mu[rows] = 0.6 * x[rows] + 0.4 * x[rows].mean(0)
    mu = mu * rng.lognormal(0.0, 0.2, mu.shape) + 0.05
    theta = rng.gamma(3.0, 1.5, x.shape[1]) + 0.2
    theta[7] = np.inf  # a Poisson gene
    pred = ad.AnnData(X=sp.csr_matrix(mu.astype(np.float32)), obs=real.obs.copy(),
                      var=pd.DataFrame({"nb_theta": theta}, index=real.var_names))
    real.write_h5ad(os.path.join(out, "rec_real.h5ad"))
    pred.write_h5ad(os.path.join(out, "rec_pred.h5ad"))
    moments = ad.AnnData(X=pred.X.copy(), obs=real.obs.copy(), var=pd.DataFrame(index=real.var_names))
    moments.write_h5ad(os.path.join(out, "rec_pred_moments.h5ad"))
    log = ad.AnnData(X=sp.csr_matrix(np.log1p(mu / x.sum(1, keepdims=True) * 1e4).astype(np.float32)),
                     obs=real.obs.copy(), var=pd.DataFrame(index=real.var_names))
    log.uns["reconstruction_space"] = "log1p"
    log.write_h5ad(os.path.join(out, "rec_pred_log.h5ad"))
    mu32 = pred.X.toarray()  # what the C++ side reads
    reconstruction_table(x, mu32, "counts", theta, real.obs, os.path.join(out, "rec_theta.csv"))
    reconstruction_table(x, mu32, "counts", None, real.obs, os.path.join(out, "rec_moments.csv"))
    reconstruction_table(x, log.X.toarray(), "log1p", None, real.obs, os.path.join(out, "rec_log.csv"))
    # Broken pairing: cells shuffled.
    shuffled = pred[np.r_[1, 0, 2:pred.n_obs]].copy()
    shuffled.write_h5ad(os.path.join(out, "rec_pred_shuffled.h5ad"))


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {"distribution": distribution, "reconstruction": reconstruction}[mode](out)
