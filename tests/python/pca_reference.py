"""Reference PCA for tests/test_stage1_models.cpp (models/PcaBaseline), written with numpy only.

Usage: pca_reference.py IN.safetensors OUT.safetensors K
IN holds `counts` [cells, genes] (raw counts, float64). OUT gets, in float64:
  x            log1p(counts / library * 1e4) (cells without counts stay 0)
  mean         column means of x
  components   top-K right singular vectors of x - mean from numpy's exact SVD, each with its
               largest-magnitude entry made positive
  singular_values, explained_variance (s^2 / (cells - 1))
  reconstruction  mean + (x - mean) V V^T, the best rank-K approximation
"""
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def main():
    src, dst, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    counts = load_file(src)["counts"].astype(np.float64)
    library = counts.sum(axis=1, keepdims=True)
    scale = np.divide(1e4, library, out=np.zeros_like(library), where=library > 0)
    x = np.log1p(counts * scale)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    v = vt[:k]
    pivot = np.abs(v).argmax(axis=1)
    v = v * np.sign(v[np.arange(k), pivot])[:, None]
    recon = mean + (x - mean) @ v.T @ v
    save_file(
        {
            "x": x,
            "mean": mean,
            "components": np.ascontiguousarray(v),
            "singular_values": s[:k].copy(),
            "explained_variance": s[:k] ** 2 / (x.shape[0] - 1),
            "reconstruction": recon,
        },
        dst,
    )


if __name__ == "__main__":
    main()
