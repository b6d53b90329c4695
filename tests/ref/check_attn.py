#!/usr/bin/python3
"""check_attn -- compare one attention kind's C layer (a ref_attn dump) with its PyTorch
function (tests/ref/attn_ref.py) in float64.

usage: /usr/bin/python3 tests/ref/check_attn.py <dir>

<dir>/attn.safetensors holds qkv (B,T,3NH,HS), dout, out, dqkv, aux, param.<name>,
grad.<name>, write_weights (infini), and metadata kind, opts, B, T, NH, HS, rope, rope_theta,
layer, n_layer. For a kind that carries a state across windows also prev_qkv (the lanes'
previous windows, evaluated) and carry_out (the C carry after the window, bytes): the reference
runs the previous windows first and the window with their carry, and compares its carry too.
The reference computes out and aux, then the gradients of
sum(out * dout) + aux; each tensor is compared by its relative error (max |got - want| over the
largest |want|, with a noise floor for gradients), llm.c style. Exit 0 all pass, 1 a check
failed, 2 bad input.
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import attn_ref  # noqa: E402
import st_io  # noqa: E402

TOL = {"out": 5e-5, "aux": 2e-5, "grad": 2e-4}
GRAD_FLOOR = 1e-3


def rel(got, want, floor=0.0):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.max(np.abs(want)) if want.size else 0.0, floor, 1e-30)
    return float(np.max(np.abs(got - want)) / scale) if want.size else 0.0


def main():
    if len(sys.argv) != 2:
        print("usage: check_attn.py <dir>", file=sys.stderr)
        return 2
    path = os.path.join(sys.argv[1], "attn.safetensors")
    try:
        t, meta = st_io.load(path)
    except (OSError, ValueError) as e:
        print("check_attn: %s" % e, file=sys.stderr)
        return 2
    kind = meta["kind"]
    if kind not in attn_ref.KINDS:
        print("check_attn: no PyTorch function for kind '%s' in attn_ref.KINDS" % kind,
              file=sys.stderr)
        return 2
    B, T, NH, HS = (int(meta[x]) for x in ("B", "T", "NH", "HS"))
    opts = dict(kv.split("=", 1) for kv in meta["opts"].split(",") if kv)
    ctx = {"rope": meta["rope"] == "1", "rope_theta": float(meta["rope_theta"]),
           "layer": int(meta["layer"]), "n_layer": int(meta["n_layer"]),
           "write_weights": torch.tensor(t["write_weights"], dtype=torch.float64)
           if "write_weights" in t else None}
    if "prev_qkv" in t:  # the lanes' previous windows, in evaluation mode: their carry
        prev = torch.tensor(t["prev_qkv"], dtype=torch.float64).reshape(B, T, 3, NH, HS)
        pctx = dict(ctx, write_weights=None)
        with torch.no_grad():
            attn_ref.KINDS[kind](prev[:, :, 0], prev[:, :, 1], prev[:, :, 2],
                                 {n[6:]: torch.tensor(a, dtype=torch.float64)
                                  for n, a in t.items() if n.startswith("param.")}, opts, pctx)
        ctx["carry"] = pctx["carry_out"]
    qkv = torch.tensor(t["qkv"], dtype=torch.float64).reshape(B, T, 3, NH, HS)
    q, k, v = (qkv[:, :, i].clone().requires_grad_(True) for i in range(3))
    params = {n[6:]: torch.tensor(a, dtype=torch.float64, requires_grad=True)
              for n, a in t.items() if n.startswith("param.")}
    out, aux = attn_ref.KINDS[kind](q, k, v, params, opts, ctx)
    dout = torch.tensor(t["dout"], dtype=torch.float64)
    obj = (out * dout).sum() + (aux if torch.is_tensor(aux) else torch.tensor(float(aux)))
    obj.backward()
    dqkv = torch.stack([q.grad, k.grad, v.grad], dim=2).reshape(B, T, 3 * NH, HS)
    gmax = max([float(dqkv.abs().max())] + [float(p.grad.abs().max()) for p in params.values()
                                            if p.grad is not None])
    checks = [("out", rel(t["out"], out.detach().numpy()), TOL["out"]),
              ("aux", abs(float(t["aux"][0]) - float(aux)) / max(abs(float(aux)), 1e-6),
               TOL["aux"]),
              ("dqkv", rel(t["dqkv"], dqkv.numpy(), GRAD_FLOOR * gmax), TOL["grad"])]
    for n, p in params.items():
        g = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
        checks.append(("grad." + n, rel(t["grad." + n], g, GRAD_FLOOR * gmax), TOL["grad"]))
    if "carry_out" in t:
        got = attn_ref.CARRY_DECODE[kind](t["carry_out"], B, NH, HS)
        want = ctx["carry_out"]
        for i, (a, b) in enumerate(zip(got, want)):
            checks.append(("carry[%d]" % i, rel(a.numpy(), b.numpy()), TOL["out"]))
    bad = 0
    print("check_attn: %s [%s] B=%d T=%d NH=%d HS=%d rope=%s" % (kind, meta["opts"], B, T, NH,
                                                                  HS, meta["rope"]))
    for name, err, tol in checks:
        ok = err <= tol
        bad += not ok
        print("  %-14s rel err %.3e (tol %.0e) %s" % (name, err, tol, "PASS" if ok else "FAIL"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
