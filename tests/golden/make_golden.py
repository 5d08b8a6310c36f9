"""Golden references for latentcell's core blocks, written with plain PyTorch ops.

Each case is one safetensors file holding `weights.<name>` (named as the C++ module's
parameters), `inputs.<name>` and `outputs.<name>`. The forward passes here are written out from
the formulas (explicit softmax attention, DiT modulation), not with latentcell's code, so the C++
test compares two independent implementations. float32 throughout; the C++ side must agree
within 1e-5.

Usage: make_golden.py OUT_DIR
"""
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(1234)


def rand(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).float()


def linear_weights(prefix, d_in, d_out, bias=True):
    w = {f"{prefix}.weight": rand(d_out, d_in, scale=1 / math.sqrt(d_in))}
    if bias:
        w[f"{prefix}.bias"] = rand(d_out, scale=0.1)
    return w


def lin(w, prefix, x):
    y = x @ w[f"{prefix}.weight"].T
    b = w.get(f"{prefix}.bias")
    return y if b is None else y + b


def attention_weights(prefix, dim, kv_dim):
    w = {}
    w.update(linear_weights(f"{prefix}q_proj", dim, dim))
    w.update(linear_weights(f"{prefix}k_proj", kv_dim, dim))
    w.update(linear_weights(f"{prefix}v_proj", kv_dim, dim))
    w.update(linear_weights(f"{prefix}out_proj", dim, dim))
    return w


def attention(w, prefix, query, context, heads, pad=None, causal=False):
    """softmax(QK^T / sqrt(d)) V per head; pad is True where a key is padding."""
    b, nq, dim = query.shape
    nk = context.shape[1]
    dh = dim // heads
    q = lin(w, f"{prefix}q_proj", query).view(b, nq, heads, dh).transpose(1, 2)
    k = lin(w, f"{prefix}k_proj", context).view(b, nk, heads, dh).transpose(1, 2)
    v = lin(w, f"{prefix}v_proj", context).view(b, nk, heads, dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [b, h, nq, nk]
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    if causal:
        mask = torch.ones(nq, nk, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    out = (p @ v).transpose(1, 2).reshape(b, nq, dim)
    return lin(w, f"{prefix}out_proj", out)


def layer_norm(w, prefix, x, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], w.get(f"{prefix}.weight"), w.get(f"{prefix}.bias"), eps)


def norm_weights(prefix, dim):
    return {f"{prefix}.weight": 1 + rand(dim, scale=0.1), f"{prefix}.bias": rand(dim, scale=0.1)}


def swiglu(w, prefix, x):
    return lin(w, f"{prefix}.w3", F.silu(lin(w, f"{prefix}.w1", x)) * lin(w, f"{prefix}.w2", x))


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


def case_attention():
    dim, kv_dim, heads = 16, 12, 4
    w = attention_weights("", dim, kv_dim)
    query, context = rand(2, 5, dim), rand(2, 7, kv_dim)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, 4:] = True
    pad[1, 2] = True
    out = attention(w, "", query, context, heads, pad=pad)
    return w, {"query": query, "context": context, "key_padding_mask": pad}, {"out": out}


def case_causal_attention():
    dim, heads = 16, 4
    w = attention_weights("", dim, dim)
    x = rand(2, 6, dim)
    out = attention(w, "", x, x, heads, causal=True)
    return w, {"x": x}, {"out": out}


def case_mcab():
    dim, kv_dim, heads, m, hidden = 16, 12, 4, 6, 48  # hidden = round_up(2*4*16/3, 16)
    w = {"pseudo_inputs": rand(m, dim)}
    w.update(norm_weights("norm_q", dim))
    w.update(norm_weights("norm_kv", kv_dim))
    w.update(attention_weights("attn.", dim, kv_dim))
    w.update(norm_weights("norm_ff", dim))
    w.update(linear_weights("ff.swiglu.w1", dim, hidden, bias=False))
    w.update(linear_weights("ff.swiglu.w2", dim, hidden, bias=False))
    w.update(linear_weights("ff.swiglu.w3", hidden, dim, bias=False))
    kv = rand(2, 9, kv_dim)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 5:] = True
    q = w["pseudo_inputs"].expand(2, m, dim)
    x = q + attention(w, "attn.", layer_norm(w, "norm_q", q), layer_norm(w, "norm_kv", kv), heads, pad=pad)
    x = x + swiglu(w, "ff.swiglu", layer_norm(w, "norm_ff", x))
    return w, {"kv": kv, "key_padding_mask": pad}, {"out": x}


def case_dit_block():
    dim, heads, hidden = 16, 4, 64
    w = attention_weights("attn.", dim, dim)
    w.update(linear_weights("mlp.fc1", dim, hidden))
    w.update(linear_weights("mlp.fc2", hidden, dim))
    w.update(linear_weights("ada_ln", dim, 6 * dim))  # non-zero: a trained block
    x, c = rand(2, 5, dim), rand(2, dim)
    mod = lin(w, "ada_ln", F.silu(c))[:, None, :].chunk(6, dim=-1)
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod
    h = modulate(F.layer_norm(x, (dim,), eps=1e-6), shift_a, scale_a)
    x1 = x + gate_a * attention(w, "attn.", h, h, heads)
    h = modulate(F.layer_norm(x1, (dim,), eps=1e-6), shift_m, scale_m)
    mlp = lin(w, "mlp.fc2", F.gelu(lin(w, "mlp.fc1", h), approximate="tanh"))
    out = x1 + gate_m * mlp
    return w, {"x": x, "c": c}, {"out": out}


def case_dit_final_layer():
    dim, out_dim = 16, 3
    w = linear_weights("ada_ln", dim, 2 * dim)
    w.update(linear_weights("linear", dim, out_dim))
    x, c = rand(2, 5, dim), rand(2, dim)
    shift, scale = lin(w, "ada_ln", F.silu(c))[:, None, :].chunk(2, dim=-1)
    out = lin(w, "linear", modulate(F.layer_norm(x, (dim,), eps=1e-6), shift, scale))
    return w, {"x": x, "c": c}, {"out": out}


def case_timestep_embedding():
    dim, freq = 16, 256
    w = linear_weights("fc1", freq, dim)
    w.update(linear_weights("fc2", dim, dim))
    t = torch.tensor([0.0, 0.3, 1.0, 250.0, 999.0])
    half = freq // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    out = lin(w, "fc2", F.silu(lin(w, "fc1", emb)))
    return w, {"t": t}, {"out": out}


CASES = {
    "attention": case_attention,
    "causal_attention": case_causal_attention,
    "mcab": case_mcab,
    "dit_block": case_dit_block,
    "dit_final_layer": case_dit_final_layer,
    "timestep_embedding": case_timestep_embedding,
}


def main():
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in CASES.items():
        w, inputs, outputs = make()
        tensors = {f"weights.{k}": v.contiguous() for k, v in w.items()}
        tensors.update({f"inputs.{k}": v.contiguous() for k, v in inputs.items()})
        tensors.update({f"outputs.{k}": v.contiguous() for k, v in outputs.items()})
        save_file(tensors, str(out_dir / f"{name}.safetensors"), metadata={"case": name, "torch": torch.__version__})


if __name__ == "__main__":
    main()
