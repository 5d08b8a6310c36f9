"""Checks that anndata reads an h5ad file written by latentcell, without a single warning.

Usage: check_h5ad.py FILE.h5ad EXPECTED.json

EXPECTED.json is what the C++ side wrote into FILE (same schema as make_h5ad_fixtures.py's
expected.json). The file is read with anndata.read_h5ad with every warning turned into an error,
converted with the fixture script's own functions, and compared exactly; exits non-zero with the
first difference on a mismatch.
"""

import json
import math
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_h5ad_fixtures import expected_for  # noqa: E402

KEYS = ["n_obs", "n_vars", "X", "whole", "obs", "var", "obsm", "uns_strings", "uns_numbers"]


def first_difference(got, want, path):
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            d = first_difference(got[k], want[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            d = first_difference(g, w, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(want, float) or isinstance(got, float):
        same = got is not None and want is not None and (got == want or (math.isnan(got) and math.isnan(want)))
        return None if same else f"{path}: {got!r} != {want!r}"
    return None if got == want else f"{path}: {got!r} != {want!r}"


def main(path, expected_path):
    with open(expected_path) as fh:
        want = json.load(fh)
    warnings.simplefilter("error")
    got = expected_for(path)
    for key in KEYS:
        d = first_difference(got[key], want[key], key)
        if d:
            sys.exit(f"{path}: anndata reads something else than latentcell wrote: {d}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
