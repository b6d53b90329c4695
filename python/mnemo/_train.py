"""prepare, train and eval: the library's data preparation, training loop and evaluation."""
from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from ctypes import byref, c_uint64
from typing import Any, Callable, Dict, Optional, Sequence, Union

from . import _lib
from ._lib import ArgError, check, cint, lib
from ._model import Model, PathLike, Session, _kind_id, _path, _pos_id, opts_text


def prepare(out_dir: PathLike, text: Union[None, str, bytes] = None,
            files: Sequence[PathLike] = (), val_frac: float = 0.05) -> Dict[str, int]:
    """Tokenizes text (bytes; a str is encoded as UTF-8) or the concatenation of files into
    out_dir/train.bin and out_dir/val.bin (the last val_frac of it), as `mnemo prepare` does;
    out_dir is created if missing. Returns {"train": tokens, "val": tokens}."""
    if (text is None) == (not files):
        raise ArgError("give text or files (one of them)")
    if text is not None:
        data = text.encode() if isinstance(text, str) else bytes(text)
    else:
        parts = []
        for f in files:
            with open(f, "rb") as fh:
                parts.append(fh.read())
        data = b"".join(parts)
    os.makedirs(out_dir, exist_ok=True)
    nt, nv = c_uint64(), c_uint64()
    check(lib.mnemo_prepare_text(data, len(data), _path(out_dir), float(val_frac), byref(nt),
                                 byref(nv)), "prepare")
    return {"train": nt.value, "val": nv.value}


