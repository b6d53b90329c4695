"""mnemo.Session and Model.generate: streaming equals the whole-window forward, the state's
bytes, a full dense cache, flat memory over 100 x n_ctx tokens in bounded and pruned kinds,
and generation."""
import numpy as np
import pytest

import mnemo
from conftest import ids, rss_bytes


def test_feed_equals_forward(tiny):
    x = ids(32, seed=8)
    s = mnemo.Session(tiny, max_chunk=5)
    out = np.concatenate([s.feed(x[:7]), s.feed(x[7:8]), s.feed(x[8:])])
    assert out.shape == (32, 257) and out.dtype == np.float32
    np.testing.assert_allclose(out, tiny.logits(x), rtol=1e-4, atol=1e-4)
    assert s.pos == 32
    assert 0 < s.state_bytes <= s.state_bound and not s.bounded
    assert "32 tokens fed" in repr(s)
    s.reset()
    assert s.pos == 0


def test_dense_cache_fills(tiny):
    s = mnemo.Session(tiny)
    s.feed(ids(32))
    with pytest.raises(mnemo.FullError) as e:
        s.feed([1])
    assert e.value.message and s.pos == 32


def test_session_errors(tiny):
    with pytest.raises(mnemo.ArgError, match="budget"):
        mnemo.Session(tiny, budgets=8)  # dense has no budget option
    with pytest.raises(mnemo.ArgError, match="max_chunk"):
        mnemo.Session(tiny, max_chunk=0)
    with pytest.raises(TypeError):
        mnemo.Session("not a model")
    s = mnemo.Session(tiny)
    with pytest.raises(mnemo.ArgError, match="shape"):
        s.feed(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError):
        s.feed(np.array([0.5]))
    with pytest.raises(mnemo.ArgError, match="outside"):
        s.feed([400])
    assert s.pos == 0


@pytest.mark.parametrize("kind, opts, sess", [
    ("window", {"w": 16}, {}),
    ("selective", {}, {"budgets": [8, 6]}),
    ("infini", {"segment": 8}, {}),
    ("dense", {}, {"window": 12, "sinks": 4}),
])
def test_flat_memory_over_100_contexts(kind, opts, sess):
    m = mnemo.Model.create(n_layer=2, d_model=32, n_head=2, n_ctx=32, attn=kind,
                           attn_opts=opts, seed=3)
    s = mnemo.Session(m, max_chunk=32, **sess)
    assert s.bounded
    x = ids(32 * 100, seed=9)
    s.feed(x[:320])  # 10 x n_ctx: every buffer has been used
    state, rss = s.state_bytes, rss_bytes()
    for i in range(320, len(x), 160):
        s.feed(x[i:i + 160])
    assert s.pos == 3200
    assert s.state_bytes == state <= s.state_bound
    # the process did not grow with the stream (logits of 2,880 more tokens were made and
    # dropped; a state growing per token would add >= 2880 * 2 layers * 2 * 32 * 4 bytes)
    assert rss_bytes() - rss < 1 << 20


def test_generate(tiny):
    a = "".join(tiny.generate("In the", n=40, seed=3))
    b = "".join(tiny.generate("In the", n=40, seed=3))
    c = "".join(tiny.generate("In the", n=40, seed=4))
    assert a == b and a != c and isinstance(a, str)
    # greedy: each byte is the argmax of the whole-window logits of what came before
    g = list(tiny.generate(b"ab", n=10, temperature=0))
    text = "".join(g).encode("utf-8", "surrogateescape")
    hist = [256, 97, 98]
    for _ in range(10):
        nxt = int(np.argmax(tiny.logits(hist)[-1]))
        if nxt == 256:
            break
        hist.append(nxt)
    want = bytes(hist[3:]).decode("utf-8", "replace")
    assert "".join(g) == want, (text, want)


def test_generate_past_context(tiny):
    # a dense cache of 32 restarts from the last half of the history, as the command does
    out = "".join(tiny.generate("x" * 50, n=80, seed=1, temperature=1.0, top_p=1.0))
    assert len(out) > 0
    w = mnemo.Model.create(n_layer=1, d_model=32, n_head=2, n_ctx=32, attn="window",
                           attn_opts={"w": 8})
    assert len("".join(w.generate("y", n=200, top_k=5))) > 0


def test_generate_bad_args(tiny):
    for kw in ({"n": -1}, {"temperature": -1}, {"top_k": -2}, {"top_p": 0}, {"top_p": 1.5}):
        with pytest.raises(mnemo.ArgError):
            list(tiny.generate("a", **kw))
