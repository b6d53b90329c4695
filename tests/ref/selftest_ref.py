#!/usr/bin/python3
"""selftest_ref -- shows that the reference is right and that check_ref can fail.

usage: /usr/bin/python3 tests/ref/selftest_ref.py [-v] [--keep DIR]

1. Checks the reference's own parts against independent formulations: st_io round trips and
   rejects broken files; RoPE against complex multiplication; the AdamW + clipping against
   torch.optim.AdamW; causality; padded vocabulary columns out of the loss; a few finite
   differences of the float64 loss.
2. For pos = rope and pos = learned: writes a random checkpoint and a dump computed by the
   reference in float32 (as the C side would), and expects check_ref to PASS; then injects one
   bug at a time (perturbed logits, wrong RoPE convention, off-by-one causal mask, a gradient
   scaled by 1.01, a missing bias gradient, AdamW without bias correction, ...) and expects
   check_ref to FAIL on exactly the checks that bug touches; bad input must exit 2.
Exit status 0 iff every expectation holds. The last line reads "selftest_ref: N passed, M failed".
"""

import io
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True     # keep tests/ref free of __pycache__
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import check_ref  # noqa: E402
import mnemo_ref as R  # noqa: E402
import st_io  # noqa: E402

VERBOSE = False
HP = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
      "grad_clip": 1.0, "steps": 10}
LOGITS = "logits[..., :V]"


class Tally:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def expect(self, name, ok, detail=""):
        print("selftest: %-58s %s%s" % (name, "ok" if ok else "UNEXPECTED",
                                        "" if ok or not detail else "\n" + detail))
        if ok:
            self.passed += 1
        else:
            self.failed += 1


T_ = Tally()


# ---- 1. the reference's own parts -----------------------------------------------------------

def test_st_io(tmp):
    p = os.path.join(tmp, "rt.safetensors")
    rng = np.random.default_rng(5)
    t = {"f": rng.standard_normal((3, 4)).astype(np.float32),
         "i": np.arange(-3, 3, dtype=np.int32), "l": np.array([2 ** 40], dtype=np.int64),
         "h": np.array([[1, 65535]], dtype=np.uint16), "b": np.arange(7, dtype=np.uint8),
         "e": np.zeros((0, 5), dtype=np.float32)}
    st_io.save(p, t, {"k": "v", "n": "1"})
    back, meta = st_io.load(p)
    ok = (meta == {"k": "v", "n": "1"} and set(back) == set(t) and
          all(back[k].dtype == t[k].dtype and np.array_equal(back[k], t[k]) for k in t))
    T_.expect("st_io round trip (F32 I32 I64 U16 U8, metadata)", ok)
    blob = open(p, "rb").read()
    bad = {
        "truncated data": blob[:-3],
        "truncated header": blob[:20],
        "huge header length": (10 ** 12).to_bytes(8, "little") + blob[8:],
        "not JSON": blob[:8] + b"{" * (len(blob) - 8),
    }
    hdr = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' \
          b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    bad["overlapping tensors"] = len(hdr).to_bytes(8, "little") + hdr + bytes(12)
    hdr = b'{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}'
    bad["unsupported dtype"] = len(hdr).to_bytes(8, "little") + hdr + bytes(8)
    hdr = b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'
    bad["size/shape mismatch"] = len(hdr).to_bytes(8, "little") + hdr + bytes(8)
    for what, b in bad.items():
        with open(p, "wb") as f:
            f.write(b)
        try:
            st_io.load(p)
            ok, msg = False, "accepted"
        except st_io.StFormatError as e:
            ok, msg = "\n" not in str(e), str(e)
        T_.expect("st_io rejects %s" % what, ok, msg)


def test_rope():
    """apply_rope == multiplication of (x[i] + j x[i+HS/2]) by exp(j t theta^(-2i/HS))."""
    T, HS = 9, 8
    x = torch.randn(2, T, 3, HS, dtype=torch.float64)
    cos, sin = R.rope_tables(T, HS, 10000.0)
    got = R.apply_rope(x, cos, sin)
    half = HS // 2
    z = torch.complex(x[..., :half], x[..., half:])
    t = torch.arange(T, dtype=torch.float64)[:, None]
    ang = t * (10000.0 ** (-2.0 * torch.arange(half, dtype=torch.float64) / HS))[None, :]
    zr = z * torch.polar(torch.ones_like(ang), ang)[None, :, None, :]
    want = torch.cat((zr.real, zr.imag), dim=-1)
    err = (got - want).abs().max().item()
    T_.expect("rope rotate-half equals complex rotation (err %.1e)" % err, err < 1e-6)
    T_.expect("rope at t=0 is the identity", torch.equal(got[:, 0], x[:, 0]))


