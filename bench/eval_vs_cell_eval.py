"""latentcell evaluate vs cell-eval run, one script for both sides (issue 7, acceptance 4).

Inputs (made once, cached under ~/.cache/latentcell/bench/): a screen simulated by `latentcell simulate`
(50k cells x 2000 genes, 100 perturbations + control, raw counts) and a prediction that is a noisy copy
of it (binomial thinning to 85% plus Poisson(0.15) noise, so both sides have DE work and ties).
Both evaluators then run the full profile on the same files with the same thread count (`--threads N`
and `--num-threads N`, and OMP/OpenBLAS/MKL/numba limited to N threads in both processes); cell-eval
skips clustering_agreement, which latentcell does not compute. latentcell runs twice: with
--no-distribution it writes exactly cell-eval's files (the like-for-like comparison), and with its
full profile, which adds distribution.csv (W1/W2/MMD/FD of the scLDM/CFGen protocol, which cell-eval
does not compute). Each side runs under /usr/bin/time -v
for its peak resident memory; wall-clock is measured here. /proc/loadavg is recorded before and after
each run, because the machine may be shared.

Equality of results uses the parity rules of tests/test_cell_eval.cpp: DE-derived counts equal, every
other results.csv value within 1e-5 in >= 99.5% of cells, agg_results.csv means within 1e-4, pdex
fdr within 1e-6 relative.

Run from the repository root with the reference env's python, after building the binary:
  ~/.cache/latentcell/venv/bin/python bench/eval_vs_cell_eval.py [--threads 2] [--repeats 1] [--lognorm]
--lognorm gives both sides the same scanpy-normalised log1p inputs (no normalisation on either side),
which shows the DE engines' p/fdr parity at this scale without numpy-vs-glibc log1p rounding.
"""

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def make_inputs(binary, cache, cells, genes, perts, seed):
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    tag = f"{cells}x{genes}x{perts}_seed{seed}"
    real, pred = os.path.join(cache, f"real_{tag}.h5ad"), os.path.join(cache, f"pred_{tag}.h5ad")
    if not os.path.exists(real):
        os.makedirs(cache, exist_ok=True)
        subprocess.run([binary, "simulate", "--out", real, "--cells", str(cells), "--genes", str(genes),
                        "--perturbations", str(perts), "--seed", str(seed)], check=True)
    if not os.path.exists(pred):
        a = ad.read_h5ad(real)
        rng = np.random.default_rng(seed + 1)
        x = a.X.tocsr()
        thinned = sp.csr_matrix((rng.binomial(x.data.astype(np.int64), 0.85).astype(np.float32), x.indices, x.indptr),
                                shape=x.shape)
        noise = sp.random(x.shape[0], x.shape[1], density=0.14, format="csr", random_state=seed + 2,
                          data_rvs=lambda n: rng.poisson(0.15, n) + 1.0).astype(np.float32)
        y = (thinned + noise).tocsr()
        y.eliminate_zeros()
        out = ad.AnnData(X=y, obs=a.obs.copy(), var=a.var.copy())
        out.write_h5ad(pred + ".tmp")
        os.replace(pred + ".tmp", pred)
    return real, pred


def lognormalised(path):
    """cell-eval's own conversion (scanpy normalize_total to the median, log1p), written once, so that
    both evaluators read identical float32 log1p values and DE parity is not blurred by the last-ulp
    differences between numpy's float32 log1p (SVML on AVX-512) and glibc's log1pf."""
    import anndata as ad
    import scanpy as sc

    out = path.replace(".h5ad", "_lognorm.h5ad")
    if not os.path.exists(out):
        a = ad.read_h5ad(path)
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        a.write_h5ad(out + ".tmp")
        os.replace(out + ".tmp", out)
    return out


