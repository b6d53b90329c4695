#!/usr/bin/env python3
"""plot.py -- draws an experiment's JSON Lines results as a PNG (matplotlib, Agg backend).

usage: experiments/plot.py quality|memory RESULTS.jsonl OUT.png
  quality: one line per run {"ctx", "model", "steps": [...], "val_bpb": [...], ...};
           validation bits per byte against steps, one panel per context length.
  memory:  one line per context {"ctx", "budgets", "reduction", "dense_bpb",
           "selective_pruned_bpb", ...}; the KV-memory reduction per context, and the budgets.
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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [str(r["ctx"]) for r in rows]
    a1.bar(xs, [r["reduction"] for r in rows])
    for x, r in zip(xs, rows):
        a1.text(x, r["reduction"], "%.1fx\n(%s)" % (r["reduction"], r.get("target", "baseline")),
                ha="center", va="bottom")
    a1.set_xlabel("context")
    a1.set_ylabel("KV memory reduction (L T / sum K)")
    a1.set_title("pruned selective: KV memory reduction at its target")
    for r in rows:
        a2.plot(range(len(r["budgets"])), r["budgets"], marker="o", label="context %d" % r["ctx"])
    a2.set_xlabel("layer")
    a2.set_xticks(range(max(len(r["budgets"]) for r in rows)))
    a2.set_ylabel("budget K_l (keys kept)")
    a2.set_yscale("log")
    a2.legend()
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("quality", "memory"):
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
    (quality if sys.argv[1] == "quality" else memory)(rows, sys.argv[3])
    print("plot.py: wrote %s" % sys.argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
