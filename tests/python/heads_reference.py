"""Reference values for tests/test_heads.cpp and tests/test_bottlenecks.cpp from torch.distributions and scipy.

Usage: heads_reference.py OUT.safetensors

Writes float64 tensors:
  nb.x, nb.mu, nb.theta       a grid of counts, means and dispersions (every combination)
  nb.torch, nb.scipy          log NB(x | mu, theta) from torch.distributions.NegativeBinomial and
                              scipy.stats.nbinom (n = theta, p = theta / (theta + mu))
  nbl.mu, nbl.theta, nbl.scale  a grid of NB means, dispersions and log1p scales (every combination)
  nbl.scipy                   E[log1p(scale * X)], X ~ NB(mu, theta), from scipy.stats.nbinom.expect
  kl.mu, kl.logvar            [cells, tokens, dims] posterior moments
  kl.torch                    [cells] KL(N(mu, exp(logvar)) || N(0, 1)) from torch.distributions,
                              summed over tokens and dims
Nothing here uses latentcell's code.
"""
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from scipy import stats


def main():
    torch.manual_seed(7)
    xs = torch.tensor([0.0, 1.0, 3.0, 10.0, 20.0], dtype=torch.float64)
    mus = torch.tensor([0.5, 2.0, 7.5, 60.0, 300.0], dtype=torch.float64)
    thetas = torch.tensor([0.2, 1.0, 4.0, 50.0], dtype=torch.float64)
    x, mu, theta = (t.reshape(-1) for t in torch.meshgrid(xs, mus, thetas, indexing="ij"))
    nb = torch.distributions.NegativeBinomial(total_count=theta, logits=torch.log(mu) - torch.log(theta))
    ref_torch = nb.log_prob(x)
    ref_scipy = torch.from_numpy(stats.nbinom.logpmf(x.numpy(), theta.numpy(), (theta / (theta + mu)).numpy()))

    # Light to heavy tails: theta 0.05 with mu 800 puts mass past 10^4.
    l_mu, l_theta, l_scale = (t.reshape(-1) for t in torch.meshgrid(
        torch.tensor([0.0, 0.01, 0.3, 2.0, 15.0, 120.0, 800.0], dtype=torch.float64),
        torch.tensor([0.05, 0.5, 3.0, 40.0, 1e4], dtype=torch.float64),
        torch.tensor([0.0, 0.7, 25.0], dtype=torch.float64), indexing="ij"))
    ref_log1p = torch.tensor([
        0.0 if m == 0 else stats.nbinom.expect(lambda k, s=s: np.log1p(s * k), args=(t, t / (t + m)),
                                                 maxcount=10**7, tolerance=1e-15)
        for m, t, s in zip(l_mu.tolist(), l_theta.tolist(), l_scale.tolist())], dtype=torch.float64)

    kl_mu = torch.randn(3, 4, 5, dtype=torch.float64)
    kl_logvar = torch.randn(3, 4, 5, dtype=torch.float64) * 0.7
    q = torch.distributions.Normal(kl_mu, torch.exp(0.5 * kl_logvar))
    p = torch.distributions.Normal(torch.zeros_like(kl_mu), torch.ones_like(kl_mu))
    kl = torch.distributions.kl_divergence(q, p).sum(dim=(1, 2))

    save_file({
        "nb.x": x.contiguous(), "nb.mu": mu.contiguous(), "nb.theta": theta.contiguous(),
        "nb.torch": ref_torch.contiguous(), "nb.scipy": ref_scipy.contiguous(),
        "nbl.mu": l_mu.contiguous(), "nbl.theta": l_theta.contiguous(), "nbl.scale": l_scale.contiguous(),
        "nbl.scipy": ref_log1p,
        "kl.mu": kl_mu, "kl.logvar": kl_logvar, "kl.torch": kl,
    }, sys.argv[1], metadata={"torch": torch.__version__, "numpy": np.__version__})


if __name__ == "__main__":
    main()
