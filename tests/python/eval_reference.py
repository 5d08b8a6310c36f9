"""Reference values for latentcell's evaluation engines (eval/DistributionMetrics, eval/DifferentialExpression).

Used by tests/test_eval_metrics.cpp and tests/test_de.cpp, in two modes:
  metrics OUT   fixed point sets and what numpy/scipy/POT make of them
  de OUT        a fixed log1p expression matrix with groups, and what pdex (as cell-eval 0.8.2 calls it),
                scipy.stats.mannwhitneyu and false_discovery_control make of it

Inputs are generated here from fixed seeds and written next to the expected values in one safetensors
file, so the C++ side needs no random generator of its own and both sides see identical bytes.
Every reference is an independent implementation of the definition (POT's network simplex, scipy's
sqrtm, scipy/pdex's MWU), never a transcription of the C++ algorithm.
"""

import sys

import numpy as np
from safetensors.numpy import save_file
from scipy import linalg
from scipy.spatial.distance import cdist

SIGMAS = [0.01, 0.1, 1.0, 10.0, 100.0]


def mix_rbf_mmd2(x, y, sigmas, biased):
    """CFGen's cfgen/eval/mmd.py mix_rbf_mmd2 in numpy (exact squared distances)."""
    if biased:
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]

    def k(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2.0 * s * s)) for s in sigmas)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if biased:
        return kxx.sum() / (n * n) + kyy.sum() / (m * m) - 2.0 * kxy.sum() / (n * m)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean())


