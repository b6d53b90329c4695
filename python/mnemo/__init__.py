"""mnemo from Python: load, save, evaluate, stream, sample and train the decoder-only language
models of the mnemo C library (whose attention is a pluggable part), on numpy arrays.

    >>> import mnemo
    >>> m = mnemo.Model.create(n_layer=2, d_model=64, n_head=4, n_ctx=64, attn="window")
    >>> m.logits([256, 72, 105]).shape
    (3, 257)

Model (load, create, save, config, logits, loss, generate), Session (feed, state_bytes),
prepare, train, eval, kinds; every failure of the library is a mnemo.Error carrying the
library's message. docs/python.md has the guide.
"""
from ._lib import (ArgError, Error, FileError, FormatError, FullError, NoMemError, NumericError,
                   UnsupportedError, TOK_BOS, TOK_VOCAB, check as _check, cint as _cint, lib as _clib)
from ._model import Model, Session, kinds
from ._train import eval, prepare, train

__all__ = ["Model", "Session", "prepare", "train", "eval", "kinds", "set_threads", "version",
           "Error", "ArgError", "FileError", "FormatError", "FullError", "NoMemError",
           "NumericError", "UnsupportedError", "TOK_BOS", "TOK_VOCAB"]

__version__ = "0.2.0"


def version() -> int:
    """The library's version number (MAJOR * 10000 + MINOR * 100 + PATCH)."""
    return int(_clib.mnemo_version_num())


def set_threads(n: int) -> None:
    """Threads for the library's BLAS and OpenMP work (1..1024)."""
    _check(_clib.mnemo_set_threads(_cint("n", n)), "set_threads")
