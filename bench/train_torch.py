#!/usr/bin/python3
"""train_torch -- the PyTorch side of mnemo's training-throughput benchmark.

Builds the mnemo model (pre-norm GPT, RoPE or learned positions, tied embedding, GELU-tanh MLP;
the same math as tests/ref/mnemo_ref.py) in float32 at a given shape, feeds random tokens and
times full training steps -- forward, backward, global-norm clipping, AdamW (weight decay on
ndim >= 2 parameters) -- after a warm-up. Prints one JSON line:
    {"tokens_per_s": ..., "config": {...}}

By default it runs the fastest honest configuration measured on our 2-core AVX2 machines
(docs/internals/reference-tests.md has the measurements); --plain runs the naive one (PyTorch
defaults apart from the thread count). Options that must be set before the process starts
(the BLAS library, OMP_WAIT_POLICY) are applied by re-executing this script once with the
environment changed. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are passed through untouched.

usage: /usr/bin/python3 bench/train_torch.py --layers 4 --d 256 --heads 4 --ctx 256 \\
           --batch 8 --vocab 256 --threads 2 --steps 10 --warmup 3 [--plain] [--verify]
"""

import argparse
import json
import math
import os
import sys
import time

OPENBLAS_OPENMP_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
# glibc malloc: keep freed blocks up to 32 MiB (the largest threshold glibc accepts) in the heap
# and never trim it, so the per-step activation buffers are not mmap'ed, faulted in and
# unmapped again on every step.
GLIBC_MALLOC_TUNED = ("glibc.malloc.mmap_threshold=33554432:"
                      "glibc.malloc.trim_threshold=4294967296")
EXEC_MARK = "MNEMO_TRAIN_TORCH_EXEC"

# The fastest configuration measured (see the doc); --plain uses PLAIN instead.
FAST = {"blas": "openmp", "omp_wait": "active", "attn": "baddbmm", "adamw": "loop",
        "clip": "builtin", "malloc": "tuned"}
PLAIN = {"blas": "default", "omp_wait": "default", "attn": "matmul", "adamw": "loop",
         "clip": "builtin", "malloc": "default"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d", type=int, default=256, help="d_model")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ctx", type=int, default=256, help="sequence length T (= n_ctx)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--vocab-padded", type=int, default=0, help="0: vocab rounded up to 16")
    p.add_argument("--pos", choices=("rope", "learned"), default="rope")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plain", action="store_true",
                   help="naive configuration (PyTorch defaults except the thread count)")
    p.add_argument("--blas", choices=("default", "openmp", "pthread"),
                   help="libblas.so.3 to load: the system default, or Debian's OpenBLAS "
                        "OpenMP / pthread build via LD_LIBRARY_PATH")
    p.add_argument("--omp-wait", choices=("default", "passive", "active"),
                   help="OMP_WAIT_POLICY for PyTorch's (and OpenMP OpenBLAS's) threads")
    p.add_argument("--attn", choices=("matmul", "baddbmm", "sdpa"),
                   help="attention: matmul + masked_fill + softmax + matmul; baddbmm with a "
                        "precomputed additive mask; or torch 1.13's _scaled_dot_product_attention")
    p.add_argument("--adamw", choices=("loop", "foreach"), help="torch.optim.AdamW foreach flag")
    p.add_argument("--clip", choices=("builtin", "foreach"),
                   help="clip_grad_norm_ or a _foreach_norm/_foreach_mul_ version")
    p.add_argument("--malloc", choices=("default", "tuned", "jemalloc"),
                   help="allocator: glibc as is; glibc with a 32 MiB mmap threshold and no "
                        "trimming (GLIBC_TUNABLES); or jemalloc via LD_PRELOAD (libjemalloc2)")
    p.add_argument("--verify", action="store_true",
                   help="before timing, check loss and gradients against tests/ref/mnemo_ref.py "
                        "in float64 on the same weights and batch")
    a = p.parse_args(argv)
    base = PLAIN if a.plain else FAST
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.vocab_padded == 0:
        a.vocab_padded = (a.vocab + 15) // 16 * 16
    for f in ("layers", "d", "heads", "ctx", "batch", "vocab", "threads", "steps"):
        if getattr(a, f) <= 0:
            p.error("--%s must be positive" % f)
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    if a.d % a.heads or (a.pos == "rope" and (a.d // a.heads) % 2):
        p.error("--d must be a multiple of --heads (with an even head size for rope)")
    if a.vocab_padded < a.vocab:
        p.error("--vocab-padded must be >= --vocab")
    return a


def wanted_env(a):
    """The environment the process must start with for these options."""
    env = dict(os.environ)
    t = str(a.threads)
    env["OMP_NUM_THREADS"] = t
    env["OPENBLAS_NUM_THREADS"] = t
    if a.omp_wait != "default":
        env["OMP_WAIT_POLICY"] = a.omp_wait.upper()
    else:
        env.pop("OMP_WAIT_POLICY", None)
    # bench_train (C) sets GOMP_SPINCOUNT for mnemo; PyTorch keeps the wait policy chosen here
    env.pop("GOMP_SPINCOUNT", None)
    libdirs = [d for d in env.get("LD_LIBRARY_PATH", "").split(":")
               if d and "openblas-" not in d]
    if a.blas in ("openmp", "pthread"):
        libdirs.insert(0, "/usr/lib/x86_64-linux-gnu/openblas-" + a.blas)
    if libdirs:
        env["LD_LIBRARY_PATH"] = ":".join(libdirs)
    else:
        env.pop("LD_LIBRARY_PATH", None)
    if a.malloc == "tuned":
        old = env.get("GLIBC_TUNABLES", "")
        if GLIBC_MALLOC_TUNED not in old:      # keep tunables the caller set
            env["GLIBC_TUNABLES"] = old + ":" + GLIBC_MALLOC_TUNED if old else GLIBC_MALLOC_TUNED
    elif a.malloc == "jemalloc":
        env["LD_PRELOAD"] = JEMALLOC
    return env


def ensure_env(a, argv):
    """Re-execute once so that the dynamic linker and libgomp see the wanted environment."""
    env = wanted_env(a)
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
            "LD_LIBRARY_PATH", "GLIBC_TUNABLES", "LD_PRELOAD")
    if all(env.get(k) == os.environ.get(k) for k in keys):
        return
    if os.environ.get(EXEC_MARK):
        sys.exit("train_torch: error: environment still differs after re-exec")
    if a.blas == "openmp" and not os.path.exists(os.path.join(OPENBLAS_OPENMP_DIR,
                                                              "libblas.so.3")):
        sys.exit("train_torch: error: %s/libblas.so.3 not found (apt-get install "
                 "libopenblas0-openmp) -- or pass --blas default" % OPENBLAS_OPENMP_DIR)
    if a.malloc == "jemalloc" and not os.path.exists(JEMALLOC):
        sys.exit("train_torch: error: %s not found (apt-get install libjemalloc2) -- or pass "
                 "--malloc default" % JEMALLOC)
    env[EXEC_MARK] = "1"
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + argv, env)


