"""Fixtures of the Python binding's tests: small models made in place and one tiny trained run
(prepared from a few KB of text), so that the suite needs no data but its own."""
import os

import numpy as np
import pytest

import mnemo

TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, "
        "and void; and darkness was upon the face of the deep. ") * 40


@pytest.fixture(scope="session", autouse=True)
def _threads():
    mnemo.set_threads(2)


@pytest.fixture
def tiny():
    """A dense model of 2 layers, n_ctx 32, GPT-2 initialised."""
    return mnemo.Model.create(n_layer=2, d_model=32, n_head=2, n_ctx=32, seed=7)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    mnemo.prepare(d, text=TEXT, val_frac=0.1)
    return d


def tiny_config(data, out, **kw):
    c = {"train": os.fspath(data / "train.bin"), "val": os.fspath(data / "val.bin"),
         "out": os.fspath(out), "n_layer": 1, "d_model": 32, "n_head": 2, "n_ctx": 32,
         "batch": 2, "steps": 6, "warmup": 1, "lr": 3e-3, "eval_every": 3, "eval_windows": 2,
         "ckpt_every": 3, "seed": 5, "threads": 2}
    c.update(kw)
    return c


@pytest.fixture(scope="session")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    mnemo.train(tiny_config(data, out))
    return out / "model.safetensors"


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def ids(n, seed=0, vocab=257):
    return np.random.default_rng(seed).integers(0, vocab, size=n)
