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


# ------------------------------------------------------------------------------------------------
# Stage-2 priors (latentcell priors/): the DiT backbone over latent tokens and each prior's loss,
# with every random draw (times, noise, masks, condition dropout) given as an input.

PRIOR_DIM, PRIOR_HEADS, PRIOR_DEPTH, PRIOR_HIDDEN = 16, 4, 2, 64
LABELS = 3           # learned column "cell_type"
EXT_LABELS, EXT_DIM = 4, 5  # external column "perturbation"


def dit_block_weights(prefix, dim, hidden):
    w = attention_weights(f"{prefix}attn.", dim, dim)
    w.update(linear_weights(f"{prefix}mlp.fc1", dim, hidden))
    w.update(linear_weights(f"{prefix}mlp.fc2", hidden, dim))
    w.update(linear_weights(f"{prefix}ada_ln", dim, 6 * dim))
    return w


def backbone_weights(prefix, dim, depth, hidden, out_dim, in_dim=0, vocab=0, positions=0):
    w = {}
    if in_dim:
        w.update(linear_weights(f"{prefix}input", in_dim, dim))
    else:
        w[f"{prefix}token_embed.weight"] = rand(vocab, dim, scale=0.5)
    if positions:
        w[f"{prefix}pos_embed"] = rand(positions, dim, scale=0.5)
    for i in range(depth):
        w.update(dit_block_weights(f"{prefix}blocks.{i}.", dim, hidden))
    w.update(linear_weights(f"{prefix}final_layer.ada_ln", dim, 2 * dim))
    w.update(linear_weights(f"{prefix}final_layer.linear", dim, out_dim))
    return w


def dit_block(w, prefix, x, c, heads, causal=False):
    dim = x.shape[-1]
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = lin(w, f"{prefix}ada_ln", F.silu(c))[:, None, :].chunk(6, dim=-1)
    h = modulate(F.layer_norm(x, (dim,), eps=1e-6), shift_a, scale_a)
    x = x + gate_a * attention(w, f"{prefix}attn.", h, h, heads, causal=causal)
    h = modulate(F.layer_norm(x, (dim,), eps=1e-6), shift_m, scale_m)
    return x + gate_m * lin(w, f"{prefix}mlp.fc2", F.gelu(lin(w, f"{prefix}mlp.fc1", h), approximate="tanh"))


def backbone_embed(w, prefix, x):
    if f"{prefix}input.weight" in w:
        h = lin(w, f"{prefix}input", x)
    else:
        h = w[f"{prefix}token_embed.weight"][x]
    if f"{prefix}pos_embed" in w:
        h = h + w[f"{prefix}pos_embed"][: h.shape[1]][None]
    return h


def backbone_run(w, prefix, h, c, heads, depth, causal=False, cond_token=None):
    """DiT blocks; a condition token joins every block and is dropped after it."""
    n, dim = h.shape[1], h.shape[2]
    for i in range(depth):
        if cond_token is None:
            h = dit_block(w, f"{prefix}blocks.{i}.", h, c, heads, causal=causal)
        else:
            h = dit_block(w, f"{prefix}blocks.{i}.", torch.cat([h, cond_token], 1), c, heads)[:, :n]
    shift, scale = lin(w, f"{prefix}final_layer.ada_ln", F.silu(c))[:, None, :].chunk(2, dim=-1)
    return lin(w, f"{prefix}final_layer.linear", modulate(F.layer_norm(h, (dim,), eps=1e-6), shift, scale))


def timestep(w, prefix, t, freq=256):
    half = freq // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return lin(w, f"{prefix}fc2", F.silu(lin(w, f"{prefix}fc1", emb)))


def condition_weights(dim, timestep_embedding):
    """Column 0: learned table with a null row; column 1: projected external vectors, one label
    without a vector, and a learned null vector."""
    w = {"conditions.columns.0.table": rand(LABELS + 1, dim, scale=0.5),
         "conditions.columns.1.null_embedding": rand(dim, scale=0.5),
         "conditions.columns.1.vectors": rand(EXT_LABELS, EXT_DIM),
         "conditions.columns.1.present": torch.tensor([False, True, True, True])}
    w.update(linear_weights("conditions.columns.1.proj", EXT_DIM, dim))
    if timestep_embedding:
        w.update(linear_weights("conditions.time_embed.fc1", 256, dim))
        w.update(linear_weights("conditions.time_embed.fc2", dim, dim))
    return w


