#!/usr/bin/python3
"""Naive PyTorch causal attention: the baseline of bench/attention.c.

Materialises the (T, T) scores per head: S = Q K^T / sqrt(HS), masked to -inf above the
diagonal, P = softmax(S), O = P V; backward through autograd. Shape B=1, NH=4, HS=64 as in the
C benchmark. The forward runs in training mode (inputs require grad, so the graph keeps what
backward needs, as our forward keeps its saved activations).

Each case runs in a forked child; peak memory is the child's ru_maxrss after the runs minus
its ru_maxrss before allocating (the same method as the C program). Prints one line per case:
    T pass seconds extra_bytes busy
with pass "fwd" or "fwd+bwd", seconds the best of the repetitions and busy the process CPU time
over wall time x threads of that repetition (well below 1: the cores were shared).
"""
import argparse
import os
import resource
import sys
import time

import torch

NH, HS = 4, 64


def maxrss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def attention(q, k, v, mask):
    s = (q @ k.transpose(-2, -1)) * (1.0 / HS**0.5)
    s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def run_case(T, bwd, reps, threads):
    torch.set_num_threads(threads)
    torch.ones(8) @ torch.ones(8)  # warm the thread pool before the baseline
    base = maxrss_bytes()
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, NH, T, HS, generator=g).requires_grad_() for _ in range(3))
    dout = torch.randn(1, NH, T, HS, generator=g)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    best, busy = float("inf"), 0.0
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = attention(q, k, v, mask)
        if bwd:
            out.backward(dout)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if dt < best:
            best, busy = dt, dc / (dt * threads)
        del out
        for x in (q, k, v):
            x.grad = None
    return best, maxrss_bytes() - base, busy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", default="512,2048,8192")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", default="10,3", help="reps for T <= 1024, reps above")
    a = ap.parse_args()
    small, large = (int(x) for x in a.reps.split(","))
    for T in (int(x) for x in a.T.split(",")):
        for bwd in (0, 1):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    s, extra, busy = run_case(T, bwd, small if T <= 1024 else large, a.threads)
                    line = f"{T} {'fwd+bwd' if bwd else 'fwd'} {s:.6f} {extra} {busy:.3f}\n"
                    os.write(w, line.encode())
                except Exception as e:  # e.g. out of memory: report, do not hang the parent
                    sys.stderr.write(f"torch T={T} bwd={bwd}: {e}\n")
                os._exit(0)
            os.close(w)
            with os.fdopen(r) as f:
                sys.stdout.write(f.read())
                sys.stdout.flush()
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
