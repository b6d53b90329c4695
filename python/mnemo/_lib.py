"""The C library through ctypes: loading libmnemo.so, mirrors of the public structs of
include/mnemo.h and include/mnemo_attn.h, function signatures, and the errors.

Every call into the library goes through ctypes.CDLL, which releases the GIL for the length of
the foreign call, so other Python threads run while the library trains, evaluates or feeds a
session (docs/internals/python.md). The struct mirrors are checked field by field against the
header's offsetof() by tests/python/test_abi.py.
"""
from __future__ import annotations

import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_float, c_int,
                    c_size_t, c_uint16, c_uint32, c_uint64, c_void_p)
from pathlib import Path

# ---- the structs (same order and types as the C declarations) ----------------------------------


class ModelConfig(Structure):  # struct mnemo_model_config
    _fields_ = [("n_layer", c_int), ("d_model", c_int), ("n_head", c_int), ("n_ctx", c_int),
                ("vocab", c_int), ("vocab_padded", c_int), ("pos", c_int),
                ("rope_theta", c_float), ("attn_kind", c_int), ("attn_opts", c_char_p)]


class TrainConfig(Structure):  # struct mnemo_train_config
    _fields_ = [("train_path", c_char_p), ("val_path", c_char_p), ("out_dir", c_char_p),
                ("batch", c_int), ("seq", c_int), ("grad_accum", c_int), ("max_steps", c_int),
                ("warmup", c_int), ("lr", c_float), ("lr_min", c_float),
                ("weight_decay", c_float), ("beta1", c_float), ("beta2", c_float),
                ("eps", c_float), ("grad_clip", c_float), ("eval_every", c_int),
                ("eval_windows", c_int), ("ckpt_every", c_int), ("seed", c_uint64),
                ("threads", c_int), ("resume", c_int), ("ema", c_float), ("optimizer", c_int),
                ("momentum", c_float), ("doc_windows", c_int)]


class TrainEvent(Structure):  # struct mnemo_train_event
    _fields_ = [("kind", c_int), ("step", c_int), ("max_steps", c_int), ("loss", c_float),
                ("lr", c_float), ("grad_norm", c_float), ("tokens_per_s", c_double),
                ("elapsed_s", c_double), ("eta_s", c_double), ("val_loss", c_double),
                ("val_bpb", c_double), ("path", c_char_p), ("aux_loss", c_double),
                ("rank", c_int), ("world", c_int), ("note", c_char_p)]


class EvalResult(Structure):  # struct mnemo_eval_result
    _fields_ = [("loss", c_double), ("bpb", c_double), ("ppl", c_double), ("tokens", c_uint64)]


class SessionConfig(Structure):  # struct mnemo_session_config
    _fields_ = [("max_chunk", c_int), ("attn_opts", c_char_p), ("no_model_opts", c_int)]


class SamplerConfig(Structure):  # struct mnemo_sampler_config
    _fields_ = [("temperature", c_float), ("top_k", c_int), ("top_p", c_float)]


class AttnOpt(Structure):  # struct mnemo_attn_opt (mnemo_attn.h)
    _fields_ = [("key", c_char_p), ("type", c_int), ("scope", c_int), ("flags", c_int),
                ("defval", c_double), ("lo", c_double), ("hi", c_double),
                ("choices", c_char_p), ("help", c_char_p)]


class AttnCfg(Structure):  # struct mnemo_attn_cfg
    _fields_ = [("kind", c_int), ("n_head", c_int), ("head_dim", c_int), ("n_ctx", c_int),
                ("rope", c_int), ("rope_theta", c_float), ("n_layer", c_int), ("causal", c_int),
                ("opt", c_double * 16)]


class AttnParam(Structure):  # struct mnemo_attn_param
    _fields_ = [("name", c_char_p), ("ndim", c_int), ("shape", c_size_t * 2), ("init", c_int),
                ("init_value", c_float), ("lr_mult", c_float), ("decay", c_int),
                ("trained", c_int)]


class AttnIo(Structure):  # struct mnemo_attn_io (every pointer as a void *: tensors' addresses)
    _fields_ = [("B", c_int), ("T", c_int), ("layer", c_int), ("training", c_int),
                ("seed", c_uint64), ("qkv", c_void_p), ("out", c_void_p), ("dout", c_void_p),
                ("dqkv", c_void_p), ("params", POINTER(c_void_p)), ("dparams", POINTER(c_void_p)),
                ("act", c_void_p), ("scratch", c_void_p), ("carry", c_void_p),
                ("carry_out", c_void_p), ("aux_loss", c_double), ("aux_grad", c_float)]


_cfgp, _iop = POINTER(AttnCfg), POINTER(AttnIo)


