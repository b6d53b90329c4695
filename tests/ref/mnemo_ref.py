"""mnemo_ref -- an independent PyTorch reference of the mnemo model (dense, selective and
infini attention).

Written from the model specification (docs/internals/reference-tests.md), not from the C code,
so that the C forward, backward and optimizer can be checked against it. It runs in any torch
dtype; the checker uses float64 so the reference error is negligible next to float32.

The model: a decoder-only pre-norm GPT.
    h = wte[x] (+ wpe[:T] if pos == "learned")
    per block: h = h + attn(ln1(h)); h = h + mlp(ln2(h))
    logits = lnf(h) @ wte^T                        (B,T,Vp), tied embedding
    loss = mean cross-entropy over the first V logit columns
Parameter names are exactly the checkpoint tensor names (nn.Linear layout: out x in).

Infini-attention (attn_kind "infini") is written from the paper's equations
(shared/papers/infini-attention.md): a Python loop over the segments of the window, each with
causal softmax attention over its own tokens (RoPE at positions within the segment) and a
compressive memory read with sigma(Q) = ELU(Q) + 1 before and written after the segment, on Q, K
without positions; one gate logit per head ("blocks.l.attn.gate"), sigmoid-mixed.

Also here: AdamW and Muon and gradient clipping as the C trainer does them (weight decay only on
parameters with ndim >= 2; the attention kinds' own parameters at lr * gate_lr_mult), a random
checkpoint builder, and the checkpoint metadata codec.

Checkpoints: format 2 carries the attention kind's options as "attn.<key>" metadata (infini's
"attn.segment", "attn.mem_update") and infini's gates as "blocks.l.attn.gate"; format 1 (still
read) carried them as "attn_segment", "attn_mem_update" and "blocks.l.attn.kind"
(upgrade_tensors renames those).
"""

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import st_io

FORMAT_VERSION = "2"               # what to_meta writes
READ_FORMATS = ("1", "2")          # what from_meta reads
KNOWN_ATTN_KINDS = ("dense", "selective", "infini")
KNOWN_MEM_UPDATES = ("linear", "delta")
MEM_DEN_EPS = 1e-6          # infini: the read-out's denominator is clamped to at least this
KNOWN_POS = ("rope", "learned")
LN_EPS = 1e-5
META_KEYS = ("mnemo.format", "n_layer", "d_model", "n_head", "n_ctx", "vocab", "vocab_padded",
             "pos", "rope_theta", "attn_kind")


class RefError(ValueError):
    """A checkpoint or configuration the reference cannot use; the message is one clear line."""