def test_adamw():
    """Our AdamW + clip == torch.optim.AdamW (decay on ndim >= 2 only) + spec clipping."""
    cfg = R.Config(1, 16, 2, 8, 11, 16, "learned")
    t = R.random_tensors(cfg, 3)
    x = torch.randint(0, 11, (2, 8))
    y = torch.randint(0, 11, (2, 8))
    a = R.model_from_tensors(cfg, t)
    b = R.model_from_tensors(cfg, t)
    R.train_losses(a, x, y, 4, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5)
    pb = list(b.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in pb if p.ndim >= 2], "weight_decay": 0.1},
                             {"params": [p for p in pb if p.ndim < 2], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    clipped = 0
    for _ in range(4):
        opt.zero_grad()
        b(x, y)[1].backward()
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in pb))
        if norm > 0.5:
            clipped += 1
            for p in pb:
                p.grad.mul_(0.5 / norm)
        opt.step()
    err = max((pa - pb_).abs().max().item() for pa, pb_ in zip(a.parameters(), b.parameters()))
    T_.expect("AdamW+clip equals torch.optim.AdamW (err %.1e, %d clipped)" % (err, clipped),
              err < 1e-12 and clipped > 0)


def test_model_properties():
    for pos in ("rope", "learned"):
        cfg = R.Config(2, 32, 4, 16, 13, 16, pos)
        t = R.random_tensors(cfg, 4)
        m = R.model_from_tensors(cfg, t)
        x = torch.randint(0, 13, (2, 16))
        x2 = x.clone()
        x2[:, 9:] = (x2[:, 9:] + 1) % 13
        with torch.no_grad():
            d = (m(x) - m(x2)).abs()
        T_.expect("%s: causal (future tokens change no earlier logits)" % pos,
                  d[:, :9].max().item() == 0.0 and d[:, 9:].max().item() > 1e-3)
        y = torch.randint(0, 13, (2, 16))
        t2 = dict(t)
        t2["wte.weight"] = t["wte.weight"].copy()
        t2["wte.weight"][13:] = 5.0         # padded rows: change padded columns only
        with torch.no_grad():
            l1 = m(x, y)[1].item()
            l2 = R.model_from_tensors(cfg, t2)(x, y)[1].item()
        T_.expect("%s: padded vocabulary columns are outside the loss" % pos, l1 == l2)
        # central finite differences of the float64 loss against autograd
        m.zero_grad()
        m(x, y)[1].backward()
        worst = 0.0
        for name in ("blocks.1.attn.qkv.weight", "blocks.0.attn.qkv.bias", "wte.weight",
                     "blocks.0.ln1.weight", "blocks.1.mlp.proj.bias"):
            p = dict(m.named_parameters())[name]
            for idx in [(3, 5), (40, 1), (70, 30)] if p.ndim == 2 else [(1,), (17,), (60,)]:
                idx = tuple(i % s for i, s in zip(idx, p.shape))
                h = 1e-6
                with torch.no_grad():
                    p[idx] += h
                    lp = m(x, y)[1].item()
                    p[idx] -= 2 * h
                    lm = m(x, y)[1].item()
                    p[idx] += h
                fd = (lp - lm) / (2 * h)
                worst = max(worst, abs(fd - p.grad[idx].item()) / max(abs(fd), 1e-4))
        T_.expect("%s: autograd equals finite differences (rel %.1e)" % (pos, worst), worst < 1e-5)


# ---- 2. the checker against injected bugs ---------------------------------------------------

