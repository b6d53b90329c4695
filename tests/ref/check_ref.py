#!/usr/bin/python3
"""check_ref -- compare a mnemo C dump with the float64 PyTorch reference.

usage: /usr/bin/python3 tests/ref/check_ref.py <dir>

<dir>/model.safetensors  the checkpoint (initial weights) written by the C side (format 2; a
                         format-1 file is read too)
<dir>/dump.safetensors   x, y (I32 B,T); logits (F32 B,T,Vp); loss (F32 1);
                         grad.<param> (F32) for every parameter; step_losses (F32 S);
                         aux_loss (F32 1, the kinds' weighted auxiliary loss of the first
                         forward; required when mem_eps > 0);
                         metadata lr, beta1, beta2, eps, weight_decay, grad_clip, steps
                         (optional: optimizer, momentum, and the kind's training options
                         mem_eps, mem_tau, gate_lr_mult, which the checkpoint's attn.<key>
                         metadata must then agree with)

The reference (tests/ref/mnemo_ref.py) runs in float64. For every compared tensor the checker
prints the max abs difference, the relative error (max abs difference over the largest
magnitude of the reference tensor, with a noise floor for gradients) and PASS/FAIL, llm.c
style. Exit status: 0 all pass, 1 some check failed, 2 bad input (one error line on stderr).
The protocol and the tolerances are explained in docs/internals/reference-tests.md.
"""

import math
import os
import sys

sys.dont_write_bytecode = True     # keep tests/ref free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mnemo_ref as R  # noqa: E402
import st_io  # noqa: E402

# Relative tolerances (max |got - want| / max |want|). Measured float32-vs-float64 errors of the
# reference itself are 50-100x below these for models up to L=4, C=256, T=128 (see the doc);
# the injected bugs of selftest_ref.py give errors 10-10^5x above them.
TOL = {
    "logits": 2e-5,
    "loss": 1e-5,
    "grad": 5e-5,
    "step_losses": 3e-5,
}
# Gradient noise floor: a gradient tensor is scaled by at least this fraction of the largest
# gradient magnitude in the model, so a tensor whose exact gradient is (near) zero -- e.g. the
# key bias under learned positions, to which softmax is invariant -- is judged by float32 noise
# relative to the model's gradients, not relative to zero.
GRAD_FLOOR = 1e-3
HP_KEYS = ("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip", "steps")


class InputError(ValueError):
    """Bad or inconsistent input files: exit status 2."""


def _load(path):
    if not os.path.isfile(path):
        raise InputError("%s: no such file" % path)
    try:
        return st_io.load(path)
    except OSError as e:
        raise InputError("%s: %s" % (path, e.strerror or e)) from None


def _parse_hp(meta, path):
    missing = [k for k in HP_KEYS if k not in meta]
    if missing:
        raise InputError("%s: metadata lacks %s" % (path, ", ".join(missing)))
    hp = {}
    for k in HP_KEYS:
        try:
            hp[k] = int(meta[k]) if k == "steps" else float(meta[k])
        except ValueError:
            raise InputError("%s: metadata %s=%r is not a number" % (path, k, meta[k])) from None
        if not math.isfinite(hp[k]):
            raise InputError("%s: metadata %s=%r is not finite" % (path, k, meta[k]))
    # optional (dumps written before Muon existed are AdamW's)
    hp["optimizer"] = meta.get("optimizer", "adamw")
    if hp["optimizer"] not in ("adamw", "muon"):
        raise InputError("%s: metadata optimizer=%r is not adamw or muon" % (path, hp["optimizer"]))
    try:
        hp["momentum"] = float(meta.get("momentum", "0.95"))
    except ValueError:
        raise InputError("%s: metadata momentum=%r is not a number" % (path, meta["momentum"])) from None
    hp["given"] = set(k for k, _ in TRAIN_OPTS if k in meta)
    for k, default in TRAIN_OPTS:
        try:
            hp[k] = float(meta.get(k, default))
        except ValueError:
            raise InputError("%s: metadata %s=%r is not a number" % (path, k, meta[k])) from None
    if hp["steps"] < 1:
        raise InputError("%s: metadata steps=%d must be >= 1" % (path, hp["steps"]))
    return hp


