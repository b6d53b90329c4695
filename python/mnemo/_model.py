"""Model and Session: checkpoints, forward passes on numpy arrays, streaming and generation."""
from __future__ import annotations

import codecs
import ctypes
import os
import threading
from ctypes import POINTER, byref, c_float, c_uint16, c_uint64, c_void_p
from typing import Any, Dict, Iterator, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _lib
from ._lib import ArgError, check, cint, lib

PathLike = Union[str, "os.PathLike[str]"]
Tokens = npt.NDArray[np.uint16]
Floats = npt.NDArray[np.float32]
OptValue = Union[int, float, str, bool, Sequence[Union[int, float]]]


def _path(p: PathLike) -> bytes:
    return os.fsencode(os.fspath(p))


def kinds() -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Every attention kind and its options: {kind: {key: {type, scope, default, lo, hi,
    choices, per_layer, help}}}, from the kinds' own tables (what `mnemo info --kinds` lists)."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    k = 0
    while lib.mnemo_attn_kind_name(k) is not None:
        out[lib.mnemo_attn_kind_name(k).decode()] = _kind_opts(k)
        k += 1
    return out


def _kind_opts(kind: int) -> Dict[str, Dict[str, Any]]:
    ops = lib.mnemo_attn_ops_get(kind)
    res: Dict[str, Dict[str, Any]] = {}
    if not ops:
        return res
    types = ("int", "float", "enum", "bool")
    for i in range(ops.contents.n_opts):
        o = ops.contents.opts[i]
        choices = o.choices.decode().split("|") if o.choices else None
        d: Any = o.defval
        if o.type == _lib.OPT_INT:
            d = int(d)
        elif o.type == _lib.OPT_BOOL:
            d = bool(d)
        elif o.type == _lib.OPT_ENUM and choices:
            d = choices[int(d)]
        res[o.key.decode()] = {
            "type": types[o.type] if 0 <= o.type < len(types) else str(o.type),
            "scope": _lib.SCOPE_NAMES[o.scope] if 0 <= o.scope < 3 else str(o.scope),
            "default": d, "lo": o.lo, "hi": o.hi, "choices": choices,
            "per_layer": bool(o.flags & _lib.OPT_PER_LAYER),
            "help": o.help.decode() if o.help else ""}
    return res