def condition_keys(w, ids, null):
    """[batch, keys, dim]: null (or a negative id) selects the null row / vector."""
    null0 = null[:, 0] | (ids[:, 0] < 0)
    e0 = w["conditions.columns.0.table"][torch.where(null0, LABELS, ids[:, 0])]
    safe = ids[:, 1].clamp(min=0)
    null1 = null[:, 1] | (ids[:, 1] < 0) | ~w["conditions.columns.1.present"][safe]
    projected = lin(w, "conditions.columns.1.proj", w["conditions.columns.1.vectors"][safe])
    e1 = torch.where(null1[:, None], w["conditions.columns.1.null_embedding"][None], projected)
    return torch.stack([e0, e1], 1)


def condition_vector(w, ids, null, t=None, time_scale=1.0):
    c = condition_keys(w, ids, null).sum(1)
    if t is not None:
        c = c + timestep(w, "conditions.time_embed.", t * time_scale)
    return c


def condition_inputs(batch):
    ids = torch.stack([torch.randint(0, LABELS, (batch,)), torch.randint(0, EXT_LABELS, (batch,))], 1)
    ids[0, 1] = 0  # the label without an external vector
    ids[1, 0] = -1  # an unspecified label
    null = torch.zeros(batch, 2, dtype=torch.bool)
    null[2, :] = True  # joint dropout of one sample
    null[batch - 1, 1] = True  # additive dropout of one key
    return ids, null


def case_dit_backbone_causal_codes():
    vocab, length, out_dim = 11, 6, 10
    w = backbone_weights("", PRIOR_DIM, PRIOR_DEPTH, PRIOR_HIDDEN, out_dim, vocab=vocab, positions=length)
    tokens = torch.randint(0, vocab, (3, length))
    c = rand(3, PRIOR_DIM)
    out = backbone_run(w, "", backbone_embed(w, "", tokens), c, PRIOR_HEADS, PRIOR_DEPTH, causal=True)
    return w, {"tokens": tokens, "c": c}, {"out": out}


def case_dit_backbone_set_token():
    in_dim, cells = 3, 7
    w = backbone_weights("", PRIOR_DIM, PRIOR_DEPTH, PRIOR_HIDDEN, in_dim, in_dim=in_dim)
    x, c, token = rand(2, cells, in_dim), rand(2, PRIOR_DIM), rand(2, 1, PRIOR_DIM)
    out = backbone_run(w, "", backbone_embed(w, "", x), c, PRIOR_HEADS, PRIOR_DEPTH, cond_token=token)
    return w, {"x": x, "c": c, "cond_token": token}, {"out": out}


def case_ar_loss():
    length, codebook, batch = 6, 10, 4
    w = condition_weights(PRIOR_DIM, timestep_embedding=False)
    w.update(backbone_weights("backbone.", PRIOR_DIM, PRIOR_DEPTH, PRIOR_HIDDEN, codebook, vocab=codebook + 1,
                              positions=length))
    codes = torch.randint(0, codebook, (batch, length))
    ids, null = condition_inputs(batch)
    inputs = torch.cat([torch.full((batch, 1), codebook), codes[:, :-1]], 1)  # BOS = codebook
    c = condition_vector(w, ids, null)
    logits = backbone_run(w, "backbone.", backbone_embed(w, "backbone.", inputs), c, PRIOR_HEADS, PRIOR_DEPTH,
                          causal=True)
    loss = F.cross_entropy(logits.reshape(-1, codebook), codes.reshape(-1))
    return w, {"codes": codes, "ids": ids, "null": null}, {"loss": loss}


def case_mdlm_loss():
    length, codebook, batch = 6, 10, 4
    w = condition_weights(PRIOR_DIM, timestep_embedding=True)
    w.update(backbone_weights("backbone.", PRIOR_DIM, PRIOR_DEPTH, PRIOR_HIDDEN, codebook, vocab=codebook + 1,
                              positions=length))
    codes = torch.randint(0, codebook, (batch, length))
    ids, null = condition_inputs(batch)
    t = torch.tensor([0.15, 0.4, 0.7, 0.95])
    masked = torch.rand(batch, length) < t[:, None]
    masked[0, 0] = True
    z = torch.where(masked, codebook, codes)  # mask token = codebook
    c = condition_vector(w, ids, null, t, time_scale=1000.0)
    logits = backbone_run(w, "backbone.", backbone_embed(w, "backbone.", z), c, PRIOR_HEADS, PRIOR_DEPTH)
    nll = -torch.log_softmax(logits, -1).gather(-1, codes[..., None])[..., 0]
    loss = (nll * masked / t[:, None]).mean()  # 1/t weight, averaged over all positions
    return w, {"codes": codes, "ids": ids, "null": null, "t": t, "masked": masked}, {"loss": loss}


