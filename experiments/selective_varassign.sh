#!/usr/bin/env bash
# Selective Attention, experiment (c): the Variable Assignment task (experiments/varassign.py).
# Trains a dense and a selective model with the same recipe, seed and tokens (configs/kjv.json's
# shape and optimizer, context 256) on a stream of generated examples, then measures the
# accuracy of their greedy answers on 1,000 held-out tasks with `mnemo answer` -- the selective
# model also with its cache pruned to K keys per layer (K = 4 ... 64), which is where the task
# shows what selection is for: the answer needs one assignment, the rest can be dropped.
# Writes runs/exp/varassign/results.jsonl and varassign.png (or $VA_OUT/...).
# usage: [VA_OUT=DIR] [VA_TRAIN="--doc_windows"] experiments/selective_varassign.sh [STEPS [GENERATOR OPTIONS...]]
#   (default 1500 steps; options of experiments/varassign.py, e.g. --max_vars 4 --max_assign 16;
#   VA_TRAIN: extra flags for mnemo train)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1500}
shift || true
gen=("$@")
out=${VA_OUT:-runs/exp/varassign}
mkdir -p "$out/data"
./scripts/setup.sh --experiments >/dev/null
# models and data in $out were made with the generator options recorded there: refuse others
read -r -a train_flags <<<"${VA_TRAIN:-}"
opts="${gen[*]:-}${VA_TRAIN:+ | train: $VA_TRAIN}"
if [ -e "$out/options.txt" ] && [ "$(cat "$out/options.txt")" != "$opts" ]; then
    echo "selective_varassign: $out was made with options '$(cat "$out/options.txt")', not '$opts' (set VA_OUT)" >&2
    exit 1
fi
[ -x build/mnemo ] || { echo "selective_varassign: build first (cmake --build build)" >&2; exit 1; }
if [ ! -s "$out/data/train.bin" ]; then
    /usr/bin/python3 experiments/varassign.py train "$out/data/text.txt" --bytes 4000000 --seed 1 "${gen[@]}"
    ./build/mnemo prepare --out "$out/data" "$out/data/text.txt"
fi
echo "$opts" >"$out/options.txt"
/usr/bin/python3 experiments/varassign.py tasks "$out/tasks.jsonl" --n 1000 --seed 2 "${gen[@]}"
: >"$out/results.jsonl"
for kind in dense selective; do
    if [ ! -s "$out/$kind/model.safetensors" ]; then
        echo "== $kind ($steps steps)"
        ./build/mnemo train --config configs/kjv.json --train "$out/data/train.bin" \
            --val "$out/data/val.bin" --attn "$kind" --steps "$steps" --warmup $((steps / 20)) \
            --eval_every $(((steps + 9) / 10)) --ckpt_every 0 --print_every $(((steps + 4) / 5)) \
            --out "$out/$kind" "${train_flags[@]}" 2>&1 | grep -E "^(step|eval|mnemo)" | tail -2
        [ -s "$out/$kind/model.safetensors" ] || { echo "selective_varassign: training $kind failed" >&2; exit 1; }
    else
        echo "== $kind: reusing"
    fi
    budgets=(0)
    [ "$kind" = selective ] && budgets=(0 64 32 16 8 4)
    for k in "${budgets[@]}"; do
        # K = 0: the whole context (no session options; dense has no budget option)
        if [ "$k" -gt 0 ]; then prune=(--budget "$k"); else prune=(--no_prune); fi
        r=$(./build/mnemo answer --model "$out/$kind/model.safetensors" --tasks "$out/tasks.jsonl" \
            "${prune[@]}" --out "$out/answers_${kind}_k$k.jsonl")
        echo "$r"
        /usr/bin/python3 - "$kind" "$k" "$out/answers_${kind}_k$k.jsonl" "$out/$kind/log.jsonl" \
            >>"$out/results.jsonl" <<'PY'
import json, sys
kind, k, answers, log = sys.argv[1:]
rows = [json.loads(l) for l in open(answers)]
groups = {}
for r in rows:
    g = groups.setdefault(r["group"], [0, 0])
    g[0] += r["correct"]
    g[1] += 1
ev = [json.loads(l) for l in open(log) if '"type":"eval"' in l]
print(json.dumps({"attn": kind, "budget": int(k), "accuracy": sum(r["correct"] for r in rows) / len(rows),
                  "tasks": len(rows), "by_group": {g: v[0] / v[1] for g, v in sorted(groups.items())},
                  "final_val_bpb": ev[-1]["val_bpb"]}))
PY
    done
done
/usr/bin/python3 experiments/plot.py varassign "$out/results.jsonl" "$out/varassign.png"
