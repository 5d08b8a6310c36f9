"""h5ad fixtures written by anndata and h5py, for tests/test_h5ad.cpp.

Usage: make_h5ad_fixtures.py OUT_DIR

Writes one small .h5ad file per layout the C++ reader must handle (dense and sparse X of several
dtypes, CSC, unsigned and 64-bit indices, gzip, LZF, layers and raw, a hand-written anndata 0.7
file, fixed-length strings) plus broken files for the error paths, and OUT_DIR/expected.json with
what each readable file holds as anndata itself reads it. The C++ test compares against that JSON
exactly, so the expected values come from the reference implementation, not from the C++ code.
"""

import json
import os
import sys
import warnings

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

import anndata as ad

RNG = np.random.default_rng(7)


def counts(n_obs, n_vars, density=0.25):
    dense = RNG.poisson(3.0, size=(n_obs, n_vars)) * (RNG.random((n_obs, n_vars)) < density)
    return dense.astype(np.float32)


def base_adata(n_obs=300, n_vars=50):
    X = sp.csr_matrix(counts(n_obs, n_vars))
    cat = pd.Categorical(RNG.choice(["ctrl", "KO_A", "KO_B"], size=n_obs), categories=["ctrl", "KO_A", "KO_B"])
    cat[::17] = np.nan  # missing -> code -1
    many = [f"c{i:03d}" for i in range(130)]  # 130 categories -> int16 codes
    obs = pd.DataFrame(
        {
            "perturbation": cat,
            "batch": pd.Categorical(RNG.choice(many, size=n_obs), categories=many, ordered=True),
            "dose": pd.Categorical(RNG.choice([10, 20, 30], size=n_obs)),
            "barcode": [f"AC{i:05d}-1" for i in range(n_obs)],
            "score": np.where(np.arange(n_obs) % 11 == 0, np.nan, RNG.normal(size=n_obs)),
            "n_genes": RNG.integers(0, 1000, size=n_obs).astype(np.int64),
            "small": RNG.integers(0, 200, size=n_obs).astype(np.uint8),
            "is_control": RNG.random(n_obs) < 0.3,
            "maybe_n": pd.array([None if i % 7 == 0 else int(i) for i in range(n_obs)], dtype="Int64"),
            "maybe_b": pd.array([None if i % 5 == 0 else bool(i % 2) for i in range(n_obs)], dtype="boolean"),
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame(
        {
            "highly_variable": RNG.random(n_vars) < 0.5,
            "means": RNG.random(n_vars).astype(np.float32),
            "gene_symbol": [f"SYM{i}" for i in range(n_vars)],
        },
        index=[f"gene{i}" for i in range(n_vars)],
    )
    a = ad.AnnData(X=X, obs=obs, var=var)
    a.obsm["X_pca"] = RNG.normal(size=(n_obs, 5)).astype(np.float32).astype(np.float64)
    a.obsm["X_umap"] = RNG.normal(size=(n_obs, 2)).astype(np.float32)
    a.obsm["sparse_emb"] = sp.random(n_obs, 4, density=0.3, format="csr", dtype=np.float32, random_state=1)
    a.uns["title"] = "fixture"
    a.uns["n_hvg"] = 7
    a.uns["resolution"] = 2.5
    a.uns["nested"] = {"a": 1}
    a.uns["arr"] = np.arange(3)
    return a


# ---- what anndata reads, as JSON ------------------------------------------------------------------


def csr_json(m):
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    return {
        "rows": int(m.shape[0]),
        "cols": int(m.shape[1]),
        "indptr": [int(v) for v in m.indptr],
        "indices": [int(v) for v in m.indices],
        "data": [float(v) for v in m.data],
    }


def column_json(s):
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        return {
            "kind": "categorical",
            "categories": [str(c) for c in dt.categories],
            "codes": [int(c) for c in s.cat.codes],
            "ordered": bool(dt.ordered),
        }
    if isinstance(dt, pd.BooleanDtype) or isinstance(dt, pd.Int64Dtype) or str(dt) in ("Int8", "Int16", "Int32"):
        kind = "bool" if isinstance(dt, pd.BooleanDtype) else "int"
        missing = s.isna().to_numpy()
        values = [None if m else (bool(v) if kind == "bool" else int(v)) for v, m in zip(s.to_numpy(), missing)]
        return {"kind": kind, "values": values, "nullable": True}
    if isinstance(dt, pd.StringDtype):
        return {"kind": "string", "values": [None if pd.isna(v) else str(v) for v in s], "nullable": True}
    if dt == bool:
        return {"kind": "bool", "values": [bool(v) for v in s]}
    if np.issubdtype(dt, np.integer):
        return {"kind": "int", "values": [int(v) for v in s]}
    if np.issubdtype(dt, np.floating):
        return {"kind": "float", "values": [None if np.isnan(v) else float(v) for v in s]}
    return {"kind": "string", "values": [str(v) for v in s]}


def frame_json(df):
    return {"index": [str(i) for i in df.index], "columns": [[str(c), column_json(df[c])] for c in df.columns]}


def expected_for(path, with_matrices=()):
    a = ad.read_h5ad(path)
    X = a.X if a.X is not None else None
    e = {
        "n_obs": int(a.n_obs),
        "n_vars": int(a.n_vars),
        "X": csr_json(X),
        "whole": bool(np.all(np.mod(sp.csr_matrix(X).data, 1) == 0)),
        "obs": frame_json(a.obs),
        "var": frame_json(a.var),
        "obsm": {
            k: {"rows": int(v.shape[0]), "cols": int(v.shape[1]), "values": [float(x) for x in np.asarray(v, dtype=np.float32).ravel()]}
            for k, v in a.obsm.items()
            if isinstance(v, np.ndarray)
        },
        "uns_strings": {k: v for k, v in a.uns.items() if isinstance(v, str)},
        "uns_numbers": {k: float(v) for k, v in a.uns.items() if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)},
        "matrices": {},
    }
    for name in with_matrices:
        if name == "raw/X":
            e["matrices"][name] = {**csr_json(a.raw.X), "var_index": [str(i) for i in a.raw.var_names]}
        else:
            e["matrices"][name] = csr_json(a.layers[name.split("/", 1)[1]])
    return e


# ---- fixtures ---------------------------------------------------------------------------------------


def rewrite_x(path, data, indices, indptr, **kwargs):
    """Replaces X's arrays with the given ones (exact dtypes anndata would not choose itself)."""
    with h5py.File(path, "r+") as f:
        for name, arr in (("data", data), ("indices", indices), ("indptr", indptr)):
            del f["X"][name]
            f["X"].create_dataset(name, data=arr, **kwargs)


def write_v07(path, a):
    """The anndata 0.7 layout by hand: no root encoding attributes, categoricals as codes with an
    object reference to __categories/<col>, strings without encoding attributes."""
    X = a.X.tocsr()
    with h5py.File(path, "w") as f:
        g = f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = np.array(X.shape)
        g["data"], g["indices"], g["indptr"] = X.data, X.indices, X.indptr
        # A legacy h5sparse-style layer (pre-0.7 attribute names).
        layers = f.create_group("layers")
        c = layers.create_group("counts")
        c.attrs["h5sparse_format"] = "csr"
        c.attrs["h5sparse_shape"] = np.array(X.shape)
        c["data"], c["indices"], c["indptr"] = X.data.astype(np.int32), X.indices, X.indptr
        for key, df in (("obs", a.obs), ("var", a.var)):
            grp = f.create_group(key)
            grp.attrs["encoding-type"] = "dataframe"
            grp.attrs["encoding-version"] = "0.1.0"
            grp.attrs["_index"] = "_index"
            grp.attrs["column-order"] = list(df.columns) if len(df.columns) else np.array([])
            grp.create_dataset("_index", data=np.array(df.index, dtype=object), dtype=h5py.string_dtype())
            for col in df.columns:
                s = df[col]
                if isinstance(s.dtype, pd.CategoricalDtype):
                    cats = grp.create_dataset(f"__categories/{col}", data=np.array(s.cat.categories, dtype=object), dtype=h5py.string_dtype())
                    cats.attrs["ordered"] = bool(s.cat.ordered)
                    grp[col] = s.cat.codes.to_numpy()
                    grp[col].attrs["categories"] = cats.ref
                else:
                    grp[col] = s.to_numpy()
        obsm = f.create_group("obsm")
        obsm["X_pca"] = a.obsm["X_pca"]
        uns = f.create_group("uns")
        uns["title"] = "old file"
        uns["n_hvg"] = 3


def main(out):
    warnings.simplefilter("ignore")  # anndata's notes on the odd layouts written here on purpose
    os.makedirs(out, exist_ok=True)
    expected = {}

    def save(name, a, **kwargs):
        path = os.path.join(out, name)
        a.write_h5ad(path, convert_strings_to_categoricals=False, **kwargs)
        return path

    full = base_adata()
    # X: normalised (not whole numbers); counts in a layer; the unfiltered genes in raw.
    counts_x = full.X.copy()
    full.raw = full.copy()
    full = full[:, :40].copy()
    full.layers["counts"] = counts_x[:, :40].astype(np.int64)
    full.X = sp.csr_matrix(np.log1p(full.X.toarray()).astype(np.float32))
    expected["full.h5ad"] = expected_for(save("full.h5ad", full), ["layers/counts", "raw/X"])

    small = base_adata(60, 12)
    del small.obsm["sparse_emb"]

    d = small.copy()
    d.X = small.X.toarray().astype(np.int32)
    expected["dense_int32.h5ad"] = expected_for(save("dense_int32.h5ad", d))

    d = small.copy()
    d.X = small.X.toarray().astype(np.float64) / 3.0
    expected["dense_float64.h5ad"] = expected_for(save("dense_float64.h5ad", d))

    expected["csr_float32.h5ad"] = expected_for(save("csr_float32.h5ad", small))

    p = save("csr_int64.h5ad", small)
    m = small.X.tocsr()
    rewrite_x(p, m.data.astype(np.int64), m.indices.astype(np.int64), m.indptr.astype(np.int64))
    expected["csr_int64.h5ad"] = expected_for(p)

    p = save("csr_uint32.h5ad", small)
    rewrite_x(p, m.data.astype(np.uint16), m.indices.astype(np.uint32), m.indptr.astype(np.uint64))
    # scipy cannot index with uint64, so anndata cannot read this one back; it holds csr_float32's values.
    expected["csr_uint32.h5ad"] = expected["csr_float32.h5ad"]

    c = small.copy()
    c.X = sp.csc_matrix(small.X)
    expected["csc.h5ad"] = expected_for(save("csc.h5ad", c))

    # Unsorted column indices and a duplicate within a row: scipy semantics sum duplicates.
    u = small.copy()
    p = save("unsorted.h5ad", u)
    rows = [[(3, 1.0), (1, 2.0), (3, 4.0)], [], [(11, 5.0), (0, 1.0)]] + [[] for _ in range(small.n_obs - 3)]
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int32)
    rewrite_x(p, np.array([v for r in rows for _, v in r], dtype=np.float32),
              np.array([i for r in rows for i, _ in r], dtype=np.int32), indptr)
    expected["unsorted.h5ad"] = expected_for(p)

    expected["gzip.h5ad"] = expected_for(save("gzip.h5ad", full, compression="gzip"), ["layers/counts", "raw/X"])

    # LZF as scanpy writes it, with small chunks so that X spans many of them, and with shuffle.
    p = save("lzf.h5ad", full, compression="lzf")
    m = full.X.tocsr()
    rewrite_x(p, m.data, m.indices, m.indptr, compression="lzf", chunks=(64,), shuffle=True)
    expected["lzf.h5ad"] = expected_for(p, ["layers/counts", "raw/X"])
    with h5py.File(p, "r") as f:
        assert f["X/data"].compression == "lzf" and f["obs/_index"].compression == "lzf"

    p = save("dense_lzf.h5ad", ad.AnnData(X=small.X.toarray(), obs=small.obs[[]], var=small.var[[]]), compression="lzf")
    expected["dense_lzf.h5ad"] = expected_for(p)

    p = os.path.join(out, "v07.h5ad")
    old = small.copy()
    old.obs = old.obs[["perturbation", "batch", "score", "is_control"]]
    old.var = old.var[[]]
    write_v07(p, old)
    expected["v07.h5ad"] = expected_for(p, ["layers/counts"])
    with h5py.File(p, "r") as f:
        assert "encoding-type" not in f.attrs

    # Fixed-length byte strings for the index and a string column.
    p = save("fixedstr.h5ad", small)
    with h5py.File(p, "r+") as f:
        for key, vals in (("_index", small.obs_names), ("barcode", small.obs["barcode"])):
            attrs = dict(f["obs"][key].attrs)
            del f["obs"][key]
            f["obs"].create_dataset(key, data=np.array([v.encode() for v in vals], dtype="S12"))
            f["obs"][key].attrs.update(attrs)
    expected["fixedstr.h5ad"] = expected_for(p)

    # ---- broken files (no expected values: the reader must reject them) ----
    def broken(name, edit):
        path = save(name, small)
        with h5py.File(path, "r+") as f:
            edit(f)

    sx = small.X.tocsr()

    def set_x(f, key, arr):
        del f["X"][key]
        f["X"][key] = arr

    def one_row_short(f):  # X consistent in itself but one row shorter than obs
        f["X"].attrs["shape"] = np.array([small.n_obs - 1, small.n_vars])
        set_x(f, "indptr", sx.indptr[:-1])
        n = int(sx.indptr[-2])
        set_x(f, "indices", sx.indices[:n])
        set_x(f, "data", sx.data[:n])

    broken("bad_indices.h5ad", lambda f: f["X/indices"].__setitem__(5, small.n_vars))
    wrapped = sx.indices.astype(np.int64)
    wrapped[5] = 2**32 + 1  # would wrap to 1 if narrowed to 32 bits without a check
    broken("bad_indices_wrap.h5ad", lambda f: set_x(f, "indices", wrapped))
    broken("bad_indptr_len.h5ad", lambda f: set_x(f, "indptr", sx.indptr[:-3]))
    broken("bad_indptr_order.h5ad", lambda f: f["X/indptr"].__setitem__(4, sx.indptr[4] + 1000))
    broken("bad_encoding.h5ad", lambda f: f["X"].attrs.__setitem__("encoding-type", "coo_matrix"))
    broken("bad_column.h5ad", lambda f: f["obs/score"].attrs.__setitem__("encoding-type", "awkward-array"))
    broken("bad_codes.h5ad", lambda f: f["obs/perturbation/codes"].__setitem__(2, 9))
    broken("short_x.h5ad", one_row_short)
    broken("no_x.h5ad", lambda f: f.__delitem__("X"))

    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(expected, fh)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