def case_flow_loss():
    length, dim, batch = 4, 3, 4
    w = condition_weights(PRIOR_DIM, timestep_embedding=True)
    w.update(backbone_weights("backbone.", PRIOR_DIM, PRIOR_DEPTH, PRIOR_HIDDEN, dim, in_dim=dim, positions=length))
    x1, x0 = rand(batch, length, dim), rand(batch, length, dim)
    ids, null = condition_inputs(batch)
    t = torch.tensor([0.05, 0.3, 0.6, 0.9])
    xt = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
    c = condition_vector(w, ids, null, t)
    v = backbone_run(w, "backbone.", backbone_embed(w, "backbone.", xt), c, PRIOR_HEADS, PRIOR_DEPTH)
    loss = F.mse_loss(v, x1 - x0)
    return w, {"x1": x1, "x0": x0, "ids": ids, "null": null, "t": t}, {"loss": loss}


def case_jit_loss():
    """One set of weights; the losses of the four x/v prediction/loss variants."""
    cells, width, batch, clip = 5, 6, 4, 0.05
    d = PRIOR_DIM
    w = condition_weights(d, timestep_embedding=True)
    w.update(backbone_weights("backbone.", d, PRIOR_DEPTH, PRIOR_HIDDEN, width, in_dim=width))
    w["seed.query"] = rand(1, 1, d, scale=0.5)
    w.update(attention_weights("seed.attn.", d, d))
    for name in ("phi", "rho"):
        w.update(linear_weights(f"set_summary.{name}.fc1", d, d))
        w.update(linear_weights(f"set_summary.{name}.fc2", d, d))
    w.update(linear_weights("set_summary.fuse", 2 * d, d))
    x0, x1 = rand(batch, cells, width), rand(batch, cells, width)
    ids, null = condition_inputs(batch)
    t = torch.tensor([0.1, 0.5, 0.93, 0.98])  # the last one beyond the clip at 1 - t = 0.05
    tt = t[:, None, None]
    z = (1 - tt) * x0 + tt * x1
    h = backbone_embed(w, "backbone.", z)
    phi = lin(w, "set_summary.phi.fc2", F.gelu(lin(w, "set_summary.phi.fc1", h)))
    s = lin(w, "set_summary.rho.fc2", F.gelu(lin(w, "set_summary.rho.fc1", phi.mean(1))))
    h = h + lin(w, "set_summary.fuse", torch.cat([h, s[:, None].expand_as(h)], -1))
    token = attention(w, "seed.attn.", w["seed.query"].expand(batch, 1, d), condition_keys(w, ids, null), 1)
    c = timestep(w, "conditions.time_embed.", t)
    out = backbone_run(w, "backbone.", h, c, PRIOR_HEADS, PRIOR_DEPTH, cond_token=token)
    rem = (1 - tt).clamp(min=clip)
    v_target = (x1 - z) / rem
    outputs = {}
    for pred in ("x", "v"):
        x_hat = out if pred == "x" else z + rem * out
        v_hat = (out - z) / rem if pred == "x" else out
        outputs[f"loss_{pred}x"] = F.mse_loss(x_hat, x1)
        outputs[f"loss_{pred}v"] = F.mse_loss(v_hat, v_target)
    return w, {"x0": x0, "x1": x1, "ids": ids, "null": null, "t": t}, outputs


CASES = {
    "attention": case_attention,
    "causal_attention": case_causal_attention,
    "mcab": case_mcab,
    "dit_block": case_dit_block,
    "dit_final_layer": case_dit_final_layer,
    "timestep_embedding": case_timestep_embedding,
    "dit_backbone_causal_codes": case_dit_backbone_causal_codes,
    "dit_backbone_set_token": case_dit_backbone_set_token,
    "ar_loss": case_ar_loss,
    "mdlm_loss": case_mdlm_loss,
    "flow_loss": case_flow_loss,
    "jit_loss": case_jit_loss,
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
