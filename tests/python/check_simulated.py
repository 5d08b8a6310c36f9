"""Checks that a file written by `latentcell simulate` reads in anndata as documented (data/Simulator.h).

Usage: check_simulated.py FILE.h5ad CELLS GENES CELL_TYPES PERTURBATIONS BATCHES
Exits non-zero with a message on the first mismatch.
"""

import json
import sys

import anndata as ad
import numpy as np


def main():
    path = sys.argv[1]
    cells, genes, types, perts, batches = map(int, sys.argv[2:7])
    a = ad.read_h5ad(path)
    assert a.shape == (cells, genes), a.shape
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    assert (x >= 0).all() and (x == np.round(x)).all(), "X is not counts"
    for col, n in (("cell_type", types), ("perturbation", perts + 1), ("batch", batches)):
        assert a.obs[col].dtype == "category", (col, a.obs[col].dtype)
        assert len(a.obs[col].cat.categories) == n, (col, list(a.obs[col].cat.categories))
    assert a.obs["perturbation"].cat.categories[0] == "control"
    assert list(a.var_names[:2]) == ["gene_0", "gene_1"], list(a.var_names[:2])
    assert a.varm["true_lfc"].shape == (genes, perts), a.varm["true_lfc"].shape
    assert a.varm["true_lfc_by_type"].shape == (genes, perts * types)
    params = json.loads(a.uns["simulator"])
    assert params["cells"] == cells and params["control_label"] == "control", params


if __name__ == "__main__":
    main()
