"""prepare, train (on_step records, a callback's exception, Ctrl-C, resume) and eval."""
import json
import os
import signal

import numpy as np
import pytest

import mnemo
from conftest import TEXT, tiny_config


def test_prepare(tmp_path):
    n = mnemo.prepare(tmp_path / "d", text=TEXT, val_frac=0.25)
    assert n["train"] + n["val"] == len(TEXT.encode())
    f = tmp_path / "t.txt"
    f.write_text("abc" * 100)
    n2 = mnemo.prepare(tmp_path / "e", files=[f, f])
    assert n2["train"] + n2["val"] == 600
    with pytest.raises(mnemo.ArgError):
        mnemo.prepare(tmp_path / "x")
    with pytest.raises(mnemo.ArgError):
        mnemo.prepare(tmp_path / "x", text="ab", val_frac=2.0)


def test_train_records_equal_the_log(data, tmp_path):
    recs, events = [], []
    m = mnemo.train(tiny_config(data, tmp_path / "r"), on_step=recs.append,
                    on_event=events.append)
    log = [json.loads(l) for l in open(tmp_path / "r" / "log.jsonl")]
    assert recs == [r for r in log if r["type"] == "step"]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert set(recs[0]) >= {"loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"}
    assert events == log  # start, steps, evals, checkpoints: every record once
    assert m.meta("train.step") == "6" and m.config["n_layer"] == 1
    # the returned model is the saved one
    x = np.arange(20)
    np.testing.assert_array_equal(m.logits(x),
                                  mnemo.Model.load(tmp_path / "r" / "model.safetensors").logits(x))
    with pytest.raises(mnemo.ArgError, match="holds a run"):
        mnemo.train(tiny_config(data, tmp_path / "r"))


def test_callback_exception_stops_cleanly(data, tmp_path):
    out = tmp_path / "r"

    def boom(rec):
        if rec["step"] == 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        mnemo.train(tiny_config(data, out), on_step=boom)
    # a checkpoint of step 2 was written, as a Ctrl-C leaves one, and the run resumes
    assert mnemo.Model.load(out / "model.safetensors").meta("train.step") == "2"
    recs = []
    m = mnemo.train(tiny_config(data, out, resume=True), on_step=recs.append)
    assert [r["step"] for r in recs] == [3, 4, 5, 6] and m.meta("train.step") == "6"
    # a returned True stops too, without an exception
    m = mnemo.train(tiny_config(data, tmp_path / "s"), on_step=lambda r: r["step"] == 4)
    assert m.meta("train.step") == "4"


def test_ctrl_c_stops_cleanly(data, tmp_path):
    out = tmp_path / "r"

    def sigint(rec):  # a real SIGINT to this process, as Ctrl-C sends
        if rec["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        mnemo.train(tiny_config(data, out, steps=50, ckpt_every=0, eval_every=0), on_step=sigint)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    step = int(mnemo.Model.load(out / "model.safetensors").meta("train.step"))
    assert 3 <= step < 50
    log = [json.loads(l) for l in open(out / "log.jsonl")]
    assert log[-1]["type"] == "checkpoint" and log[-1]["step"] == step


def test_ctrl_c_from_another_thread(data, tmp_path):
    # the signal arrives while the library runs a step (not inside a callback)
    import threading
    out, at2 = tmp_path / "r", threading.Event()
    t = threading.Thread(target=lambda: (at2.wait(), os.kill(os.getpid(), signal.SIGINT)))
    t.start()
    with pytest.raises(KeyboardInterrupt):
        mnemo.train(tiny_config(data, out, steps=400, ckpt_every=0, eval_every=0),
                    on_step=lambda r: at2.set() if r["step"] == 2 else None)
    t.join()
    step = int(mnemo.Model.load(out / "model.safetensors").meta("train.step"))
    assert 2 <= step < 400


def test_init_and_resume_keep_the_checkpoints_shape(trained, data, tmp_path):
    # init: the checkpoint's weights, a fresh optimizer, longer windows (RoPE) allowed
    with pytest.warns(UserWarning, match="d_model 32"):
        m = mnemo.train(tiny_config(data, tmp_path / "i", init=str(trained), d_model=64,
                                    seq=48, steps=2))
    assert m.config["d_model"] == 32 and m.config["n_ctx"] == 48
    assert m.meta("train.step") == "2"
    lg = m.logits(np.arange(48))
    assert lg.shape == (48, 257)
    with pytest.raises(mnemo.ArgError):
        mnemo.Model.create(pos="learned", n_layer=1, d_model=32, n_head=2,
                           n_ctx=32).set_n_ctx(64)


def test_second_ctrl_c_ends_the_process(data, tmp_path):
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import mnemo
        from conftest import tiny_config
        from pathlib import Path
        def twice(rec):
            if rec["step"] == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs here: a clean stop asked
                os.kill(os.getpid(), signal.SIGINT)  # the default action: the process ends
        mnemo.train(tiny_config(Path({str(data)!r}), {str(tmp_path / "r")!r}, steps=50),
                    on_step=twice)
        print("not reached")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == -signal.SIGINT, (r.returncode, r.stdout, r.stderr)
    assert "not reached" not in r.stdout


def test_train_errors(data, tmp_path):
    with pytest.raises(mnemo.FileError, match="missing.bin"):
        mnemo.train(tiny_config(data, tmp_path / "a", train=str(tmp_path / "missing.bin")))
    with pytest.raises(mnemo.ArgError, match="unknown key 'bogus'"):
        mnemo.train(tiny_config(data, tmp_path / "b", bogus=1))
    with pytest.raises(mnemo.ArgError, match="n_head"):
        mnemo.train(tiny_config(data, tmp_path / "c", n_head=3))
    with pytest.raises(mnemo.ArgError, match="steps"):
        mnemo.train(tiny_config(data, tmp_path / "d", steps="ten"))
    with pytest.raises(mnemo.ArgError, match="batch"):
        mnemo.train(tiny_config(data, tmp_path / "d", batch=2**32 + 2))
    with pytest.raises(mnemo.ArgError, match="resume"):
        mnemo.train(tiny_config(data, tmp_path / "e", resume=True))


def test_train_kind_options_from_config_file(data, tmp_path):
    cfg = tiny_config(data, tmp_path / "r", attn="infini", segment=8, steps=2,
                      attn_opt="mem_update=delta", _comment="ignored")
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    m = mnemo.train(p)
    assert m.config["attn"] == "infini"
    assert m.config["attn_opts"]["segment"] == 8
    assert m.config["attn_opts"]["mem_update"] == "delta"


def test_eval(trained, data):
    m = mnemo.Model.load(trained)
    r = mnemo.eval(m, data / "val.bin")
    assert r["tokens"] > 0 and abs(r["bpb"] - r["loss"] / np.log(2)) < 1e-9
    assert abs(r["ppl"] - np.exp(r["loss"])) < 1e-6 * r["ppl"]
    # the same windows streamed through a session give the same loss
    s = mnemo.eval(m, data / "val.bin", session={"max_chunk": 8})
    assert abs(s["loss"] - r["loss"]) < 1e-3 and s["tokens"] == r["tokens"]
    # sliding windows score every token after the first window with more context
    w = mnemo.eval(m, data / "val.bin", seq=16, stride=8)
    assert w["tokens"] > 0 and w["loss"] != r["loss"]
    with pytest.raises(mnemo.FileError):
        mnemo.eval(m, data / "nope.bin")