def loaded_blas():
    """Path of the libblas / libopenblas actually mapped into this process."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "blas" in os.path.basename(path):
                libs.add(os.path.realpath(path))
    return sorted(libs)


def machine_busy_s():
    """CPU seconds spent busy by the whole machine so far (all processes, all cores), or
    None where /proc/stat is unreadable."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def main(argv):
    a = parse_args(argv)
    ensure_env(a, argv)

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    C, NH, T, B, V, Vp = a.d, a.heads, a.ctx, a.batch, a.vocab, a.vocab_padded
    HS = C // NH

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(C, 3 * C)
            self.proj = nn.Linear(C, C)

        def forward(self, x, rope, mask):
            qkv = self.qkv(x)                                         # (B,T,3C)
            q, k, v = qkv.view(B, T, 3, NH, HS).permute(2, 0, 3, 1, 4)  # (B,NH,T,HS) each
            if rope is not None:
                cos, sin = rope                                       # (T,HS/2)
                q = torch.cat((q[..., :HS // 2] * cos - q[..., HS // 2:] * sin,
                               q[..., :HS // 2] * sin + q[..., HS // 2:] * cos), -1)
                k = torch.cat((k[..., :HS // 2] * cos - k[..., HS // 2:] * sin,
                               k[..., :HS // 2] * sin + k[..., HS // 2:] * cos), -1)
            scale = 1.0 / math.sqrt(HS)
            if a.attn == "matmul":
                att = (q @ k.transpose(-2, -1)) * scale
                att = att.masked_fill(~mask, float("-inf")).softmax(-1)
                y = att @ v
            elif a.attn == "baddbmm":
                att = torch.baddbmm(mask, q.reshape(B * NH, T, HS),
                                    k.reshape(B * NH, T, HS).transpose(1, 2), alpha=scale)
                y = torch.bmm(att.softmax(-1), v.reshape(B * NH, T, HS)).view(B, NH, T, HS)
            else:
                y = F._scaled_dot_product_attention(q, k, v, None, 0.0, False, True)[0]
            return self.proj(y.transpose(1, 2).reshape(B, T, C))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(C, 4 * C)
            self.proj = nn.Linear(4 * C, C)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(C)
            self.attn = Attention()
            self.ln2 = nn.LayerNorm(C)
            self.mlp = Mlp()

        def forward(self, h, rope, mask):
            h = h + self.attn(self.ln1(h), rope, mask)
            return h + self.mlp(self.ln2(h))

    class Table(nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(rows, C) * 0.02)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = Table(Vp)
            if a.pos == "learned":
                self.wpe = Table(T)
            self.blocks = nn.ModuleList(Block() for _ in range(a.layers))
            self.lnf = nn.LayerNorm(C)
            for n, p in self.named_parameters():
                if n.endswith("proj.weight") or n.endswith("qkv.weight") or \
                        n.endswith("fc.weight"):
                    nn.init.normal_(p, std=0.02)
            with torch.no_grad():
                self.wte.weight[V:] = 0.0
            # position tables and the mask, built once (not timed)
            half = HS // 2
            inv = torch.pow(torch.tensor(10000.0, dtype=torch.float64),
                            -2.0 * torch.arange(half, dtype=torch.float64) / HS)
            ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
            self.rope = (ang.cos().float(), ang.sin().float()) if a.pos == "rope" else None
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            if a.attn == "baddbmm":             # additive float mask, broadcast over B*NH
                self.mask = torch.zeros(T, T).masked_fill(~causal, float("-inf"))
                self.mask = self.mask.expand(B * NH, T, T)
            else:
                self.mask = causal

        def forward(self, x, y):
            h = self.wte.weight[x]
            if a.pos == "learned":
                h = h + self.wpe.weight
            for blk in self.blocks:
                h = blk(h, self.rope, self.mask)
            logits = self.lnf(h) @ self.wte.weight.t()                # (B,T,Vp)
            if Vp != V:
                logits = logits[..., :V]
            return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))

    model = Model()
    params = list(model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                            foreach=(a.adamw == "foreach"))
    grad_clip = 1.0
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))

    if a.verify:
        verify(model, x, y, a)

    def clip():
        if a.clip == "builtin":
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            return
        grads = [p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if norm > grad_clip:
            torch._foreach_mul_(grads, grad_clip / norm.item())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        clip()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    t0, c0, m0 = time.perf_counter(), time.process_time(), machine_busy_s()
    for _ in range(a.steps):
        loss = step()
    dt, cpu, m1 = time.perf_counter() - t0, time.process_time() - c0, machine_busy_s()
    # cores kept busy by other processes while we timed: the figure is only meaningful when
    # this is near 0 (the machines are shared with other work)
    other = None if m0 is None or m1 is None else round(max(0.0, (m1 - m0 - cpu) / dt), 2)
    if not math.isfinite(loss.item()):
        sys.exit("train_torch: error: non-finite loss")
    tps = B * T * a.steps / dt
    cfg = {"layers": a.layers, "d": C, "heads": NH, "ctx": T, "batch": B, "vocab": V,
           "vocab_padded": Vp, "pos": a.pos, "threads": a.threads, "steps": a.steps,
           "warmup": a.warmup, "plain": a.plain, "blas": a.blas, "omp_wait": a.omp_wait,
           "attn": a.attn, "adamw": a.adamw, "clip": a.clip, "malloc": a.malloc,
           "blas_loaded": loaded_blas(), "torch": torch.__version__,
           "params": sum(p.numel() for p in params), "s_per_step": round(dt / a.steps, 4),
           # process CPU seconds per wall second: about `threads` when the cores are ours
           # and busy, lower when other processes take the cores (or threads sleep)
           "cpu_per_wall": round(cpu / dt, 2), "other_load": other,
           "final_loss": loss.item(),
           "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "OMP_WAIT_POLICY", "OPENBLAS_CORETYPE",
                                              "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH",
                                              "GLIBC_TUNABLES", "LD_PRELOAD")
                   if k in os.environ}}
    print(json.dumps({"tokens_per_s": round(tps, 1), "config": cfg}))
    return 0


def verify(model, x, y, a):
    """The benchmark model computes what the reference computes (float64, same weights)."""
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                    "ref"))
    import mnemo_ref as R
    cfg = R.Config(a.layers, a.d, a.heads, a.ctx, a.vocab, a.vocab_padded, a.pos)
    tensors = {n: p.detach().numpy().astype(np.float32) for n, p in model.named_parameters()}
    ref = R.model_from_tensors(cfg, tensors, torch.float64)
    _, lref = ref(x, y)
    lref.backward()
    model.zero_grad(set_to_none=True)
    loss = model(x, y)
    loss.backward()
    worst = 0.0
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        worst = max(worst, ((p.grad.double() - q.grad).abs().max() /
                            q.grad.abs().max().clamp_min(1e-12)).item())
    rel = abs(loss.item() - lref.item()) / abs(lref.item())
    model.zero_grad(set_to_none=True)
    if rel > 1e-5 or worst > 1e-4:
        sys.exit("train_torch: error: verify failed: loss rel %.2e, worst grad rel %.2e"
                 % (rel, worst))
    sys.stderr.write("train_torch: verify ok: loss rel %.1e, worst grad rel %.1e\n"
                     % (rel, worst))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
