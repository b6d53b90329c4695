#!/usr/bin/env python3
"""The kinds table in one piece (issue 14, item 6): joins what experiments/kinds_table.sh and
experiments/kinds_passkey.sh wrote -- results.jsonl (validation bits per byte, training tokens/s),
models.jsonl (bench_models: a training step and one-token decode beside dense), state.jsonl
(live attention-state bytes along a 128K-token stream) and passkey.jsonl (exact match by length
and depth) -- into one markdown table on stdout, one JSON line per row (--jsonl) and a figure
(--png): validation bits per byte, state bytes against the stream length, and pass-key accuracy
by length.

usage: kinds_report.py [DIR] [--base BASE] [--jsonl OUT.jsonl] [--png OUT.png]
       DIR: where kinds_passkey.sh wrote (default runs/exp/kinds); BASE: where kinds_table.sh
       wrote (default DIR; kinds_passkey.sh's KP_BASE)
"""
import argparse
import json
import os
import sys

MARKS = (1024, 16384, 131072)  # the table's columns; the figure also shows 256
PLOT_MARKS = (256,) + MARKS
DEPTHS = ("start", "middle", "end")


def read_jsonl(path, required=True):
    if not os.path.exists(path):
        if required:
            sys.exit("kinds_report: no %s (run experiments/kinds_table.sh and "
                     "experiments/kinds_passkey.sh first)" % path)
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def size(b):
    if b is None:
        return "–"
    if b < 1024 ** 2:
        return "%.0f KiB" % (b / 1024)
    return "%.2f MiB" % (b / 1024 ** 2)


