"""mnemo's attention kinds inside PyTorch models: a torch.autograd.Function over each kind's C
forward and backward (struct mnemo_attn_ops), on CPU float32 tensors, and an nn.Module that
owns the kind's parameters.

    >>> import torch, mnemo.torch as mt
    >>> q, k, v = (torch.randn(2, 64, 4, 16, requires_grad=True) for _ in range(3))
    >>> out = mt.attention(q, k, v, "window", w=16)        # (B, T, NH, HS)
    >>> out.sum().backward()                                # through the kind's C backward

Generic over the ops table: the options are parsed by the library against the kind's own option
table (mnemo_attn_cfg_make), the parameters come from its parameter table (shape, init,
learning-rate multiplier, decay, trained or buffer), the buffers' sizes from act_bytes and
scratch_bytes; a new kind needs no code here. docs/python.md has the guide,
docs/internals/python.md section 5 the design.

Layout: q, k, v are (B, T, NH, HS), the layout of tests/ref/attn_ref.py and of the kernels' own
per-token rows; they are packed into the kernels' (B, T, 3, NH, HS) buffer (one copy). RoPE:
rope=True (the default) makes the kind rotate q and k at positions 0..T-1 inside, as it does in
a mnemo model whose pos is "rope"; rope=False passes them unrotated (positions elsewhere).
"""
from __future__ import annotations

import ctypes
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import _lib
from ._lib import ArgError, UnsupportedError, check, cint, lib
from ._model import OptValue, opts_text

ParamsArg = Union[None, Dict[str, torch.Tensor], Sequence[torch.Tensor]]
# n_ctx of a cfg made before any call (a module's parameter table, options()): large, so that
# the kind's validate accepts every option a call could take (segment, windows <= n_ctx)
_ANY_CTX = 1 << 20


class _Spec:
    """One configuration of a kind: its ops, its cfg (mnemo_attn_cfg_make) and the call's io
    fields that forward and backward share (layer, training, seed)."""

    def __init__(self, kind: str, n_head: int, head_dim: int, n_ctx: int,
                 options: Dict[str, OptValue], rope: bool, rope_theta: float, causal: bool,
                 layer: int, n_layer: int, ref: bool):
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a name (str), not {type(kind).__name__}")
        k = lib.mnemo_attn_kind_from_name(kind.encode())
        if k < 0:
            from ._model import kinds
            raise ArgError(f"unknown attention kind '{kind}' (kinds: {', '.join(kinds())})")
        mc = _lib.ModelConfig()
        lib.mnemo_model_config_default(ctypes.byref(mc))
        mc.n_layer = cint("n_layer", n_layer)
        mc.n_head = cint("n_head", n_head)
        mc.d_model = cint("d_model", n_head * head_dim)
        mc.n_ctx = cint("n_ctx", n_ctx)
        mc.pos = _lib.POS_ROPE if rope else _lib.POS_LEARNED
        mc.rope_theta = float(rope_theta)
        mc.attn_kind = k
        self.layer = cint("layer", layer)
        if not 0 <= self.layer < n_layer:
            raise ArgError(f"layer = {layer}: outside [0, n_layer = {n_layer})")
        self.cfg = _lib.AttnCfg()
        check(lib.mnemo_attn_cfg_make(ctypes.byref(self.cfg), ctypes.byref(mc),
                                      opts_text(options or None), self.layer), kind)
        self.ops = (lib.mnemo_attn_ops_get_ref if ref else lib.mnemo_attn_ops_get)(k).contents
        caps = self.ops.caps(ctypes.byref(self.cfg))
        if not causal:
            if not caps & _lib.CAP_BIDIR:
                raise UnsupportedError(f"{kind} attention runs causally only (no CAP_BIDIR)",
                                       _lib.ERR_UNSUPPORTED)
            self.cfg.causal = 0
        if caps & _lib.CAP_CARRY:
            raise UnsupportedError(f"{kind} attention with a carried state (CAP_CARRY) is not "
                                   "in the torch API: each call is a fresh window",
                                   _lib.ERR_UNSUPPORTED)
        self.kind, self.trainable = kind, bool(caps & _lib.CAP_TRAIN) and bool(self.ops.backward)
        self.training, self.seed = 0, 0
        table = (_lib.AttnParam * _lib.ATTN_MAX_PARAMS)()
        n = self.ops.params(ctypes.byref(self.cfg), table) if self.ops.params else 0
        self.params: List[Dict[str, Any]] = []
        for p in table[:n]:
            self.params.append({
                "name": p.name.decode(), "shape": tuple(int(p.shape[i]) for i in range(p.ndim)),
                "init": p.init, "init_value": float(p.init_value), "lr_mult": float(p.lr_mult),
                "decay": bool(p.decay), "trained": bool(p.trained)})

    def options(self) -> Dict[str, str]:
        """Every option of the cfg as the library writes it (key -> text), defaults included."""
        buf = ctypes.create_string_buffer(4096)
        n = lib.mnemo_attn_opts_format(ctypes.byref(self.cfg), 1, 7, 1, buf, len(buf))
        text = buf.value.decode() if n < len(buf) else ""
        return dict(kv.split("=", 1) for kv in text.split(",") if kv)

    def io(self, B: int, T: int, params: Sequence[torch.Tensor]) -> Tuple[_lib.AttnIo, Any]:
        ptrs = (ctypes.c_void_p * max(1, len(params)))(*[p.data_ptr() for p in params])
        io = _lib.AttnIo(B=B, T=T, layer=self.layer, training=self.training, seed=self.seed)
        io.params = ctypes.cast(ptrs, ctypes.POINTER(ctypes.c_void_p))
        return io, ptrs

    def bytes(self, slot: str, B: int, T: int) -> torch.Tensor:
        n = getattr(self.ops, slot)(ctypes.byref(self.cfg), B, T)
        return torch.empty(max(1, int(n)), dtype=torch.uint8)


