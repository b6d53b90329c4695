#!/usr/bin/env python3
"""mnemo.torch's attention kinds beside PyTorch: forward + backward time and peak memory per
kind and window length, for (a) mnemo.torch.attention (the kind's C kernels through autograd),
(b) the kind written in plain PyTorch (tests/ref/attn_ref.py's function, run in float32: a
(T, T) score matrix and mask, except infini, which loops over segments) and, for dense,
(c) PyTorch's own scaled-dot-product attention (torch 1.13's F._scaled_dot_product_attention,
is_causal=True; torch 2's public scaled_dot_product_attention is not in Debian's 1.13).

Shape B=1, NH=4, HS=64 (bench/attention.c's), RoPE on (applied inside by mnemo and by the
reference; sdpa gets q and k unrotated: it has no RoPE). Each case runs in a forked child:
inputs made, then the baseline ru_maxrss, one untimed warm-up pass, then the best of the
repetitions; peak = the child's ru_maxrss after minus the baseline (what the attention added:
saved activations, outputs, gradients, workspace; the packing copy of mnemo's qkv included).
Every case is run --rounds times, the variants of a (kind, T) in alternating order, and the
best time and the smallest peak are kept. Cases whose (T, T) float32 score matrices would pass
--cap GiB (an estimate: 6 matrices of NH T^2 floats) are not run.
Run with: OMP_WAIT_POLICY=passive .venv/bin/python bench/torch_attention.py
Prints one line per case: kind variant T seconds peak_MiB, then a table of ratios.
"""
import argparse
import os
import resource
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))

import attn_ref  # noqa: E402
import mnemo  # noqa: E402
import mnemo.torch as mt  # noqa: E402

B, NH, HS = 1, 4, 64
KINDS = {"dense": {}, "selective": {}, "infini": {"segment": 512}, "window": {"w": 256},
         "block": {"b": 256, "prev": True}, "strided": {"l": 128},
         "longformer": {"w": 256, "g": 16}, "bigbird": {"block": 64, "wb": 3, "g": 64, "r": 3}}


def maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_fn(kind, variant):
    opts = KINDS[kind]
    # the kind's tensors (infini's gates), for both; n_ctx 16K as a model's (segment <= n_ctx)
    mod = mt.Attention(kind, NH, HS, n_ctx=16384, **opts)
    if variant == "mnemo":
        return mod
    if variant == "sdpa":
        def sdpa(q, k, v):
            out, _ = torch.nn.functional._scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            return out.transpose(1, 2)
        return sdpa
    text = mt.options(kind, **opts)
    ctx = {"rope": True, "rope_theta": 10000.0, "layer": 0, "n_layer": 1,
           "write_weights": None}
    params = dict(mod.named_parameters())
    return lambda q, k, v: attn_ref.KINDS[kind](q, k, v, params, text, ctx)[0]


def run_case(kind, variant, T, reps, threads):
    mnemo.set_threads(threads)
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, T, NH, HS, generator=g).requires_grad_() for _ in range(3))
    dout = torch.randn(B, T, NH, HS, generator=g)
    fn = make_fn(kind, variant)
    w = torch.randn(1, 64, NH, HS, requires_grad=True)
    fn(w, w, w).sum().backward()  # thread pools and first allocations before the baseline
    mt.attention(w, w, w).sum().backward()  # (64 tokens: a small part of any case's peak)
    base = maxrss()
    best = float("inf")
    for i in range(reps + 1):
        t0 = time.perf_counter()
        fn(q, k, v).backward(dout)
        dt = time.perf_counter() - t0
        if i:  # the first pass warms up
            best = min(best, dt)
        for x in (q, k, v):
            x.grad = None
    return best, maxrss() - base


def in_child(kind, variant, T, reps, threads):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            s, peak = run_case(kind, variant, T, reps, threads)
            os.write(w, f"{s:.6f} {peak}\n".encode())
        except Exception as e:  # out of memory, say: report it, do not hang the parent
            sys.stderr.write(f"{kind} {variant} T={T}: {e}\n")
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        line = f.read().split()
    os.waitpid(pid, 0)
    return (float(line[0]), int(line[1])) if line else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cap", type=float, default=4.0, help="GiB of (T, T) matrices at most")
    a = ap.parse_args()
    res = {}
    for rnd in range(a.rounds):
        for T in (int(x) for x in a.T.split(",")):
            for kind in a.kinds.split(","):
                variants = ["mnemo", "plain"] + (["sdpa"] if kind == "dense" else [])
                if rnd % 2:
                    variants.reverse()
                for var in variants:
                    quad = not (var == "mnemo" or (var == "plain" and kind == "infini"))
                    if quad and 6 * NH * T * T * 4 > a.cap * 2**30:
                        continue
                    r = in_child(kind, var, T, a.reps, a.threads)
                    if r is None:
                        continue
                    old = res.get((kind, var, T))
                    res[(kind, var, T)] = r if old is None else (min(old[0], r[0]),
                                                                 min(old[1], r[1]))
                    print(f"round {rnd} {kind} {var} T={T} {r[0]:.4f} s {r[1] / 2**20:.1f} MiB",
                          flush=True)
    print("\nkind T | mnemo s MiB | plain s MiB (mnemo speed-up, memory ratio) | sdpa s MiB")
    for kind in a.kinds.split(","):
        for T in (int(x) for x in a.T.split(",")):
            m, p, s = (res.get((kind, v, T)) for v in ("mnemo", "plain", "sdpa"))
            cell = lambda r: f"{r[0]:.4f} {r[1] / 2**20:.0f}" if r else "-"  # noqa: E731
            line = f"{kind} {T} | {cell(m)} | {cell(p)}"
            if m and p:
                line += f" ({p[0] / m[0]:.2f}x, {p[1] / max(m[1], 1):.1f}x)"
            if kind == "dense":
                line += f" | {cell(s)}" + (f" ({s[0] / m[0]:.2f}x, {s[1] / max(m[1], 1):.1f}x)"
                                           if m and s else "")
            print(line)


if __name__ == "__main__":
    main()
