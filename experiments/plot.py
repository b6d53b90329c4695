#!/usr/bin/env python3
"""plot.py -- draws an experiment's JSON Lines results as a PNG (matplotlib, Agg backend).

usage: experiments/plot.py quality|memory|varassign|decode|infini_lm|passkey|streaming RESULTS.jsonl OUT.png
  quality: one line per run {"ctx", "model", "steps": [...], "val_bpb": [...], ...};
           validation bits per byte against steps, one panel per context length.
  memory:  one line per context {"ctx", "budgets", "reduction", "dense_bpb",
           "selective_pruned_bpb", ...}; the KV-memory reduction per context, and the budgets.
  varassign: one line per (model, budget) {"attn", "budget" (0 = unpruned), "accuracy",
           "by_group": {...}}; accuracy against the selective model's cache budget, dense as a line.
  decode:  bench_decode --out lines {"tokens", "dense_tok_s", "dense_live_bytes", "pruned_tok_s",
           "pruned_live_bytes", "budget"}; tokens/s and live KV bytes against stream length.
  infini_lm: one line per model {"model", "val_bpb", "stream_bpb", "state_bytes",
           "compression_vs_full_kv"}; bits per byte and the attention state's size.
  passkey: one line per (model, length, depth) {"model", "length", "depth", "accuracy",
           "digit_accuracy", "digits_any_order", "n"}; a heatmap per model of exact-match
           accuracy (%), depth against prompt length, each cell annotated (digit accuracies below).
  streaming: bench_stream --every lines {"tokens", "bpb", "session", ...} (one run per session
           option list) and optional {"reference_bpb", "label"} lines; bits per byte of each
           interval against the stream position, one line per session.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def quality(rows, out):
    ctxs = sorted({r["ctx"] for r in rows})
    fig, axes = plt.subplots(1, len(ctxs), figsize=(5.5 * len(ctxs), 4), squeeze=False)
    for ax, ctx in zip(axes[0], ctxs):
        for r in (r for r in rows if r["ctx"] == ctx):
            ax.plot(r["steps"], r["val_bpb"], marker=".",
                    label="%s (final %.3f)" % (r["model"], r["final_bpb"]))
        ax.set_title("KJV, context %d" % ctx)
        ax.set_xlabel("step")
        ax.set_ylabel("validation bits per byte")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def memory(rows, out):
    rows = sorted(rows, key=lambda r: r["ctx"])
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.2))
    xs = [str(r["ctx"]) for r in rows]
    a1.bar(xs, [r["reduction"] for r in rows])
    for x, r in zip(xs, rows):
        a1.text(x, r["reduction"], "%.1fx\n(%s)" % (r["reduction"], r.get("target", "baseline")),
                ha="center", va="bottom")
    a1.axhline(16, color="grey", ls="--", lw=0.8, label="16x (the paper, context 512)")
    a1.set_ylim(0, 1.25 * max(r["reduction"] for r in rows))
    a1.set_xlabel("context")
    a1.set_ylabel("KV memory reduction (L T / sum K)")
    a1.set_title("pruned selective: KV memory reduction")
    a1.legend(loc="upper left", fontsize=8)
    for r in rows:
        a2.plot(range(len(r["budgets"])), r["budgets"], marker="o", label="context %d" % r["ctx"])
    a2.set_xlabel("layer")
    a2.set_xticks(range(max(len(r["budgets"]) for r in rows)))
    a2.set_ylabel("budget K_l (keys kept)")
    a2.set_ylim(0, 1.2 * max(max(r["budgets"]) for r in rows))
    a2.set_title("per-layer budgets found by prune-search")
    a2.legend()
    a2.grid(alpha=0.3)
    w = 0.27
    for i, (key, label) in enumerate([("dense_bpb", "dense"), ("selective_bpb", "selective + memory loss"),
                                      ("selective_pruned_bpb", "selective, pruned")]):
        a3.bar([j + (i - 1) * w for j in range(len(rows))], [r[key] for r in rows], width=w, label=label)
    lo = min(min(r["dense_bpb"], r["selective_bpb"], r["selective_pruned_bpb"]) for r in rows)
    hi = max(max(r["dense_bpb"], r["selective_bpb"], r["selective_pruned_bpb"]) for r in rows)
    a3.set_ylim(lo - 0.03, hi + 0.03)
    a3.set_xticks(range(len(rows)))
    a3.set_xticklabels(xs)
    a3.set_xlabel("context")
    a3.set_ylabel("validation bits per byte (whole split)")
    a3.set_title("quality at that reduction")
    a3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def varassign(rows, out):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    sel = sorted((r for r in rows if r["attn"] == "selective" and r["budget"] > 0),
                 key=lambda r: r["budget"])
    a1.plot([r["budget"] for r in sel], [100 * r["accuracy"] for r in sel], marker="o",
            label="selective, cache pruned to K keys per layer")
    styles = {"dense": ("C1", "--"), "selective": ("C0", ":")}
    for r in rows:
        if r["budget"] == 0:
            c, ls = styles.get(r["attn"], ("C2", "-."))
            a1.axhline(100 * r["accuracy"], color=c, ls=ls,
                       label="%s, whole context (%.1f%%)" % (r["attn"], 100 * r["accuracy"]))
    a1.axhline(10, color="grey", lw=0.8, label="chance (10%)")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("selective: keys kept per layer (K)")
    a1.set_ylabel("accuracy (%)")
    a1.set_ylim(0, 102)
    a1.set_title("Variable Assignment, 1,000 held-out tasks")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    full = [r for r in rows if r["budget"] == 0]
    groups = sorted({g for r in full for g in r["by_group"]})
    w = 0.8 / max(len(full), 1)
    for i, r in enumerate(full):
        a2.bar([j + i * w for j in range(len(groups))], [100 * r["by_group"].get(g, 0) for g in groups],
               width=w, label=r["attn"])
    a2.set_xticks([j + w * (len(full) - 1) / 2 for j in range(len(groups))])
    a2.set_xticklabels(groups)
    a2.set_ylabel("accuracy (%)")
    a2.set_title("by length of the example (whole context)")
    a2.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def decode(rows, out):
    rows = sorted(rows, key=lambda r: r["tokens"])
    x = [r["tokens"] for r in rows]
    k = rows[0]["budget"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(x, [r["dense_tok_s"] for r in rows], marker="o", label="dense (every key)")
    a1.plot(x, [r["pruned_tok_s"] for r in rows], marker="o", label="selective, %d keys per layer" % k)
    a2.plot(x, [r["dense_live_bytes"] / 1024 for r in rows], marker="o", label="dense")
    a2.plot(x, [r["pruned_live_bytes"] / 1024 for r in rows], marker="o", label="selective, pruned")
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xlabel("tokens streamed")
        a.grid(alpha=0.3)
        a.legend()
    a1.set_ylabel("decode tokens/s (one token per step)")
    a1.set_ylim(bottom=0)
    a2.set_yscale("log")
    a2.set_ylabel("live attention state (KiB)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def infini_lm(rows, out):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["model"] for r in rows]
    x = range(len(rows))
    a1.bar([i - 0.2 for i in x], [r["val_bpb"] for r in rows], width=0.4, label="windows (each model's T)")
    a1.bar([i + 0.2 for i in x], [r["stream_bpb"] or 0 for r in rows], width=0.4,
           label="the whole split as one stream")
    vals = [v for r in rows for v in (r["val_bpb"], r["stream_bpb"]) if v]
    a1.set_ylim(min(vals) - 0.05, max(vals) + 0.05)
    a1.set_xticks(list(x))
    a1.set_xticklabels(names)
    a1.set_ylabel("validation bits per byte")
    a1.set_title("KJV: infini (T 512, segments of 64) vs dense (T 64)")
    a1.legend(fontsize=8)
    a2.bar(list(x), [r["state_bytes"] / 1024 for r in rows])
    for i, r in zip(x, rows):
        a2.text(i, r["state_bytes"] / 1024, "%.0f KiB\n%.1fx < full KV over 512" %
                (r["state_bytes"] / 1024, r["compression_vs_full_kv"]), ha="center", va="bottom", fontsize=8)
    a2.set_xticks(list(x))
    a2.set_xticklabels(names)
    a2.set_ylabel("attention state (KiB, all layers)")
    a2.set_ylim(0, 1.3 * max(r["state_bytes"] / 1024 for r in rows))
    a2.set_title("streaming state, any stream length")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def passkey(rows, out):
    models = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    depths = [d for d in ("start", "middle", "end") if any(r["depth"] == d for r in rows)]
    fig, axes = plt.subplots(1, len(models), figsize=(1.1 * len(lengths) * len(models) + 2, 3.4),
                             squeeze=False)
    for ax, m in zip(axes[0], models):
        cell = {(r["length"], r["depth"]): r for r in rows if r["model"] == m}
        grid = [[100 * cell[(n, d)]["accuracy"] if (n, d) in cell else float("nan")
                 for n in lengths] for d in depths]
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
        for i, d in enumerate(depths):
            for j, n in enumerate(lengths):
                r = cell.get((n, d))
                if r:
                    ax.text(j, i, "%.0f\n%.0f / %.0f" % (100 * r["accuracy"], 100 * r["digit_accuracy"],
                                                        100 * r.get("digits_any_order", float("nan"))),
                            ha="center", va="center", fontsize=7,
                            color="white" if not 0.2 <= r["accuracy"] <= 0.85 else "black")
        ax.set_xticks(range(len(lengths)))
        ax.set_xticklabels(["%dK" % (n // 1024) if n < 1 << 20 else "%dM" % (n >> 20)
                            for n in lengths])
        ax.set_yticks(range(len(depths)))
        ax.set_yticklabels(depths)
        ax.set_xlabel("prompt length (tokens)")
        ax.set_title(m, fontsize=10)
    axes[0][0].set_ylabel("pass-key depth")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.9,
                 label="exact match %\n(below: digits in place / in any order, %)")
    fig.savefig(out, dpi=110, bbox_inches="tight")


def streaming(rows, out):
    def kept(session):  # keys a session keeps: window + sinks
        kv = dict(x.split("=") for x in session.split(",") if "=" in x)
        return int(kv.get("window", 0)) + int(kv.get("sinks", 0))
    runs = {}
    for r in rows:
        if "session" in r:
            runs.setdefault(r["session"], []).append(r)
    sizes = sorted({kept(s) for s in runs}, reverse=True)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False,
                             sharey=True)
    for ax, size in zip(axes[0], sizes):
        for name, rs in sorted(runs.items()):
            if kept(name) != size:
                continue
            rs.sort(key=lambda r: r["tokens"])
            style = "--" if "absolute" in name else "-"
            ax.plot([r["tokens"] / 1000 for r in rs], [r["bpb"] for r in rs], style,
                    marker=".", label=name)
        for r in rows:
            if "reference_bpb" in r:
                ax.axhline(r["reference_bpb"], color="gray", linestyle=":", label=r["label"])
        ax.set_title("%d keys kept" % size)
        ax.set_xlabel("stream position (thousand tokens)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("bits per byte of each 2,000 tokens")
    fig.suptitle("A dense model (n_ctx 256) streamed 100K tokens past its context")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


PLOTS = {"streaming": streaming, "quality": quality, "memory": memory, "varassign": varassign, "decode": decode,
         "infini_lm": infini_lm, "passkey": passkey}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in PLOTS:
        sys.stderr.write(__doc__)
        return 2
    try:
        with open(sys.argv[2]) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        sys.stderr.write("plot.py: cannot read %s: %s\n" % (sys.argv[2], e))
        return 1
    if not rows:
        sys.stderr.write("plot.py: %s has no results\n" % sys.argv[2])
        return 1
    PLOTS[sys.argv[1]](rows, sys.argv[3])
    print("plot.py: wrote %s" % sys.argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