class AttnOps(Structure):
    """struct mnemo_attn_ops: the kind's tables and its slots as ctypes function pointers (a NULL
    slot is falsy). Calling a slot is a foreign call through CFUNCTYPE: the GIL is released."""
    _fields_ = [("api_version", c_uint32), ("name", c_char_p), ("is_ref", c_int),
                ("opts", POINTER(AttnOpt)), ("n_opts", c_int),
                ("caps", CFUNCTYPE(c_uint32, _cfgp)),
                ("validate", CFUNCTYPE(c_int, _cfgp)),
                ("params", CFUNCTYPE(c_int, _cfgp, POINTER(AttnParam))),
                ("init_params", CFUNCTYPE(None, _cfgp, c_int, c_uint64, POINTER(c_void_p))),
                ("flops_per_token", CFUNCTYPE(c_double, _cfgp, c_int)),
                ("act_bytes", CFUNCTYPE(c_size_t, _cfgp, c_int, c_int)),
                ("scratch_bytes", CFUNCTYPE(c_size_t, _cfgp, c_int, c_int)),
                ("forward", CFUNCTYPE(c_int, _cfgp, _iop)),
                ("backward", CFUNCTYPE(c_int, _cfgp, _iop)),
                ("carry_bytes", CFUNCTYPE(c_size_t, _cfgp)),
                ("after_step", CFUNCTYPE(None, _cfgp, c_int, c_uint64, POINTER(c_void_p))),
                ("state_bytes", CFUNCTYPE(c_size_t, _cfgp)),
                ("step_scratch_bytes", CFUNCTYPE(c_size_t, _cfgp, c_int)),
                ("state_init", CFUNCTYPE(None, _cfgp, c_void_p)),
                ("step", CFUNCTYPE(c_int, _cfgp, c_void_p)),
                ("state_live_bytes", CFUNCTYPE(c_size_t, _cfgp, c_void_p))]


TRAIN_CB = CFUNCTYPE(c_int, POINTER(TrainEvent), c_void_p)

# enum values mirrored from mnemo.h / mnemo_attn.h
OK, ERR_NOMEM, ERR_IO, ERR_FORMAT, ERR_ARG, ERR_NUMERIC, ERR_UNSUPPORTED, ERR_FULL = \
    0, -1, -2, -3, -4, -5, -6, -7
TRAIN_EV_START, TRAIN_EV_STEP, TRAIN_EV_EVAL, TRAIN_EV_CKPT = 0, 1, 2, 3
POS_ROPE, POS_LEARNED = 0, 1
OPT_INT, OPT_FLOAT, OPT_ENUM, OPT_BOOL = 0, 1, 2, 3
SCOPE_NAMES = ("model", "train", "session")
OPT_PER_LAYER = 1
ATTN_MAX_PARAMS = 8
CAP_BIDIR, CAP_CARRY, CAP_TRAIN = 1 << 1, 1 << 5, 1 << 6
INIT_ZERO, INIT_CONST, INIT_NORMAL, INIT_KIND = 0, 1, 2, 3
TOK_BOS, TOK_VOCAB = 256, 257

# ---- errors -------------------------------------------------------------------------------------


class Error(Exception):
    """A failure reported by the library: .status is the enum mnemo_status value, .message the
    library's own message (mnemo_last_error())."""

    def __init__(self, message: str, status: int = ERR_ARG):
        super().__init__(message)
        self.message = message
        self.status = status


class NoMemError(Error, MemoryError):
    """MNEMO_ERR_NOMEM: an allocation failed."""


class FileError(Error, OSError):
    """MNEMO_ERR_IO: a file could not be opened, read or written."""


class FormatError(Error):
    """MNEMO_ERR_FORMAT: a file is not what it claims to be (corrupt, truncated)."""


class ArgError(Error, ValueError):
    """MNEMO_ERR_ARG: an impossible argument or configuration value."""


class NumericError(Error, ArithmeticError):
    """MNEMO_ERR_NUMERIC: NaN or infinity where a finite value was needed (a diverged run)."""


class UnsupportedError(Error):
    """MNEMO_ERR_UNSUPPORTED: valid, but not implemented for this attention kind."""


class FullError(Error):
    """MNEMO_ERR_FULL: a bounded buffer (a session's context) is full."""


_BY_STATUS = {ERR_NOMEM: NoMemError, ERR_IO: FileError, ERR_FORMAT: FormatError,
              ERR_ARG: ArgError, ERR_NUMERIC: NumericError, ERR_UNSUPPORTED: UnsupportedError,
              ERR_FULL: FullError}


def error(status: int, what: str = "") -> Error:
    """The exception for a status != MNEMO_OK, with the library's message of this thread."""
    msg = lib.mnemo_last_error().decode("utf-8", "replace")
    if not msg:
        msg = lib.mnemo_status_str(status).decode()
    if what:
        msg = f"{what}: {msg}"
    return _BY_STATUS.get(status, Error)(msg, status)


def cint(name: str, v: object, bits: int = 32, signed: bool = True) -> int:
    """v as a C int (or uint64_t: bits=64, signed=False), refused rather than wrapped: a
    TypeError for a non-integer (bool included), an ArgError outside the C type's range."""
    import numbers
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {type(v).__name__}")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    i = int(v)
    if not lo <= i <= hi:
        raise ArgError(f"{name} = {i}: outside [{lo}, {hi}]", ERR_ARG)
    return i


