"""Independent reading of a `latentcell report` page, for tests/test_report.cpp.

usage: report_reference.py read REPORT.html PREDICTIONS_DIR PERT_COL CONTROL OUT.json
       report_reference.py log1p IN.h5ad OUT.h5ad

read: parses the page with xml.etree (which fails on malformed markup), lists its inline figures
(by data-kind), the metrics table's cells and the delta panels' Pearson r and titles, and recomputes
each panel's r with numpy from PREDICTIONS_DIR/{pred,real}.h5ad: counts normalised to 1e4 per cell
and log1p'd, log1p input used as is, per-gene mean of the perturbation minus the control mean; and
the PCA figure's variance shares of PC1 and PC2 from numpy's SVD of the real cells.
log1p: writes IN with X = log1p(normalize_total(1e4)) (float32), for the log1p input path.
"""
import json
import sys
import xml.etree.ElementTree as ET

import anndata as ad
import numpy as np
import scipy.sparse as sp

HTML = "{http://www.w3.org/1999/xhtml}"
SVG = "{http://www.w3.org/2000/svg}"


def dense(x):
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def log1p_normalised(x):
    if np.all(x == np.round(x)):  # counts
        totals = x.sum(axis=1, keepdims=True)
        x = np.divide(x * 1e4, totals, out=np.zeros_like(x), where=totals > 0)
        return np.log1p(x)
    return x


def pca_variance_share(directory):
    """Share of the real cells' total variance on their first two principal components."""
    x = log1p_normalised(dense(ad.read_h5ad(f"{directory}/real.h5ad").X))
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return [float(v) for v in s[:2] ** 2 / (x.shape[0] - 1) / x.var(axis=0, ddof=1).sum()]


def numpy_r(directory, pert_col, control):
    real, pred = (ad.read_h5ad(f"{directory}/{name}.h5ad") for name in ("real", "pred"))
    values = {}
    for name, a in (("real", real), ("pred", pred)):
        x = log1p_normalised(dense(a.X))
        labels = a.obs[pert_col].astype(str).to_numpy()
        values[name] = {p: x[labels == p].mean(axis=0) for p in np.unique(labels)}
    out = {}
    for p in values["real"]:
        if p == control or p not in values["pred"]:
            continue
        d_real = values["real"][p] - values["real"][control]
        d_pred = values["pred"][p] - values["pred"][control]
        out[p] = float(np.corrcoef(d_real, d_pred)[0, 1])
    return out


def read(html_path, directory, pert_col, control, out_path):
    root = ET.parse(html_path).getroot()
    svgs = root.findall(f".//{SVG}svg")
    kinds = {}
    for s in svgs:
        kinds[s.get("data-kind")] = kinds.get(s.get("data-kind"), 0) + 1
    table = [
        {"group": td.get("data-group"), "metric": td.get("data-metric"), "column": td.get("data-column"),
         "value": td.get("data-value")}  # text: JSON has no NaN
        for td in root.iter(f"{HTML}td") if td.get("data-metric") is not None
    ]
    reference = numpy_r(directory, pert_col, control)
    panels = {}
    for s in svgs:
        if s.get("data-kind") != "delta":
            continue
        p = s.get("data-perturbation")
        title = s.find(f"{SVG}text").text  # the first text element is the visible title
        panels[p] = {"html_r": float(s.get("data-pearson-r")), "numpy_r": reference[p], "title": title}
    pca = [s for s in svgs if s.get("data-kind") == "pca"]
    json.dump({"svg_kinds": kinds, "table": table, "panels": panels,
               "pca_variance_share": {"html": [float(v) for v in pca[0].get("data-variance-share").split()] if pca else [],
                                      "numpy": pca_variance_share(directory)},
               "missing_cells": sum(1 for td in root.iter(f"{HTML}td") if td.get("class") == "missing")},
              open(out_path, "w"), indent=1)


def log1p(in_path, out_path):
    a = ad.read_h5ad(in_path)
    a.X = sp.csr_matrix(log1p_normalised(dense(a.X)).astype(np.float32))
    a.write_h5ad(out_path)


if __name__ == "__main__":
    if sys.argv[1] == "read":
        read(*sys.argv[2:7])
    elif sys.argv[1] == "log1p":
        log1p(*sys.argv[2:4])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