def short(n):
    return "%dK" % (n // 1024) if n >= 1024 else str(n)


def join(d, base):
    results = {r["kind"]: r for r in read_jsonl(os.path.join(base, "results.jsonl"))}
    bench = {}
    for b in read_jsonl(os.path.join(base, "models.jsonl")):
        bench[b["kind"]] = b  # the last run of each kind
    state = read_jsonl(os.path.join(d, "state.jsonl"), required=False)
    pk = read_jsonl(os.path.join(d, "passkey.jsonl"), required=False)
    lengths = sorted({p["length"] for p in pk})
    rows = []
    # a kind's own row first, then its session rows (state.jsonl's order); kinds without
    # pass-key results yet get their training columns only
    seen = set()
    for s in state + [{"row": k, "kind": k, "session": ""} for k in results]:
        if s["row"] in seen or s["kind"] not in results:
            continue
        seen.add(s["row"])
        r, b = results[s["kind"]], bench.get(s["kind"], {})
        row = {"row": s["row"], "kind": s["kind"], "opts": r["opts"],
               "session": s.get("session", ""), "steps": r["steps"], "params": r["params"],
               "val_bpb": r["val_bpb"], "train_tok_s": r["train_tok_s"],
               "step_vs_dense": b.get("step_vs_dense"), "decode_tok_s": b.get("decode_tok_s"),
               "decode_vs_dense": b.get("decode_vs_dense")}
        if "state_live_bytes" in s:
            row["state_bytes"] = {str(t): s["state_live_bytes"].get(str(t)) for t in PLOT_MARKS}
            row["state_bound_bytes"] = s["state_bound_bytes"]
            row["stream_stopped_at"] = s["tokens_reached"] if s["stopped"] else None
            row["passkey_ft_steps"] = s.get("pk_ft_steps")
            row["passkey_ft_loss"] = s.get("pk_ft_loss_last100")
        cells = {}
        for n in lengths:
            c = {p["depth"]: p for p in pk if p["model"] == s["row"] and p["length"] == n}
            if len(c) == len(DEPTHS):
                cells[str(n)] = (None if any(p["n_cut"] for p in c.values())
                                 else [c[dp]["accuracy"] for dp in DEPTHS])
        row["passkey"] = cells
        rows.append(row)
    return rows, lengths


def markdown(rows, lengths):
    head = ["kind", "options", "session", "val bits/byte", "train tok/s", "step / dense",
            "decode tok/s", "decode / dense"]
    head += ["state at %s" % short(t) for t in MARKS]
    head += ["pass-key %s" % short(n) for n in lengths] + ["fine-tune steps"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["kind"], r["opts"] or "–", r["session"] or "–"]
        # a session row shares its kind's training and bench columns: ditto marks
        for key, fmt in (("val_bpb", "%.4f"), ("train_tok_s", "{:,}"), ("step_vs_dense", "%.2f"),
                         ("decode_tok_s", "{:,.0f}"), ("decode_vs_dense", "%.2f")):
            v = r[key]
            cells.append("″" if r["session"] else "–" if v is None else
                         fmt.format(v) if "{" in fmt else fmt % v)
        st = r.get("state_bytes", {})
        cells += [size(st.get(str(t))) for t in MARKS]
        for n in lengths:
            c = r["passkey"].get(str(n), "?")
            cells.append("–" if c is None else "?" if c == "?" else
                         "/".join("%.0f" % (100 * a) for a in c))
        cells.append(str(r.get("passkey_ft_steps", "–")))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows, lengths, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 5))
    own = [r for r in rows if not r["session"]]
    names = [r["kind"] for r in own]
    ax[0].barh(names, [r["val_bpb"] for r in own], color="tab:blue")
    lo = min(r["val_bpb"] for r in own)
    ax[0].set_xlim(lo - 0.1, max(r["val_bpb"] for r in own) + 0.03)
    for i, r in enumerate(own):
        ax[0].text(r["val_bpb"] + 0.003, i, "%.4f" % r["val_bpb"], va="center", fontsize=8)
    ax[0].invert_yaxis()
    ax[0].set_xlabel("validation bits per byte (lower is better)")
    ax[0].set_title("KJV, %d steps, equal parameters and tokens" % own[0]["steps"])

    for r in rows:
        st = r.get("state_bytes")
        if not st:
            continue
        pts = [(t, st[str(t)]) for t in PLOT_MARKS if st.get(str(t)) is not None]
        label = r["kind"] + (" (%s)" % r["session"] if r["session"] else "")
        if len(pts) > 1:
            ax[1].plot([p[0] for p in pts], [p[1] / 1024 for p in pts], "o-", label=label)
        elif pts:
            ax[1].plot([p[0] for p in pts], [p[1] / 1024 for p in pts], "x", markersize=9,
                       label=label + ": full at n_ctx")
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("tokens streamed")
    ax[1].set_ylabel("attention state held (KiB)")
    ax[1].set_title("attention state along a stream")
    ax[1].legend(fontsize=7)

    labels, grid = [], []
    for r in rows:
        labels.append(r["kind"] + (" (%s)" % r["session"] if r["session"] else ""))
        line = []
        for n in lengths:
            c = r["passkey"].get(str(n))
            line += [float("nan")] * 3 if c is None else c
        grid.append(line)
    if lengths:
        im = ax[2].imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="viridis")
        ax[2].set_yticks(range(len(labels)))
        ax[2].set_yticklabels(labels, fontsize=7)
        ax[2].set_xticks(range(3 * len(lengths)))
        ax[2].set_xticklabels(["%s %s" % (short(n), dp[0]) for n in lengths for dp in DEPTHS],
                              fontsize=7, rotation=90)
        ax[2].set_title("pass-key exact match (blank: not reached)")
        fig.colorbar(im, ax=ax[2])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default="runs/exp/kinds")
    ap.add_argument("--base", help="where kinds_table.sh wrote (default: DIR)")
    ap.add_argument("--jsonl", help="write one JSON line per row here")
    ap.add_argument("--png", help="write the figure here (needs matplotlib)")
    a = ap.parse_args()
    rows, lengths = join(a.dir, a.base or a.dir)
    if not rows:
        sys.exit("kinds_report: %s/results.jsonl has no rows" % (a.base or a.dir))
    print(markdown(rows, lengths))
    if a.jsonl:
        with open(a.jsonl, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if a.png:
        plot(rows, lengths, a.png)


if __name__ == "__main__":
    main()