TRAIN_OPTS = (("mem_eps", "0"), ("mem_tau", "1"), ("gate_lr_mult", "1"))


def _train_opts(hp, meta, path):
    """The kind's training options are model options carried by a format-2 checkpoint
    ("attn.<key>"): they override the dump's copies, which must agree with them."""
    for k, _ in TRAIN_OPTS:
        v = meta.get("attn." + k)
        if v is None:
            continue
        try:
            x = float(v)
        except ValueError:
            raise InputError("%s: metadata attn.%s=%r is not a number" % (path, k, v)) from None
        if k in hp["given"] and not math.isclose(hp[k], x, rel_tol=1e-6, abs_tol=0.0):
            raise InputError("%s: metadata attn.%s=%r disagrees with the dump's %s=%r"
                             % (path, k, v, k, hp[k]))
        hp[k] = x


def _tokens(dump, name, path, cfg):
    if name not in dump:
        raise InputError("%s: tensor %r is missing" % (path, name))
    a = dump[name]
    if a.dtype != np.int32 or a.ndim != 2 or a.size == 0:
        raise InputError("%s: %r must be a non-empty I32 (B,T) tensor, got %s %s"
                         % (path, name, a.dtype, a.shape))
    if a.shape[1] > cfg.n_ctx:
        raise InputError("%s: %r has T=%d > n_ctx=%d" % (path, name, a.shape[1], cfg.n_ctx))
    if a.min() < 0 or a.max() >= cfg.vocab:
        raise InputError("%s: %r has a token outside [0, %d)" % (path, name, cfg.vocab))
    return torch.from_numpy(a.astype(np.int64))


class Report:
    """Collects PASS/FAIL lines."""

    def __init__(self, out):
        self.out, self.n_pass, self.n_fail = out, 0, 0

    def line(self, name, ok, text):
        self.out.write("%-36s %s %s\n" % (name, text, "PASS" if ok else "FAIL"))
        if ok:
            self.n_pass += 1
        else:
            self.n_fail += 1

    def compare(self, name, got, want, tol, floor=0.0):
        """got: numpy F32 array from the dump; want: float64 tensor of the reference."""
        want = want.detach().double().numpy()
        if got is None:
            return self.line(name, False, "missing from the dump")
        if tuple(got.shape) != tuple(want.shape):
            return self.line(name, False, "shape %s, expected %s"
                             % (tuple(got.shape), tuple(want.shape)))
        if got.dtype != np.float32:
            return self.line(name, False, "dtype %s, expected F32" % got.dtype)
        got = got.astype(np.float64)
        if not np.all(np.isfinite(got)):
            return self.line(name, False, "%d non-finite values" % int(np.sum(~np.isfinite(got))))
        diff = np.abs(got - want)
        maxdiff = float(diff.max()) if diff.size else 0.0
        scale = max(float(np.abs(want).max()) if want.size else 0.0, floor, 1e-30)
        rel = maxdiff / scale
        ok = rel <= tol
        self.line(name, ok, "maxdiff %.3e  rel %.3e  tol %.0e " % (maxdiff, rel, tol))
        if not ok:
            at = np.unravel_index(int(diff.argmax()), diff.shape)
            self.out.write("    worst at %s: got %.9g, reference %.9g\n"
                           % (tuple(int(i) for i in at), got[at], want[at]))


