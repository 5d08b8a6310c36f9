"""Prints a Markdown table of `latentcell evaluate` outputs side by side.

Usage: metrics_table.py NAME=EVAL_DIR [NAME=EVAL_DIR ...]
A name given several times (one per seed) is reported as mean +- standard error over its directories.
Columns: the distribution metrics (W2, MMD^2 RBF biased, FD; mean over perturbations, distribution.csv)
and cell-eval's pearson_delta, overlap_at_N, discrimination_score_l1 and mae (the mean row of
agg_results.csv). Lower is better for w2, mmd, fd and mae; higher for pearson_delta, overlap_at_N
and discrimination_score_l1 (1 - rank / perturbations: 1 when each prediction is nearest its own real
effect).
"""
import csv
import math
import os
import statistics
import sys

COLUMNS = ["w2", "mmd", "fd", "pearson_delta", "overlap_at_N", "discrimination_score_l1", "mae"]


def read_eval(directory):
    values = {}
    with open(os.path.join(directory, "agg_results.csv")) as f:
        rows = list(csv.reader(f))
    header = rows[0]
    for row in rows[1:]:
        if row[0] == "mean":
            for name, value in zip(header[1:], row[1:]):
                if value not in ("", "NaN", "nan"):
                    values[name] = float(value)
    with open(os.path.join(directory, "distribution.csv")) as f:
        for row in csv.DictReader(f):
            if row["perturbation"] == "(mean)":
                values["w2"] = float(row["w2"])
                values["mmd"] = float(row["mmd2_rbf"])
                values["fd"] = float(row["fd"])
    return values


def cell(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    mean = statistics.mean(xs)
    if len(xs) == 1:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {statistics.stdev(xs) / math.sqrt(len(xs)):.2g}"


def main(pairs):
    groups = {}
    for pair in pairs:
        name, _, directory = pair.partition("=")
        if not directory:
            sys.exit(f"metrics_table.py: '{pair}' must be NAME=EVAL_DIR")
        groups.setdefault(name, []).append(read_eval(directory))
    print("| model | runs | " + " | ".join(COLUMNS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |")
    for name, runs in groups.items():
        print(f"| {name} | {len(runs)} | " + " | ".join(cell([r.get(c) for r in runs]) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
