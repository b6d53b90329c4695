#!/usr/bin/env bash
# Issue 14 item 6: every attention kind on KJV at equal parameters and tokens (the main job's
# shape and recipe, configs/kjv.json, with STEPS steps), one table: validation bits per byte
# (disjoint windows), training tokens/s (median of the log), and, from bench_models at the same
# shape (random weights, one thread, the same run for every kind), a training step and one-token
# decode beside dense, and the attention state a session holds (mnemo info: the bound, and
# whether it holds for any stream length). Writes runs/exp/kinds/results.jsonl and prints the
# table. experiments/kinds_passkey.sh adds the state along a stream and pass-key accuracy by
# length, and prints the whole table (experiments/kinds_report.py). Runs stopped on the way
# resume from their last checkpoint (every 500 steps) when the script runs again.
# usage: experiments/kinds_table.sh [STEPS]      (default 6000, the main job's)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6000}
out=runs/exp/kinds
mkdir -p "$out"
[ -x build/mnemo ] || { echo "kinds_table: build first (cmake --build build)" >&2; exit 1; }
[ -s data/kjv/train.bin ] || { bible -f "Gen1:1-Rev22:21" | ./build/mnemo prepare --out data/kjv -; }
# kind and options: every kind at the main job's context of 256 with a pattern a quarter of it
kinds=("dense|" "selective|mem_eps=0.1" "infini|segment=64,mem_update=delta"
       "window|w=64" "block|b=64,prev=true" "strided|l=16" "longformer|w=64,g=4"
       "bigbird|block=32,g=32,r=2")
res="$out/results.jsonl"
: >"$res"
spec=""
for kv in "${kinds[@]}"; do
    k=${kv%%|*} o=${kv#*|}
    [ -n "$o" ] && spec+="$k:$o;"
    # a run of this length already done is reused; one stopped on the way (a checkpoint every
    # 500 steps) is resumed; anything else starts over
    done_steps=$( [ -s "$out/$k/model.safetensors" ] &&
        ./build/mnemo info "$out/$k/model.safetensors" | awk '$1=="train.step"{print $2}' || true)
    max_steps=$( [ -s "$out/$k/log.jsonl" ] && sed -n 's/.*"type":"start".*"max_steps":\([0-9]*\).*/\1/p' \
        "$out/$k/log.jsonl" | tail -1 || true)
    if [ "$done_steps" != "$steps" ]; then
        if [ -n "$done_steps" ] && [ "$max_steps" = "$steps" ] &&
           [ -s "$out/$k/train_state.$done_steps.safetensors" ]; then
            how=(--resume)
        else
            how=(--overwrite)
        fi
        ./build/mnemo train --config configs/kjv.json --out "$out/$k" "${how[@]}" --steps "$steps" \
            --eval_every 0 --ckpt_every 500 --attn "$k" ${o:+--attn_opt "$o"} --print_every 500
    fi
    bpb=$(./build/mnemo eval --model "$out/$k/model.safetensors" --data data/kjv/val.bin |
          sed -n 's/.*| \([0-9.]*\) bits\/byte$/\1/p')
    tps=$(/usr/bin/python3 -c "
import json,statistics,sys
r=[json.loads(l) for l in open('$out/$k/log.jsonl')]
print(round(statistics.median([x['tokens_per_s'] for x in r if x.get('type')=='step' and x['step']>10])))")
    state=$(./build/mnemo info "$out/$k/model.safetensors" | sed -n 's/^state *//p')
    params=$(./build/mnemo info "$out/$k/model.safetensors" | awk '$1=="parameters"{print $2}')
    echo "{\"kind\":\"$k\",\"opts\":\"$o\",\"steps\":$steps,\"params\":$params,\"val_bpb\":$bpb,\"train_tok_s\":$tps,\"state\":\"$state\"}" >>"$res"
done
OMP_WAIT_POLICY=passive ./build/bench/bench_models --n_layer 4 --d_model 128 --n_head 4 --T 256 \
    --B 8 --steps 5 --prompt 128 --decode 127 --threads 1 --opts "$spec" --out "$out/models.jsonl"
/usr/bin/python3 - "$res" "$out/models.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bench = {}
for l in open(sys.argv[2]):
    b = json.loads(l)
    bench[b["kind"]] = b          # the last run of each kind
print("| kind | options | params | val bits/byte | train tok/s | step / dense | decode tok/s | decode / dense | session state |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    b = bench.get(r["kind"], {})
    print("| %s | %s | %d | %.4f | %d | %.2f | %.0f | %.2f | %s |" % (
        r["kind"], r["opts"] or "-", r["params"], r["val_bpb"], r["train_tok_s"],
        b.get("step_vs_dense", 0), b.get("decode_tok_s", 0), b.get("decode_vs_dense", 0),
        r["state"]))
PY