def run(d, out=sys.stdout):
    """Check the dump in directory d; returns the exit status (0, 1; 2 after printing the
    input error to stderr)."""
    mpath = os.path.join(d, "model.safetensors")
    dpath = os.path.join(d, "dump.safetensors")
    try:
        ckpt, meta = _load(mpath)
        try:
            cfg = R.Config.from_meta(meta)
        except R.RefError as e:
            raise InputError("%s: %s" % (mpath, e)) from None
        ckpt = R.upgrade_tensors(meta, ckpt)     # format 1's tensor names
        dump, dmeta = _load(dpath)
        hp = _parse_hp(dmeta, dpath)
        _train_opts(hp, meta, mpath)
        x = _tokens(dump, "x", dpath, cfg)
        y = _tokens(dump, "y", dpath, cfg)
        if x.shape != y.shape:
            raise InputError("%s: x %s and y %s differ in shape"
                             % (dpath, tuple(x.shape), tuple(y.shape)))
    except (InputError, st_io.StFormatError) as e:
        sys.stderr.write("check_ref: error: %s\n" % e)
        return 2

    rep = Report(out)
    out.write("check_ref: %s pos=%s attn=%s L=%d C=%d NH=%d V=%d Vp=%d B=%d T=%d steps=%d (%s)\n"
              % (d, cfg.pos, cfg.attn_kind, cfg.n_layer, cfg.d_model, cfg.n_head, cfg.vocab,
                 cfg.vocab_padded, x.shape[0], x.shape[1], hp["steps"], hp["optimizer"]))
    if cfg.attn_kind == "infini":
        out.write("check_ref: infini segment %d, %s memory update, gate lr x %g\n"
                  % (cfg.segment or cfg.n_ctx, cfg.mem_update, hp["gate_lr_mult"]))
    probs = R.check_tensor_set(cfg, ckpt)
    rep.line("checkpoint tensors", not probs,
             "; ".join(probs) if probs else "%d tensors as expected" % len(ckpt))
    if probs:
        out.write("check_ref: 0 passed, %d failed (cannot build the reference)\n" % rep.n_fail)
        return 1

    torch.manual_seed(0)
    model = R.model_from_tensors(cfg, ckpt, torch.float64)
    logits, loss = model(x, y)
    # the gradients are the objective's: with the memory loss, cross-entropy + aux, where the
    # kinds' auxiliary loss is aux = eps * L_mem (mnemo_model_aux_loss)
    aux = hp["mem_eps"] * model.memory_loss(hp["mem_tau"]) if hp["mem_eps"] else None
    (loss + aux if aux is not None else loss).backward()
    V = cfg.vocab

    got_logits = dump.get("logits")
    if got_logits is not None and got_logits.shape == tuple(logits.shape):
        got_logits = got_logits[..., :V]        # padded columns are not part of the model
    rep.compare("logits[..., :V]", got_logits, logits[..., :V], TOL["logits"])
    got_loss = dump.get("loss")
    if got_loss is not None and got_loss.size == 1:
        got_loss = got_loss.reshape(1)
    rep.compare("loss", got_loss, loss.reshape(1), TOL["loss"])
    if "aux_loss" in dump or aux is not None:
        got_aux = dump.get("aux_loss")
        if got_aux is not None and got_aux.size == 1:
            got_aux = got_aux.reshape(1)
        want_aux = (aux if aux is not None else loss.new_zeros(())).reshape(1)
        rep.compare("aux_loss", got_aux, want_aux, TOL["loss"])

    grads = {n: p.grad for n, p in model.named_parameters()}
    gmax = max(float(g.abs().max()) for g in grads.values())
    for n, g in grads.items():
        rep.compare("grad." + n, dump.get("grad." + n), g, TOL["grad"], GRAD_FLOOR * gmax)
    for n in sorted(dump):
        if n.startswith("grad.") and n[5:] not in grads:
            rep.line(n, False, "is not a parameter of this model")

    S = hp["steps"]
    model = R.model_from_tensors(cfg, ckpt, torch.float64)
    want_steps = R.train_losses(model, x, y, S, hp["lr"], hp["beta1"], hp["beta2"], hp["eps"],
                                hp["weight_decay"], hp["grad_clip"], hp["optimizer"],
                                hp["momentum"], hp["mem_eps"], hp["mem_tau"],
                                hp["gate_lr_mult"])
    rep.compare("step_losses", dump.get("step_losses"), torch.tensor(want_steps),
                TOL["step_losses"])
    sl = dump.get("step_losses")
    if sl is not None and sl.size == S:
        for i in range(S):
            out.write("    step %d: C %.6f  reference %.6f\n" % (i, sl[i], want_steps[i]))

    out.write("check_ref: %d passed, %d failed\n" % (rep.n_pass, rep.n_fail))
    return 0 if rep.n_fail == 0 else 1


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write("usage: %s <dir with model.safetensors and dump.safetensors>\n"
                         % os.path.basename(argv[0]))
        return 2
    if not os.path.isdir(argv[1]):
        sys.stderr.write("check_ref: error: %s is not a directory\n" % argv[1])
        return 2
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return run(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
