#!/usr/bin/env bash
# Selective Attention, experiment (b): the KV-memory reduction L*T / sum_l K_l at which a pruned
# selective model (trained with the memory loss, eps 0.1, tau 1) matches the dense baseline's
# validation loss, per context length. For each context: train the dense baseline and the
# selective model with the same recipe and tokens (configs/kjv.json; a run already in
# runs/exp/memory is reused), then mnemo prune-search --baseline (greedy per-layer budgets,
# factor 0.9, 32 validation windows), then evaluate both on the whole split. When the selective
# model is already above the baseline unpruned, the search targets its own loss + 1 % instead
# and the result says so ("target": "own+1%").
# Writes runs/exp/memory/results.jsonl and memory.png.
# usage: experiments/selective_memory.sh [STEPS] [CONTEXT...]   (default 1500; 256 512 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --experiments >/dev/null
steps=${1:-1500}
shift || true
ctxs=("$@")
[ ${#ctxs[@]} -gt 0 ] || ctxs=(256 512 1024)
out=runs/exp/memory
mkdir -p "$out"
[ -x build/mnemo ] || { echo "selective_memory: build first (cmake --build build)" >&2; exit 1; }
[ -s data/kjv/val.bin ] || { echo "selective_memory: no data/kjv (run scripts/main.sh or mnemo prepare)" >&2; exit 1; }
# results of other contexts (earlier invocations) are kept; the contexts run now are replaced
touch "$out/results.jsonl"
/usr/bin/python3 - "$out/results.jsonl" "${ctxs[@]}" <<'PY'
import json, sys
path, run = sys.argv[1], {int(c) for c in sys.argv[2:]}
keep = [l for l in open(path) if l.strip() and json.loads(l)["ctx"] not in run]
open(path, "w").writelines(keep)
PY
train() { # name kind ctx [extra flags]
    local name=$1 kind=$2 ctx=$3
    shift 3
    if [ -s "$out/$name/model.safetensors" ]; then echo "== $name: reusing"; return; fi
    echo "== $name ($steps steps)"
    ./build/mnemo train --config configs/kjv.json --attn "$kind" --n_ctx "$ctx" \
        --batch $((2048 / ctx)) --steps "$steps" --warmup $((steps / 20)) --eval_every 0 \
        --ckpt_every 0 --print_every "$steps" --out "$out/$name" "$@" 2>&1 | grep -E "^(eval|mnemo)" | tail -1
    [ -s "$out/$name/model.safetensors" ] || { echo "selective_memory: training $name failed" >&2; exit 1; }
}
for ctx in "${ctxs[@]}"; do
    train "dense_t$ctx" dense "$ctx"
    train "selective_mem_t$ctx" selective "$ctx" --mem_eps 0.1 --mem_tau 1
    echo "== prune-search, context $ctx"
    target=baseline
    if ! ./build/mnemo prune-search --model "$out/selective_mem_t$ctx/model.safetensors" \
        --data data/kjv/val.bin --baseline "$out/dense_t$ctx/model.safetensors" --factor 0.9 \
        --max_windows 32 >"$out/search_t$ctx.log" 2>&1; then
        tail -1 "$out/search_t$ctx.log"
        # unpruned, the selective model is already above the dense baseline: report the
        # reduction at 1 % over its own loss instead (marked in the results)
        target=own+1%
        ./build/mnemo prune-search --model "$out/selective_mem_t$ctx/model.safetensors" \
            --data data/kjv/val.bin --tolerance 0.01 --factor 0.9 --max_windows 32 \
            >>"$out/search_t$ctx.log" 2>&1
    fi
    tail -1 "$out/search_t$ctx.log"
    dense=$(./build/mnemo eval --model "$out/dense_t$ctx/model.safetensors" --data data/kjv/val.bin)
    full=$(./build/mnemo eval --model "$out/selective_mem_t$ctx/model.safetensors" --data data/kjv/val.bin --no_prune)
    pruned=$(./build/mnemo eval --model "$out/selective_mem_t$ctx/model.safetensors" --data data/kjv/val.bin)
    # prune-search writes the budgets as the session option budget: info's "attn options" line
    # holds "budget=K1/K2/..." (one value when every layer has the same)
    info=$(./build/mnemo info "$out/selective_mem_t$ctx/model.safetensors")
    budgets=$(awk '$1 == "attn" && $2 == "options" {print $3}' <<<"$info" | tr , '\n' | sed -n 's/^budget=//p')
    layers=$(awk '$1 == "layers" {print $2}' <<<"$info")
    /usr/bin/python3 - "$ctx" "$budgets" "$layers" "$dense" "$full" "$pruned" "$target" >>"$out/results.jsonl" <<'PY'
import json, re, sys
ctx, budgets, layers, dense, full, pruned, target = sys.argv[1:]
bpb = lambda s: float(re.search(r"([0-9.]+) bits/byte", s).group(1))
if not budgets:
    sys.exit("selective_memory: no budget in the checkpoint's attn options (did prune-search run?)")
k = [int(x) for x in budgets.split("/")]
if len(k) == 1:
    k = k * int(layers)
print(json.dumps({"ctx": int(ctx), "budgets": k, "reduction": len(k) * int(ctx) / sum(k),
                  "dense_bpb": bpb(dense), "selective_bpb": bpb(full),
                  "selective_pruned_bpb": bpb(pruned), "target": target}))
PY
    tail -1 "$out/results.jsonl"
done
/usr/bin/python3 experiments/plot.py memory "$out/results.jsonl" "$out/memory.png"
