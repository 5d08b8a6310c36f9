"""Reference for latentcell evaluate (eval/CellEvalSuite): inputs made here, outputs from cell-eval itself.

Used by tests/test_cell_eval.cpp:
  make OUTDIR        writes OUTDIR/real.h5ad and OUTDIR/pred.h5ad: a small simulated-like screen (raw
                     integer counts with ties, all-zero and constant genes, 5 perturbations incl. the
                     control, some named after a gene) and a prediction that is a noisy copy of it, plus
                     OUTDIR/train.h5ad (another noisy copy of 80% of its cells, for the baselines) and
                     the broken variants the input checks must reject (bad_*.h5ad;
                     a missing control is tested with a wrong --control-pert)
  run REAL PRED OUT [PERT_COL CONTROL]  runs `cell-eval run --profile full --skip-metrics clustering_agreement` as its CLI does
  papalexi PATH OUT PERT_COL CONTROL  writes OUT/real.h5ad (the screen, cells subsampled per perturbation) and OUT/pred.h5ad
                     (a baseline: each perturbation's cells replaced by resampled control cells)

cell-eval is the independent reference: nothing here reimplements a metric.
"""

import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

PERT_COL = "target"
CONTROL = "non-targeting"


def make_screen(rng):
    genes = [f"G{i:03d}" for i in range(120)]
    perts = [CONTROL, "G003", "G010", "G050", "pertX"]  # three knock-downs of measured genes
    base = rng.gamma(0.6, 2.0, size=len(genes))
    base[5:8] = 0.0  # all-zero genes: constant, p = 1, 0/0 fold changes
    cells, labels = [], []
    for p in perts:
        n = 60 if p == CONTROL else int(rng.integers(35, 55))
        mu = base.copy()
        if p != CONTROL:
            hit = rng.choice(len(genes), size=15, replace=False)
            mu[hit] *= rng.choice([0.2, 3.0], size=15)
            if p in genes:
                mu[genes.index(p)] *= 0.1
        lib = rng.lognormal(0.0, 0.3, size=(n, 1))
        counts = rng.poisson(mu[None, :] * lib)  # small means: many ties at 0, 1, 2
        counts[:, 8] = 3  # constant nonzero gene
        cells.append(counts)
        labels += [p] * n
    x = np.vstack(cells).astype(np.float32)
    obs = pd.DataFrame({PERT_COL: pd.Categorical(labels), "celltype": "A"},
                       index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=genes))


def noisy_copy(real, rng):
    x = real.X.toarray()
    keep = rng.random(x.shape) < 0.85
    pred = np.where(keep, x, 0) + rng.poisson(0.15, size=x.shape)
    return ad.AnnData(X=sp.csr_matrix(pred.astype(np.float32)), obs=real.obs.copy(), var=real.var.copy())


def make(out):
    rng = np.random.default_rng(7)
    real = make_screen(rng)
    pred = noisy_copy(real, rng)
    real.write_h5ad(os.path.join(out, "real.h5ad"))
    pred.write_h5ad(os.path.join(out, "pred.h5ad"))
    train_rng = np.random.default_rng(8)
    train = noisy_copy(real, train_rng)
    train = train[np.sort(train_rng.permutation(train.n_obs)[: int(0.8 * train.n_obs)])].copy()
    train.obs_names = [f"t{i}" for i in range(train.n_obs)]
    train.write_h5ad(os.path.join(out, "train.h5ad"))

    bad = pred.copy()
    bad.var.index = list(bad.var.index[::-1])
    bad.write_h5ad(os.path.join(out, "bad_var.h5ad"))
    bad = pred.copy()
    bad.obs[PERT_COL] = bad.obs[PERT_COL].astype(str).replace("pertX", "pertY").astype("category")
    bad.write_h5ad(os.path.join(out, "bad_perts.h5ad"))
    bad = pred.copy()
    dense = np.log1p(bad.X.toarray()) + 0.01
    dense[0, 0] = -0.5
    bad.X = sp.csr_matrix(dense.astype(np.float32))
    bad.write_h5ad(os.path.join(out, "bad_negative.h5ad"))
    bad = pred.copy()
    dense = bad.X.toarray() + 0.5  # fractional but not log1p: max >= 15
    dense[0, 0] = 20.5
    bad.X = sp.csr_matrix(dense.astype(np.float32))
    bad.write_h5ad(os.path.join(out, "bad_scale.h5ad"))


def run(real, pred, out, pert_col=PERT_COL, control=CONTROL):
    cli = os.path.join(os.path.dirname(sys.executable), "cell-eval")
    subprocess.run([cli, "run", "-ar", real, "-ap", pred, "--pert-col", pert_col, "--control-pert", control,
                    "--profile", "full", "--skip-metrics", "clustering_agreement", "--num-threads", "1",
                    "-o", out], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def papalexi(path, out, pert_col, control):
    rng = np.random.default_rng(0)
    real = ad.read_h5ad(path)
    real.obs[pert_col] = real.obs[pert_col].astype(str)
    real = real[real.obs[pert_col] != "unassigned"]  # cells without a guide call
    real = ad.AnnData(X=real.X, obs=real.obs[[pert_col]].copy(), var=pd.DataFrame(index=real.var_names))
    keep = []
    for _, idx in real.obs.groupby(pert_col).indices.items():
        keep.append(rng.permutation(idx)[:120])
    real = real[np.sort(np.concatenate(keep))].copy()
    real.obs[pert_col] = real.obs[pert_col].astype("category")
    labels = real.obs[pert_col].to_numpy(str)
    ctrl = np.flatnonzero(labels == control)
    pred = real.copy()
    pred.X = sp.csr_matrix(real.X[rng.choice(ctrl, size=real.n_obs, replace=True)])
    real.write_h5ad(os.path.join(out, "real.h5ad"))
    pred.write_h5ad(os.path.join(out, "pred.h5ad"))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "make":
        make(sys.argv[2])
    elif mode == "run":
        run(*sys.argv[2:7])
    elif mode == "papalexi":
        papalexi(*sys.argv[2:6])
    else:
        sys.exit(f"unknown mode {mode}")