def eval(model: Model, data: PathLike, *, seq: int = 0, stride: int = 0, batch: int = 8,
         max_windows: int = 0, session: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """Scores a token file (from prepare) as `mnemo eval` does: windows of seq tokens (0 =
    n_ctx) stride apart (0 = seq: disjoint), batch at a time, at most max_windows (0 = all).
    With session (a dict of Session's keywords, e.g. {"budgets": 16}), each window streams
    through a session instead (the loss a pruned or bounded state really gives). Returns
    {"loss": nats per token, "bpb", "ppl", "tokens"}."""
    r = _lib.EvalResult()
    p = _path(data)
    with model._lock:
        if session is None:
            st = lib.mnemo_eval_file(model._handle, p, cint("seq", seq), cint("stride", stride),
                                     cint("batch", batch),
                                     cint("max_windows", max_windows, 64, False), byref(r))
        else:
            if stride:
                raise ArgError("stride: a session's evaluation uses disjoint windows")
            sc = Session._config(model, **session)
            st = lib.mnemo_eval_file_session(model._handle, p, cint("seq", seq), byref(sc),
                                             cint("max_windows", max_windows, 64, False),
                                             byref(r))
    check(st)  # the library's message names eval itself
    return {"loss": r.loss, "bpb": r.bpb, "ppl": r.ppl, "tokens": int(r.tokens)}


# keys of a training config (the JSON config of `mnemo train` and its flags), by where they go
_MODEL_KEYS = ("n_layer", "d_model", "n_head", "n_ctx")
_TRAIN_INT = ("batch", "seq", "grad_accum", "warmup", "eval_every", "eval_windows", "ckpt_every",
              "threads")
_TRAIN_FLOAT = ("lr", "lr_min", "weight_decay", "beta1", "beta2", "eps", "grad_clip", "ema",
                "momentum")
_OTHER = ("train", "val", "out", "steps", "seed", "pos", "rope_theta", "attn", "attn_opt",
          "optimizer", "resume", "init", "overwrite", "doc_windows")


def _load_config(config: Union[PathLike, Dict[str, Any]]) -> Dict[str, Any]:
    if isinstance(config, dict):
        return dict(config)
    if isinstance(config, (str, os.PathLike)):
        with open(config) as f:
            c = json.load(f)
        if not isinstance(c, dict):
            raise ArgError(f"config '{os.fspath(config)}': expected a JSON object")
        return c
    raise TypeError(f"config must be a dict or a JSON file's path, not {type(config).__name__}")


def _last_record(log: str) -> Dict[str, Any]:
    """The last line of log.jsonl (the library writes and flushes it before the callback)."""
    with open(log, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        lines = f.read().rstrip(b"\n").split(b"\n")
    rec: Dict[str, Any] = json.loads(lines[-1])
    return rec


def train(config: Union[PathLike, Dict[str, Any]],
          on_step: Optional[Callable[[Dict[str, Any]], Any]] = None,
          on_event: Optional[Callable[[Dict[str, Any]], Any]] = None) -> Model:
    """Trains as `mnemo train --config FILE` does, from a dict or a JSON file with the same
    keys (train, val, out, the model's shape, attn and its options, batch, steps, lr, ...;
    resume, init, overwrite as the flags). Returns the trained model (with ema, the average).

    on_step(record) is called after every optimizer step with the step's record of log.jsonl
    (a dict: type, step, loss, lr, grad_norm, tokens_per_s, elapsed_s, aux_loss, comm_s);
    on_event(record) with every record (start, step, eval, checkpoint). A callback that returns
    True, or raises, stops training cleanly: a checkpoint is written (the run continues with
    resume=True), and the exception is raised again here. Ctrl-C (SIGINT) does the same as on the
    command line (when train runs in the main thread): the current step ends, a checkpoint is
    written, then KeyboardInterrupt is raised; a second Ctrl-C ends the process (the signal's
    default action, back in place from the first Ctrl-C until train returns)."""
    c = _load_config(config)
    mc = _lib.ModelConfig()
    lib.mnemo_model_config_default(byref(mc))
    tc = _lib.TrainConfig()
    lib.mnemo_train_config_default(byref(tc))
    kind = _kind_id(c.get("attn", "dense"))
    attn: Dict[str, Any] = {}
    ao = c.get("attn_opt")
    if isinstance(ao, str):
        for item in filter(None, ao.split(",")):
            k, _, v = item.partition("=")
            attn[k] = v
    elif isinstance(ao, dict):
        attn.update(ao)
    elif ao is not None:
        raise TypeError("attn_opt must be a dict or a 'key=value,...' string")
    for k, v in c.items():
        if k.startswith("_"):  # "_comment" keys, as in the command's JSON configs
            continue
        if k in _MODEL_KEYS:
            setattr(mc, k, _int(k, v))
        elif k in _TRAIN_INT:
            setattr(tc, k, _int(k, v))
        elif k in _TRAIN_FLOAT:
            setattr(tc, k, _float(k, v))
        elif k in _OTHER:
            pass
        elif lib.mnemo_attn_opt_find(kind, k.encode()) >= 0:
            attn[k] = v
        else:
            raise ArgError(f"config: unknown key '{k}' (neither a training setting nor an "
                           f"option of the {c.get('attn', 'dense')} kind)")
    mc.attn_kind = kind
    mc.pos = _pos_id(c.get("pos", "rope"))
    if "rope_theta" in c:
        mc.rope_theta = _float("rope_theta", c["rope_theta"])
    opts = opts_text(attn)
    mc.attn_opts = opts
    if "steps" in c:
        tc.max_steps = _int("steps", c["steps"])
    if "seed" in c:
        tc.seed = _int("seed", c["seed"], 64, False)
    tc.optimizer = lib.mnemo_optimizer_from_name(str(c.get("optimizer", "adamw")).encode())
    if tc.optimizer < 0:
        raise ArgError(f"optimizer {c['optimizer']!r}: expected adamw or muon")
    tc.doc_windows = 1 if c.get("doc_windows") else 0
    tc.resume = 1 if c.get("resume") else 0
    if "train" not in c:
        raise ArgError("config: no training data ('train': a token file made by prepare)")
    tc.train_path = _path(c["train"])
    tc.val_path = _path(c["val"]) if c.get("val") else None
    out = os.fspath(c.get("out", "runs/default"))
    tc.out_dir = _path(out)
    init = c.get("init")
    if tc.resume and init:
        raise ArgError("give resume or init, not both")
    holds = os.path.exists(os.path.join(out, "model.safetensors"))
    if tc.resume and not holds:
        raise ArgError(f"cannot resume: '{out}' holds no checkpoint")
    if not tc.resume and not c.get("overwrite") and holds:
        raise ArgError(f"'{out}' holds a run already: continue it with resume=True, start it over "
                       f"with overwrite=True, or give another out")
    os.makedirs(out, exist_ok=True)

    if tc.resume or init:
        # the checkpoint's shape, as on the command line with a --config file: a differing
        # value of the config is noted (a warning) and left
        how = "resume" if tc.resume else "init"
        src = os.path.join(out, "model.safetensors") if tc.resume else str(init)
        model = Model.load(src)
        _note_shape(c, model.config, how)
        if init and tc.seq > model.config["n_ctx"]:
            model.set_n_ctx(tc.seq)  # RoPE: longer windows than the checkpoint's (--seq)
        if opts:
            model.set_attn_opts(opts.decode())
    else:
        h = _new_model(mc, tc.seed)
        model = Model(h)
    _run(model, tc, os.path.join(out, "log.jsonl"), on_step, on_event)
    return model


def _note_shape(c: Dict[str, Any], have: Dict[str, Any], how: str) -> None:
    keys = ["n_layer", "d_model", "n_head", "pos", "rope_theta", "attn"]
    if how == "resume":
        keys.append("n_ctx")
    for k in keys:
        if k in c and c[k] != have[k]:
            warnings.warn(f"train: {how} keeps the checkpoint's {k} {have[k]} (the config says "
                          f"{c[k]})", stacklevel=3)


def _int(k: str, v: Any, bits: int = 32, signed: bool = True) -> int:
    try:
        return cint(f"config: {k}", v, bits, signed)
    except TypeError:
        raise ArgError(f"config: {k} must be an integer, got {v!r}") from None


def _float(k: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArgError(f"config: {k} must be a number, got {v!r}")
    return float(v)


def _new_model(mc: _lib.ModelConfig, seed: int) -> Any:
    from ctypes import c_void_p
    h = c_void_p()
    check(lib.mnemo_model_create(byref(h), byref(mc)), "bad model config")
    lib.mnemo_model_init(h, c_uint64(seed))
    return h


def _run(model: Model, tc: _lib.TrainConfig, log: str,
         on_step: Optional[Callable[[Dict[str, Any]], Any]],
         on_event: Optional[Callable[[Dict[str, Any]], Any]]) -> None:
    state: Dict[str, Any] = {"exc": None, "interrupted": 0}

    def cb(ev: Any, user: Any) -> int:
        # Runs in the thread that called train, with the GIL. Nothing may escape (ctypes would
        # print it and go on): an exception is kept, training is asked to stop, and it is
        # raised once mnemo_train has returned.
        try:
            if state["exc"] is not None or state["interrupted"]:
                return 1
            if on_step is None and on_event is None:
                return 0
            rec = _last_record(log)
            stop = False
            if on_event is not None and on_event(rec):
                stop = True
            if on_step is not None and ev.contents.kind == _lib.TRAIN_EV_STEP and on_step(rec):
                stop = True
            return 1 if stop else 0
        except BaseException as e:  # KeyboardInterrupt from a handler too
            state["exc"] = e
            return 1

    def on_sigint(sig: int, frame: Any) -> None:
        # As the command line: the first Ctrl-C asks for a clean stop at the next callback,
        # a second one ends the process. Python runs this handler only when the callback runs
        # Python code, so the default action is put back at once: a second Ctrl-C during the
        # rest of the step (or the checkpoint) ends the process without waiting for Python.
        if state["interrupted"]:  # two were pending when Python got to them
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return
        state["interrupted"] = sig
        signal.signal(sig, signal.SIG_DFL)

    main = threading.current_thread() is threading.main_thread()
    old = {}
    if main:
        old[signal.SIGINT] = signal.signal(signal.SIGINT, on_sigint)
    try:
        fn = _lib.TRAIN_CB(cb)
        with model._lock:
            st = lib.mnemo_train(model._handle, byref(tc), fn, None)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    check(st, "training failed")
    if state["exc"] is not None:
        raise state["exc"]
    if state["interrupted"]:
        raise KeyboardInterrupt("training stopped by Ctrl-C after a checkpoint (continue with "
                                "resume=True)")