def timed(cmd, threads, log):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                "POLARS_MAX_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    before = loadavg()
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - start
    text = open(log).read()
    if rc != 0:
        sys.exit(f"{cmd[0]} failed (exit {rc}); see {log}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"wall_s": wall, "peak_rss_mib": rss_kb / 1024.0, "loadavg_before": before, "loadavg_after": loadavg()}


def read_table(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], {r[0]: [None if v == "" else float(v) for v in r[1:]] for r in rows[1:]}


def same(a, b, tol):
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def compare(ours, ref):
    ha, a = read_table(os.path.join(ours, "results.csv"))
    hb, b = read_table(os.path.join(ref, "results.csv"))
    assert ha == hb, f"results.csv columns differ: {ha} vs {hb}"
    assert a.keys() == b.keys(), "results.csv perturbations differ"
    cells = agree = count_mismatch = 0
    worst = (0.0, "")
    for pert, rb in b.items():
        for metric, x, y in zip(hb[1:], a[pert], rb):
            if metric.startswith("de_nsig_counts"):
                count_mismatch += not same(x, y, 0.0)
                continue
            cells += 1
            agree += same(x, y, 1e-5)
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) and abs(x - y) > worst[0]:
                worst = (abs(x - y), f"{metric} {pert}")
    hb2, aggb = read_table(os.path.join(ref, "agg_results.csv"))
    _, agga = read_table(os.path.join(ours, "agg_results.csv"))
    means = [(m, same(x, y, 1e-4)) for m, x, y in zip(hb2[1:], agga["mean"], aggb["mean"])]

    fdr_rows = fdr_agree = 0
    for name in ("real_de.csv", "pred_de.csv"):
        with open(os.path.join(ours, name)) as fa, open(os.path.join(ref, name)) as fb:
            next(fa), next(fb)
            for la, lb in zip(fa, fb):
                assert la.split(",", 2)[:2] == lb.split(",", 2)[:2], f"{name} rows differ: {la[:40]} vs {lb[:40]}"
                x, y = float(la.rsplit(",", 1)[1]), float(lb.rsplit(",", 1)[1])
                fdr_rows += 1
                fdr_agree += abs(x - y) <= 1e-6 * max(abs(y), 1e-300) or x == y
    return {
        "results_cells": cells, "results_within_1e-5": agree, "fraction": agree / cells,
        "largest_difference": worst[0], "largest_difference_at": worst[1],
        "de_count_mismatches": count_mismatch,
        "agg_means_within_1e-4": sum(ok for _, ok in means), "agg_means": len(means),
        "agg_means_off": [m for m, ok in means if not ok],
        "fdr_rows": fdr_rows, "fdr_within_1e-6_relative": fdr_agree,
        "equal": count_mismatch == 0 and agree / cells >= 0.995 and all(ok for _, ok in means),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "train", "latentcell"))
    p.add_argument("--cell-eval", default=os.path.join(os.path.dirname(sys.executable), "cell-eval"))
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/latentcell/bench"))
    p.add_argument("--out", default=os.path.expanduser("~/.cache/latentcell/bench/eval_vs_cell_eval"))
    p.add_argument("--cells", type=int, default=50000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--perturbations", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip-cell-eval", action="store_true", help="reuse cell-eval's output from an earlier run")
    p.add_argument("--lognorm", action="store_true",
                   help="give both sides inputs already log1p-normalised by scanpy (isolates DE parity)")
    a = p.parse_args()

    real, pred = make_inputs(a.binary, a.cache, a.cells, a.genes, a.perturbations, a.seed)
    if a.lognorm:
        real, pred = lognormalised(real), lognormalised(pred)
    os.makedirs(a.out, exist_ok=True)
    report = {"inputs": {"real": real, "pred": pred, "cells": a.cells, "genes": a.genes,
                         "perturbations": a.perturbations, "lognorm": a.lognorm},
              "threads": a.threads, "nproc": os.cpu_count(),
              "latentcell": [], "cell_eval": []}
    ours_dir, ref_dir = os.path.join(a.out, "latentcell"), os.path.join(a.out, "cell-eval")
    report["latentcell_with_distribution"] = []
    for r in range(a.repeats):
        for extra, key, out_dir, what in ((["--no-distribution"], "latentcell", ours_dir, "--no-distribution"),
                                          ([], "latentcell_with_distribution", ours_dir + "-with-distribution",
                                           "(+ distribution.csv)")):
            ours = timed([a.binary, "evaluate", "--real", real, "--pred", pred, "--pert-col", "perturbation",
                          "--control-pert", "control", "--profile", "full", "--device", "cpu",
                          "--threads", str(a.threads), "--outdir", out_dir] + extra, a.threads,
                         os.path.join(a.out, f"{key}_{r}.log"))
            with open(os.path.join(out_dir, "summary.json")) as f:
                summary = json.load(f)
            ours["reported_s"] = summary["seconds"]
            ours["stages_s"] = summary["seconds_by_stage"]
            report[key].append(ours)
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in ours["stages_s"].items())
            print(f"latentcell evaluate --profile full {what}: {ours['wall_s']:.1f} s ({stages}), peak RSS "
                  f"{ours['peak_rss_mib']:.0f} MiB (load {ours['loadavg_before']} -> {ours['loadavg_after']})",
                  flush=True)
        if a.skip_cell_eval:
            continue
        ref = timed([a.cell_eval, "run", "-ar", real, "-ap", pred, "--pert-col", "perturbation", "--control-pert",
                     "control", "--profile", "full", "--skip-metrics", "clustering_agreement", "--num-threads",
                     str(a.threads), "-o", ref_dir], a.threads, os.path.join(a.out, f"cell_eval_{r}.log"))
        report["cell_eval"].append(ref)
        print(f"cell-eval run --profile full (no clustering): {ref['wall_s']:.1f} s, peak RSS "
              f"{ref['peak_rss_mib']:.0f} MiB (load {ref['loadavg_before']} -> {ref['loadavg_after']})", flush=True)

    report["comparison"] = compare(ours_dir, ref_dir)
    c = report["comparison"]
    if report["cell_eval"]:
        best_ours = min(x["wall_s"] for x in report["latentcell"])
        best_ref = min(x["wall_s"] for x in report["cell_eval"])
        report["speedup_best_of_runs"] = best_ref / best_ours
        print(f"speed-up, same outputs (best of {a.repeats}): {best_ref / best_ours:.1f}x with {a.threads} thread(s)")
        best_dist = min(x["wall_s"] for x in report["latentcell_with_distribution"])
        report["speedup_with_distribution"] = best_ref / best_dist
        print(f"speed-up, latentcell also writing distribution.csv: {best_ref / best_dist:.1f}x")
    print(f"results.csv: {c['results_within_1e-5']}/{c['results_cells']} within 1e-5 ({c['fraction']:.4f}), "
          f"largest difference {c['largest_difference']:.3g} ({c['largest_difference_at']}); "
          f"DE count mismatches {c['de_count_mismatches']}; agg means {c['agg_means_within_1e-4']}/{c['agg_means']} "
          f"within 1e-4; fdr within 1e-6 relative {c['fdr_within_1e-6_relative']}/{c['fdr_rows']}; "
          f"equal: {c['equal']}")
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"report: {os.path.join(a.out, 'report.json')}")


if __name__ == "__main__":
    main()