def _opt_text(v: OptValue) -> str:
    """One option value as the library's lists spell it (per-layer values joined by '/')."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "/".join(_opt_text(x) for x in v)
    if isinstance(v, (int, float, str, np.integer, np.floating)):
        s = str(v)
        if any(c in s for c in ",= "):
            raise ArgError(f"option value {s!r} contains ',', '=' or a space")
        return s
    raise TypeError(f"an option value must be a number, a string, a bool or a list of numbers, "
                    f"not {type(v).__name__}")


def opts_text(opts: Union[None, str, Dict[str, OptValue]]) -> Optional[bytes]:
    """"key=value,..." from a dict (or a string passed through), None for no options."""
    if opts is None:
        return None
    if isinstance(opts, str):
        return opts.encode()
    if not isinstance(opts, dict):
        raise TypeError(f"options must be a dict or a 'key=value,...' string, not "
                        f"{type(opts).__name__}")
    return ",".join(f"{k}={_opt_text(v)}" for k, v in opts.items()).encode() or None


def _parse_value(s: str, row: Optional[Dict[str, Any]]) -> Any:
    if "/" in s:
        return [_parse_value(x, row) for x in s.split("/")]
    t = row["type"] if row else None
    if t == "bool":
        return s in ("1", "true")
    if t == "enum":
        return s
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def parse_opts(text: Optional[bytes], kind: int) -> Dict[str, Any]:
    rows = _kind_opts(kind)
    out: Dict[str, Any] = {}
    for item in (text or b"").decode().split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = _parse_value(v, rows.get(k))
    return out


def tokens_array(tokens: Any, vocab: int, what: str = "tokens", ndim: Sequence[int] = (1, 2),
                 min_len: int = 1) -> Tokens:
    """Checks token ids (any integer dtype; a list is taken as np.asarray would) and returns them
    as a C-contiguous uint16 array. TypeError for a non-integer dtype, ArgError for a wrong shape
    or an id outside [0, vocab)."""
    a = np.asarray(tokens)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        if a.size == 0 and a.dtype == np.float64 and not isinstance(tokens, np.ndarray):
            a = a.astype(np.int64)  # [] is an empty list of ids
        else:
            raise TypeError(f"{what}: expected an array of integer token ids, got dtype "
                            f"{a.dtype}")
    if a.ndim not in ndim:
        raise ArgError(f"{what}: expected {' or '.join(f'{n}-D' for n in ndim)}, got shape "
                       f"{a.shape}")
    if a.shape[-1] < min_len or a.size == 0:
        raise ArgError(f"{what}: expected at least {min_len} token(s) per row, got shape "
                       f"{a.shape}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab:
        bad = lo if lo < 0 else hi
        raise ArgError(f"{what}: token id {bad} is outside [0, {vocab}) (the model's vocabulary)")
    return np.ascontiguousarray(a, dtype=np.uint16)


def _u16(a: Tokens) -> "ctypes._Pointer[c_uint16]":
    return a.ctypes.data_as(POINTER(c_uint16))


class Model:
    """A model: its weights live in the library's memory (nothing is copied into Python).

    Make one with Model.load(path) or Model.create(...); mnemo.train returns one too. Calls on
    one model are serialised by a lock (the library's forward keeps its activations in the
    model); different models and sessions run in parallel, the GIL released meanwhile."""

    def __init__(self, handle: c_void_p):
        if not handle:
            raise ValueError("use Model.load() or Model.create()")
        self._h: Optional[c_void_p] = handle
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: PathLike) -> "Model":
        """Loads a checkpoint written by save() or `mnemo train` (every tensor checked)."""
        h = c_void_p()
        check(lib.mnemo_model_load(byref(h), _path(path)), f"cannot load '{os.fspath(path)}'")
        return cls(h)

    @classmethod
    def create(cls, *, n_layer: int = 4, d_model: int = 128, n_head: int = 4, n_ctx: int = 256,
               attn: str = "dense", pos: str = "rope", rope_theta: Optional[float] = None,
               attn_opts: Union[None, str, Dict[str, OptValue]] = None,
               seed: Optional[int] = 1) -> "Model":
        """A new model of byte tokens (vocab 257), GPT-2 initialised from seed (None: zero
        weights). attn is a kind's name (mnemo.kinds()), attn_opts its options."""
        c = _lib.ModelConfig()
        lib.mnemo_model_config_default(byref(c))
        c.n_layer, c.d_model = cint("n_layer", n_layer), cint("d_model", d_model)
        c.n_head, c.n_ctx = cint("n_head", n_head), cint("n_ctx", n_ctx)
        c.attn_kind = _kind_id(attn)
        c.pos = _pos_id(pos)
        if rope_theta is not None:
            c.rope_theta = rope_theta
        c.attn_opts = opts_text(attn_opts)
        h = c_void_p()
        check(lib.mnemo_model_create(byref(h), byref(c)), "cannot create the model")
        if seed is not None:
            lib.mnemo_model_init(h, c_uint64(cint("seed", seed, 64, False)))
        return cls(h)

    def __del__(self, _free: Any = lib.mnemo_model_free) -> None:
        h = getattr(self, "_h", None)  # (bound at definition: usable at interpreter exit)
        if h:
            _free(h)
            self._h = None

    @property
    def _handle(self) -> c_void_p:
        if not self._h:
            raise _lib.Error("the model has been freed")
        return self._h

    def save(self, path: PathLike) -> None:
        """Writes the weights and config (and any carried metadata, e.g. prune budgets) as one
        safetensors file, atomically."""
        with self._lock:
            check(lib.mnemo_model_save_meta(self._handle, _path(path)),
                  f"cannot save '{os.fspath(path)}'")

    @property
    def config(self) -> Dict[str, Any]:
        """The model's shape, its attention kind and the kind's options (a fresh dict)."""
        c = lib.mnemo_model_get_config(self._handle).contents
        return {"n_layer": c.n_layer, "d_model": c.d_model, "n_head": c.n_head,
                "n_ctx": c.n_ctx, "vocab": c.vocab, "vocab_padded": c.vocab_padded,
                "pos": "rope" if c.pos == _lib.POS_ROPE else "learned",
                "rope_theta": float(c.rope_theta), "attn": _kind_name(c.attn_kind),
                "attn_opts": parse_opts(c.attn_opts, c.attn_kind)}

    @property
    def n_params(self) -> int:
        return int(lib.mnemo_model_n_params(self._handle))

    def meta(self, key: str) -> Optional[str]:
        """Metadata the checkpoint carried besides the config (e.g. "train.step"), or None."""
        v = lib.mnemo_model_meta(self._handle, key.encode())
        return None if v is None else v.decode()

    def set_attn_opts(self, opts: Union[str, Dict[str, OptValue]]) -> None:
        """Changes the kind's training and session options (model options only where the
        kind allows it): ArgError naming the option otherwise, nothing changed."""
        with self._lock:
            check(lib.mnemo_model_set_attn_opts(self._handle, opts_text(opts)))

    def set_n_ctx(self, n_ctx: int) -> None:
        """Changes the longest window of a model with RoPE positions (no parameter depends on
        it), e.g. to train or evaluate on longer windows; ArgError with learned positions."""
        with self._lock:
            check(lib.mnemo_model_set_n_ctx(self._handle, cint("n_ctx", n_ctx)))

    def __repr__(self) -> str:
        if not self._h:
            return "<mnemo.Model (freed)>"
        c = self.config
        o = ",".join(f"{k}={_opt_text(v)}" for k, v in c["attn_opts"].items())
        return (f"<mnemo.Model {c['attn']}{'(' + o + ')' if o else ''}: {c['n_layer']} layers, "
                f"d_model {c['d_model']}, {c['n_head']} heads, n_ctx {c['n_ctx']}, vocab "
                f"{c['vocab']}, {c['pos']} positions, {self.n_params / 1e6:.2f}M parameters>")

    def _forward(self, x: Tokens, y: Optional[Tokens]) -> float:
        B, T = x.shape
        n_ctx = lib.mnemo_model_get_config(self._handle).contents.n_ctx
        if T > n_ctx:
            raise ArgError(f"windows of {T} tokens exceed the model's n_ctx {n_ctx} (stream "
                           "longer text through a Session)")
        loss = c_float(0)
        check(lib.mnemo_model_forward(self._handle, _u16(x), _u16(y) if y is not None else None,
                                      B, T, byref(loss)))
        return loss.value

    def logits(self, tokens: npt.ArrayLike, *, copy: bool = True) -> Floats:
        """Next-token logits of every position: tokens (T,) or (B, T) integer ids, T <= n_ctx;
        returns float32 (T, vocab) or (B, T, vocab).

        copy=False returns a read-only view of the library's own logits buffer (no copy at
        all), valid until the model's next call: keep it only as long as that."""
        c = lib.mnemo_model_get_config(self._handle).contents
        a = tokens_array(tokens, c.vocab)
        x = a.reshape(1, -1) if a.ndim == 1 else a
        with self._lock:
            self._forward(x, None)
            p = lib.mnemo_model_logits(self._handle)
            B, T = x.shape
            full = np.ctypeslib.as_array(p, shape=(B, T, c.vocab_padded))
            out = full[:, :, :c.vocab]
            out = out.copy() if copy else out
        if not copy:
            out.flags.writeable = False
        return out[0] if a.ndim == 1 else out

    def loss(self, tokens: npt.ArrayLike, targets: Optional[npt.ArrayLike] = None) -> np.float32:
        """Mean cross-entropy (nats per token) as a numpy float32. With targets (same shape as
        tokens) each position predicts its target; without, tokens (T+1,) or (B, T+1) predict
        their own next ids (the last id is only a target)."""
        c = lib.mnemo_model_get_config(self._handle).contents
        if targets is None:
            a = tokens_array(tokens, c.vocab, min_len=2)
            a2 = a.reshape(1, -1) if a.ndim == 1 else a
            x, y = np.ascontiguousarray(a2[:, :-1]), np.ascontiguousarray(a2[:, 1:])
        else:
            x = tokens_array(tokens, c.vocab)
            y = tokens_array(targets, c.vocab, what="targets")
            if x.shape != y.shape:
                raise ArgError(f"tokens {x.shape} and targets {y.shape} differ in shape")
            x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        with self._lock:
            return np.float32(self._forward(x, y))

    def session(self, **kw: Any) -> "Session":
        """Session(self, **kw)."""
        return Session(self, **kw)

    def generate(self, prompt: Union[str, bytes] = "", n: int = 256, temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 0.95, seed: int = 1,
                 **session_opts: Any) -> Iterator[str]:
        """Samples n bytes after the prompt and yields them as text (str) pieces: a byte that
        completes a UTF-8 character yields it, bytes that are no UTF-8 yield U+FFFD. Sampling
        is the library's (mnemo_sample, as `mnemo generate`): temperature 0 is greedy, top_k 0
        and top_p 1 are off, and seed makes it repeatable. Keyword arguments open the session
        (Session's budgets, max_chunk and the kind's session options). Stops early if the
        model emits BOS. A dense cache that fills restarts from BOS and the last n_ctx / 2
        bytes, as the command does; a bounded state streams on."""
        if cint("n", n) < 0:
            raise ArgError("n must be >= 0")
        if not temperature >= 0:
            raise ArgError("temperature must be >= 0")
        if cint("top_k", top_k) < 0:
            raise ArgError("top_k must be >= 0")
        if not 0 < top_p <= 1:
            raise ArgError("top_p must be in (0, 1]")
        data = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        sc = _lib.SamplerConfig(temperature, top_k, top_p)
        rng = cint("seed", seed, 64, False)
        return _generate(Session(self, **session_opts), data, n, sc, rng)