def rope_interleaved(self, x):
    """GPT-J convention: pairs (2i, 2i+1) instead of (i, i+HS/2)."""
    T, HS = x.shape[1], x.shape[3]
    cos, sin = R.rope_tables(T, HS, self.cfg.rope_theta)
    c, s = cos.to(x.dtype)[None, :, None, :], sin.to(x.dtype)[None, :, None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


def rope_from_1(self, x):
    """Positions counted from 1: NOT a bug, RoPE scores depend on t - s only."""
    T, HS = x.shape[1], x.shape[3]
    cos, sin = R.rope_tables(T + 1, HS, self.cfg.rope_theta)
    return R.apply_rope(x, cos[1:], sin[1:])


def rope_half_freq(self, x):
    """theta^(-i/HS) instead of theta^(-2i/HS)."""
    T, HS = x.shape[1], x.shape[3]
    cos, sin = R.rope_tables(T, 2 * HS, self.cfg.rope_theta)
    return R.apply_rope(x, cos[:, :HS // 2], sin[:, :HS // 2])


def rope_q_only(self, x):
    """Rotates q but not k (a call forgotten): rope() is called for q first, then k."""
    self._rope_calls = getattr(self, "_rope_calls", 0) + 1
    return R.Attention.rope(self, x) if self._rope_calls % 2 else x


def rope_f32_angles(self, x):
    """theta^(-2i/HS) and t*freq in float32 (a tolerated deviation, not a bug)."""
    T, HS = x.shape[1], x.shape[3]
    i = np.arange(HS // 2, dtype=np.float32)
    ang = np.arange(T, dtype=np.float32)[:, None] * np.power(
        np.float32(self.cfg.rope_theta), np.float32(-2.0) * i / np.float32(HS))[None, :]
    return R.apply_rope(x, torch.from_numpy(np.cos(ang)), torch.from_numpy(np.sin(ang)))


def mask_off_by_one(self, T, device):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(1)


def gelu_erf(self, a):
    return self.proj(F.gelu(self.fc(a)))


def loss_over_padded(self, logits, y):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def make_case(d, cfg, B, T, fault=None, seed=1):
    """Write d/model.safetensors and d/dump.safetensors computed in float32 with one fault."""
    os.makedirs(d, exist_ok=True)
    tensors = R.random_tensors(cfg, seed)
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(0, cfg.vocab, (B, T)).astype(np.int32)
    y = rng.integers(0, cfg.vocab, (B, T)).astype(np.int32)
    hp = dict(HP)
    meta = cfg.to_meta()
    ckpt = dict(tensors)
    used = dict(tensors)                      # the weights the faulty "C side" computes with
    if fault == "wpe_off_by_one":
        used["wpe.weight"] = np.roll(tensors["wpe.weight"], -1, axis=0)
    if fault == "wpe_missing":
        used["wpe.weight"] = np.zeros_like(tensors["wpe.weight"])

    def build():
        m = R.model_from_tensors(cfg, used, torch.float32)
        for blk in m.blocks:
            a = blk.attn
            if fault == "rope_interleaved":
                a.rope = rope_interleaved.__get__(a)
            if fault in ("rope_from_1", "rope_half_freq", "rope_q_only"):
                a.rope = globals()[fault].__get__(a)
            if fault == "rope_f32_angles":
                a.rope = rope_f32_angles.__get__(a)
            if fault == "mask_off_by_one":
                a.mask = mask_off_by_one.__get__(a)
            if fault == "gelu_erf":
                blk.mlp.forward = gelu_erf.__get__(blk.mlp)
            if fault == "ln_eps_1e-6":
                blk.ln1.eps = blk.ln2.eps = 1e-6
        if fault == "loss_over_padded":
            m.loss_fn = loss_over_padded.__get__(m)
        return m

    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
    m = build()
    logits, loss = m(xt, yt)
    loss.backward()
    dump = {"x": x, "y": y, "logits": logits.detach().numpy().astype(np.float32),
            "loss": loss.detach().reshape(1).numpy().astype(np.float32)}
    for n, p in m.named_parameters():
        dump["grad." + n] = p.grad.numpy().astype(np.float32)
    opt_fault = {"adamw_no_bias_correction": {"bias_correction": False},
                 "decay_on_all_params": {"decay_all": True},
                 "no_grad_clip": {"no_clip": True}}.get(fault, {})
    dump["step_losses"] = np.array(
        R.train_losses(build(), xt, yt, hp["steps"], hp["lr"], hp["beta1"], hp["beta2"],
                       hp["eps"], hp["weight_decay"], hp["grad_clip"], **opt_fault),
        dtype=np.float32)

    # faults in the outputs themselves
    if fault == "logits_perturbed":          # one logit off by 5x the tolerance
        lg = dump["logits"]
        lg[1, 3, 2] += 5 * check_ref.TOL["logits"] * np.abs(lg[..., :cfg.vocab]).max()
    if fault == "logits_padded_garbage":     # padded columns are not compared
        dump["logits"][..., cfg.vocab:] = 123.0
    if fault == "loss_perturbed":
        dump["loss"] *= 1 + 5 * check_ref.TOL["loss"]
    if fault and fault.startswith("grad_x1.01:"):
        dump["grad." + fault.split(":")[1]] *= 1.01
    if fault and fault.startswith("grad_zero:"):
        dump["grad." + fault.split(":")[1]][:] = 0.0
    if fault and fault.startswith("grad_missing:"):
        del dump["grad." + fault.split(":")[1]]
    if fault == "grad_extra":
        dump["grad.blocks.0.attn.bias"] = np.zeros(3, np.float32)
    if fault == "grad_nan":
        dump["grad.lnf.bias"][2] = np.nan
    if fault == "step_losses_shifted":       # loss i recorded after update i
        dump["step_losses"] = np.append(dump["step_losses"][1:],
                                        dump["step_losses"][-1]).astype(np.float32)
    if fault == "ckpt_extra_tensor":
        ckpt["blocks.0.attn.bias"] = np.zeros(3, np.float32)
    if fault == "ckpt_missing_tensor":
        del ckpt["lnf.bias"]
    if fault == "ckpt_wrong_shape":
        ckpt["blocks.0.mlp.fc.bias"] = np.zeros(5, np.float32)
    if fault == "bad_attn_kind":
        meta["attn_kind"] = "no-such-kind"
    if fault == "bad_token":
        dump["x"][0, 0] = cfg.vocab
    if fault == "bad_hp":
        hp.pop("lr")
    st_io.save(os.path.join(d, "model.safetensors"), ckpt, meta)
    st_io.save(os.path.join(d, "dump.safetensors"), dump, {k: repr(v) for k, v in hp.items()})
    if fault == "truncated_dump":
        p = os.path.join(d, "dump.safetensors")
        blob = open(p, "rb").read()
        open(p, "wb").write(blob[:len(blob) // 2])


def run_check(d):
    out, err = io.StringIO(), io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        rc = check_ref.run(d, out)
    finally:
        sys.stderr = old
    text = out.getvalue()
    fails = {ln[:36].strip() for ln in text.splitlines() if ln.endswith(" FAIL")}
    ratio = 0.0                               # worst rel/tol over the compared tensors
    for m in re.finditer(r" rel (\S+)  tol (\S+) ", text):
        ratio = max(ratio, float(m.group(1)) / float(m.group(2)))
    return rc, fails, ratio, text + err.getvalue()


def cases(cfg):
    """(fault, expected exit status, expected failing checks (None: any)) for a config."""
    L = cfg.n_layer - 1
    c = [
        (None, 0, set()),
        ("logits_padded_garbage", 0, set()),
        ("rope_f32_angles", 0, set()) if cfg.pos == "rope" else None,
        ("logits_perturbed", 1, {LOGITS}),
        ("loss_perturbed", 1, {"loss"}),
        ("mask_off_by_one", 1, None),
        ("gelu_erf", 1, None),
        ("ln_eps_1e-6", 1, None),
        ("loss_over_padded", 1, None),
        ("grad_x1.01:blocks.%d.attn.proj.bias" % L, 1, {"grad.blocks.%d.attn.proj.bias" % L}),
        ("grad_x1.01:blocks.0.attn.qkv.weight", 1, {"grad.blocks.0.attn.qkv.weight"}),
        ("grad_x1.01:wte.weight", 1, {"grad.wte.weight"}),
        ("grad_x1.01:lnf.weight", 1, {"grad.lnf.weight"}),
        ("grad_zero:blocks.0.mlp.fc.bias", 1, {"grad.blocks.0.mlp.fc.bias"}),
        ("grad_zero:blocks.0.ln1.bias", 1, {"grad.blocks.0.ln1.bias"}),
        ("grad_missing:lnf.bias", 1, {"grad.lnf.bias"}),
        ("grad_extra", 1, {"grad.blocks.0.attn.bias"}),
        ("grad_nan", 1, {"grad.lnf.bias"}),
        ("adamw_no_bias_correction", 1, {"step_losses"}),
        ("decay_on_all_params", 1, {"step_losses"}),
        ("no_grad_clip", 1, {"step_losses"}),
        ("step_losses_shifted", 1, {"step_losses"}),
        ("ckpt_extra_tensor", 1, {"checkpoint tensors"}),
        ("ckpt_missing_tensor", 1, {"checkpoint tensors"}),
        ("ckpt_wrong_shape", 1, {"checkpoint tensors"}),
        ("bad_attn_kind", 2, set()),
        ("bad_token", 2, set()),
        ("bad_hp", 2, set()),
        ("truncated_dump", 2, set()),
    ]
    if cfg.pos == "rope":
        c += [("rope_from_1", 0, set()), ("rope_interleaved", 1, None),
              ("rope_half_freq", 1, None), ("rope_q_only", 1, None)]
    else:
        c += [("wpe_off_by_one", 1, None), ("wpe_missing", 1, None)]
    return [x for x in c if x is not None]


def test_checker(tmp, pos):
    cfg = R.Config(n_layer=2, d_model=64, n_head=4, n_ctx=32, vocab=57, vocab_padded=64,
                   pos=pos)
    B, T = 3, 24
    # the clipping fault is only visible if the initial gradient norm exceeds grad_clip
    m = R.model_from_tensors(cfg, R.random_tensors(cfg, 1))
    rng = np.random.default_rng(101)
    x = torch.from_numpy(rng.integers(0, cfg.vocab, (B, T)))
    y = torch.from_numpy(rng.integers(0, cfg.vocab, (B, T)))
    m(x, y)[1].backward()
    norm = R.clip_grad_norm(list(m.parameters()), 0.0)
    T_.expect("%s: initial grad norm %.2f > grad_clip %.1f (clipping exercised)"
              % (pos, norm, HP["grad_clip"]), norm > HP["grad_clip"])
    for fault, want_rc, want_fails in cases(cfg):
        d = os.path.join(tmp, "%s-%s" % (pos, (fault or "clean").replace(":", "-")))
        make_case(d, cfg, B, T, fault)
        rc, fails, ratio, text = run_check(d)
        ok = rc == want_rc and (want_fails is None or fails == want_fails)
        if want_fails is None:
            ok = ok and len(fails) > 0
        detail = "rc %d, failing: %s" % (rc, sorted(fails))
        T_.expect("%s: %-26s -> exit %d  (worst rel/tol %8.2g)"
                  % (pos, fault or "clean", want_rc, ratio), ok, detail + "\n" + text)
        if VERBOSE:
            print(text)
    # the command line itself: exit codes and the one-line error
    clean = os.path.join(tmp, "%s-clean" % pos)
    for args, want in (([clean], 0), ([os.path.join(tmp, "nonexistent")], 2),
                       ([os.path.join(tmp, "%s-bad_attn_kind" % pos)], 2)):
        p = subprocess.run([sys.executable, os.path.join(HERE, "check_ref.py")] + args,
                           capture_output=True, text=True)
        errlines = p.stderr.strip().splitlines()
        ok = p.returncode == want and (want == 0 or len(errlines) == 1)
        T_.expect("%s: check_ref.py %s -> exit %d" % (pos, os.path.basename(args[0]), want), ok,
                  "exit %d, stderr: %s" % (p.returncode, p.stderr.strip()))
        if want == 2 and VERBOSE:
            print("    " + p.stderr.strip())


def main(argv):
    global VERBOSE
    keep = None
    args = argv[1:]
    if "-v" in args:
        VERBOSE = True
        args.remove("-v")
    if args[:1] == ["--keep"] and len(args) == 2:
        keep = args[1]
    elif args:
        sys.stderr.write("usage: %s [-v] [--keep DIR]\n" % argv[0])
        return 2
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tmp = keep or tempfile.mkdtemp(prefix="mnemo-selftest-ref-")
    try:
        test_st_io(tmp)
        test_rope()
        test_adamw()
        test_model_properties()
        for pos in ("rope", "learned"):
            test_checker(tmp, pos)
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print("selftest_ref: %d passed, %d failed" % (T_.passed, T_.failed))
    return 0 if T_.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
