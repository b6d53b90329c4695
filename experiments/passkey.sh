#!/usr/bin/env bash
# Infini-attention, pass-key retrieval (issue 4, item 3; the paper's format, experiments/passkey.py).
# Training recipe, inputs of at most 4,096 tokens, continuing from the KJV models of
# experiments/infini_lm.sh (infini with the delta rule, segments of 64; dense with context 64):
#   stage 1: examples of ~250 bytes (no filler), windows of 256, 32 per step: the key sits one
#            segment or two before the question, and the model learns to copy it in order
#   stage 2: examples of 242-1,017 bytes, windows of 1,024, 8 per step
#   stage 3: examples of 242-4,089 bytes, windows of 4,096, 4 per step
# every window starts at an example (mnemo train --doc_windows) and holds no other pass key
# (stages 2 and 3 pad each line to the window); Muon at 2e-3, cosine to 2e-4 in every stage.
# The dense model takes the same stages, so its window grows to 4,096 (RoPE).
# Evaluation: greedy answers through a session (`mnemo answer`) for lengths 1K ... 1M and depths
# start/middle/end; dense sees what fits its window (longer prompts are cut to their tail).
# Writes $PK_OUT/results.jsonl (exact match and digit accuracy per cell) and passkey.png.
# usage: [PK_OUT=DIR] [PK_N=10] [PK_LENGTHS=1024,...] [PK_MODELS="infini dense"]
#        experiments/passkey.sh [STEPS1 STEPS2 STEPS3]     (default 600 800 400)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=("${1:-600}" "${2:-800}" "${3:-400}")
out=${PK_OUT:-runs/exp/passkey}
n=${PK_N:-10}
lengths=${PK_LENGTHS:-1024,4096,16384,65536,262144,1048576}
models=${PK_MODELS:-infini dense}
base=runs/exp/infini_lm
mkdir -p "$out/data"
./scripts/setup.sh --experiments >/dev/null
[ -x build/mnemo ] || { echo "passkey: build first (cmake --build build)" >&2; exit 1; }
for m in $models; do
    b=$base/$([ "$m" = infini ] && echo infini_delta || echo dense_t64)
    [ -s "$b/model.safetensors" ] || { echo "passkey: no $b (run experiments/infini_lm.sh first)" >&2; exit 1; }
done

# stage: name, window, batch, shortest and longest example, line padding, bytes of text, seed
stages=("s1 256 32 250 255 0 3000000 3" "s2 1024 8 242 1017 1024 8000000 4"
        "s3 4096 4 242 4089 4096 8000000 5")
for i in 0 1 2; do
    set -- ${stages[$i]}
    d=$out/data/$1
    if [ ! -s "$d/train.bin" ]; then
        /usr/bin/python3 experiments/passkey.py train "$d.txt" --bytes "$7" \
            --min_len "$4" --max_len "$5" --window "$6" --seed "$8"
        ./build/mnemo prepare --out "$d" --val_frac 0.02 "$d.txt" >/dev/null
        rm -f "$d.txt"
    fi
done

for m in $models; do
    prev=$base/$([ "$m" = infini ] && echo infini_delta || echo dense_t64)/model.safetensors
    for i in 0 1 2; do
        set -- ${stages[$i]}
        run=$out/$m/$1
        if [ ! -s "$run/model.safetensors" ]; then
            echo "== $m, stage $1: windows of $2, ${steps[i]} steps"
            ./build/mnemo train --init "$prev" --seq "$2" --batch "$3" --steps "${steps[i]}" \
                --train "$out/data/$1/train.bin" --val "$out/data/$1/val.bin" --doc_windows \
                --optimizer muon --lr 0.002 --lr_min 0.0002 --warmup 30 --threads 2 \
                --eval_every "${steps[i]}" --ckpt_every 100 --print_every 50 \
                --out "$run" 2>&1 | grep -E "^(step|eval)" | tail -2
            [ -s "$run/model.safetensors" ] || { echo "passkey: training $m $1 failed" >&2; exit 1; }
        fi
        prev=$run/model.safetensors
    done
done

/usr/bin/python3 experiments/passkey.py tasks "$out/tasks.jsonl.tmp" --lengths "$lengths" --n "$n" --seed 99
mv "$out/tasks.jsonl.tmp" "$out/tasks.jsonl"
: >"$out/results.jsonl"
for m in $models; do
    echo "== $m: answering $(wc -l <"$out/tasks.jsonl") tasks"
    ./build/mnemo answer --model "$out/$m/s3/model.safetensors" --tasks "$out/tasks.jsonl" \
        --chunk 1024 --out "$out/answers_$m.jsonl" | tail -1
    /usr/bin/python3 experiments/passkey.py score "$out/answers_$m.jsonl" --model "$m" >>"$out/results.jsonl"
done
/usr/bin/python3 - "$out/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
lengths = sorted({r["length"] for r in rows})
print("exact match %, digits in place %, digits in any order %")
print("%-17s" % "" + "".join("%16d" % n for n in lengths))
for m in dict.fromkeys(r["model"] for r in rows):
    for d in ("start", "middle", "end"):
        cells = {r["length"]: r for r in rows if r["model"] == m and r["depth"] == d}
        print("%-8s %-8s" % (m, d) + "".join(
            "%16s" % ("%3.0f %3.0f %3.0f" % (100 * cells[n]["accuracy"], 100 * cells[n]["digit_accuracy"],
                                             100 * cells[n]["digits_any_order"])
                      if n in cells else "-") for n in lengths))
PY
/usr/bin/python3 experiments/plot.py passkey "$out/results.jsonl" "$out/passkey.png"
