#!/usr/bin/env bash
# Infini-attention, pass-key retrieval (issue 4, item 3; the paper's format, experiments/passkey.py).
# Training recipe, inputs of at most 4,096 tokens, continuing from the KJV models of
# experiments/infini_lm.sh (infini with the delta rule, segments of 64; dense with context 64):
#   stage 1:  examples of ~250 bytes (no filler), windows of 256, 32 per step, 600 steps: the key
#             sits one segment or two before the question, and the model learns to copy it
#   stage 1b: infini only, stage 1 again for 1,500 steps: the memory first returns the key's
#             digits in any order and needs this long to return them in order (dense is at the
#             loss floor after stage 1)
#   stage 2:  examples of 242-1,017 bytes, windows of 1,024, 8 per step, 800 steps
#   stage 3:  examples of 242-4,089 bytes, windows of 4,096, 4 per step, 400 steps
#   stage 4:  infini only: examples of 242-1,017 bytes (half of them with the key exactly at the
#             start or the end), windows of 1,024, 8 per step, 1,500 steps, memory writes
#             weighted by [1, 16384] log-uniform (--mem_repeat; docs/internals/infini.md s. 6):
#             the dilution of streams far longer than 4K, so that retrieval carries to 1M
#   stage 5:  infini only: stage 4 again on new examples, 2,000 steps, weights in [1, 65536]
#   stage 6:  infini only: segments of 256 instead of 64 (mnemo train --init --segment), examples
#             of 242-2,041 bytes (half at the start or end), windows of 2,048, 4 per step, 1,200
#             steps, weights in [1, 65536]: with segments of 64 a needle of 59 bytes or the answer
#             often straddles a segment boundary, and a fifth of the alignments then fail
#   stage 7:  infini only: segments of 512, stage 6's data in another order, 1,200 steps: with
#             segments of 256 the needle or the answer still straddles a boundary in about 7 % of
#             the alignments (experiments/passkey_probe.py --scan), with 512 in about 3 %
#   stage 8:  infini only: examples of 242-1,530 bytes (half at the start or end) led by 0-511
#             spaces, in half of them as many as put a segment boundary inside the needle or at
#             the answer (passkey.py train --jitter 512 --boundary_frac 0.5); windows of 2,048,
#             4 per step, 1,200 steps: without it the examples meet the segments at a few
#             alignments only (the lengths go by whole filler sentences), and the boundary cases
#             are rare in training
# every window starts at an example (mnemo train --doc_windows) and holds no other pass key
# (stages 2-8 pad each line to the window); Muon at 2e-3, cosine to 2e-4 in stages 1-3, 1e-3 to
# 1e-4 in stages 4-8.
# The dense model's window grows with the stages to 4,096 (RoPE).
# Evaluation: greedy answers through a session (`mnemo answer`) for lengths 1K ... 1M and depths
# start/middle/end; dense sees what fits its window (longer prompts are cut to their tail).
# Trained stages and complete answers are reused. Writes $PK_OUT/results.jsonl (per cell: exact
# match, digits in place, digits in any order) and passkey.png.
# usage: [PK_OUT=DIR] [PK_N=10] [PK_LENGTHS=1024,...] [PK_MODELS="infini dense"] experiments/passkey.sh
set -euo pipefail
cd "$(dirname "$0")/.."
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

# data: name, shortest and longest example, line padding, bytes of text, seed, edge fraction,
# jitter (leading spaces, up to one segment), fraction of lines aligned to put a segment
# boundary in the needle or at the answer
for spec in "s1 250 255 0 3000000 3 0 0 0" "s2 242 1017 1024 8000000 4 0 0 0" \
            "s3 242 4089 4096 8000000 5 0 0 0" "s4 242 1017 1024 8000000 6 0.5 0 0" \
            "s5 242 1017 1024 8000000 7 0.5 0 0" "s6 242 2041 2048 8000000 8 0.5 0 0" \
            "s8 242 1530 2048 8000000 9 0.5 512 0.5"; do
    set -- $spec
    d=$out/data/$1
    if [ ! -s "$d/train.bin" ]; then
        /usr/bin/python3 experiments/passkey.py train "$d.txt" --bytes "$5" \
            --min_len "$2" --max_len "$3" --window "$4" --seed "$6" --edge_frac "$7" \
            --jitter "$8" --boundary_frac "$9"
        ./build/mnemo prepare --out "$d" --val_frac 0.02 "$d.txt" >/dev/null
        rm -f "$d.txt"
    fi
