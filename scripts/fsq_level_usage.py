"""How an FSQ autoencoder uses its levels (docs/results.md, stage 1): per latent dimension, the share
of cells in the two levels at either end of its range, and the perplexity of its level histogram.

A dimension with more than 90% of the cells in its two end levels is counted as saturated: its tanh
bound gives it almost no gradient, so training does not move it back.

Usage: python scripts/fsq_level_usage.py CODES.safetensors LEVELS
  CODES.safetensors  from `latentcell encode` of an FSQ run (the `latent` tensor, [cells, tokens] int64)
  LEVELS             the run's bottleneck.levels, comma-separated (e.g. 16,16,16,16)
"""
import sys

import torch
from safetensors.torch import load_file

codes = load_file(sys.argv[1])["latent"]  # [cells, tokens] int64 code indices
levels = [int(x) for x in sys.argv[2].split(",")]
saturated, perplexities = 0, []
for token in range(codes.shape[1]):
    rest = codes[:, token].clone()
    for n_levels in levels:  # mixed radix, first dimension least significant (models/FsqBottleneck.h)
        digit, rest = rest % n_levels, rest // n_levels
        p = torch.bincount(digit, minlength=n_levels).double()
        p = p / p.sum()
        saturated += max(p[:2].sum().item(), p[-2:].sum().item()) > 0.9
        nz = p[p > 0]
        perplexities.append(torch.exp(-(nz * nz.log()).sum()).item())
perplexities.sort()
print(f"{sys.argv[1]}: {saturated} of {len(perplexities)} dimensions have more than 90% of the cells in "
      f"their 2 end levels; effective levels per dimension (perplexity): median "
      f"{perplexities[len(perplexities) // 2]:.1f}, min {perplexities[0]:.1f}, max {perplexities[-1]:.1f}")
