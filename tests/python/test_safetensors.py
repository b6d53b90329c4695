"""Checkpoints are plain safetensors files: the safetensors package (numpy and PyTorch) reads
the tensors and the config, and a file it writes loads back into mnemo."""
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file as np_load, save_file as np_save

import mnemo


def test_read_with_safetensors(trained):
    m = mnemo.Model.load(trained)
    c = m.config
    t = np_load(str(trained))
    C, L, Vp = c["d_model"], c["n_layer"], c["vocab_padded"]
    assert t["wte.weight"].shape == (Vp, C) and t["wte.weight"].dtype == np.float32
    assert t["blocks.0.attn.qkv.weight"].shape == (3 * C, C)
    assert sum(v.size for v in t.values()) >= m.n_params - 16 * len(t)
    assert not any(k.startswith(f"blocks.{L}.") for k in t)
    with safe_open(str(trained), framework="np") as f:
        meta = f.metadata()
    assert meta["attn_kind"] == c["attn"] and int(meta["n_layer"]) == L
    assert int(meta["d_model"]) == C and int(meta["n_ctx"]) == c["n_ctx"]
    assert meta["train.step"] == m.meta("train.step")


def test_read_with_torch(trained):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    t = load_file(str(trained))
    n = np_load(str(trained))
    assert set(t) == set(n)
    for k in n:
        assert torch.equal(t[k], torch.from_numpy(n[k]))


def test_written_by_safetensors_loads(trained, tmp_path):
    # the tied embedding's rows scaled by 0 leave logits = LNf(h) . 0 = 0: uniform predictions
    t = np_load(str(trained))
    with safe_open(str(trained), framework="np") as f:
        meta = f.metadata()
    t["wte.weight"] = np.zeros_like(t["wte.weight"])
    p = tmp_path / "edited.safetensors"
    np_save(t, str(p), metadata=meta)
    m = mnemo.Model.load(p)
    lg = m.logits([256, 1, 2, 3])
    np.testing.assert_array_equal(lg, np.zeros_like(lg))
    assert abs(float(m.loss([256, 1, 2, 3])) - np.log(257)) < 1e-5
    # a tensor of the wrong shape is refused with the library's message
    t["lnf.weight"] = t["lnf.weight"][:-1]
    np_save(t, str(p), metadata=meta)
    with pytest.raises(mnemo.FormatError, match="lnf.weight"):
        mnemo.Model.load(p)
