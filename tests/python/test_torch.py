"""mnemo.torch: every kind's C forward and backward inside autograd, checked against the
PyTorch references of tests/ref/attn_ref.py computed in float64 (outputs, aux, dq, dk, dv and
the kind's parameter gradients), by torch.autograd.gradcheck in float32 with loose tolerances,
and on bad input."""
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import mnemo  # noqa: E402
import mnemo.torch as mt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "ref"))
import attn_ref  # noqa: E402

# (kind, options): small patterns, so that T = 37 crosses their windows, blocks and segments
CASES = [("dense", {}), ("selective", {"mem_eps": 0.1}), ("selective", {"threshold": 0.5}),
         ("infini", {"segment": 8}), ("infini", {"segment": 8, "mem_update": "delta"}),
         ("window", {"w": 5}), ("block", {"b": 8, "prev": True}),
         ("strided", {"l": 4, "mode": "strided"}), ("strided", {"l": 6, "mode": "fixed", "c": 2}),
         ("longformer", {"w": 4, "dilation": 2, "g": 2}),
         ("bigbird", {"block": 4, "wb": 2, "g": 4, "r": 2, "pattern_seed": 3})]
IDS = [k + "".join(f"-{a}={b}" for a, b in o.items()) for k, o in CASES]


def test_every_kind_has_a_case():
    assert {k for k, _ in CASES} == set(mnemo.kinds())


def rel(got, want, floor=0.0):
    scale = max(float(want.abs().max()), floor, 1e-30)
    return float((got.double() - want).abs().max()) / scale


def against_ref(kind, opts, B=2, T=37, NH=2, HS=8, rope=True, layer=1, n_layer=2, seed=0):
    """(errors by name) between mnemo.torch in float32 and attn_ref in float64 on the same
    inputs, for the objective sum(out * dout) + aux."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, NH, HS, generator=g).requires_grad_() for _ in range(3))
    mod = mt.Attention(kind, NH, HS, rope=rope, layer=layer, n_layer=n_layer, seed=seed, **opts)
    with torch.no_grad():  # parameters away from their init, so that their gradients matter
        for p in mod.parameters():
            p.normal_(0.0, 1.0, generator=g)
    out, aux = mod(q, k, v, return_aux=True)
    dout = torch.randn(out.shape, generator=g)
    ((out * dout).sum() + aux).backward()
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ps = {n: p.detach().double().requires_grad_() for n, p in mod.named_parameters()}
    ctx = {"rope": rope, "rope_theta": 10000.0, "layer": layer, "n_layer": n_layer,
           "write_weights": None}
    o2, aux2 = attn_ref.KINDS[kind](q2, k2, v2, ps, mt.options(kind, **opts), ctx)
    aux2 = aux2 if torch.is_tensor(aux2) else torch.tensor(float(aux2), dtype=torch.float64)
    ((o2 * dout.double()).sum() + aux2).backward()
    gmax = max(float(t.grad.abs().max()) for t in [q2, k2, v2, *ps.values()])
    err = {"out": rel(out.detach(), o2.detach()),
           "aux": abs(float(aux) - float(aux2)) / max(abs(float(aux2)), 1e-6)}
    for n, a, b in (("dq", q, q2), ("dk", k, k2), ("dv", v, v2)):
        err[n] = rel(a.grad, b.grad, 1e-3 * gmax)
    for n, p in mod.named_parameters():
        err["grad." + n] = rel(p.grad, ps[n].grad, 1e-3 * gmax)
    return err, float(aux2), {n: float(p.grad.abs().max()) for n, p in ps.items()}


@pytest.mark.parametrize("kind,opts", CASES, ids=IDS)
@pytest.mark.parametrize("rope", [True, False])
def test_matches_reference(kind, opts, rope):
    err, aux, pgrad = against_ref(kind, opts, rope=rope)
    tol = {"out": 5e-5, "aux": 2e-5}
    bad = {n: e for n, e in err.items() if e > tol.get(n, 2e-4)}
    assert not bad, err
    if kind == "selective" and "mem_eps" in opts:
        assert aux > 1e-3  # the auxiliary loss and its gradient are exercised
    for n, gmax in pgrad.items():
        assert gmax > 1e-3, n  # the parameter's gradient is not trivially zero


@pytest.fixture
def one_thread():
    """The library on one thread: gradcheck's hundreds of tiny calls between torch's own
    OpenMP regions (the same libgomp) wait for spinning threads on a busy machine (9 s instead
    of 0.08 s for one kind with 2 threads and the default OMP_WAIT_POLICY)."""
    mnemo.set_threads(1)
    yield
    mnemo.set_threads(2)


@pytest.mark.parametrize("kind,opts", CASES, ids=IDS)
def test_gradcheck_float32(kind, opts, one_thread):
    """Finite differences of the C forward (float32: eps 1e-2, tolerances 1e-2) against the C
    backward, for q, k, v and the kind's parameters, and the aux output when there is one."""
    g = torch.Generator().manual_seed(1)
    B, T, NH, HS = 1, 11, 2, 4
    qkv = [torch.randn(B, T, NH, HS, generator=g).requires_grad_() for _ in range(3)]
    mod = mt.Attention(kind, NH, HS, **opts)
    params = [p.detach().clone().normal_(0.0, 1.0, generator=g).requires_grad_()
              for p in mod.parameters()]

    def f(q, k, v, *ps):
        return mt.attention(q, k, v, kind, list(ps) or None, return_aux=True, **opts)

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not double precision": float32 is the kernels' type
        assert torch.autograd.gradcheck(f, (*qkv, *params), eps=1e-2, atol=1e-2, rtol=1e-2)


