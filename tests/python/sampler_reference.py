"""Reference rank shares from torch.utils.data.DistributedSampler, for tests/test_sampler.cpp.

Usage: sampler_reference.py OUT.safetensors
Writes one int64 tensor per case, named "n{size}_w{world}_r{rank}_s{seed}_e{epoch}_d{drop_last}",
with the indices that PyTorch's sampler gives that rank. The C++ plain (non-block) order must equal it.
"""

import sys

import torch
from safetensors.torch import save_file
from torch.utils.data import DistributedSampler

CASES = [(103, 4, 7, 0, 0), (103, 4, 7, 3, 1), (50, 3, 0, 1, 0), (10, 1, 42, 2, 0)]


def main():
    out = {}
    for size, world, seed, epoch, drop in CASES:
        for rank in range(world):
            s = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True,
                                   seed=seed, drop_last=bool(drop))
            s.set_epoch(epoch)
            name = f"n{size}_w{world}_r{rank}_s{seed}_e{epoch}_d{drop}"
            out[name] = torch.tensor(list(iter(s)), dtype=torch.int64)
    save_file(out, sys.argv[1])


if __name__ == "__main__":
    main()
