#!/usr/bin/env bash
# Issue 14 item 6, the kinds table's last columns: for every kind's KJV model of
# experiments/kinds_table.sh (configs/kjv.json's shape, n_ctx 256), and for dense and selective
# also as bounded streaming sessions, (a) the attention state a session holds after 256, 1K, 16K
# and 128K tokens, and (b) pass-key accuracy by prompt length after one short fine-tune, the same
# for every kind.
#
# Rows: each kind as trained (its checkpoint's options, no session options), plus three sessions
# that stream a full-cache kind in bounded memory: dense with window=252,sinks=4 (StreamingLLM,
# the 256 keys of its context), dense with window=60,sinks=4 (64 keys, a quarter of the context
# like the pattern kinds' w=64 / b=64) and selective with budget=64 (the 64 least penalised keys
# per layer; experiments/selective_decode.sh's budget).
#
# (a) State: bench_stream feeds the KJV validation split (cycling) through one session of the
# row's options, in chunks of 256, one thread, to 128K tokens, and reports the session's live
# attention-state bytes (mnemo_session_live_bytes) every 256 tokens; the table takes 256, 1K, 16K
# and 128K. A session that cannot hold a stream (a full cache at n_ctx) stops with its error:
# "-" past that point. Also the bits per byte over the stream (the mean of the 256-token
# intervals), in the JSON only.
#
# (b) Pass-key protocol (experiments/passkey.py's format and scorer; experiments/passkey.sh's
# stage 1, shortened; the long infini recipe there takes hours):
#   fine-tune: each kind's model (mnemo train --init, its options kept) on pass-key examples of
#     250-255 bytes (the 245-byte prompt with no filler: the key's two copies start 80 and 60
#     bytes before the answer in every example; passkey.py train --min_len 250 --max_len 255
#     --seed 3, 3M bytes), windows of 256 starting at an example (--doc_windows), 8 per step,
#     rounds of KP_STEPS (800) steps, Muon 2e-3 cosine to 2e-4, warmup 30, no weight
#     averaging, one thread (1.6M tokens, 3-7 minutes on the loaded 2-core machine); round r
#     starts from round r-1's model and reads the examples in its own order (seed 1336 + r).
#     A kind stops after the first round whose last 100 steps' mean loss is at most KP_FLOOR
#     (0.05 nats per byte: the copy floor is ~0.045, copying nothing ~0.13), or after
#     KP_ROUNDS (4) rounds. The same data, orders and rule for every kind; the steps it took
#     are a column of the table (how fast a kind learns to retrieve).
#   evaluation: KP_N (10) prompts per length (KP_LENGTHS: 256, 1K, 4K, 16K bytes) and depth
#     (start, middle, end; at 256 there is room for no filler, so the three depths are the same
#     prompt shape), passkey.py tasks --seed 99; greedy answers through a session (mnemo answer,
#     chunks of 1024, one thread) with the row's session options; exact match of the 5 digits.
#     A row whose session cannot hold a prompt (mnemo answer cuts it to n_ctx and marks it)
#     gets "-" for that length: it does not reach it.
#
# The models come from KP_BASE (default runs/exp/kinds, where kinds_table.sh writes them); a
# kind whose checkpoint is not at train.step KP_BASE_STEPS (6000) yet is skipped with a note, so
# the script can be run again as models finish (fine-tunes, answers and state runs are reused
# while newer than what they depend on). Writes, in KP_OUT (default runs/exp/kinds), passkey.jsonl
# (per row, length and depth: passkey.py score's line with the row's name as the model),
# state.jsonl (per row: live state bytes at each length, the bound, the stream's bits per byte,
# the fine-tune's steps and final loss), the fine-tuned models in <kind>/passkey[<round>]/, and
# prints the table in markdown; then, when KP_BASE has kinds_table.sh's results.jsonl, the
# whole table (experiments/kinds_report.py: table.jsonl, and kinds.png with matplotlib).
# usage: [KP_BASE=DIR] [KP_OUT=DIR] [KP_BASE_STEPS=6000] [KP_STEPS=800] [KP_ROUNDS=4]
#        [KP_FLOOR=0.05] [KP_N=10]
#        [KP_LENGTHS=256,...] [KP_KINDS="dense selective ..."] experiments/kinds_passkey.sh
set -euo pipefail
cd "$(dirname "$0")/.."
base=${KP_BASE:-runs/exp/kinds}
base_steps=${KP_BASE_STEPS:-6000}
steps=${KP_STEPS:-800}
rounds=${KP_ROUNDS:-4}
floor=${KP_FLOOR:-0.05}
n=${KP_N:-10}
lengths=${KP_LENGTHS:-256,1024,4096,16384}
kinds=${KP_KINDS:-dense selective infini window block strided longformer bigbird}
out=${KP_OUT:-runs/exp/kinds}
export OMP_WAIT_POLICY=passive
[ -x build/mnemo ] && [ -x build/bench/bench_stream ] ||
    { echo "kinds_passkey: build first (cmake --build build)" >&2; exit 1; }
