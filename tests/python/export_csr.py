"""Inputs and scanpy's outputs for tests/test_preprocess.cpp, written to one safetensors file.

Usage: export_csr.py IN.h5ad OUT.safetensors

The C++ test reads the counts from here rather than through the h5ad reader, so that preprocessing is
tested on its own. Tensors (CSR parts as flat arrays in X's order; normalised data keep X's sparsity
structure):
  indptr, indices, data, shape       X of IN (raw counts), CSR
  batch                              int64 codes of obs['bio_rep'] (categorical), if present
  norm_median, norm_1e4              normalize_total(target_sum=None / 1e4) data arrays
  log1p_median, log1p_1e4            log1p of those
  target_median                      float64 [1]: the median used by normalize_total
  small_*                            a 4 x 3 matrix with an all-zero cell: scanpy's CSR and dense
                                     results (small_norm_csr, small_norm_dense) show the two median rules
  hvg{N}_*                           highly_variable_genes(flavor="seurat_v3", n_top_genes=N):
                                     mask (uint8), means, variances, variances_norm, rank (NaN = none)
  hvgbatch100_*                      the same with batch_key="bio_rep"
  loess_x, loess_y, loess_fit        log10 mean / variance of the non-constant genes and skmisc's fit
  loessties_x, loessties_y, loessties_fit   a small synthetic set with tied x values
Metadata "skmisc": "yes" or "missing" (scikit-misc is needed for seurat_v3; without it the hvg and
loess tensors are absent).
"""

import sys
import warnings

import anndata as ad
import numpy as np
import scanpy as sc
import torch
from safetensors.torch import save_file
from scipy import sparse


def t(a, dtype=None):
    a = np.ascontiguousarray(a if dtype is None else np.asarray(a).astype(dtype))
    return torch.from_numpy(a.copy())


def main():
    src, out_path = sys.argv[1], sys.argv[2]
    warnings.simplefilter("ignore")
    adata = ad.read_h5ad(src)
    x = sparse.csr_matrix(adata.X).astype(np.float32)
    x.sort_indices()
    adata.X = x
    out = {
        "indptr": t(x.indptr, np.int64),
        "indices": t(x.indices, np.int32),
        "data": t(x.data, np.float32),
        "shape": t(np.array(x.shape), np.int64),
    }
    if "bio_rep" in adata.obs:
        out["batch"] = t(adata.obs["bio_rep"].cat.codes.to_numpy(), np.int64)

    for name, target in (("median", None), ("1e4", 1e4)):
        a = adata.copy()
        res = sc.pp.normalize_total(a, target_sum=target, inplace=False)
        if target is None:
            lib = np.asarray(x.sum(axis=1)).ravel()
            nz = res["norm_factor"] > 0
            out["target_median"] = t(np.array([np.median(lib[nz] / res["norm_factor"][nz])]), np.float64)
        a.X = res["X"]
        out[f"norm_{name}"] = t(a.X.data, np.float32)
        sc.pp.log1p(a)
        out[f"log1p_{name}"] = t(a.X.data, np.float32)

    small = np.array([[1, 0, 3], [0, 0, 0], [1, 1, 0], [5, 0, 1]], dtype=np.float32)
    out["small_counts"] = t(small)
    out["small_norm_csr"] = t(sc.pp.normalize_total(ad.AnnData(sparse.csr_matrix(small)), inplace=False)["X"].toarray())
    out["small_norm_dense"] = t(sc.pp.normalize_total(ad.AnnData(small.copy()), inplace=False)["X"])

    try:
        from skmisc.loess import loess
    except ImportError:
        save_file(out, out_path, metadata={"skmisc": "missing"})
        return

    for n_top in (100, 200):
        df = sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top, inplace=False)
        put_hvg(out, f"hvg{n_top}", df)
    if "bio_rep" in adata.obs:
        df = sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=100, batch_key="bio_rep", inplace=False)
        put_hvg(out, "hvgbatch100", df)

    mean = np.asarray(x.mean(axis=0)).ravel().astype(np.float64)
    var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
    keep = var > 0
    lx, ly = np.log10(mean[keep]), np.log10(var[keep])
    put_loess(out, "loess", lx, ly, loess)
    rng = np.random.default_rng(0)
    tx = np.round(rng.uniform(0, 3, 60), 1)  # many exact ties
    put_loess(out, "loessties", tx, np.sin(tx) + rng.normal(0, 0.1, 60), loess)
    save_file(out, out_path, metadata={"skmisc": "yes"})


def put_hvg(out, prefix, df):
    out[f"{prefix}_mask"] = t(df["highly_variable"].to_numpy(), np.uint8)
    for col in ("means", "variances", "variances_norm"):
        out[f"{prefix}_{col}"] = t(df[col].to_numpy(), np.float64)
    out[f"{prefix}_rank"] = t(df["highly_variable_rank"].to_numpy(), np.float64)


def put_loess(out, prefix, x, y, loess):
    model = loess(x, y, span=0.3, degree=2)
    model.fit()
    out[f"{prefix}_x"] = t(x, np.float64)
    out[f"{prefix}_y"] = t(y, np.float64)
    out[f"{prefix}_fit"] = t(model.outputs.fitted_values, np.float64)


if __name__ == "__main__":
    main()
