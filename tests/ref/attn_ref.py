"""attn_ref -- one PyTorch function per attention kind, written from the specification
(../shared/papers/), independent of the C code: the attention-level reference of
tests/ref/check_attn.py. Adding a kind adds one function to KINDS.

Each function takes q, k, v (B,T,NH,HS) float64 *before* any rotary embedding, the kind's
parameters (dict name -> tensor), its options (dict key -> string, the canonical list the C side
wrote) and a context (rope, rope_theta, layer, n_layer, write_weights), and returns (out
(B,T,NH,HS), aux) where aux is the kind's auxiliary objective as the C kind reports it (0 when
it has none): the checker differentiates sum(out * dout) + aux.

A kind that carries a state from one window to the next reads ctx["carry"] (None: fresh lanes;
else what it left in ctx["carry_out"] after the previous window, detached) and leaves its state
after the window in ctx["carry_out"]; CARRY_DECODE[kind] reads the C side's carry bytes into the
same form, for comparison.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

import mnemo_ref as R


def _rope(x, ctx, positions=None):
    """x (B,T,NH,HS) rotated at positions 0..T-1 (or the given ones) when the model uses RoPE."""
    if not ctx["rope"]:
        return x
    T, HS = x.shape[1], x.shape[3]
    cos, sin = R.rope_tables(T, HS, ctx["rope_theta"])
    return R.apply_rope(x, cos, sin)


def _masked_softmax_attention(q, k, v, allowed, ctx):
    """softmax over the allowed keys of rope(q) rope(k)^T / sqrt(HS), times v. allowed: a bool
    tensor (NH,T,T) or (T,T), True where query t may see key s."""
    B, T, NH, HS = q.shape
    qr, kr = _rope(q, ctx), _rope(k, ctx)
    qr, kr, vh = (t.transpose(1, 2) for t in (qr, kr, v))            # (B,NH,T,HS)
    att = (qr @ kr.transpose(-2, -1)) / math.sqrt(HS)
    att = att.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(att, dim=-1) @ vh).transpose(1, 2)


def _causal(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def dense(q, k, v, params, opts, ctx):
    return _masked_softmax_attention(q, k, v, _causal(q.shape[1]), ctx), 0.0


def selective(q, k, v, params, opts, ctx):
    """Every head's logits lowered by the penalty F that head 0's logits vote (Leviathan et
    al.); aux = mem_eps * sum over windows of max_i M_i / (n_layer T), M_i = (i + 1) -
    sum_j min(F[i,j], tau) / tau."""
    B, T, NH, HS = q.shape
    qr, kr = _rope(q, ctx), _rope(k, ctx)
    qr, kr, vh = (t.transpose(1, 2) for t in (qr, kr, v))
    att = (qr @ kr.transpose(-2, -1)) / math.sqrt(HS)
    att = att.masked_fill(~_causal(T), float("-inf"))
    Fp = R.selection_penalty(att[:, 0])                              # (B,T,T)
    out = (torch.softmax(att - Fp[:, None], dim=-1) @ vh).transpose(1, 2)
    eps, tau = float(opts["mem_eps"]), float(opts["mem_tau"])
    if eps == 0:
        return out, 0.0
    count = torch.arange(1, T + 1, dtype=q.dtype)
    M = count - torch.clamp(Fp, max=tau).sum(-1) / tau              # (B,T)
    return out, eps * M.max(dim=-1).values.sum() / (ctx["n_layer"] * T)


def infini(q, k, v, params, opts, ctx):
    """Local causal attention per segment (RoPE within the segment) mixed by a per-head gate
    with a compressive memory read with sigma = ELU + 1 (Munkhdalai et al., Eq. 6-10), the
    segments' writes weighted by the call's write weights (1 without mem_repeat)."""
    B, T, NH, HS = q.shape
    N = int(opts["segment"]) or T
    delta = opts["mem_update"] == "delta"
    g = torch.sigmoid(params["gate"])[None, :, None, None]
    ww = ctx["write_weights"]
    sig = lambda x: F.elu(x) + 1                                     # noqa: E731
    carry = ctx.get("carry")  # (M, z, segments folded) of every lane, or None
    M = q.new_zeros(B, NH, HS, HS) if carry is None else carry[0]
    z = q.new_zeros(B, NH, HS, 1) if carry is None else carry[1]
    count = torch.zeros(B, dtype=torch.int64) if carry is None else carry[2]
    full = (count > 0)[:, None, None, None]  # lanes whose memory is not empty
    outs = []
    for s, s0 in enumerate(range(0, T, N)):
        qs, ks, vs = (t[:, s0:s0 + N] for t in (q, k, v))
        n = qs.shape[1]
        a_dot = _masked_softmax_attention(qs, ks, vs, _causal(n), ctx).transpose(1, 2)
        sq, sk, vh = sig(qs).transpose(1, 2), sig(ks).transpose(1, 2), vs.transpose(1, 2)
        read = full if s0 == 0 else torch.ones_like(full)
        a_mem = (sq @ M) / (sq @ z).clamp_min(R.MEM_DEN_EPS)
        outs.append(torch.where(read, g * a_mem + (1 - g) * a_dot, a_dot))
        u_delta = vh - (sk @ M) / (sk @ z).clamp_min(R.MEM_DEN_EPS)
        u = torch.where(read, u_delta, vh) if delta else vh
        c = (ww[:, s] if ww is not None else torch.ones(B, dtype=q.dtype))[:, None, None, None]
        M = M + c * (sk.transpose(-2, -1) @ u)
        z = z + c * sk.sum(dim=-2)[..., None]
    ctx["carry_out"] = (M.detach(), z.detach(), count + (T + N - 1) // N)
    return torch.cat(outs, dim=2).transpose(1, 2), 0.0


def infini_carry(raw, B, NH, HS):
    """The C side's carry bytes (B lanes: a 64-byte header whose first int64 counts the
    segments folded, then M (NH,HS,HS) and z (NH,HS) float32) as (M, z, count)."""
    lane = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(B, -1)
    count = torch.tensor(lane[:, :8].copy().view(np.int64)[:, 0])
    f = lane[:, 64:].copy().view(np.float32).astype(np.float64)
    M = torch.tensor(f[:, :NH * HS * HS]).reshape(B, NH, HS, HS)
    z = torch.tensor(f[:, NH * HS * HS:]).reshape(B, NH, HS, 1)
    return M, z, count


def window(q, k, v, params, opts, ctx):
    """Sliding window: query i sees keys i - w < j <= i."""
    T, w = q.shape[1], int(opts["w"])
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return _masked_softmax_attention(q, k, v, (j <= i) & (j > i - w), ctx), 0.0


def _ij(T):
    return torch.arange(T)[:, None], torch.arange(T)[None, :]


def block(q, k, v, params, opts, ctx):
    """Blockwise local: a query sees its block of b up to itself, with prev the block before."""
    T, b = q.shape[1], int(opts["b"])
    prev = 1 if opts["prev"] == "true" else 0
    i, j = _ij(T)
    return _masked_softmax_attention(q, k, v, (j <= i) & (j // b >= i // b - prev), ctx), 0.0


def strided(q, k, v, params, opts, ctx):
    """Sparse Transformer: heads h < NH/2 pattern A, the others B; one head: A or B.
    strided: A = the previous l positions and itself, B = every l-th key back;
    fixed: A = the query's block of l, B = the last c positions of every block, and itself."""
    NH, T = q.shape[2], q.shape[1]
    l, c = int(opts["l"]), int(opts["c"])
    i, j = _ij(T)
    causal = j <= i
    if opts["mode"] == "strided":
        A = causal & (j >= i - l)
        Bm = causal & ((i - j) % l == 0)
    else:
        A = causal & (j // l == i // l)
        Bm = causal & ((j % l >= l - c) | (j == i))
    if NH == 1:
        mask = (A | Bm)[None]
    else:
        mask = torch.stack([A if h < NH // 2 else Bm for h in range(NH)])
    return _masked_softmax_attention(q, k, v, mask, ctx), 0.0


def longformer(q, k, v, params, opts, ctx):
    """Causal Longformer: the first g positions (sinks) and a window of w keys, dilation apart
    (w may be a per-layer list a/b/c)."""
    T = q.shape[1]
    ws = opts["w"].split("/")
    w = int(ws[ctx["layer"]] if len(ws) > 1 else ws[0])
    d, g = int(opts["dilation"]), int(opts["g"])
    i, j = _ij(T)
    win = (j <= i) & ((i - j) % d == 0) & ((i - j) // d < w)
    return _masked_softmax_attention(q, k, v, (j <= i) & ((j < g) | win), ctx), 0.0


M64 = (1 << 64) - 1


class SplitMix64:
    """The library's generator (src/util.c mni_rng): splitmix64 seeded with seed ^ a constant,
    and its draw below n by a 128-bit multiply-shift."""

    def __init__(self, seed):
        self.s = (seed ^ 0x6A09E667F3BCC908) & M64

    def u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        return (self.u64() * n) >> 64


def bigbird_random_blocks(opts, layer, qb):
    """R(layer, qb): r distinct blocks of 0..qb-wb not entirely global, uniformly without
    replacement (Floyd's algorithm, as the C kind draws them), all of them when few."""
    bs, wb, g, r = (int(opts[x]) for x in ("block", "wb", "g", "r"))
    first, last = g // bs, qb - wb
    n = last - first + 1
    if n <= 0 or r <= 0:
        return []
    if n <= r:
        return list(range(first, last + 1))
    seed = (int(opts["pattern_seed"]) * 0x9E3779B97F4A7C15) & M64
    seed ^= ((layer + 1) * 0xC2B2AE3D27D4EB4F) & M64
    seed ^= ((qb + 1) * 0x165667B19E3779F9) & M64
    rng, chosen = SplitMix64(seed), set()
    for t in range(n - r, n):
        x = rng.below(t + 1)
        chosen.add(t if x in chosen else x)
    return sorted(first + x for x in chosen)


def bigbird(q, k, v, params, opts, ctx):
    """Causal BigBird: the query's block and the wb - 1 before it, the first g tokens, and r
    random earlier blocks per query block (drawn from pattern_seed, the layer and the block)."""
    T = q.shape[1]
    bs, wb, g = int(opts["block"]), int(opts["wb"]), int(opts["g"])
    i, j = _ij(T)
    allowed = (j <= i) & ((j // bs > i // bs - wb) | (j < g))
    for qb in range((T + bs - 1) // bs):
        for kb in bigbird_random_blocks(opts, ctx["layer"], qb):
            allowed[qb * bs:(qb + 1) * bs, kb * bs:(kb + 1) * bs] = True
    return _masked_softmax_attention(q, k, v, allowed & (j <= i), ctx), 0.0


KINDS = {
    "dense": dense,
    "selective": selective,
    "infini": infini,
    "window": window,
    "block": block,
    "strided": strided,
    "longformer": longformer,
    "bigbird": bigbird,
}

CARRY_DECODE = {"infini": infini_carry}
