#!/usr/bin/env python3
"""Trainer throughput: latentcell's C++ Trainer against the same model and loop in PyTorch Python,
and the 2-rank Gloo scaling efficiency of the C++ trainer, in one run.

Both sides train the smoke task of configs/smoke.yaml (an MCAB set model: Linear embedding, MCAB
pooling with 4 pseudo-inputs, a pre-LN transformer block with SwiGLU, a linear readout; random sets
of up to 16 x 8 features, 32 sets a batch, AdamW) for the same number of steps with the same thread
count (OMP_NUM_THREADS for the binary, torch.set_num_threads for Python). The Python loop does what
the C++ trainer does every step: zero the gradients, draw the batch from a generator seeded by the
batch index, forward, MSE loss, read the loss back, backward, global gradient norm (the non-finite
check) and the optimizer step. Parameter counts of both models are printed as a check.

Throughput is measured after `--warmup` steps: for the binary from the time stamps of its
metrics.jsonl records (train loop only; start-up and the final checkpoint are excluded), for Python
with perf_counter around the loop. Each side runs `--repeats` times, interleaved, and the median is
reported. Scaling: `latentcell train --nproc-per-node 2` with one thread per rank against one rank
with one thread; efficiency = cells/s(2 ranks) / (2 x cells/s(1 rank)).

The machine may be shared: /proc/loadavg is printed before and after every measurement.

    $HOME/.cache/latentcell/venv/bin/python bench/bench_trainer.py [--binary build/train/latentcell]
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "smoke.yaml")

# configs/smoke.yaml
DIM, HEADS, LATENT_TOKENS = 32, 4, 4
SET_SIZE, FEATURES, BATCH = 16, 8, 32
LR, SEED = 0.003, 0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------------------------------------
# The smoke model in PyTorch (core/Attention, core/FeedForward SwiGLU, core/Mcab,
# core/TransformerBlock, train/SmokeTask).

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, query, context, pad=None):
        b, nq, dim = query.shape
        nk = context.shape[1]
        dh = dim // self.heads
        q = self.q_proj(query).view(b, nq, self.heads, dh).transpose(1, 2)    # [b, h, nq, dh]
        k = self.k_proj(context).view(b, nk, self.heads, dh).transpose(1, 2)  # [b, h, nk, dh]
        v = self.v_proj(context).view(b, nk, self.heads, dh).transpose(1, 2)  # [b, h, nk, dh]
        if pad is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            keep = pad.logical_not().view(b, 1, 1, nk)                        # [b, 1, 1, nk]
            any_valid = keep.any(-1, keepdim=True)                            # [b, 1, 1, 1]
            keep = keep.logical_or(any_valid.logical_not())
            out = F.scaled_dot_product_attention(q, k, v, keep) * any_valid.to(q.dtype)
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, dim))


class SwiGlu(nn.Module):
    def __init__(self, dim, multiple_of=64):
        super().__init__()
        hidden = 2 * 4 * dim // 3
        hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class Mcab(nn.Module):
    def __init__(self, dim, heads, queries):
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ff = SwiGlu(dim)

    def forward(self, kv, pad):
        q = self.pseudo_inputs.unsqueeze(0).expand(kv.shape[0], -1, -1)       # [b, m, dim]
        x = q + self.attn(self.norm_q(q), self.norm_kv(kv), pad)
        return x + self.ff(self.norm_ff(x))


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ff = SwiGlu(dim)

    def forward(self, x):
        h = self.norm1(x)
        y = x + self.attn(h, h)
        return y + self.ff(self.norm2(y))


class SetModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(FEATURES, DIM)
        self.pool = Mcab(DIM, HEADS, LATENT_TOKENS)
        self.block = TransformerBlock(DIM, HEADS)
        self.readout = nn.Linear(DIM, 2)

    def forward(self, x, pad):
        z = self.block(self.pool(self.embed(x), pad))                          # [b, m, dim]
        return self.readout(z.mean(1))                                        # [b, 2]


def smoke_batch(index):
    gen = torch.Generator().manual_seed(SEED * 1000003 + index)
    x = torch.randn(BATCH, SET_SIZE, FEATURES, generator=gen)                  # [b, n, f]
    lengths = torch.randint(1, SET_SIZE + 1, (BATCH,), generator=gen)          # [b]
    pad = torch.arange(SET_SIZE).unsqueeze(0).ge(lengths.unsqueeze(1))         # [b, n]
    valid = pad.logical_not().float()
    mean0 = (x[:, :, 0] * valid).sum(1) / valid.sum(1)
    max1 = x[:, :, 1].masked_fill(pad, -1e9).max(1).values
    return x, pad, torch.stack([mean0, max1], 1)                               # target [b, 2]


def python_side(steps, warmup, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    model = SetModel()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    model.train()
    start = None
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        opt.zero_grad()
        x, pad, target = smoke_batch(step)
        loss = F.mse_loss(model(x, pad).float(), target)
        value = loss.item()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        if math.isfinite(value) and math.isfinite(float(norm)):
            opt.step()
        losses.append(value)
    seconds = time.perf_counter() - start
    return {"steps_per_s": steps / seconds, "params": sum(p.numel() for p in params),
            "loss_first": statistics.fmean(losses[:20]), "loss_last": statistics.fmean(losses[-20:])}


# ---------------------------------------------------------------------------------------------
# The C++ trainer through the binary.

def binary_side(binary, steps, warmup, threads, nproc=1, extra=()):
    with tempfile.TemporaryDirectory(prefix="latentcell-bench-") as tmp:
        run = os.path.join(tmp, "run")
        cmd = [binary, "train", CONFIG, f"run_dir={run}", "device=cpu", f"trainer.max_steps={warmup + steps}",
               f"trainer.log_every={warmup}", "trainer.checkpoint_every=0", *extra]
        if nproc > 1:
            cmd += ["--nproc-per-node", str(nproc)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        records = {}
        with open(os.path.join(run, "metrics.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if r["split"] == "train":
                    records[r["step"]] = r
        first, last = records[warmup], records[warmup + steps]
        rate = steps / (last["time_s"] - first["time_s"])
        match = re.search(r"(\d+) parameters", out.stdout + out.stderr)
        return {"steps_per_s": rate, "cells_per_s": rate * BATCH * nproc,
                "params": int(match.group(1)) if match else None,
                "loss_first": records[warmup]["loss"], "loss_last": last["loss"]}


def median_of(results, key):
    return statistics.median(r[key] for r in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "train", "latentcell"))
    parser.add_argument("--steps", type=int, default=300, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=30, help="steps before measuring (divides --steps)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    if args.steps % args.warmup != 0:
        sys.exit("--steps must be a multiple of --warmup (the binary logs every --warmup steps)")

    info = subprocess.run([args.binary, "info"], env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)),
                          capture_output=True, text=True).stdout
    threads_line = next((l for l in info.splitlines() if l.startswith("threads")), "threads ?")
    print(f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}; binary {args.binary}")
    print(f"binary with OMP_NUM_THREADS={args.threads}: {threads_line.split(None, 1)[1]}")
    print(f"{args.steps} measured steps after {args.warmup} warm-up steps, batch {BATCH}, median of {args.repeats}\n")

    cpp, py = [], []
    for i in range(args.repeats):
        before = loadavg()
        cpp.append(binary_side(args.binary, args.steps, args.warmup, args.threads))
        py.append(python_side(args.steps, args.warmup, args.threads))
        print(f"  repeat {i + 1}: C++ {cpp[-1]['steps_per_s']:.1f} steps/s, Python {py[-1]['steps_per_s']:.1f} steps/s"
              f"  (loadavg {before} -> {loadavg()})")
    c, p = median_of(cpp, "steps_per_s"), median_of(py, "steps_per_s")
    print(f"\nparameters: C++ {cpp[0]['params']}, Python {py[0]['params']}")
    print(f"loss (first -> last logged): C++ {cpp[0]['loss_first']:.4f} -> {cpp[0]['loss_last']:.4f}, "
          f"Python {py[0]['loss_first']:.4f} -> {py[0]['loss_last']:.4f}")
    print(f"\n| side ({args.threads} thread{'s' if args.threads > 1 else ''}) | steps/s | cells/s |")
    print("|---|---:|---:|")
    print(f"| latentcell Trainer (C++) | {c:.1f} | {c * BATCH:.0f} |")
    print(f"| PyTorch Python loop | {p:.1f} | {p * BATCH:.0f} |")
    print(f"| ratio C++ / Python | {c / p:.2f} | {c / p:.2f} |")

    if args.skip_scaling:
        return
    print("\nGloo scaling, 1 thread per rank (global batch = 32 x ranks):")
    one, two, two_sync = [], [], []
    for i in range(args.repeats):
        before = loadavg()
        one.append(binary_side(args.binary, args.steps, args.warmup, 1))
        two.append(binary_side(args.binary, args.steps, args.warmup, 1, nproc=2))
        two_sync.append(binary_side(args.binary, args.steps, args.warmup, 1, nproc=2,
                                    extra=["trainer.distributed.overlap=false"]))
        print(f"  repeat {i + 1}: 1 rank {one[-1]['cells_per_s']:.0f} cells/s, 2 ranks {two[-1]['cells_per_s']:.0f} "
              f"cells/s, 2 ranks without overlap {two_sync[-1]['cells_per_s']:.0f} cells/s"
              f"  (loadavg {before} -> {loadavg()})")
    base = median_of(one, "cells_per_s")
    print("\n| ranks x threads | steps/s | cells/s | scaling efficiency |")
    print("|---|---:|---:|---:|")
    print(f"| 1 x 1 | {median_of(one, 'steps_per_s'):.1f} | {base:.0f} | 1.00 |")
    for name, runs in (("2 x 1", two), ("2 x 1, overlap off", two_sync)):
        cells = median_of(runs, "cells_per_s")
        print(f"| {name} | {median_of(runs, 'steps_per_s'):.1f} | {cells:.0f} | {cells / (2 * base):.2f} |")


if __name__ == "__main__":
    main()
