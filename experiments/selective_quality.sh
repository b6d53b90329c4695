#!/usr/bin/env bash
# Selective Attention, experiment (a): dense vs selective at equal size, and dense with twice the
# heads, on the KJV split at contexts 256 and 512 -- the same recipe (configs/kjv.json: Muon,
# weight averaging), the same seed and the same tokens per step (2,048) for every run.
# Writes runs/exp/quality/results.jsonl (one line per run: the validation curve and the final
# full-split bits per byte) and runs/exp/quality/quality.png.
# usage: experiments/selective_quality.sh [STEPS]   (default 1500 steps per run)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1500}
out=runs/exp/quality
mkdir -p "$out"
./scripts/setup.sh --experiments >/dev/null
[ -x build/mnemo ] || { echo "selective_quality: build first (cmake --build build)" >&2; exit 1; }
[ -s data/kjv/val.bin ] || { echo "selective_quality: no data/kjv (run scripts/main.sh or mnemo prepare)" >&2; exit 1; }
: >"$out/results.jsonl"
for ctx in 256 512; do
    batch=$((2048 / ctx))
    for spec in "dense 4" "selective 4" "dense 8"; do
        set -- $spec
        kind=$1 heads=$2
        name="${kind}_h${heads}_t${ctx}"
        echo "== $name ($steps steps)"
        ./build/mnemo train --config configs/kjv.json --attn "$kind" --n_head "$heads" \
            --n_ctx "$ctx" --batch "$batch" --steps "$steps" --warmup $((steps / 20)) \
            --eval_every $(((steps + 9) / 10)) --ckpt_every 0 --print_every $(((steps + 4) / 5)) \
            --overwrite --out "$out/$name" 2>&1 | grep -E "^(step|eval|mnemo)" | tail -3
        [ -s "$out/$name/model.safetensors" ] || { echo "selective_quality: training $name failed" >&2; exit 1; }
        /usr/bin/python3 - "$out/$name/log.jsonl" "$kind" "$heads" "$ctx" "$steps" >>"$out/results.jsonl" <<'PY'
import json, sys
path, kind, heads, ctx, steps = sys.argv[1:]
ev = [json.loads(l) for l in open(path) if '"type":"eval"' in l]
label = "%s, %s heads" % (kind, heads)
print(json.dumps({"ctx": int(ctx), "model": label, "attn": kind, "heads": int(heads),
                  "train_steps": int(steps), "steps": [e["step"] for e in ev],
                  "val_bpb": [e["val_bpb"] for e in ev], "final_bpb": ev[-1]["val_bpb"]}))
PY
    done
done
/usr/bin/python3 experiments/plot.py quality "$out/results.jsonl" "$out/quality.png"
echo "== final validation bits per byte (the whole split, disjoint windows)"
/usr/bin/python3 -c "
import json
for l in open('$out/results.jsonl'):
    r = json.loads(l); print('  context %4d  %-22s %.4f' % (r['ctx'], r['model'], r['final_bpb']))"