done

# stage: name, data, window, batch, steps, models, lr, lr_min, write weights (mem_repeat, 0 =
# off; infini only), segment (0: the previous stage's: no --segment, since with --init a
# --segment 0 would mean segments of the whole window), seed (data order)
stages=("s1 s1 256 32 600 infini,dense 0.002 0.0002 0 0 1337"
        "s1b s1 256 32 1500 infini 0.002 0.0002 0 0 1337"
        "s2 s2 1024 8 800 infini,dense 0.002 0.0002 0 0 1337"
        "s3 s3 4096 4 400 infini,dense 0.002 0.0002 0 0 1337"
        "s4 s4 1024 8 1500 infini 0.001 0.0001 16384 0 1337"
        "s5 s5 1024 8 2000 infini 0.001 0.0001 65536 0 1337"
        "s6 s6 2048 4 1200 infini 0.001 0.0001 65536 256 1337"
        "s7 s6 2048 4 1200 infini 0.001 0.0001 65536 512 2"
        "s8 s8 2048 4 1200 infini 0.001 0.0001 65536 0 1337")
declare -A final
for m in $models; do
    prev=$base/$([ "$m" = infini ] && echo infini_delta || echo dense_t64)/model.safetensors
    for spec in "${stages[@]}"; do
        set -- $spec
        case ",$6," in *",$m,"*) ;; *) continue ;; esac
        run=$out/$m/$1
        if [ ! -s "$run/model.safetensors" ]; then
            echo "== $m, stage $1: windows of $3, $5 steps"
            # infini's options (none for dense): mem_repeat is given at every stage (a training
            # option the checkpoint carries, so 0 turns it off), the segment only to change it
            kopt=()
            if [ "$m" = infini ]; then
                kopt+=(--mem_repeat "$9")
                if [ "${10}" != 0 ]; then kopt+=(--segment "${10}"); fi
            fi
            ./build/mnemo train --init "$prev" --seq "$3" --batch "$4" --steps "$5" \
                --train "$out/data/$2/train.bin" --val "$out/data/$2/val.bin" --doc_windows \
                --optimizer muon --lr "$7" --lr_min "$8" ${kopt[@]+"${kopt[@]}"} \
                --seed "${11}" --warmup 30 --threads 2 \
                --eval_every "$5" --ckpt_every 100 --print_every 50 \
                --out "$run" 2>&1 | grep -E "^(step|eval)" | tail -2
            [ -s "$run/model.safetensors" ] || { echo "passkey: training $m $1 failed" >&2; exit 1; }
        fi
        prev=$run/model.safetensors
    done
    final[$m]=$prev
done

/usr/bin/python3 experiments/passkey.py tasks "$out/tasks.jsonl.tmp" --lengths "$lengths" --n "$n" --seed 99
# keep the file (and its time) when the tasks are the same, so that answers can be reused
if cmp -s "$out/tasks.jsonl.tmp" "$out/tasks.jsonl"; then rm "$out/tasks.jsonl.tmp"
else mv "$out/tasks.jsonl.tmp" "$out/tasks.jsonl"; fi
ntask=$(wc -l <"$out/tasks.jsonl")
: >"$out/results.jsonl"
for m in $models; do
    ans=$out/answers_$m.jsonl model=${final[$m]}
    if [ -s "$ans" ] && [ "$ans" -nt "$out/tasks.jsonl" ] && [ "$ans" -nt "$model" ] &&
       [ "$(wc -l <"$ans")" -eq "$ntask" ]; then
        echo "== $m: reusing the answers to $ntask tasks"
    else
        echo "== $m: answering $ntask tasks"
        ./build/mnemo answer --model "$model" --tasks "$out/tasks.jsonl" --chunk 1024 --out "$ans" | tail -1
    fi
    /usr/bin/python3 experiments/passkey.py score "$ans" --model "$m" >>"$out/results.jsonl"
done
/usr/bin/python3 - "$out/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
lengths = sorted({r["length"] for r in rows})
print("exact match %, digits in place %, digits in any order % (a random 5-digit guess: 0, 10, 35)")
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
