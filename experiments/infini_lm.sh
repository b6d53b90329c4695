#!/usr/bin/env bash
# Infini-attention, language modelling on KJV (issue 4, item 4): infini with the linear and
# the linear+delta memory update (windows of T = 512 tokens in segments of N = 64, so seven of
# eight segments read the compressive memory) against dense attention with context N = 64 --
# the same recipe (configs/kjv.json), seed and tokens per step (2,048). Reports validation bits
# per byte (the whole split, disjoint windows of each model's T), the same models reading the
# whole split as one stream through a session (bench_stream: infini's memory then spans the
# entire split), the attention state's bytes, and the compression against a full KV cache
# over the window (L * T * 2 * d_model floats).
# Writes runs/exp/infini_lm/results.jsonl and infini_lm.png.
# usage: experiments/infini_lm.sh [STEPS]   (default 1500)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1500}
T=512 N=64
out=runs/exp/infini_lm
mkdir -p "$out"
./scripts/setup.sh --experiments >/dev/null
[ -x build/mnemo ] && [ -x build/bench/bench_stream ] || { echo "infini_lm: build first (cmake --build build)" >&2; exit 1; }
[ -s data/kjv/val.bin ] || { echo "infini_lm: no data/kjv (run scripts/main.sh or mnemo prepare)" >&2; exit 1; }
: >"$out/results.jsonl"
for spec in "dense_t$N dense $N" "infini_linear infini $T linear" "infini_delta infini $T delta"; do
    set -- $spec
    name=$1 kind=$2 ctx=$3 rule=${4:-}
    flags=(--attn "$kind" --n_ctx "$ctx" --batch $((2048 / ctx)))
    [ "$kind" = infini ] && flags+=(--segment "$N" --mem_update "$rule")
    if [ ! -s "$out/$name/model.safetensors" ]; then
        echo "== $name ($steps steps)"
        ./build/mnemo train --config configs/kjv.json "${flags[@]}" --steps "$steps" \
            --warmup $((steps / 20)) --eval_every $(((steps + 9) / 10)) --ckpt_every 0 \
            --print_every $(((steps + 4) / 5)) --out "$out/$name" 2>&1 | grep -E "^(step|eval|mnemo)" | tail -2
        [ -s "$out/$name/model.safetensors" ] || { echo "infini_lm: training $name failed" >&2; exit 1; }
    else
        echo "== $name: reusing"
    fi
    ev=$(./build/mnemo eval --model "$out/$name/model.safetensors" --data data/kjv/val.bin)
    echo "$ev"
    # the whole split as one stream (dense: its own windows, since its cache stops at n_ctx)
    stream_bpb=null state=null
    if [ "$kind" = infini ]; then
        ./build/bench/bench_stream --model "$out/$name/model.safetensors" --data data/kjv/val.bin \
            --len 0 --out "$out/stream_$name.jsonl" | tail -2
        read -r stream_bpb state < <(/usr/bin/python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$out/stream_$name.jsonl')]
print(sum(r['bpb'] * (r['tokens'] - p) for r, p in zip(rows, [0] + [r['tokens'] for r in rows])) / rows[-1]['tokens'], rows[-1]['state_bytes'])")
    else
        ./build/bench/bench_stream --model "$out/$name/model.safetensors" --data data/kjv/val.bin \
            --len "$ctx" --out "$out/stream_$name.jsonl" >/dev/null
        state=$(/usr/bin/python3 -c "import json; print(json.loads(open('$out/stream_$name.jsonl').readline())['state_bytes'])")
    fi
    /usr/bin/python3 - "$name" "$kind" "$ctx" "$rule" "$ev" "$stream_bpb" "$state" "$out/$name/log.jsonl" \
        >>"$out/results.jsonl" <<'PY'
import json, re, sys
name, kind, ctx, rule, ev, stream_bpb, state, log = sys.argv[1:]
bpb = float(re.search(r"([0-9.]+) bits/byte", ev).group(1))
L, C, T = 4, 128, 512  # configs/kjv.json's shape; the full cache spans the infini window T
full = L * T * 2 * C * 4
print(json.dumps({"model": name, "attn": kind, "ctx": int(ctx), "rule": rule or None, "val_bpb": bpb,
                  "stream_bpb": None if stream_bpb == "null" else float(stream_bpb),
                  "state_bytes": int(state), "full_kv_bytes_T512": full,
                  "compression_vs_full_kv": full / int(state)}))
PY
    tail -1 "$out/results.jsonl"
done
/usr/bin/python3 experiments/plot.py infini_lm "$out/results.jsonl" "$out/infini_lm.png"
