#!/usr/bin/env python3
"""plot.py -- draws an experiment's JSON Lines results as a PNG (matplotlib, Agg backend).

usage: experiments/plot.py quality RESULTS.jsonl OUT.png
  quality: one line per run {"ctx", "model", "steps": [...], "val_bpb": [...], ...};
           validation bits per byte against steps, one panel per context length.
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


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("quality",):
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
    quality(rows, sys.argv[3])
    print("plot.py: wrote %s" % sys.argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