class _AttnFunction(torch.autograd.Function):
    """qkv (B,T,3,NH,HS) float32 and the kind's tensors -> (out (B,T,NH,HS), aux ()): the kind's
    forward; backward is the kind's backward (dqkv overwritten, dparams accumulated from zero,
    aux_grad = the gradient reaching aux)."""

    @staticmethod
    def forward(ctx: Any, spec: _Spec, qkv: torch.Tensor,
                *params: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        B, T, _, NH, HS = qkv.shape
        out = torch.empty(B, T, NH, HS, dtype=torch.float32)
        act, scratch = spec.bytes("act_bytes", B, T), spec.bytes("scratch_bytes", B, T)
        io, keep = spec.io(B, T, params)
        io.qkv, io.out = qkv.data_ptr(), out.data_ptr()
        io.act, io.scratch = act.data_ptr(), scratch.data_ptr()
        check(spec.ops.forward(ctypes.byref(spec.cfg), ctypes.byref(io)), f"{spec.kind} forward")
        ctx.spec, ctx.act = spec, act
        ctx.save_for_backward(qkv, out, *params)
        return out, torch.tensor(io.aux_loss, dtype=torch.float32)

    @staticmethod
    @once_differentiable  # type: ignore[untyped-decorator]  # no second derivative: raise
    def backward(ctx: Any, dout: torch.Tensor,
                 daux: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        spec: _Spec = ctx.spec
        if not spec.trainable:
            raise UnsupportedError(f"{spec.kind} attention has no backward (no CAP_TRAIN)",
                                   _lib.ERR_UNSUPPORTED)
        qkv, out, *params = ctx.saved_tensors
        B, T = qkv.shape[:2]
        dout = dout.to(torch.float32).contiguous()
        dqkv = torch.empty_like(qkv)
        dparams = [torch.zeros_like(p) for p in params]
        scratch = spec.bytes("scratch_bytes", B, T)
        io, keep = spec.io(B, T, params)
        dptrs = (ctypes.c_void_p * max(1, len(dparams)))(*[p.data_ptr() for p in dparams])
        io.dparams = ctypes.cast(dptrs, ctypes.POINTER(ctypes.c_void_p))
        io.qkv, io.out, io.dout, io.dqkv = (t.data_ptr() for t in (qkv, out, dout, dqkv))
        io.act, io.scratch = ctx.act.data_ptr(), scratch.data_ptr()
        io.aux_grad = float(daux) if daux is not None else 0.0
        check(spec.ops.backward(ctypes.byref(spec.cfg), ctypes.byref(io)),
              f"{spec.kind} backward")
        return (None, dqkv, *dparams)


def _check_tensor(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32 (the kernels' type), not {t.dtype}")
    if t.device.type != "cpu":
        raise TypeError(f"{name} must be on the CPU, not {t.device}")
    return t


def _params_list(spec: _Spec, params: ParamsArg) -> List[torch.Tensor]:
    """The kind's tensors in its table's order, checked against the table's shapes."""
    table = spec.params
    if not table:
        if params:
            raise ArgError(f"{spec.kind} attention has no parameters")
        return []
    want = ", ".join(f"{p['name']} {p['shape']}" for p in table)
    if params is None:
        raise ArgError(f"{spec.kind} attention needs its parameters ({want}): pass params= "
                       "or use mnemo.torch.Attention, which owns them")
    if isinstance(params, dict):
        extra = set(params) - {p["name"] for p in table}
        if extra:
            raise ArgError(f"{spec.kind} attention has no parameter {sorted(extra)} ({want})")
        try:
            got = [params[p["name"]] for p in table]
        except KeyError as e:
            raise ArgError(f"{spec.kind} attention: parameter {e} missing ({want})") from None
    else:
        got = list(params)
        if len(got) != len(table):
            raise ArgError(f"{spec.kind} attention takes {len(table)} parameters ({want}), "
                           f"got {len(got)}")
    for p, t in zip(table, got):
        _check_tensor(f"parameter {p['name']}", t)
        if tuple(t.shape) != p["shape"]:
            raise ArgError(f"{spec.kind} attention: parameter {p['name']} has shape "
                           f"{tuple(t.shape)}, the kind's table says {p['shape']}")
    return [t.contiguous() for t in got]


def _shape(q: Any, k: Any, v: Any) -> Tuple[int, int, int, int]:
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ArgError(f"q, k, v must have the same shape (B, T, NH, HS); got "
                       f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, T, NH, HS = (int(x) for x in q.shape)
    if min(B, T, NH, HS) < 1:
        raise ArgError(f"q, k, v have an empty dimension: {tuple(q.shape)}")
    return B, T, NH, HS


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str = "dense",
              params: ParamsArg = None, *, rope: bool = True, rope_theta: float = 10000.0,
              causal: bool = True, layer: int = 0, n_layer: int = 1,
              n_ctx: Optional[int] = None, training: bool = False, seed: int = 0,
              return_aux: bool = False, ref: bool = False,
              **options: OptValue) -> Any:
    """mnemo's attention of the given kind on q, k, v (B, T, NH, HS) float32 CPU tensors (any
    strides), differentiable through the kind's C backward; returns out (B, T, NH, HS), or
    (out, aux) with return_aux (aux: the kind's auxiliary objective, already weighted, summed
    over the B windows, 0 for kinds without one: add aux / B to a mean loss as the model does).

    options: the kind's options by key (mnemo.kinds()[kind]), checked by the library. params:
    the kind's tensors (dict by name, or a sequence in its table's order), for kinds that have
    them (Attention owns them for you). rope: the kind rotates q and k (positions 0..T-1, base
    rope_theta) as in a mnemo model. layer / n_layer: the layer the call stands for (per-layer
    options, random patterns, the aux loss's 1 / n_layer). n_ctx: the model's n_ctx (default
    T; options whose 0 means n_ctx take it). training and seed: io.training and io.seed
    (random draws of training-only options, e.g. infini's mem_repeat). ref: run the kind's
    naive reference instead of the fast kernels (slow; tests). Carried states (CAP_CARRY) are
    refused: every call is a fresh window.

    Errors: TypeError for a non-tensor, a dtype other than float32 or a device other than the
    CPU; mnemo.ArgError for shapes, unknown kinds or options and values out of range;
    mnemo.UnsupportedError for what a kind cannot do (backward without CAP_TRAIN).
    """
    B, T, NH, HS = _shape(q, k, v)
    spec = _Spec(kind, NH, HS, T if n_ctx is None else n_ctx, dict(options), rope, rope_theta,
                 causal, layer, n_layer, ref)
    spec.training, spec.seed = int(bool(training)), cint("seed", seed, 64, False)
    plist = _params_list(spec, params)
    qkv = torch.stack((q, k, v), dim=2).contiguous()                  # (B,T,3,NH,HS)
    out, aux = _AttnFunction.apply(spec, qkv, *plist)
    return (out, aux) if return_aux else out


def options(kind: str, **opts: OptValue) -> Dict[str, str]:
    """Every option of kind, as the library spells it (defaults included), after applying opts:
    what tests/ref/attn_ref.py's functions take."""
    return _Spec(kind, 1, 2, _ANY_CTX, dict(opts), True, 10000.0, True, 0, 1, False).options()


class Attention(nn.Module):
    """mnemo's attention kind as a module that owns the kind's parameters: forward(q, k, v) with
    q, k, v (B, T, NH, HS) float32 returns out (B, T, NH, HS); with return_aux=True also the
    kind's auxiliary objective (add aux / B to a mean loss). The parameters are made from the
    kind's parameter table: trained tensors are nn.Parameters, the others buffers; init as the
    table says (ZERO, CONST, NORMAL with a generator seeded by seed, or the kind's
    init_params); the learning-rate multipliers and weight decay flags are in
    param_groups(lr, weight_decay) for torch.optim. In training mode (module.train()) each call
    gets io.training = 1 and a fresh io.seed (seed and a call counter)."""

    def __init__(self, kind: str, n_head: int, head_dim: int, *, rope: bool = True,
                 rope_theta: float = 10000.0, causal: bool = True, layer: int = 0,
                 n_layer: int = 1, n_ctx: Optional[int] = None, seed: int = 0,
                 **options: OptValue):
        super().__init__()
        self.kind, self.n_head, self.head_dim = kind, n_head, head_dim
        self._kw: Dict[str, Any] = dict(rope=rope, rope_theta=rope_theta, causal=causal,
                                        layer=layer, n_layer=n_layer, n_ctx=n_ctx)
        self._options: Dict[str, Any] = dict(options)
        self.seed, self._calls = cint("seed", seed, 64, False), 0
        spec = _Spec(kind, n_head, head_dim, n_ctx or _ANY_CTX, self._options, rope, rope_theta,
                     causal, layer, n_layer, False)
        self.table = spec.params
        g = torch.Generator().manual_seed(self.seed)
        tensors = []
        for p in self.table:
            t = torch.zeros(p["shape"], dtype=torch.float32)
            if p["init"] == _lib.INIT_CONST:
                t.fill_(p["init_value"])
            elif p["init"] == _lib.INIT_NORMAL:
                t.normal_(0.0, p["init_value"], generator=g)
            tensors.append(t)
        kind_init = [p["init"] == _lib.INIT_KIND for p in self.table]
        if any(kind_init) and spec.ops.init_params:
            ptrs = (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])
            spec.ops.init_params(ctypes.byref(spec.cfg), spec.layer, self.seed, ptrs)
        for p, t in zip(self.table, tensors):
            if p["trained"]:
                self.register_parameter(p["name"], nn.Parameter(t))
            else:
                self.register_buffer(p["name"], t)

    def _tensors(self) -> List[torch.Tensor]:
        return [getattr(self, p["name"]) for p in self.table]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                return_aux: bool = False) -> Any:
        seed = 0
        if self.training:
            self._calls += 1
            seed = (self.seed * 0x9E3779B97F4A7C15 + self._calls) % (1 << 64)
        return attention(q, k, v, self.kind, self._tensors(), training=self.training,
                         seed=seed, return_aux=return_aux, **self._kw, **self._options)

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> List[Dict[str, Any]]:
        """One torch.optim parameter group per trained tensor: lr times the table's multiplier,
        weight_decay where the table says the tensor takes it (else 0)."""
        return [{"params": [getattr(self, p["name"])], "lr": lr * p["lr_mult"],
                 "weight_decay": weight_decay if p["decay"] else 0.0}
                for p in self.table if p["trained"]]

    @torch.no_grad()
    def after_step(self, seed: int = 0) -> None:
        """The kind's after_step hook (EMA of buffers, redraws) on this module's tensors; call it
        after each optimizer step. Nothing for kinds without one."""
        spec = _Spec(self.kind, self.n_head, self.head_dim, self._kw["n_ctx"] or _ANY_CTX,
                     self._options, self._kw["rope"], self._kw["rope_theta"],
                     self._kw["causal"], self._kw["layer"], self._kw["n_layer"], False)
        if spec.ops.after_step:
            ts = self._tensors()
            ptrs = (ctypes.c_void_p * max(1, len(ts)))(*[t.data_ptr() for t in ts])
            spec.ops.after_step(ctypes.byref(spec.cfg), spec.layer,
                                cint("seed", seed, 64, False), ptrs)

    def extra_repr(self) -> str:
        o = ",".join(f"{k}={v}" for k, v in self._options.items())
        return f"{self.kind}({o}), n_head={self.n_head}, head_dim={self.head_dim}"