@dataclass
class Config:
    n_layer: int
    d_model: int
    n_head: int
    n_ctx: int
    vocab: int
    vocab_padded: int
    pos: str = "rope"
    rope_theta: float = 10000.0
    attn_kind: str = "dense"
    segment: int = 0            # infini: segment length (0 = n_ctx)
    mem_update: str = "linear"  # infini: linear or delta

    def check(self):
        """Raise RefError naming the first impossible field."""
        for f in ("n_layer", "d_model", "n_head", "n_ctx", "vocab", "vocab_padded"):
            if getattr(self, f) <= 0:
                raise RefError("config: %s must be positive (got %d)" % (f, getattr(self, f)))
        if self.d_model % self.n_head:
            raise RefError("config: d_model %d is not a multiple of n_head %d"
                           % (self.d_model, self.n_head))
        if self.vocab_padded < self.vocab:
            raise RefError("config: vocab_padded %d < vocab %d" % (self.vocab_padded, self.vocab))
        if self.pos not in KNOWN_POS:
            raise RefError("config: unknown pos %r (known: %s)" % (self.pos, ", ".join(KNOWN_POS)))
        if self.attn_kind not in KNOWN_ATTN_KINDS:
            raise RefError("config: unknown attn_kind %r (this reference knows: %s)"
                           % (self.attn_kind, ", ".join(KNOWN_ATTN_KINDS)))
        if self.attn_kind == "infini":
            if not 0 <= self.segment <= self.n_ctx:
                raise RefError("config: segment %d must be in [0, n_ctx]" % self.segment)
            if self.mem_update not in KNOWN_MEM_UPDATES:
                raise RefError("config: unknown mem_update %r" % self.mem_update)
        elif self.segment or self.mem_update != "linear":
            raise RefError("config: segment and mem_update are infini's only")
        if self.pos == "rope" and (self.d_model // self.n_head) % 2:
            raise RefError("config: rope needs an even head size (got %d)"
                           % (self.d_model // self.n_head))
        if self.pos == "rope" and not self.rope_theta > 0:
            raise RefError("config: rope_theta must be positive (got %r)" % self.rope_theta)
        return self

    def to_meta(self):
        """The checkpoint __metadata__ (all values strings)."""
        return {"mnemo.format": FORMAT_VERSION, "n_layer": str(self.n_layer),
                "d_model": str(self.d_model), "n_head": str(self.n_head),
                "n_ctx": str(self.n_ctx), "vocab": str(self.vocab),
                "vocab_padded": str(self.vocab_padded), "pos": self.pos,
                "rope_theta": repr(float(self.rope_theta)), "attn_kind": self.attn_kind,
                **({"attn.segment": str(self.segment), "attn.mem_update": self.mem_update}
                   if self.attn_kind == "infini" else {})}

    @staticmethod
    def from_meta(meta):
        """Parse checkpoint metadata; RefError on a missing, malformed or unknown value."""
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise RefError("checkpoint metadata lacks %s" % ", ".join(missing))
        if meta["mnemo.format"] not in READ_FORMATS:
            raise RefError("checkpoint mnemo.format %r, this reference reads %s"
                           % (meta["mnemo.format"], " and ".join(map(repr, READ_FORMATS))))
        if meta["attn_kind"] not in KNOWN_ATTN_KINDS:
            raise RefError("checkpoint attn_kind %r is unknown to this reference (known: %s)"
                           % (meta["attn_kind"], ", ".join(KNOWN_ATTN_KINDS)))
        ints = {}
        for k in ("n_layer", "d_model", "n_head", "n_ctx", "vocab", "vocab_padded"):
            try:
                ints[k] = int(meta[k])
            except ValueError:
                raise RefError("checkpoint metadata %s=%r is not an integer"
                               % (k, meta[k])) from None
        try:
            theta = float(meta["rope_theta"])
        except ValueError:
            raise RefError("checkpoint metadata rope_theta=%r is not a number"
                           % meta["rope_theta"]) from None
        # the options: "attn.<key>" (format 2) or "attn_<key>" (format 1)
        sep = "_" if meta["mnemo.format"] == "1" else "."
        seg_key, upd_key = "attn%ssegment" % sep, "attn%smem_update" % sep
        try:
            segment = int(meta.get(seg_key, "0"))
        except ValueError:
            raise RefError("checkpoint metadata %s=%r is not an integer"
                           % (seg_key, meta[seg_key])) from None
        return Config(pos=meta["pos"], rope_theta=theta, attn_kind=meta["attn_kind"],
                      segment=segment, mem_update=meta.get(upd_key, "linear"),
                      **ints).check()


def upgrade_tensors(meta, tensors):
    """The tensors of a checkpoint under their format-2 names: a format-1 file named infini's
    gates "blocks.l.attn.kind" (now "blocks.l.attn.gate"). Returns a new dict."""
    if meta.get("mnemo.format") != "1" or meta.get("attn_kind") != "infini":
        return tensors
    out = OrderedDict()
    for n, a in tensors.items():
        if n.startswith("blocks.") and n.endswith(".attn.kind"):
            n = n[:-len("kind")] + "gate"
        out[n] = a
    return out


def param_shapes(cfg):
    """Ordered {checkpoint tensor name: shape} of every parameter of the model."""
    C, L = cfg.d_model, cfg.n_layer
    s = OrderedDict()
    s["wte.weight"] = (cfg.vocab_padded, C)
    if cfg.pos == "learned":
        s["wpe.weight"] = (cfg.n_ctx, C)
    for l in range(L):
        p = "blocks.%d." % l
        s[p + "ln1.weight"] = (C,)
        s[p + "ln1.bias"] = (C,)
        s[p + "attn.qkv.weight"] = (3 * C, C)
        s[p + "attn.qkv.bias"] = (3 * C,)
        s[p + "attn.proj.weight"] = (C, C)
        s[p + "attn.proj.bias"] = (C,)
        if cfg.attn_kind == "infini":
            s[p + "attn.gate"] = (cfg.n_head,)     # the gate logits, one per head
        s[p + "ln2.weight"] = (C,)
        s[p + "ln2.bias"] = (C,)
        s[p + "mlp.fc.weight"] = (4 * C, C)
        s[p + "mlp.fc.bias"] = (4 * C,)
        s[p + "mlp.proj.weight"] = (C, 4 * C)
        s[p + "mlp.proj.bias"] = (C,)
    s["lnf.weight"] = (C,)
    s["lnf.bias"] = (C,)
    return s


def rope_tables(T, HS, theta):
    """cos, sin tables (T, HS/2) as float32 tensors.

    angle(t, i) = t * theta^(-2i/HS), computed (with cos and sin) in float64 and then rounded
    to float32, exactly as the specification asks of the C side.
    """
    half = HS // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = np.power(np.float64(theta), -2.0 * i / HS)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
    return (torch.from_numpy(np.cos(ang).astype(np.float32)),
            torch.from_numpy(np.sin(ang).astype(np.float32)))


def apply_rope(x, cos, sin):
    """GPT-NeoX "rotate half" on x (B,T,NH,HS) with tables (T,HS/2).

    For i < HS/2: (x[i], x[i+HS/2]) <- (x[i]cos - x[i+HS/2]sin, x[i]sin + x[i+HS/2]cos).
    """
    half = x.shape[-1] // 2
    c = cos.to(x.dtype)[None, :, None, :]
    s = sin.to(x.dtype)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)


def selection_penalty(att0):
    """Selective Attention's penalty F (B,T,T) from head 0's scaled, causally masked logits
    att0 (B,T,T) (-inf above the diagonal), as the paper's sketch builds it: relu, BOS column
    and self never penalised, shifted one query down, summed down the query axis."""
    T = att0.shape[-1]
    keep = torch.ones(T, T, dtype=att0.dtype, device=att0.device)
    keep[:, 0] = 0                                   # do not mask <BOS>
    keep.fill_diagonal_(0)                           # do not mask self
    s = torch.relu(att0) * keep                      # only positive selection (-inf -> 0)
    s = torch.cat((torch.zeros_like(s[:, :1]), s[:, :-1]), dim=1)  # strictly in the future
    return torch.cumsum(s, dim=1)                    # accumulate


class Attention(nn.Module):
    """Causal softmax attention with fused qkv and output projections; with attn_kind
    "selective", every head's logits are lowered by selection_penalty of head 0's."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        if cfg.attn_kind == "infini":
            self.gate = nn.Parameter(torch.zeros(cfg.n_head))   # gate logits beta

    def rope(self, x):
        """x (B,T,NH,HS) -> rotated x; a method so tests can swap the convention."""
        T, HS = x.shape[1], x.shape[3]
        cos, sin = rope_tables(T, HS, self.cfg.rope_theta)
        return apply_rope(x, cos, sin)

    def infini(self, q, k, v):
        """Infini-attention over q, k, v (B,T,NH,HS) without positions -> (B,T,NH,HS).

        Per segment s (N tokens, the last one possibly shorter), per head:
          A_dot = softmax(rope(Q) rope(K)^T / sqrt(HS) + causal) V   within the segment, RoPE
                  at positions 0..n-1 of the segment
          A_mem = sigma(Q) M / max(sigma(Q) z, eps),  sigma = ELU + 1
          A     = sigmoid(beta) A_mem + (1 - sigmoid(beta)) A_dot,   A = A_dot in segment 0
          M    += sigma(K)^T (V, or V - sigma(K) M / max(sigma(K) z, eps) for delta and s >= 1)
          z    += sum over the segment of sigma(K)
        """
        B, T, NH, HS = q.shape
        N = self.cfg.segment or self.cfg.n_ctx
        g = torch.sigmoid(self.gate)[None, :, None, None]           # (1,NH,1,1)
        sig = lambda x: F.elu(x) + 1                                # noqa: E731
        M = q.new_zeros(B, NH, HS, HS)
        z = q.new_zeros(B, NH, HS, 1)
        outs = []
        for s0 in range(0, T, N):
            qs, ks, vs = (t[:, s0:s0 + N] for t in (q, k, v))       # (B,n,NH,HS)
            n = qs.shape[1]
            qr, kr = (self.rope(qs), self.rope(ks)) if self.cfg.pos == "rope" else (qs, ks)
            qr, kr, vh = (t.transpose(1, 2) for t in (qr, kr, vs))  # (B,NH,n,HS)
            att = (qr @ kr.transpose(-2, -1)) / math.sqrt(HS)
            att = att.masked_fill(~self.mask(n, q.device), float("-inf"))
            a_dot = torch.softmax(att, dim=-1) @ vh
            sq, sk = sig(qs).transpose(1, 2), sig(ks).transpose(1, 2)   # (B,NH,n,HS)
            if s0 == 0:
                a = a_dot
            else:
                a_mem = (sq @ M) / (sq @ z).clamp_min(MEM_DEN_EPS)
                a = g * a_mem + (1 - g) * a_dot
            outs.append(a)
            if self.cfg.mem_update == "delta" and s0 > 0:
                u = vh - (sk @ M) / (sk @ z).clamp_min(MEM_DEN_EPS)
            else:
                u = vh
            M = M + sk.transpose(-2, -1) @ u
            z = z + sk.sum(dim=-2)[..., None]
        return torch.cat(outs, dim=2).transpose(1, 2)               # (B,T,NH,HS)

    def mask(self, T, device):
        """(T,T) bool, True where query t may see key s (s <= t)."""
        return torch.ones(T, T, dtype=torch.bool, device=device).tril()

    def forward(self, a):
        B, T, C = a.shape
        NH = self.cfg.n_head
        HS = C // NH
        qkv = self.qkv(a)                                            # (B,T,3C)
        q = qkv[..., 0:C].reshape(B, T, NH, HS)
        k = qkv[..., C:2 * C].reshape(B, T, NH, HS)
        v = qkv[..., 2 * C:3 * C].reshape(B, T, NH, HS)
        if self.cfg.attn_kind == "infini":
            return self.proj(self.infini(q, k, v).reshape(B, T, C))
        if self.cfg.pos == "rope":
            q, k = self.rope(q), self.rope(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))             # (B,NH,T,HS)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))      # (B,NH,T,T)
        att = att.masked_fill(~self.mask(T, a.device), float("-inf"))
        if self.cfg.attn_kind == "selective":
            self.penalty = selection_penalty(att[:, 0])              # (B,T,T), kept for the
            att = att - self.penalty[:, None]                         # memory loss
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)               # heads concatenated
        return self.proj(y)


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg.d_model
        self.fc = nn.Linear(C, 4 * C)
        self.proj = nn.Linear(4 * C, C)

    def forward(self, a):
        return self.proj(F.gelu(self.fc(a), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=LN_EPS)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=LN_EPS)
        self.mlp = Mlp(cfg)

    def forward(self, h):
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class Embedding(nn.Module):
    """A bare (rows, C) table named `<module>.weight`, like nn.Embedding without its init."""

    def __init__(self, rows, C):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(rows, C))


class MnemoRef(nn.Module):
    """The mnemo model; forward(x[, y]) -> logits (B,T,Vp) or (logits, loss)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg.check()
        self.wte = Embedding(cfg.vocab_padded, cfg.d_model)
        if cfg.pos == "learned":
            self.wpe = Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.lnf = nn.LayerNorm(cfg.d_model, eps=LN_EPS)

    def loss_fn(self, logits, y):
        """Mean cross-entropy over B*T positions, softmax over the first V columns only."""
        V = self.cfg.vocab
        return F.cross_entropy(logits[..., :V].reshape(-1, V), y.reshape(-1))

    def memory_loss(self, tau):
        """Selective attention's memory loss of the last forward: per window
        sum_l max_i M_i / (L T), M_i = (i + 1) - sum_j min(F[i,j], tau) / tau (F = 0 above the
        diagonal), averaged over the windows."""
        total = 0
        for blk in self.blocks:
            Fp = blk.attn.penalty                                    # (B,T,T)
            T = Fp.shape[-1]
            count = torch.arange(1, T + 1, dtype=Fp.dtype, device=Fp.device)
            M = count - torch.clamp(Fp, max=tau).sum(-1) / tau       # (B,T)
            total = total + M.max(dim=-1).values                     # (B)
        return (total / (len(self.blocks) * T)).mean()

    def forward(self, x, y=None):
        B, T = x.shape
        if T > self.cfg.n_ctx:
            raise RefError("sequence length %d > n_ctx %d" % (T, self.cfg.n_ctx))
        h = self.wte.weight[x]                                       # (B,T,C)
        if self.cfg.pos == "learned":
            h = h + self.wpe.weight[:T]
        for blk in self.blocks:
            h = blk(h)
        logits = self.lnf(h) @ self.wte.weight.t()                   # (B,T,Vp)
        if y is None:
            return logits
        return logits, self.loss_fn(logits, y)


def check_tensor_set(cfg, tensors):
    """Problems (list of strings) with a checkpoint's tensors: missing, unexpected, bad shape
    or dtype. Empty if the set is exactly param_shapes(cfg)."""
    want = param_shapes(cfg)
    probs = []
    for n in want:
        if n not in tensors:
            probs.append("missing %s" % n)
        elif tuple(tensors[n].shape) != want[n]:
            probs.append("%s has shape %s, expected %s" % (n, tuple(tensors[n].shape), want[n]))
        elif tensors[n].dtype != np.float32:
            probs.append("%s has dtype %s, expected F32" % (n, tensors[n].dtype))
    for n in tensors:
        if n not in want:
            probs.append("unexpected %s" % n)
    return probs


def model_from_tensors(cfg, tensors, dtype=torch.float64):
    """Build the model and copy in the given tensors (which must be exactly the expected set)."""
    probs = check_tensor_set(cfg, tensors)
    if probs:
        raise RefError("checkpoint tensors: " + "; ".join(probs))
    model = MnemoRef(cfg).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(tensors[name])).to(dtype))
    return model


