#!/usr/bin/env python3
"""Where does an infini model's pass-key retrieval break with length?  A probe through the
PyTorch reference (tests/ref/mnemo_ref.py), teacher-forced on one pass-key example.

For each prompt length, at the five positions that predict the key's digits, it prints
  - the model's probability of the right digit (mean over the five, and the least),
  - per layer and head: the gate sigmoid(beta) and the needle's share of the memory read,
        share = sum over needle tokens t of w_t / sum over all tokens in memory of w_t,
        w_t   = sigma(q) . sigma(k_t)            (sigma = ELU + 1)
    i.e. the weight the needle line gets in A_mem = sigma(q) M / sigma(q) z (exact for the
    linear rule; for the delta rule the weights are the same, the values are corrected),
  - and `ratio`, the mean weight of a filler token over that of a needle token: with a
    position-free memory this does not change with length, so share ~ 1 / (1 + ratio * L / n).

    passkey_probe.py MODEL.safetensors [--lengths 1024,4096,16384,65536] [--depth middle]
                     [--seed 7] [--json] [--scan L [--vary_keys]]

With --scan L, it sweeps instead the needle's and the question's alignment to the segments:
the prompts of L, L + 90, ..., L + 31 * 90 bytes (one more filler sentence each; 90 = 26 mod 64,
so the 32 prompts put the question at every even offset of a segment of 64) at each depth, and
prints per depth how many are answered exactly (every digit the argmax, which is what greedy
decoding returns) and which are not: prompt length, the question's end and the needle's first
key copy as offsets within their segments. The key is the same in every prompt (the one of
--seed) unless --vary_keys: a key whose digits repeat is harder when the answer straddles a
boundary (after one, the local attention holds neither the question nor the digits already
given, and "what follows 4" may have two answers in the memory).
"""
import argparse
import json
import math
import os
import random
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import mnemo_ref  # noqa: E402
import passkey  # noqa: E402

BOS = 256


def probe(model, length, depth, seed):
    rng = random.Random(seed)
    prompt, answer = passkey.example(rng, length, passkey.DEPTHS[depth])
    key = answer.strip()
    text = (prompt + answer).encode()
    toks = torch.tensor([[BOS] + list(text)], dtype=torch.long)
    T = toks.shape[1]
    # needle span (token index = byte index + 1 for the BOS)
    nstart = prompt.find(passkey.needle(key)) + 1
    nend = nstart + len(passkey.needle(key))
    # positions whose next token is one of the key's digits
    first = 1 + len(prompt) + 1          # index of the first digit token
    qpos = torch.arange(first - 1, first - 1 + len(key))
    cfg = model.cfg
    N = cfg.segment or cfg.n_ctx
    seg0 = (qpos[0].item() // N) * N     # tokens before this are in memory at the answer
    records = []

    def infini_probe(self, q, k, v):
        sig = lambda x: F.elu(x) + 1     # noqa: E731
        sq = sig(q[0, qpos])             # (5,NH,HS)
        sk = sig(k[0, :seg0])            # (seg0,NH,HS)
        w = torch.einsum("pnh,tnh->pnt", sq, sk)                     # (5,NH,seg0)
        tot = w.sum(-1)
        ndl = w[..., nstart:min(nend, seg0)].sum(-1)
        mask = torch.ones(seg0, dtype=torch.bool)
        mask[nstart:nend] = False
        mask[:1 + len(passkey.PREFIX)] = False                      # prefix apart
        fill = w[..., mask].mean(-1)
        nmean = w[..., nstart:min(nend, seg0)].mean(-1) if nend <= seg0 else torch.full_like(fill, float("nan"))
        records.append({"gate": torch.sigmoid(self.kind).tolist(),
                        "share": (ndl / tot).mean(0).tolist(),
                        "ratio": (fill / nmean).mean(0).tolist()})
        return orig(self, q, k, v)

    orig = mnemo_ref.Attention.infini
    mnemo_ref.Attention.infini = infini_probe
    try:
        with torch.no_grad():
            logits = model(toks)[0]                                  # (T,Vp)
    finally:
        mnemo_ref.Attention.infini = orig
    p = torch.softmax(logits[qpos].float(), -1)
    want = toks[0, qpos + 1]
    pr = p[torch.arange(len(key)), want]
    return {"length": length, "depth": depth, "T": T, "key": key,
            "p_mean": pr.mean().item(), "p_min": pr.min().item(),
            "exact_argmax": bool((p.argmax(-1) == want).all()),
            "needle_in_memory": nend <= seg0,
            "layers": records}


def scan(model, L0, seed, vary_keys):
    N = model.cfg.segment or model.cfg.n_ctx
    for depth in passkey.DEPTHS:
        bad = []
        for k in range(32):
            s = seed + k if vary_keys else seed
            r = probe(model, L0 + 90 * k, depth, s)
            if not r["exact_argmax"]:
                prompt, answer = passkey.example(random.Random(s), L0 + 90 * k, passkey.DEPTHS[depth])
                bad.append("%d (question end %d, key %d%s)" % (
                    len(prompt), len(prompt) % N, (prompt.find(answer.strip()) + 1) % N,
                    ", " + answer.strip() if vary_keys else ""))
        print("scan %d..%d %-6s exact %2d/32%s" % (L0, L0 + 31 * 90, depth, 32 - len(bad),
                                                    "; not: " + ", ".join(bad) if bad else ""),
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--lengths", default="1024,4096,16384,65536")
    ap.add_argument("--depth", default="middle", choices=list(passkey.DEPTHS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--scan", type=int, default=0, metavar="L",
                    help="sweep 32 alignments from prompts of L bytes (see above)")
    ap.add_argument("--vary_keys", action="store_true",
                    help="--scan: a new key for every prompt (seeds SEED, SEED + 1, ...) rather "
                         "than one key for all")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = mnemo_ref.load_model(a.model, dtype=torch.float32)
    if model.cfg.attn_kind != "infini":
        sys.exit(f"passkey_probe: {a.model}: attn_kind is {model.cfg.attn_kind}, not infini")
    model.cfg.n_ctx = 1 << 30            # positions are per segment; the window is no limit
    if a.scan:
        scan(model, a.scan, a.seed, a.vary_keys)
        return
    for L in (int(x) for x in a.lengths.split(",")):
        r = probe(model, L, a.depth, a.seed)
        if a.json:
            print(json.dumps(r), flush=True)
            continue
        print(f"length {r['length']:>8} {r['depth']:<6} p(digit) mean {r['p_mean']:.3f} "
              f"min {r['p_min']:.3f} exact {r['exact_argmax']}", flush=True)
        for i, rec in enumerate(r["layers"]):
            hs = " ".join(f"h{h}: g {g:.2f} share {s:.3f} ratio {q:.2e}" for h, (g, s, q) in
                          enumerate(zip(rec["gate"], rec["share"], rec["ratio"])))
            print(f"  layer {i}  {hs}")


if __name__ == "__main__":
    main()