def _generate(s: "Session", prompt: bytes, n: int, sc: _lib.SamplerConfig,
              seed: int) -> Iterator[str]:
    """The loop of cli/cmd_generate.c: BOS + prompt (its last n_ctx - 1 bytes unless the state
    is bounded), then sample and feed one byte at a time; a full context restarts from BOS +
    the last half of the history."""
    n_ctx = s.model.config["n_ctx"]
    V = s.model.config["vocab"]
    hist = [_lib.TOK_BOS] + list(prompt)
    if len(hist) > n_ctx and not s.bounded:
        hist = [_lib.TOK_BOS] + hist[len(hist) - n_ctx + 1:]
    last = s.feed(hist)[-1]
    rng = c_uint64(seed)
    work = np.empty(2 * V, dtype=np.float32)
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    for _ in range(n):
        row = np.ascontiguousarray(last, dtype=np.float32)
        t = lib.mnemo_sample(row.ctypes.data_as(POINTER(c_float)), V, byref(sc), byref(rng),
                             work.ctypes.data_as(POINTER(c_float)))
        if t < 0:
            raise _lib.NumericError("the model's logits are not numbers (NaN)",
                                    _lib.ERR_NUMERIC)
        if t == _lib.TOK_BOS:
            break
        piece = dec.decode(bytes([t]))
        if piece:
            yield piece
        hist.append(t)
        try:
            last = s.feed([t])[-1]
        except _lib.FullError:
            k = n_ctx // 2
            s.reset()
            hist = [_lib.TOK_BOS] + hist[len(hist) - k:]
            last = s.feed(hist)[-1]
    tail = dec.decode(b"", final=True)
    if tail:
        yield tail