[ -s data/kjv/val.bin ] ||
    { echo "kinds_passkey: no data/kjv/val.bin (run kinds_table.sh)" >&2; exit 1; }
mkdir -p "$out/passkey/data"

# row: name, kind, session options
rows=()
for k in $kinds; do
    rows+=("$k $k -")
    case $k in
        dense) rows+=("dense/w252+4 dense window=252,sinks=4"
                      "dense/w60+4 dense window=60,sinks=4") ;;
        selective) rows+=("selective/budget64 selective budget=64") ;;
    esac
done

d=$out/passkey/data/s1
if [ ! -s "$d/train.bin" ]; then
    /usr/bin/python3 experiments/passkey.py train "$d.txt" --bytes 3000000 --min_len 250 \
        --max_len 255 --seed 3
    ./build/mnemo prepare --out "$d" --val_frac 0.02 "$d.txt" >/dev/null
    rm -f "$d.txt"
fi
tasks=$out/passkey/tasks.jsonl
/usr/bin/python3 experiments/passkey.py tasks "$tasks.tmp" --lengths "$lengths" --n "$n" --seed 99
# keep the file (and its time) when the tasks are the same, so that answers can be reused
if cmp -s "$tasks.tmp" "$tasks"; then rm "$tasks.tmp"; else mv "$tasks.tmp" "$tasks"; fi
ntask=$(wc -l <"$tasks")

step_of() { ./build/mnemo info "$1" | awk '$1=="train.step"{print $2}'; }
declare -A ready
for k in $kinds; do
    m=$base/$k/model.safetensors
    if [ -s "$m" ] && [ "$(step_of "$m")" = "$base_steps" ]; then ready[$k]=1
    else echo "kinds_passkey: $k: no model at step $base_steps in $base yet, skipped" >&2; fi
done

# mean training loss over a fine-tune's last 100 steps
last_loss() {
    /usr/bin/python3 -c "
import json, sys
s = [json.loads(l) for l in open(sys.argv[1])]
s = [x['loss'] for x in s if x.get('type') == 'step'][-100:]
print('%.4f' % (sum(s) / len(s)))" "$1"
}
# the fine-tune: rounds of $steps steps, each from the previous round's model (round 1 from the
# KJV model) with the examples in another order (seed 1337 + round), until the last 100 steps'
# mean loss is at most $floor or $rounds rounds are done; round r is in $out/$k/passkey (r = 1)
# or $out/$k/passkey<r>, and $out/$k/passkey_final names the last one
for k in $kinds; do
    [ -n "${ready[$k]:-}" ] || continue
    prev=$base/$k/model.safetensors
    for ((r = 1; r <= rounds; r++)); do
        ft=$out/$k/passkey; [ $r -eq 1 ] || ft+=$r
        if [ ! -s "$ft/model.safetensors" ] || [ "$prev" -nt "$ft/model.safetensors" ] ||
           [ "$(step_of "$ft/model.safetensors")" != "$steps" ]; then
            echo "== $k: pass-key fine-tune, round $r, $steps steps"
            ./build/mnemo train --init "$prev" --seq 256 --batch 8 --steps "$steps" \
                --train "$d/train.bin" --val "$d/val.bin" --doc_windows \
                --optimizer muon --lr 0.002 --lr_min 0.0002 --warmup 30 --seed $((1336 + r)) \
                --ema 0 --threads 1 --eval_every "$steps" --ckpt_every 0 --print_every 100 \
                --out "$ft" --overwrite 2>&1 | grep -E "^(step|eval)" | tail -2
            [ -s "$ft/model.safetensors" ] ||
                { echo "kinds_passkey: fine-tuning $k failed" >&2; exit 1; }
        fi
        prev=$ft/model.safetensors
        loss=$(last_loss "$ft/log.jsonl")
        echo "== $k: round $r, loss over its last 100 steps $loss"
        /usr/bin/python3 -c "import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))" \
            "$loss" "$floor" && break
    done
    echo "$ft" >"$out/$k/passkey_final"
done