def test_reference_kernels_and_non_contiguous_inputs():
    """ref=True runs the kind's naive C reference; a transposed (non-contiguous) view gives
    what its contiguous copy gives."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 4, 20, 8, generator=g)                    # (3, B, NH, T, HS)
    q, k, v = (t.transpose(1, 2) for t in x)                         # (B, T, NH, HS) views
    assert not q.is_contiguous()
    a = mt.attention(q, k, v, "window", w=6)
    b = mt.attention(q.contiguous(), k.contiguous(), v.contiguous(), "window", w=6)
    c = mt.attention(q, k, v, "window", w=6, ref=True)
    assert torch.equal(a, b)
    assert rel(c, a.double()) < 1e-5
    assert rel(a, mt.attention(q, k, v, "window", w=7).double()) > 1e-3  # the option is used


def test_no_second_derivative():
    """A double backward raises instead of treating the C backward's result as a constant
    (the cube's term makes the gradient differentiable, so without the guard it would run)."""
    q = torch.randn(1, 8, 2, 4, requires_grad=True)
    loss = mt.attention(q, q, q).square().sum() + q.pow(3).sum()
    (g,) = torch.autograd.grad(loss, q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_module_parameters_from_the_table():
    m = mt.Attention("infini", 4, 8, segment=16, gate_lr_mult=30)
    assert [n for n, _ in m.named_parameters()] == ["gate"]
    assert m.gate.shape == (4,) and float(m.gate.abs().max()) == 0.0  # INIT_ZERO
    (grp,) = m.param_groups(1e-3, weight_decay=0.1)
    assert grp["lr"] == pytest.approx(30e-3) and grp["weight_decay"] == 0.0
    assert list(mt.Attention("dense", 2, 8).parameters()) == []
    # training mode with mem_repeat draws write weights from a fresh seed per call
    m = mt.Attention("infini", 2, 8, segment=8, mem_repeat=8.0)
    x = torch.randn(1, 32, 2, 8)
    m.train()
    a, b = m(x, x, x), m(x, x, x)
    m.eval()
    c, d = m(x, x, x), m(x, x, x)
    assert not torch.equal(a, b) and torch.equal(c, d)


def test_bad_input():
    x = torch.randn(1, 8, 2, 4)
    with pytest.raises(TypeError, match="float32"):
        mt.attention(x.double(), x.double(), x.double())
    with pytest.raises(TypeError, match="torch.Tensor"):
        mt.attention(x.numpy(), x, x)
    with pytest.raises(mnemo.ArgError, match="same shape"):
        mt.attention(x, x, x[:, :4])
    with pytest.raises(mnemo.ArgError, match="same shape"):
        mt.attention(x[0], x[0], x[0])
    with pytest.raises(mnemo.ArgError, match="unknown attention kind 'nope'"):
        mt.attention(x, x, x, "nope")
    with pytest.raises(mnemo.ArgError, match="has no option 'zz'"):
        mt.attention(x, x, x, "window", zz=1)
    with pytest.raises(mnemo.ArgError, match="w"):
        mt.attention(x, x, x, "window", w=0)
    with pytest.raises(mnemo.ArgError, match="gate"):
        mt.attention(x, x, x, "infini")
    with pytest.raises(mnemo.ArgError, match="shape"):
        mt.attention(x, x, x, "infini", {"gate": torch.zeros(3)})
    with pytest.raises(mnemo.UnsupportedError, match="carried state"):
        mt.Attention("infini", 2, 4, carry=True)
    with pytest.raises(mnemo.ArgError):
        mt.attention(torch.randn(1, 8, 2, 3), torch.randn(1, 8, 2, 3), torch.randn(1, 8, 2, 3))
    with pytest.raises(mnemo.ArgError, match="layer"):
        mt.attention(x, x, x, layer=2, n_layer=2)


def test_example_trains(one_thread):
    """examples/torch_selective.py: a PyTorch model whose attention is mnemo's selective kind;
    its loss falls over a few steps."""
    import runpy
    res = runpy.run_path(str(ROOT / "examples" / "torch_selective.py"), run_name="__test__")
    losses = res["train"](steps=30)
    assert losses[-1] < 0.8 * losses[0], losses


def test_gil_released_in_kernels():
    """The kinds' slots are called through CFUNCTYPE pointers, which release the GIL as the
    CDLL functions do (tests/python/test_threads.py's sampler, ten samples inside one call asked:
    measured 16-21 per forward and 44-46 per backward of selective at T 2048; with the slots
    declared PYFUNCTYPE, which keeps the GIL, 1 per call, and the test fails). T 4096, so that
    a machine twice as fast still gives a forward call several times the ten samples."""
    from test_threads import samples_per_call
    x = torch.randn(1, 4096, 4, 32, requires_grad=True)
    with torch.no_grad():
        assert samples_per_call(lambda: mt.attention(x, x, x, "selective")) >= 10
    out = mt.attention(x, x, x, "selective")
    assert samples_per_call(lambda: out.backward(torch.ones_like(out), retain_graph=True)) >= 10
