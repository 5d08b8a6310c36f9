#!/usr/bin/env python
"""Loader throughput, all sides in one run: shuffled minibatches of cells from one simulated file.

Sides (same file, same batch size, shuffled every time):
  latentcell shards  bench_loader --shards DIR: memory-mapped shards through data::Loader
  latentcell h5ad    bench_loader --h5ad FILE: the same Loader over the h5ad (libhdf5, one lock)
  anndata backed     anndata.read_h5ad(backed="r") + torch DataLoader: a BatchSampler over a
                     RandomSampler hands 256 indices to the Dataset, which reads them sorted in one
                     backed X[idx] (the fast way to use backed mode; per-cell __getitem__ is far slower)
                     and returns CSR tensors (indptr, indices, values), num_workers=0.
Both loaders are also run with the other shuffle (latentcell with a plain permutation, anndata with
latentcell's block shuffle of 64-cell blocks), so the table separates the shuffle from the reader.

The data (latentcell simulate with --library-size 700 by default: ~500 of 2000 genes detected per
cell, 25%; the simulator's default 2000 detects ~910, 45%) and its shards are made once and cached
under --cache (default ~/.cache/latentcell/bench/loader/). Before timing, both files are read once so
that every side starts from the page cache. The machine's load is printed with every number: the
machine is shared, and a number taken under load is a lower bound.

Usage: bench/bench_loader.py [--build build] [--cells 1000000] [--genes 2000] [--library-size 700]
                             [--seconds 20] [--repeats 3] [--cache DIR]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def prepare(args, binary):
    os.makedirs(args.cache, exist_ok=True)
    stem = f"sim_{args.cells}x{args.genes}_lib{args.library_size:g}_seed0"
    h5ad = os.path.join(args.cache, stem + ".h5ad")
    shards = os.path.join(args.cache, stem + ".shards")
    density = min(0.45, 0.45 * args.library_size / 2000 + 0.1)  # measured: 0.45 at 2000, 0.25 at 700, 0.2 at 500
    need = args.cells * args.genes * density * 12 * 1.2  # h5ad (8 B per entry) + shards (4 B) + margin
    if not (os.path.exists(h5ad) and os.path.exists(shards)):
        free = shutil.disk_usage(args.cache).free
        if free < need:
            sys.exit(f"error: {args.cache} has {free / 2**30:.1f} GiB free, the data needs about {need / 2**30:.1f} GiB")
    if not os.path.exists(h5ad):
        t = time.time()
        run([binary, "simulate", "--out", h5ad, "--cells", str(args.cells), "--genes", str(args.genes), "--seed", "0",
             "--library-size", f"{args.library_size:g}"])
        print(f"simulated in {time.time() - t:.0f} s")
    if not os.path.exists(shards):
        t = time.time()
        run([binary, "data", "convert", h5ad, shards, "--condition", "perturbation", "--control", "control",
             "--context", "cell_type,batch"])
        print(f"converted in {time.time() - t:.0f} s")
    return h5ad, shards


def warm(paths):
    """Reads every file once, so that all sides start from the page cache."""
    for p in paths:
        files = [p] if os.path.isfile(p) else [os.path.join(p, f) for f in sorted(os.listdir(p))]
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def latentcell(bench, source, path, args, block, workers):
    cmd = [bench, f"--{source}", path, "--batch-size", str(args.batch_size), "--seconds", str(args.seconds),
           "--batches", "100000", "--block-size", str(block), "--workers", str(workers), "--seed", "1"]
    load = loadavg()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["cells_per_s"], load, r


def block_order(n, block, window, rng):
    """latentcell's block shuffle (data/DistributedSampler.h) in numpy: permuted blocks of `block`
    contiguous cells, then positions permuted within windows of `window`."""
    blocks = rng.permutation((n + block - 1) // block)
    order = np.concatenate([np.arange(b * block, min(n, (b + 1) * block)) for b in blocks])
    for start in range(0, n, window):
        seg = order[start:start + window]
        order[start:start + window] = seg[rng.permutation(len(seg))]
    return order


def anndata_backed(h5ad, args, shuffle):
    import anndata as ad
    import torch
    from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

    adata = ad.read_h5ad(h5ad, backed="r")

    class Cells(Dataset):
        def __len__(self):
            return adata.n_obs

        def __getitem__(self, idx):
            idx = np.sort(np.asarray(idx))
            x = adata.X[idx]
            return (torch.from_numpy(x.indptr.astype(np.int64)), torch.from_numpy(x.indices),
                    torch.from_numpy(x.data))

    g = torch.Generator()
    g.manual_seed(1)
    if shuffle == "random":
        sampler = BatchSampler(RandomSampler(range(adata.n_obs), generator=g), args.batch_size, drop_last=False)
    else:
        order = block_order(adata.n_obs, 64, 512, np.random.default_rng(1))
        sampler = [order[i:i + args.batch_size].tolist() for i in range(0, len(order), args.batch_size)]
    loader = DataLoader(Cells(), sampler=sampler, batch_size=None, num_workers=0)
    load = loadavg()

    def batches():  # epoch after epoch, as in training
        while True:
            yield from loader

    it = batches()
    for _ in range(3):  # warm-up, as bench_loader does
        next(it)
    cells, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        indptr, _, _ = next(it)
        cells += len(indptr) - 1
    adata.file.close()
    return cells / (time.perf_counter() - t0), load


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build")
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--library-size", type=float, default=700, help="median library size of the simulated cells")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=20, help="time per measurement")
    p.add_argument("--repeats", type=int, default=3, help="measurements per side; the median is reported")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/latentcell/bench/loader"))
    args = p.parse_args()
    binary = os.path.join(args.build, "train", "latentcell")
    bench = os.path.join(args.build, "bench", "bench_loader")
    for b in (binary, bench):
        if not os.path.exists(b):
            sys.exit(f"error: {b} not found (ninja -C {args.build} latentcell bench_loader)")

    h5ad, shards = prepare(args, binary)
    warm([h5ad, shards])
    sides = [
        ("latentcell shards, block shuffle, 1 prefetch thread", lambda: latentcell(bench, "shards", shards, args, 64, 1)),
        ("latentcell shards, block shuffle, no thread", lambda: latentcell(bench, "shards", shards, args, 64, 0)),
        ("latentcell shards, random permutation, 1 prefetch thread", lambda: latentcell(bench, "shards", shards, args, 0, 1)),
        ("latentcell h5ad, block shuffle, 1 prefetch thread", lambda: latentcell(bench, "h5ad", h5ad, args, 64, 1)),
        ("latentcell h5ad, random permutation, 1 prefetch thread", lambda: latentcell(bench, "h5ad", h5ad, args, 0, 1)),
        ("anndata backed + torch DataLoader, random permutation", lambda: anndata_backed(h5ad, args, "random")),
        ("anndata backed + torch DataLoader, block shuffle", lambda: anndata_backed(h5ad, args, "block")),
    ]
    results = {}
    for name, fn in sides:
        rates, loads = [], []
        for _ in range(args.repeats):
            r = fn()
            rates.append(r[0])
            loads.append(r[1])
        results[name] = (statistics.median(rates), rates, loads)
        print(f"{name}: {statistics.median(rates):,.0f} cells/s (runs {', '.join(f'{x:,.0f}' for x in rates)}; "
              f"load {', '.join(f'{x:.1f}' for x in loads)})", flush=True)

    size = sum(os.path.getsize(os.path.join(shards, f)) for f in os.listdir(shards))
    print()
    print(f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
          f"load at the end {loadavg():.1f}; data: {args.cells} cells x {args.genes} genes, "
          f"h5ad {os.path.getsize(h5ad) / 2**30:.2f} GiB, shards {size / 2**30:.2f} GiB; batch {args.batch_size}")
    print()
    print("| side | cells/s (median) | runs | load (1 min) |")
    print("|---|---:|---|---|")
    for name, (med, rates, loads) in results.items():
        print(f"| {name} | {med:,.0f} | {' / '.join(f'{x:,.0f}' for x in rates)} | "
              f"{' / '.join(f'{x:.1f}' for x in loads)} |")
    shard = results[sides[0][0]][0]
    print()
    for base in (sides[5][0], sides[6][0], sides[3][0]):
        print(f"shards (block shuffle, 1 thread) / {base}: {shard / results[base][0]:.1f}x")
    print(f"targets: shards >= 50x anndata (random): {'met' if shard >= 50 * results[sides[5][0]][0] else 'NOT met'}; "
          f">= 200k cells/s: {'met' if shard >= 200_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