def load_model(path, dtype=torch.float64):
    """Load a mnemo checkpoint (safetensors) into a MnemoRef of the given dtype.

    Raises RefError (or st_io.StFormatError / OSError) with one clear line on a bad file,
    unknown attn_kind or format version, or a wrong tensor set.
    """
    tensors, meta = st_io.load(path)
    cfg = Config.from_meta(meta)
    return model_from_tensors(cfg, upgrade_tensors(meta, tensors), dtype)


def random_tensors(cfg, seed=0, std=0.02):
    """A random float32 checkpoint for cfg: N(0, std) weights, small random biases and
    LayerNorm parameters near (1, 0) so that every parameter matters in the gradient checks.
    The padded rows of wte (V..Vp-1) are zero, as the C initialiser leaves them."""
    rng = np.random.default_rng(seed)
    out = OrderedDict()
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".weight") and (name.startswith("ln") or ".ln" in name):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.02 * rng.standard_normal(shape)
        else:
            a = std * rng.standard_normal(shape)
        out[name] = a.astype(np.float32)
    out["wte.weight"][cfg.vocab:] = 0.0
    return out


# ---- optimizer ------------------------------------------------------------------------------

def clip_grad_norm(params, max_norm):
    """Scale every gradient by max_norm/norm when the global L2 norm exceeds max_norm.
    Returns the norm before clipping. (Unlike torch's version: no +1e-6 in the divisor.)"""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    if max_norm > 0 and norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm


class AdamW:
    """AdamW as torch.optim.AdamW (decoupled decay p -= lr*wd*p, then the bias-corrected Adam
    step), with weight decay only on parameters with ndim >= 2. bias_correction=False exists
    only so the self-test can show that the checker catches its absence."""

    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 bias_correction=True, decay_all=False):
        self.params = list(params)
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, beta1, beta2, eps, weight_decay
        self.bias_correction = bias_correction
        self.decay_all = decay_all          # fault injection only
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t if self.bias_correction else 1.0
        c2 = 1.0 - self.b2 ** self.t if self.bias_correction else 1.0
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            if p.ndim >= 2 or self.decay_all:
                p.mul_(1.0 - self.lr * self.wd)
            m.mul_(self.b1).add_(g, alpha=1.0 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            p.sub_(self.lr * (m / c1) / ((v / c2).sqrt() + self.eps))


class GroupedAdamW:
    """AdamW with the attention kinds' own parameters (names ending in ".attn.gate": infini's
    gates) in a group of their own at lr * gate_lr_mult (no weight decay: they are vectors)."""

    KIND_PARAMS = (".attn.gate",)

    def __init__(self, named_params, lr, beta1, beta2, eps, weight_decay, gate_lr_mult=1.0,
                 **fault):
        named = list(named_params)
        gates = [p for n, p in named if n.endswith(self.KIND_PARAMS)]
        rest = [p for n, p in named if not n.endswith(self.KIND_PARAMS)]
        self.groups = [AdamW(rest, lr, beta1, beta2, eps, weight_decay, **fault)]
        if gates:
            self.groups.append(AdamW(gates, lr * gate_lr_mult, beta1, beta2, eps, weight_decay,
                                     **fault))

    def step(self):
        for g in self.groups:
            g.step()


def newton_schulz5(g):
    """The quintic Newton-Schulz iteration of Muon: X = G / ||G||_F, then five times
    X <- a X + (b A + c A^2) X with A = X X^T, on the transpose when G is tall."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = g.shape[0] > g.shape[1]
    x = g.t() if tall else g
    x = x / (x.norm() + 1e-7)
    for _ in range(5):
        A = x @ x.t()
        x = a * x + (b * A + c * (A @ A)) @ x
    return x.t() if tall else x


class Muon:
    """Muon on the blocks' linear weights (attn.qkv as three square matrices q, k, v, attn.proj,
    mlp.fc, mlp.proj): Nesterov momentum buf = mu buf + g, update g + mu buf orthogonalised by
    newton_schulz5 and scaled by 0.2 sqrt(max(rows, cols)), decoupled weight decay; AdamW on
    every other parameter."""

    MATRICES = (".attn.qkv.weight", ".attn.proj.weight", ".mlp.fc.weight", ".mlp.proj.weight")

    def __init__(self, named_params, lr, momentum, beta1, beta2, eps, weight_decay,
                 gate_lr_mult=1.0):
        named = list(named_params)
        self.mats = [p for n, p in named if n.endswith(self.MATRICES)]
        self.splits = [3 if n.endswith(".attn.qkv.weight") else 1
                       for n, p in named if n.endswith(self.MATRICES)]
        rest = [(n, p) for n, p in named if not n.endswith(self.MATRICES)]
        self.adamw = GroupedAdamW(rest, lr, beta1, beta2, eps, weight_decay, gate_lr_mult)
        self.lr, self.mu, self.wd = lr, momentum, weight_decay
        self.buf = [torch.zeros_like(p) for p in self.mats]

    @torch.no_grad()
    def step(self):
        self.adamw.step()
        for p, buf, k in zip(self.mats, self.buf, self.splits):
            buf.mul_(self.mu).add_(p.grad)
            upd = p.grad + self.mu * buf
            for blk_p, blk_u in zip(p.chunk(k, 0), upd.chunk(k, 0)):
                o = newton_schulz5(blk_u) * (0.2 * math.sqrt(max(blk_u.shape)))
                blk_p.mul_(1.0 - self.lr * self.wd).sub_(self.lr * o)


def train_losses(model, x, y, steps, lr, beta1, beta2, eps, weight_decay, grad_clip,
                 optimizer="adamw", momentum=0.95, mem_eps=0.0, mem_tau=1.0, gate_lr_mult=1.0,
                 **fault):
    """Run `steps` training steps on the same batch; returns the list of losses, loss i being
    computed before update i. Keyword faults (bias_correction, decay_all, no_clip) are for the
    self-test."""
    params = list(model.parameters())
    if optimizer == "muon":
        opt = Muon(model.named_parameters(), lr, momentum, beta1, beta2, eps, weight_decay,
                   gate_lr_mult)
    else:
        opt = GroupedAdamW(model.named_parameters(), lr, beta1, beta2, eps, weight_decay,
                           gate_lr_mult, bias_correction=fault.get("bias_correction", True),
                           decay_all=fault.get("decay_all", False))
    losses = []
    for _ in range(steps):
        for p in params:
            p.grad = None
        _, loss = model(x, y)
        losses.append(loss.item())
        (loss + mem_eps * model.memory_loss(mem_tau) if mem_eps else loss).backward()
        if not fault.get("no_clip", False):
            clip_grad_norm(params, grad_clip)
        opt.step()
    return losses