class Session:
    """A streaming session over a model (KV cache, compressive memory, pruned cache: the kind's
    state). feed() takes any number of tokens (fed in chunks of max_chunk) and returns their
    logits.

    budgets: selective attention's per-layer cache slots (an int for every layer, or one per
    layer), i.e. the kind option budget; other session options of the kind as keywords (e.g.
    window=64, sinks=4 for dense); model_opts=False ignores the session options the checkpoint
    carries (prune-search budgets)."""

    def __init__(self, model: Model, budgets: Union[None, int, Sequence[int]] = None,
                 max_chunk: int = 64, model_opts: bool = True, **attn_opts: OptValue):
        self._h: Optional[c_void_p] = None
        sc = Session._config(model, budgets, max_chunk, model_opts, **attn_opts)
        self.model = model  # kept alive as long as the session
        self._lock = threading.Lock()
        h = c_void_p()
        check(lib.mnemo_session_create_ex(byref(h), model._handle, byref(sc)),
              "cannot start a session")
        self._h = h
        self.max_chunk = int(max_chunk)
        self._vocab = model.config["vocab"]
        self._vp = model.config["vocab_padded"]

    @staticmethod
    def _config(model: Model, budgets: Union[None, int, Sequence[int]] = None,
                max_chunk: int = 64, model_opts: bool = True,
                **attn_opts: OptValue) -> _lib.SessionConfig:
        if not isinstance(model, Model):
            raise TypeError(f"model must be a mnemo.Model, not {type(model).__name__}")
        if cint("max_chunk", max_chunk) < 1:
            raise ArgError(f"max_chunk must be >= 1, got {max_chunk!r}")
        opts: Dict[str, OptValue] = dict(attn_opts)
        if budgets is not None:
            opts["budget"] = budgets
        sc = _lib.SessionConfig()
        lib.mnemo_session_config_default(byref(sc))
        sc.max_chunk = int(max_chunk)
        sc.attn_opts = opts_text(opts)  # the struct keeps the bytes alive
        sc.no_model_opts = 0 if model_opts else 1
        return sc

    def __del__(self, _free: Any = lib.mnemo_session_free) -> None:
        h = getattr(self, "_h", None)
        if h:
            _free(h)
            self._h = None

    def feed(self, tokens: npt.ArrayLike) -> Floats:
        """Feeds tokens (1-D integer ids) and returns their logits, float32 (n, vocab). Each
        chunk of max_chunk tokens is one library call, the GIL released. FullError when the
        state cannot take more (a dense cache at n_ctx): the tokens of the failing chunk are
        not taken; earlier chunks of this call are."""
        a = tokens_array(tokens, self._vocab, ndim=(1,))
        out = np.empty((a.shape[0], self._vocab), dtype=np.float32)
        lg = POINTER(c_float)()
        with self._lock:
            for i in range(0, a.shape[0], self.max_chunk):
                k = min(self.max_chunk, a.shape[0] - i)
                check(lib.mnemo_session_feed(self._h, _u16(a[i:i + k]), k, byref(lg)))
                out[i:i + k] = np.ctypeslib.as_array(lg, shape=(k, self._vp))[:, :self._vocab]
        return out

    def reset(self) -> None:
        """Forgets every token fed so far."""
        with self._lock:
            lib.mnemo_session_reset(self._h)

    @property
    def pos(self) -> int:
        """Tokens fed since the start (or the last reset)."""
        return int(lib.mnemo_session_pos(self._h))

    @property
    def state_bytes(self) -> int:
        """Bytes of attention state held now (a cache's live entries, a memory's matrices)."""
        return int(lib.mnemo_session_live_bytes(self._h))

    @property
    def state_bound(self) -> int:
        """Bytes the attention state may reach (allocated once, when the session opened)."""
        return int(lib.mnemo_session_state_bytes(self._h))

    @property
    def bounded(self) -> bool:
        """True when that bound holds whatever the stream length (a bounded kind or a pruned
        cache); False when the state fills at n_ctx."""
        return bool(lib.mnemo_session_bounded(self._h))

    def __repr__(self) -> str:
        return (f"<mnemo.Session over {self.model.config['attn']}: {self.pos} tokens fed, "
                f"state {self.state_bytes} of {self.state_bound} bytes, "
                f"{'bounded' if self.bounded else 'fills at n_ctx'}>")


def _kind_id(name: str) -> int:
    k = lib.mnemo_attn_kind_from_name(str(name).encode())
    if k < 0:
        raise ArgError(f"attention kind {name!r}: unknown (mnemo.kinds() lists them)")
    return int(k)


def _kind_name(k: int) -> str:
    n = lib.mnemo_attn_kind_name(k)
    return n.decode() if n else str(k)


def _pos_id(pos: str) -> int:
    if pos == "rope":
        return _lib.POS_ROPE
    if pos == "learned":
        return _lib.POS_LEARNED
    raise ArgError(f"pos {pos!r}: expected 'rope' or 'learned'")
