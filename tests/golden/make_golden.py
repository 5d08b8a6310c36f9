"""Golden references for latentcell's core blocks, the small MCAB encoder-decoder of models/,
output heads and bottlenecks, written with plain PyTorch ops.

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


def transformer_block_weights(prefix, dim, hidden):
    w = norm_weights(f"{prefix}norm1", dim)
    w.update(attention_weights(f"{prefix}attn.", dim, dim))
    w.update(norm_weights(f"{prefix}norm2", dim))
    w.update(swiglu_weights(f"{prefix}ff.swiglu", dim, hidden))
    return w


def swiglu_weights(prefix, dim, hidden):
    w = linear_weights(f"{prefix}.w1", dim, hidden, bias=False)
    w.update(linear_weights(f"{prefix}.w2", dim, hidden, bias=False))
    w.update(linear_weights(f"{prefix}.w3", hidden, dim, bias=False))
    return w


def transformer_block(w, prefix, x, heads):
    h = layer_norm(w, f"{prefix}norm1", x)
    x = x + attention(w, f"{prefix}attn.", h, h, heads)
    return x + swiglu(w, f"{prefix}ff.swiglu", layer_norm(w, f"{prefix}norm2", x))


def mcab_weights(prefix, dim, hidden, pseudo_inputs=0):
    w = {f"{prefix}pseudo_inputs": rand(pseudo_inputs, dim)} if pseudo_inputs else {}
    w.update(norm_weights(f"{prefix}norm_q", dim))
    w.update(norm_weights(f"{prefix}norm_kv", dim))
    w.update(attention_weights(f"{prefix}attn.", dim, dim))
    w.update(norm_weights(f"{prefix}norm_ff", dim))
    w.update(swiglu_weights(f"{prefix}ff.swiglu", dim, hidden))
    return w


def mcab(w, prefix, q, kv, heads, pad=None):
    x = q + attention(w, f"{prefix}attn.", layer_norm(w, f"{prefix}norm_q", q), layer_norm(w, f"{prefix}norm_kv", kv),
                      heads, pad=pad)
    return x + swiglu(w, f"{prefix}ff.swiglu", layer_norm(w, f"{prefix}norm_ff", x))


def mcab_autoencoder_forward(w, gene_ids, counts, decode_ids, count_embedding, latent_norm, heads, cross_heads):
    """The forward of models/McabEncoderDecoder with the weights `w` (named as its state dict):
    (latent [b, L, d], decoded [b, genes, E]). Sizes come from the weights; transformer blocks are
    encoder.blocks.0, 1, ... and decoder.blocks.0, 1, ... as present. Also run on the weights of a
    `latentcell export` file by the snippet of docs/export.md."""
    table = w["genes.weight"]
    b = gene_ids.shape[0]
    pad = gene_ids == 0
    v = table[gene_ids]                                                    # [b, n, E]
    x = torch.log1p(counts)[..., None]                                     # [b, n, 1]
    if count_embedding == "concat":
        tok = lin(w, "encoder.count_embedding.proj", torch.cat([v, x.expand_as(v)], dim=-1))
    elif count_embedding == "log1p":
        tok = v * x
    else:
        f = lin(w, "encoder.count_embedding.mlp.fc2", F.gelu(lin(w, "encoder.count_embedding.mlp.fc1", x)))
        tok = v * f
    pseudo = w["encoder.pool.pseudo_inputs"]                               # [L, E]
    h = mcab(w, "encoder.pool.", pseudo.expand(b, *pseudo.shape), tok, cross_heads, pad=pad)
    i = 0
    while f"encoder.blocks.{i}.norm1.weight" in w:
        h = transformer_block(w, f"encoder.blocks.{i}.", h, heads)
        i += 1
    z = lin(w, "encoder.out_proj", h)
    if latent_norm:
        z = F.layer_norm(z, z.shape[-1:], eps=1e-5)
    h = lin(w, "decoder.in_proj", z)
    i = 0
    while f"decoder.blocks.{i}.norm1.weight" in w:
        h = transformer_block(w, f"decoder.blocks.{i}.", h, heads)
        i += 1
    queries = table[decode_ids]
    if queries.dim() == 2:
        queries = queries.expand(b, -1, -1)
    return z, mcab(w, "decoder.unpool.", queries, h, cross_heads)


def mcab_autoencoder(count_embedding, latent_norm, per_cell_genes):
    """models/McabEncoderDecoder: gene table -> count embedding -> MCAB pooling (PAD masked) ->
    blocks -> Linear(E, d) [-> LayerNorm w/o affine] ; Linear(d, E) -> blocks -> MCAB unpooling with
    the table's rows of the requested genes as queries; loss = MSE of the output against a target."""
    genes, dim, heads, cross_heads, tokens, latent_dim, hidden, mlp_hidden = 12, 16, 4, 2, 4, 6, 48, 8
    table = rand(genes + 1, dim)
    table[0] = 0
    w = {"genes.weight": table}
    if count_embedding == "concat":
        w.update(linear_weights("encoder.count_embedding.proj", 2 * dim, dim))
    elif count_embedding == "mlp":
        w.update(linear_weights("encoder.count_embedding.mlp.fc1", 1, mlp_hidden))
        w.update(linear_weights("encoder.count_embedding.mlp.fc2", mlp_hidden, dim))
    w.update(mcab_weights("encoder.pool.", dim, hidden, pseudo_inputs=tokens))
    w.update(transformer_block_weights("encoder.blocks.0.", dim, hidden))
    w.update(linear_weights("encoder.out_proj", dim, latent_dim))
    w.update(linear_weights("decoder.in_proj", latent_dim, dim))
    w.update(transformer_block_weights("decoder.blocks.0.", dim, hidden))
    w.update(mcab_weights("decoder.unpool.", dim, hidden))

    # Two cells as data/Tokenizer packs them: expressed genes first, then PAD (id 0, count 0).
    gene_ids = torch.tensor([[5, 1, 12, 7, 3, 9, 2], [4, 11, 6, 0, 0, 0, 0]])
    counts = torch.tensor([[3.0, 1.0, 17.0, 2.0, 1.0, 6.0, 40.0], [8.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    if per_cell_genes:
        decode_ids = torch.tensor([[2, 9, 12, 1, 7], [6, 6, 3, 10, 0]])
    else:
        decode_ids = torch.tensor([7, 2, 11, 1, 5, 12, 9, 4, 3])

    z, out = mcab_autoencoder_forward(w, gene_ids, counts, decode_ids, count_embedding, latent_norm, heads,
                                      cross_heads)
    target = rand(*out.shape)
    loss = F.mse_loss(out, target)
    inputs = {"gene_ids": gene_ids, "counts": counts, "decode_ids": decode_ids, "target": target}
    return w, inputs, {"latent": z, "decoded": out, "loss": loss.reshape(1)}


# ---- stage-1 output heads and bottlenecks (notes sec. 2-3), written from their formulas.

def log_normalize(counts, library, target_sum=1e4):
    return torch.log1p(counts / library[:, None] * target_sum)


def head_inputs(genes=5, width=6):
    h = rand(2, genes, width)
    # Small libraries keep predicted means near 1-40, where float32 rounding stays far below 1e-5.
    counts = torch.tensor([[0.0, 3.0, 1.0, 0.0, 6.0], [5.0, 0.0, 0.0, 2.0, 20.0]])[:, :genes]
    library = torch.tensor([15.0, 42.0])
    return h, counts, library


def case_nb_head():
    """scVI NB: mu = l * softmax(w.h + b), theta = exp(log_theta[gene]), eps = 1e-8 in the logs."""
    w = linear_weights("scale", 6, 1)
    w["log_theta"] = rand(10, scale=0.5)
    h, counts, library = head_inputs()
    gene_ids = torch.tensor([3, 1, 10, 7, 4])
    mu = library[:, None] * torch.softmax(lin(w, "scale", h).squeeze(-1), dim=1)
    theta = torch.exp(w["log_theta"][gene_ids - 1]).expand_as(mu)
    eps = 1e-8
    log_theta_mu = torch.log(theta + mu + eps)
    ll = (theta * (torch.log(theta + eps) - log_theta_mu) + counts * (torch.log(mu + eps) - log_theta_mu)
          + torch.lgamma(counts + theta) - torch.lgamma(theta) - torch.lgamma(counts + 1))
    inputs = {"h": h, "counts": counts, "library": library, "gene_ids": gene_ids}
    return w, inputs, {"log_likelihood": ll, "loss": -ll.sum(1).mean(), "mean": mu}


def case_hurdle_head():
    """BCE on the zero gate + squared error of the magnitude on expressed entries (log1p-normalised)."""
    w = linear_weights("proj", 6, 2)
    w["proj.bias"] = torch.tensor([0.1, 7.0])  # magnitudes near the targets keep the loss O(10) in float32
    h, counts, library = head_inputs()
    out = lin(w, "proj", h)
    gate, magnitude = out[..., 0], out[..., 1]
    expressed = (counts > 0).float()
    y = log_normalize(counts, library)
    bce = F.binary_cross_entropy_with_logits(gate, expressed, reduction="none").sum(1).mean()
    mse = (expressed * (magnitude - y) ** 2).sum(1).mean()
    mean = torch.sigmoid(gate) * magnitude.clamp_min(0)
    return w, {"h": h, "counts": counts, "library": library}, {"loss": bce + mse, "mean": mean}


def case_ce_quant_head():
    """Cross-entropy over count bins (ExpressionVAE's 20-bin layout), expected bin mean as the mean."""
    edges = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 17, 23, 64, 96, 128, 192, 256]
    w = linear_weights("proj", 6, len(edges))
    # Low counts likely, as in real data; keeps the expected count small enough for float32 at 1e-5.
    w["proj.bias"] = torch.linspace(2.0, -4.0, len(edges))
    w["bin_edges"] = torch.tensor(edges, dtype=torch.float32)
    w["bin_means"] = torch.tensor(edges[:11] + [11.5, 14.3, 19.1, 32.2, 74.6, 108.7, 146.6, 214.6, 278.0])
    h, counts, library = head_inputs()
    counts[1, 4] = 300.0  # the unbounded bin
    bins = torch.bucketize(counts, w["bin_edges"], right=True) - 1
    logits = lin(w, "proj", h)
    log_probs = torch.log_softmax(logits, dim=-1)
    ll = log_probs.gather(-1, bins[..., None]).squeeze(-1)
    mean = (log_probs.exp() * w["bin_means"]).sum(-1)
    return w, {"h": h, "counts": counts}, {"log_likelihood": ll, "loss": -ll.sum(1).mean(), "mean": mean}


def case_mse_head():
    w = linear_weights("proj", 6, 1)
    w["proj.bias"] = torch.tensor([5.0])  # means near the targets keep the loss O(10) in float32
    h, counts, library = head_inputs()
    mu = lin(w, "proj", h).squeeze(-1)
    loss = ((mu - log_normalize(counts, library)) ** 2).sum(1).mean()
    return w, {"h": h, "counts": counts, "library": library}, {"loss": loss, "mean": mu}


def case_fsq_bottleneck():
    """FSQ (Mentzer et al.): bounded tanh, rounding, mixed-radix code indices, projections in and out."""
    levels = [8, 5, 4]
    w = linear_weights("project_in", 6, 3)
    w.update(linear_weights("project_out", 3, 6))
    h = rand(2, 4, 6, scale=2.0)
    L = torch.tensor(levels, dtype=torch.float32)
    half_width = torch.tensor([l // 2 for l in levels], dtype=torch.float32)
    half = (L - 1) * (1 - 1e-3) / 2
    offset = torch.tensor([0.5 if l % 2 == 0 else 0.0 for l in levels])
    shift = torch.atanh(offset / half)
    bound = torch.tanh(lin(w, "project_in", h) + shift) * half - offset
    zq = torch.round(bound) / half_width
    basis = torch.tensor([1, 8, 40])  # mixed radix: 1, L_0, L_0 * L_1
    codes = ((zq * half_width + half_width).round().long() * basis).sum(-1)
    return w, {"h": h}, {"z": lin(w, "project_out", zq), "codes": codes}


def case_gaussian_bottleneck():
    """Mean / log-variance projection; evaluation returns the mean; loss = beta * KL summed per cell."""
    w = linear_weights("proj", 6, 2 * 4)
    h = rand(2, 3, 6)
    mu, logvar = lin(w, "proj", h).chunk(2, dim=-1)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2)).mean()
    return w, {"h": h}, {"z": mu, "kl": kl, "loss": 0.5 * kl}


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
    "mcab_autoencoder_concat": lambda: mcab_autoencoder("concat", latent_norm=True, per_cell_genes=False),
    "mcab_autoencoder_log1p": lambda: mcab_autoencoder("log1p", latent_norm=False, per_cell_genes=False),
    "mcab_autoencoder_mlp": lambda: mcab_autoencoder("mlp", latent_norm=False, per_cell_genes=True),
    "nb_head": case_nb_head,
    "hurdle_head": case_hurdle_head,
    "ce_quant_head": case_ce_quant_head,
    "mse_head": case_mse_head,
    "fsq_bottleneck": case_fsq_bottleneck,
    "gaussian_bottleneck": case_gaussian_bottleneck,
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