def frechet_sqrtm(x, y):
    """pytorch-fid's calculate_frechet_distance (scipy sqrtm of the product)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)


def energy(x, y, u_statistic):
    dxy, dxx, dyy = cdist(x, y), cdist(x, x), cdist(y, y)
    n, m = len(x), len(y)
    if u_statistic:
        return 2.0 * dxy.mean() - dxx.sum() / (n * (n - 1)) - dyy.sum() / (m * (m - 1))
    return 2.0 * dxy.mean() - dxx.mean() - dyy.mean()  # cell-eval's edistance


def metric_cases(rng):
    cases = {}
    # Anisotropic Gaussians of different sizes.
    cases["gauss"] = (rng.normal(0.0, [3.0, 2.0, 1.0, 0.5, 1.5, 2.5], (60, 6)),
                      rng.normal(0.5, [2.0, 2.5, 1.0, 1.0, 0.7, 3.0], (45, 6)))
    # Integer grid points: many duplicates, so the transport LP is highly degenerate.
    cases["grid"] = (rng.integers(0, 3, (40, 3)).astype(np.float64),
                     rng.integers(0, 3, (40, 3)).astype(np.float64) + np.array([0.0, 1.0, 0.0]))
    # PCA-score scale (tens), where the wide bandwidths matter, and n < m.
    cases["wide"] = (rng.normal(0.0, 30.0, (25, 10)), rng.normal(5.0, 25.0, (70, 10)))
    # One dimension.
    cases["line"] = (rng.exponential(2.0, (30, 1)), rng.normal(1.0, 1.0, (50, 1)))
    return cases


def write_metrics(path):
    import ot

    rng = np.random.default_rng(20240611)
    out = {}
    for name, (x, y) in metric_cases(rng).items():
        a, b = ot.unif(len(x)), ot.unif(len(y))
        w1 = ot.emd2(a, b, ot.dist(x, y, metric="euclidean"), numItermax=10**7)
        w2 = np.sqrt(ot.emd2(a, b, ot.dist(x, y, metric="sqeuclidean"), numItermax=10**7))
        values = {
            "x": x, "y": y,
            "w1": w1, "w2": w2,
            "mmd_biased": mix_rbf_mmd2(x, y, SIGMAS, True),
            "mmd_unbiased": mix_rbf_mmd2(x, y, SIGMAS, False),
            "mmd_biased_custom": mix_rbf_mmd2(x, y, [0.5, 2.0], True),
            "fd": frechet_sqrtm(x, y),
            "energy_v": energy(x, y, False),
            "energy_u": energy(x, y, True),
        }
        for key, value in values.items():
            out[f"{name}.{key}"] = np.ascontiguousarray(np.asarray(value, dtype=np.float64))

    # PCA: distinct spectrum (so components are unique up to sign), rotated so no axis is special.
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    scales = np.linspace(5.0, 0.5, 12)
    real = (rng.normal(size=(80, 12)) * scales) @ q.T + rng.normal(size=12)
    gen = (rng.normal(size=(50, 12)) * scales * 1.2) @ q.T + 0.3
    k = 5
    mean = real.mean(0)
    _, s, vt = np.linalg.svd(real - mean, full_matrices=False)
    vt = vt[:k]
    # sklearn's svd_flip(u_based_decision=False), written out.
    signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
    vt = vt * signs[:, None]
    out.update({
        "pca.real": real, "pca.gen": gen, "pca.k": np.asarray(k, dtype=np.int64),
        "pca.mean": mean, "pca.components": np.ascontiguousarray(vt),
        "pca.explained_variance": s[:k] ** 2 / (len(real) - 1),
        "pca.proj_real": (real - mean) @ vt.T, "pca.proj_gen": (gen - mean) @ vt.T,
    })
    save_file(out, path)


def de_data(rng):
    sizes = {"ctrl": 50, "g0": 1, "g1": 2, "g2": 5, "g3": 30, "g4": 12, "": 6}  # "" = unlabelled
    labels = np.concatenate([[k] * v for k, v in sizes.items()])
    labels = labels[rng.permutation(len(labels))]
    n, genes = len(labels), 40
    base = rng.gamma(0.6, 2.0, genes)
    effect = {k: np.exp(rng.normal(0.0, 0.8, genes)) for k in sizes}
    lam = np.stack([base * effect[g] for g in labels])
    x = np.log1p(rng.poisson(lam)).astype(np.float64)  # discrete: rich in ties and zeros
    library = rng.gamma(4.0, 0.25, (n, 1))
    x[:, 20:30] = np.log1p(rng.poisson(lam[:, 20:30]) * library)  # continuous nonzeros
    ctrl = labels == "ctrl"
    x[:, 0] = 0.0                                   # all zeros
    x[:, 1] = 1.5                                   # constant across both groups
    x[:, 2] = np.where(np.isin(labels, ["g3", "g4"]), x[:, 2] + 0.3, 0.0)  # zero in control: +inf
    x[:, 3] = np.where(ctrl, x[:, 3] + 0.2, 0.0)    # zero in every target: -inf
    x[:, 4] = rng.choice([-1.0, -0.0, 0.0, 2.0, 3.0, -2.5], n, p=[0.1, 0.2, 0.2, 0.25, 0.2, 0.05])
    x[:, 5] = np.where(ctrl, 0.7, x[:, 5])          # constant in control only
    x[:, 6] = 0.7
    x[np.flatnonzero(labels == "g3")[0], 6] = 0.9   # one cell away from constant
    x[:, 7] = np.log1p(rng.poisson(20000.0, n))     # large values, few ties
    return x.astype(np.float32), labels


def write_de(path):
    import anndata as ad
    import pandas as pd
    from pdex import pdex
    from scipy.stats import false_discovery_control, mannwhitneyu
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(1234)
    x, labels = de_data(rng)
    targets = sorted(set(labels) - {"ctrl", ""})
    ids = {name: i for i, name in enumerate(targets)}
    ids["ctrl"], ids[""] = len(targets), -1
    group_ids = np.array([ids[g] for g in labels], dtype=np.int64)

    out = {"x": x, "groups": group_ids, "control": np.asarray(ids["ctrl"], dtype=np.int64),
           "targets": np.arange(len(targets), dtype=np.int64)}

    def run_pdex(matrix, is_log1p, prefix):
        obs = pd.DataFrame({"group": labels}, index=[f"c{i}" for i in range(len(labels))])
        adata = ad.AnnData(matrix, obs=obs)
        adata.var_names = [f"gene{j}" for j in range(matrix.shape[1])]
        # Exactly cell-eval 0.8.2's call (_build_pdex_kwargs, _load_or_build_de).
        frame = pdex(adata, groupby="group", mode="ref", reference="ctrl", threads=1,
                     is_log1p=is_log1p, epsilon=0.0)
        assert list(frame["target"].unique(maintain_order=True)) == targets
        assert list(frame.columns) == ["target", "feature", "target_mean", "ref_mean",
                                       "target_membership", "ref_membership", "log2_fold_change",
                                       "percent_change", "p_value", "statistic", "fdr"]
        shape = (len(targets), matrix.shape[1])
        for column in ["target_mean", "ref_mean", "log2_fold_change", "percent_change", "p_value",
                       "statistic", "fdr"]:
            out[f"{prefix}.{column}"] = frame[column].to_numpy().astype(np.float64).reshape(shape)
        out[f"{prefix}.target_membership"] = frame["target_membership"].to_numpy().reshape(shape)[:, 0]
        out[f"{prefix}.ref_membership"] = frame["ref_membership"].to_numpy().reshape(shape)[:, 0]

    run_pdex(x, True, "pdex")
    run_pdex(np.abs(x), False, "pdex_counts")  # is_log1p=False (cell-eval's allow_discrete)

    # scipy: MWU and BH on the same float32 values, and float64 pseudobulks.
    x64 = x.astype(np.float64)
    ref = x64[labels == "ctrl"]
    stat, pval, fdr, tmean = [], [], [], []
    for name in targets:
        grp = x64[labels == name]
        res = mannwhitneyu(grp, ref, axis=0, method="asymptotic", use_continuity=True,
                           alternative="two-sided")
        p = np.where(np.isnan(res.pvalue), 1.0, np.clip(res.pvalue, 0.0, 1.0))
        q = false_discovery_control(p)
        assert np.allclose(q, multipletests(p, method="fdr_bh")[1], rtol=1e-12, atol=0)
        stat.append(res.statistic)
        pval.append(p)
        fdr.append(q)
        tmean.append(np.expm1(grp.mean(0)))
    tmean = np.stack(tmean)
    rmean = np.expm1(ref.mean(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log2(tmean / rmean)
        pc = (tmean - rmean) / rmean
    out.update({
        "scipy.statistic": np.stack(stat), "scipy.p_value": np.stack(pval), "scipy.fdr": np.stack(fdr),
        "numpy.target_mean": tmean, "numpy.ref_mean": rmean,
        "numpy.log2_fold_change": np.nan_to_num(lfc, nan=0.0, posinf=np.inf, neginf=-np.inf),
        "numpy.percent_change": np.nan_to_num(pc, nan=0.0, posinf=np.inf, neginf=-np.inf),
    })
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, path)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("metrics", "de"):
        sys.exit("usage: eval_reference.py metrics|de OUT.safetensors")
    (write_metrics if sys.argv[1] == "metrics" else write_de)(sys.argv[2])


if __name__ == "__main__":
    main()