def check(status: int, what: str = "") -> None:
    if status != OK:
        raise error(status, what)


# ---- loading ------------------------------------------------------------------------------------


def _find() -> str:
    """libmnemo.so next to this file (pip install), or $MNEMO_LIB (a build tree's)."""
    env = os.environ.get("MNEMO_LIB")
    if env:
        return env
    here = Path(__file__).resolve().parent / "libmnemo.so"
    if here.exists():
        return str(here)
    raise ImportError("mnemo: libmnemo.so is not installed beside the package (install with "
                      "`pip install .` from the repository) and MNEMO_LIB is not set")


lib = ctypes.CDLL(_find())

_u16p = POINTER(c_uint16)
_fp = POINTER(c_float)
_SIGS = {
    "mnemo_version_num": (c_int, []),
    "mnemo_status_str": (c_char_p, [c_int]),
    "mnemo_last_error": (c_char_p, []),
    "mnemo_model_config_default": (None, [POINTER(ModelConfig)]),
    "mnemo_model_config_check": (c_int, [POINTER(ModelConfig)]),
    "mnemo_attn_kind_name": (c_char_p, [c_int]),
    "mnemo_attn_kind_from_name": (c_int, [c_char_p]),
    "mnemo_model_create": (c_int, [POINTER(c_void_p), POINTER(ModelConfig)]),
    "mnemo_model_free": (None, [c_void_p]),
    "mnemo_model_init": (None, [c_void_p, c_uint64]),
    "mnemo_model_get_config": (POINTER(ModelConfig), [c_void_p]),
    "mnemo_model_set_attn_opts": (c_int, [c_void_p, c_char_p]),
    "mnemo_model_set_n_ctx": (c_int, [c_void_p, c_int]),
    "mnemo_model_n_params": (c_size_t, [c_void_p]),
    "mnemo_model_meta": (c_char_p, [c_void_p, c_char_p]),
    "mnemo_set_threads": (c_int, [c_int]),
    "mnemo_model_forward": (c_int, [c_void_p, _u16p, _u16p, c_int, c_int, _fp]),
    "mnemo_model_logits": (_fp, [c_void_p]),
    "mnemo_model_save": (c_int, [c_void_p, c_char_p]),
    "mnemo_model_save_meta": (c_int, [c_void_p, c_char_p]),
    "mnemo_model_load": (c_int, [POINTER(c_void_p), c_char_p]),
    "mnemo_eval_file": (c_int, [c_void_p, c_char_p, c_int, c_int, c_int, c_uint64,
                                POINTER(EvalResult)]),
    "mnemo_eval_file_session": (c_int, [c_void_p, c_char_p, c_int, POINTER(SessionConfig),
                                        c_uint64, POINTER(EvalResult)]),
    "mnemo_train_config_default": (None, [POINTER(TrainConfig)]),
    "mnemo_optimizer_from_name": (c_int, [c_char_p]),
    "mnemo_optimizer_name": (c_char_p, [c_int]),
    "mnemo_train": (c_int, [c_void_p, POINTER(TrainConfig), TRAIN_CB, c_void_p]),
    "mnemo_session_config_default": (None, [POINTER(SessionConfig)]),
    "mnemo_session_create_ex": (c_int, [POINTER(c_void_p), c_void_p, POINTER(SessionConfig)]),
    "mnemo_session_free": (None, [c_void_p]),
    "mnemo_session_reset": (None, [c_void_p]),
    "mnemo_session_feed": (c_int, [c_void_p, _u16p, c_int, POINTER(_fp)]),
    "mnemo_session_pos": (c_int, [c_void_p]),
    "mnemo_session_live_bytes": (c_size_t, [c_void_p]),
    "mnemo_session_state_bytes": (c_size_t, [c_void_p]),
    "mnemo_session_bounded": (c_int, [c_void_p]),
    "mnemo_sample": (c_int, [_fp, c_int, POINTER(SamplerConfig), POINTER(c_uint64), _fp]),
    "mnemo_prepare_text": (c_int, [c_char_p, c_size_t, c_char_p, c_double, POINTER(c_uint64),
                                   POINTER(c_uint64)]),
    "mnemo_attn_ops_get": (POINTER(AttnOps), [c_int]),
    "mnemo_attn_ops_get_ref": (POINTER(AttnOps), [c_int]),
    "mnemo_attn_cfg_make": (c_int, [POINTER(AttnCfg), POINTER(ModelConfig), c_char_p, c_int]),
    "mnemo_attn_opts_format": (c_int, [POINTER(AttnCfg), c_int, ctypes.c_uint, c_int, c_char_p,
                                       c_size_t]),
    "mnemo_attn_opt_find": (c_int, [c_int, c_char_p]),
}
for _name, (_res, _args) in _SIGS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args
