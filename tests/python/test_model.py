"""mnemo.Model: create, load, save, config, repr, logits, loss, and every error path of them."""
import numpy as np
import pytest

import mnemo
from conftest import ids


def xent(logits, targets):
    """Mean cross-entropy of (N, V) logits, in double, written here from the definition."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1))
    return float(np.mean(lse - z[np.arange(len(targets)), targets]))


def test_config_and_repr(tiny):
    c = tiny.config
    assert (c["n_layer"], c["d_model"], c["n_head"], c["n_ctx"], c["vocab"]) == (2, 32, 2, 32, 257)
    assert c["attn"] == "dense" and c["pos"] == "rope" and isinstance(c["attn_opts"], dict)
    r = repr(tiny)
    assert "dense" in r and "2 layers" in r and "d_model 32" in r and "n_ctx 32" in r
    assert tiny.n_params > 0


def test_kind_options_in_config():
    m = mnemo.Model.create(n_layer=2, d_model=32, n_head=2, n_ctx=32, attn="infini",
                           attn_opts={"segment": 8, "mem_update": "delta"})
    c = m.config
    assert c["attn"] == "infini"
    assert c["attn_opts"]["segment"] == 8 and c["attn_opts"]["mem_update"] == "delta"
    assert "infini" in repr(m) and "segment=8" in repr(m)
    k = mnemo.kinds()
    assert {"dense", "selective", "infini", "window"} <= set(k)
    assert k["infini"]["segment"]["scope"] == "model"
    assert k["selective"]["budget"]["per_layer"]


def test_logits_shapes_and_loss_agree(tiny):
    x = ids(33, seed=1)
    lg = tiny.logits(x[:-1])
    assert lg.shape == (32, 257) and lg.dtype == np.float32 and lg.flags.c_contiguous
    assert np.isfinite(lg).all()
    # the library's loss equals the cross-entropy of its own logits
    assert abs(float(tiny.loss(x)) - xent(lg, x[1:])) < 1e-4
    assert isinstance(tiny.loss(x), np.float32)
    # (B, T): each row as computed alone
    xb = np.stack([ids(20, seed=2), ids(20, seed=3)])
    lb = tiny.logits(xb)
    assert lb.shape == (2, 20, 257)
    np.testing.assert_allclose(lb[1], tiny.logits(xb[1]), rtol=1e-5, atol=1e-5)
    y = np.roll(xb, -1, axis=1)
    assert abs(float(tiny.loss(xb, y)) - xent(lb.reshape(-1, 257), y.reshape(-1))) < 1e-4


def test_any_int_dtype_and_layout(tiny):
    x = ids(64, seed=4)
    ref = tiny.logits(x[::2].copy())
    for a in (x[::2], x.astype(np.int32)[::2], x.astype(np.uint16)[::2], list(x[::2]),
              np.asfortranarray(x[::2])):
        np.testing.assert_array_equal(tiny.logits(a), ref)


def test_logits_without_copy(tiny):
    x = ids(10, seed=5)
    v = tiny.logits(x, copy=False)
    assert not v.flags.writeable
    # a view of the library's buffer: its first element is at mnemo_model_logits()
    p = mnemo._lib.lib.mnemo_model_logits(tiny._handle)
    import ctypes
    assert v.__array_interface__["data"][0] == ctypes.cast(p, ctypes.c_void_p).value
    np.testing.assert_array_equal(v, tiny.logits(x))


def test_save_load_roundtrip(tiny, tmp_path):
    p = tmp_path / "m.safetensors"
    tiny.save(p)
    m2 = mnemo.Model.load(str(p))
    assert m2.config == tiny.config
    x = ids(30, seed=6)
    np.testing.assert_array_equal(m2.logits(x), tiny.logits(x))


def test_trained_checkpoint_meta(trained):
    m = mnemo.Model.load(trained)
    assert m.meta("train.step") == "6"
    assert m.meta("no.such.key") is None


@pytest.mark.parametrize("bad, exc, words", [
    (np.array([1.0, 2.0]), TypeError, "dtype"),
    (np.array([True, False]), TypeError, "dtype"),
    (np.array(["a"]), TypeError, "dtype"),
    (np.zeros((2, 2, 2), dtype=np.int64), mnemo.ArgError, "shape"),
    (np.array(5), mnemo.ArgError, "shape"),
    (np.array([], dtype=np.int64), mnemo.ArgError, "at least"),
    (np.zeros((3, 0), dtype=np.int64), mnemo.ArgError, "at least"),
    (np.array([1, -1]), mnemo.ArgError, "-1"),
    (np.array([1, 257]), mnemo.ArgError, "257"),
    (np.array([2**40]), mnemo.ArgError, "outside"),
    (np.array([2**16 + 3], dtype=np.int64), mnemo.ArgError, "outside"),
    (np.zeros(33, dtype=np.int64), mnemo.ArgError, "n_ctx"),
])
def test_logits_bad_input(tiny, bad, exc, words):
    with pytest.raises(exc, match=words):
        tiny.logits(bad)


def test_loss_bad_input(tiny):
    with pytest.raises(mnemo.ArgError, match="at least 2"):
        tiny.loss([5])
    with pytest.raises(mnemo.ArgError, match="shape"):
        tiny.loss([1, 2, 3], [1, 2])
    with pytest.raises(mnemo.ArgError, match="outside"):
        tiny.loss([1, 2, 3], [1, 2, 300])


def test_library_errors_carry_its_message(tmp_path):
    with pytest.raises(mnemo.FileError, match="nope.safetensors") as e:
        mnemo.Model.load(tmp_path / "nope.safetensors")
    assert e.value.status == -2 and isinstance(e.value, OSError) and e.value.message
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(mnemo.FormatError):
        mnemo.Model.load(junk)
    with pytest.raises(mnemo.ArgError, match="n_head"):
        mnemo.Model.create(d_model=30, n_head=4)
    with pytest.raises(mnemo.ArgError, match="segment"):
        mnemo.Model.create(n_layer=1, d_model=32, n_head=2, n_ctx=32, attn="infini",
                           attn_opts={"segment": -3})
    with pytest.raises(mnemo.ArgError, match="no_such_option"):
        mnemo.Model.create(attn="window", attn_opts="no_such_option=1")
    with pytest.raises(mnemo.ArgError, match="unknown"):
        mnemo.Model.create(attn="nonesuch")
    with pytest.raises(mnemo.FileError):
        mnemo.Model.create(n_layer=1, d_model=32, n_head=2, n_ctx=32).save(
            tmp_path / "no" / "dir" / "m.safetensors")
    assert issubclass(mnemo.ArgError, mnemo.Error) and issubclass(mnemo.ArgError, ValueError)


def test_integers_are_not_wrapped(tiny):
    # values a C int cannot hold are refused, never truncated into valid ones (2**32 + 1 -> 1)
    with pytest.raises(mnemo.ArgError, match="n_layer"):
        mnemo.Model.create(n_layer=2**32 + 1, d_model=32, n_head=2, n_ctx=32)
    with pytest.raises(TypeError, match="n_layer"):
        mnemo.Model.create(n_layer="2")
    with pytest.raises(TypeError, match="n_ctx"):
        mnemo.Model.create(n_ctx=32.0)
    with pytest.raises(mnemo.ArgError, match="seed"):
        mnemo.Model.create(seed=-1)
    with pytest.raises(mnemo.ArgError, match="top_k"):
        tiny.generate("a", top_k=2**40)
    with pytest.raises(mnemo.ArgError, match="seed"):
        tiny.generate("a", seed=2**64)
    with pytest.raises(mnemo.ArgError, match="max_chunk"):
        mnemo.Session(tiny, max_chunk=2**40)
    with pytest.raises(mnemo.ArgError, match="set_threads"):
        mnemo.set_threads(0)
    with pytest.raises(mnemo.ArgError, match="n"):
        mnemo.set_threads(2**33)


def test_help_works():
    import pydoc
    text = pydoc.render_doc(mnemo.Model)
    assert "logits" in text and "save" in text
    assert "Session" in pydoc.render_doc(mnemo)