for r in "${rows[@]}"; do
    set -- $r
    name=$1 k=$2 so=$3 tag=${1//\//_}
    [ -n "${ready[$k]:-}" ] || continue
    m=$base/$k/model.safetensors ft=$(cat "$out/$k/passkey_final")/model.safetensors
    opt=(); [ "$so" = - ] || opt=(--attn_opt "$so")
    st=$out/passkey/stream_$tag.jsonl
    if [ ! -s "$st" ] || [ "$m" -nt "$st" ]; then
        echo "== $name: state over a 128K-token stream"
        # a full cache stops the stream at n_ctx with its error (kept in .err): that is the
        # measurement
        ./build/bench/bench_stream --model "$m" --data data/kjv/val.bin --len 131072 --chunk 256 \
            --every 256 --threads 1 ${opt[@]+"${opt[@]}"} --out "$st.tmp" >/dev/null \
            2>"$st.err" || true
        mv "$st.tmp" "$st"
    fi
    ans=$out/passkey/answers_$tag.jsonl
    if [ -s "$ans" ] && [ "$ans" -nt "$tasks" ] && [ "$ans" -nt "$ft" ] &&
       [ "$(wc -l <"$ans")" -eq "$ntask" ]; then
        echo "== $name: reusing the answers to $ntask tasks"
    else
        echo "== $name: answering $ntask tasks"
        ./build/mnemo answer --model "$ft" --tasks "$tasks" --chunk 1024 --threads 1 --no_prune \
            ${opt[@]+"${opt[@]}"} --out "$ans" 2>&1 | grep -Ev "^answer: [0-9]+ tasks, " | tail -2
    fi
done

# results: passkey.jsonl (per row, length, depth) and state.jsonl (per row), then the table
: >"$out/passkey.jsonl"
: >"$out/state.jsonl"
for r in "${rows[@]}"; do
    set -- $r
    name=$1 k=$2 so=$3 tag=${1//\//_}
    [ -n "${ready[$k]:-}" ] || continue
    /usr/bin/python3 experiments/passkey.py score "$out/passkey/answers_$tag.jsonl" \
        --model "$name" >>"$out/passkey.jsonl"
    fin=$(cat "$out/$k/passkey_final")
    nr=${fin##*/passkey}; nr=${nr:-1}
    /usr/bin/python3 - "$name" "$k" "$so" "$out/passkey/stream_$tag.jsonl" \
        "$fin/log.jsonl" "$nr" <<'PY' >>"$out/state.jsonl"
import json, sys
name, kind, so, stream, log, rounds = sys.argv[1:]
pts = [json.loads(l) for l in open(stream)]
err = open(stream + ".err").read().strip().splitlines()
steps = [json.loads(l) for l in open(log)]
steps = [s for s in steps if s.get("type") == "step"]
print(json.dumps({
    "row": name, "kind": kind, "session": "" if so == "-" else so,
    "tokens_reached": pts[-1]["tokens"] if pts else 0, "stopped": err[-1] if err else "",
    "state_bound_bytes": pts[-1]["state_bytes"] if pts else None,
    "state_live_bytes": {str(p["tokens"]): p["state_live_bytes"] for p in pts
                         if p["tokens"] in (256, 1024, 16384, 131072)},
    "stream_bpb": sum(p["bpb"] for p in pts) / len(pts) if pts else None,
    "pk_ft_rounds": int(rounds), "pk_ft_steps": int(rounds) * steps[-1]["step"],
    "pk_ft_loss_last100": sum(s["loss"] for s in steps[-100:]) / len(steps[-100:])}))
PY
done
/usr/bin/python3 - "$out/state.jsonl" "$out/passkey.jsonl" <<'PY'
import json, sys
state = [json.loads(l) for l in open(sys.argv[1])]
pk = [json.loads(l) for l in open(sys.argv[2])]
lengths = sorted({p["length"] for p in pk})
marks = (256, 1024, 16384, 131072)

def size(b):
    if b is None:
        return "-"
    return "%.0f KiB" % (b / 1024) if b < 1024 ** 2 else "%.2f MiB" % (b / 1024 ** 2)

def k(n):
    return "%dK" % (n // 1024) if n >= 1024 else str(n)

print("| kind | session | " + " | ".join("state at %s" % k(t) for t in marks) + " | " +
      " | ".join("pass-key %s" % k(n) for n in lengths) + " | state bound | fine-tune steps | loss |")
print("|---|---|" + "---|" * (len(marks) + len(lengths) + 3))
for s in state:
    cells = []
    for n in lengths:
        c = {p["depth"]: p for p in pk if p["model"] == s["row"] and p["length"] == n}
        if any(p["n_cut"] for p in c.values()):
            cells.append("-")
        else:
            cells.append("/".join("%.0f" % (100 * c[d]["accuracy"])
                                  for d in ("start", "middle", "end")))
    bound = size(s["state_bound_bytes"])
    if s["stopped"]:
        bound += " (%s at %d)" % ("full" if "full" in s["stopped"] else "stopped",
                                  s["tokens_reached"])
    print("| %s | %s | %s | %s | %s | %d | %.3f |" % (
        s["kind"], s["session"] or "-",
        " | ".join(size(s["state_live_bytes"].get(str(t))) for t in marks),
        " | ".join(cells), bound, s["pk_ft_steps"], s["pk_ft_loss_last100"]))
print("\npass-key cells: exact match %% with the needle at the start / middle / end "
      "(%d prompts each)" % pk[0]["n"] if pk else "")
PY
# the whole table (kinds_table.sh's columns joined with these) and its figure
if [ -s "$base/results.jsonl" ]; then
    echo
    png=(); /usr/bin/python3 -c "import matplotlib" 2>/dev/null && png=(--png "$out/kinds.png")
    /usr/bin/python3 experiments/kinds_report.py "$out" --base "$base" --jsonl "$out/table.jsonl" \
        ${png[@]+"${png[@]}"}
fi
