#!/usr/bin/env bash
# CLI behaviour: a small end-to-end run (prepare, train, resume, eval, generate, info) and bad
# input, which must give one clear error line on stderr and a non-zero exit, never a crash.
# usage: cli_test.sh PATH/TO/mnemo
set -u
MNEMO=$1
W=$(mktemp -d "${TMPDIR:-/tmp}/mnemo_cli.XXXXXX")
trap 'rm -rf "$W"' EXIT
pass=0; fail=0

ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

# expect_fail NAME PATTERN CMD...: exit status 1..125, stderr is exactly one line matching PATTERN
expect_fail() {
    local name=$1 pat=$2; shift 2
    "$@" >"$W/out" 2>"$W/err"; local rc=$?
    local lines; lines=$(wc -l <"$W/err")
    if [ $rc -eq 0 ] || [ $rc -gt 125 ]; then bad "$name: exit $rc (want 1..125)"; cat "$W/err"; return; fi
    if [ "$lines" -ne 1 ]; then bad "$name: $lines stderr lines (want 1)"; cat "$W/err"; return; fi
    if ! grep -q -E -e "$pat" "$W/err"; then bad "$name: stderr does not match /$pat/"; cat "$W/err"; return; fi
    ok
}
expect_ok() {
    local name=$1; shift
    if "$@" >"$W/out" 2>"$W/err"; then ok; else bad "$name: exit $?"; cat "$W/err"; fi
}

# --- a tiny end-to-end run --------------------------------------------------------------------
for i in $(seq 1 300); do echo "In the beginning God created the heaven and the earth. $i"; done >"$W/text.txt"
expect_ok "prepare" "$MNEMO" prepare --out "$W/data" "$W/text.txt"
grep -q "train.bin" "$W/out" || bad "prepare: no summary line"
TINY=(--n_layer 1 --d_model 32 --n_head 2 --n_ctx 32 --batch 2 --warmup 2 --eval_windows 2 --threads 1)
expect_ok "train" "$MNEMO" train --train "$W/data/train.bin" --val "$W/data/val.bin" --out "$W/run" \
    "${TINY[@]}" --steps 4 --ckpt_every 2
[ -s "$W/run/model.safetensors" ] && [ -s "$W/run/train_state.safetensors" ] || bad "train: no checkpoint"
grep -q '"type":"step"' "$W/run/log.jsonl" || bad "train: no JSON Lines step record"
grep -q '"type":"eval"' "$W/run/log.jsonl" || bad "train: no JSON Lines eval record"
grep -q "tok/s" "$W/err" || bad "train: no progress line"
expect_ok "resume" "$MNEMO" train --train "$W/data/train.bin" --val "$W/data/val.bin" --out "$W/run" \
    "${TINY[@]}" --steps 6 --ckpt_every 2 --resume
grep -q "starting at step 4" "$W/err" || bad "resume: did not continue from step 4"
printf '{"train": "%s", "out": "%s", "n_layer": 1, "d_model": 32, "n_head": 2, "n_ctx": 32, "batch": 2, "steps": 2, "lr": 0.001}\n' \
    "$W/data/train.bin" "$W/run2" >"$W/cfg.json"
expect_ok "train --config" "$MNEMO" train --config "$W/cfg.json" --steps 1
grep -q "step      1/1" "$W/err" || bad "train --config: flag did not override the file"
expect_ok "eval" "$MNEMO" eval --model "$W/run/model.safetensors" --data "$W/data/val.bin"
grep -q "bits/byte" "$W/out" || bad "eval: no bits/byte"
expect_ok "eval --stride" "$MNEMO" eval --model "$W/run/model.safetensors" --data "$W/data/val.bin" --stride 8
grep -q "bits/byte" "$W/out" || bad "eval --stride: no bits/byte"
expect_ok "generate" "$MNEMO" generate --model "$W/run/model.safetensors" --prompt "In the" --n 40 --seed 3
[ "$(head -c 6 "$W/out")" = "In the" ] || bad "generate: output does not start with the prompt"
expect_ok "generate greedy" "$MNEMO" generate --model "$W/run/model.safetensors" --n 100 --temperature 0
expect_ok "info" "$MNEMO" info "$W/run/model.safetensors"
grep -q "train.step *6" "$W/out" || bad "info: no train.step 6"
grep -q -E "^state +[0-9.]+ KiB at n_ctx" "$W/out" || bad "info: no dense state bound"
expect_ok "train --optimizer muon" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_mu" \
    "${TINY[@]}" --steps 3 --optimizer muon
expect_ok "info muon" "$MNEMO" info "$W/run_mu/model.safetensors"
grep -q "train.optimizer *muon" "$W/out" || bad "info: no train.optimizer muon"
expect_fail "resume with another optimizer" "optimizer muon, not adamw" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/run_mu" "${TINY[@]}" --steps 5 --resume
expect_ok "bench --optimizer muon" "$MNEMO" bench --n_layer 1 --d_model 32 --n_head 2 --n_ctx 32 \
    --batch 2 --steps 1 --warmup 0 --threads 1 --optimizer muon
grep -q "muon step / adamw step" "$W/out" || bad "bench --optimizer muon: no ratio line"
expect_ok "bench --attn infini" "$MNEMO" bench --n_layer 1 --d_model 32 --n_head 2 --n_ctx 32 \
    --batch 2 --steps 1 --warmup 0 --threads 1 --attn infini --segment 8 --mem_update delta
grep -q "infini step / dense step" "$W/out" || bad "bench --attn infini: no ratio against dense"
expect_fail "bench --segment without infini" "need --attn infini" "$MNEMO" bench --segment 8
expect_ok "train --doc_windows" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_doc" \
    "${TINY[@]}" --steps 2 --ckpt_every 1 --doc_windows
expect_fail "resume without --doc_windows" "trained with doc_windows" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/run_doc" "${TINY[@]}" --steps 4 --resume
expect_ok "resume with --doc_windows" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_doc" \
    "${TINY[@]}" --steps 4 --resume --doc_windows
expect_ok "train --attn selective" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_sel" \
    "${TINY[@]}" --steps 3 --attn selective
expect_ok "train --mem_eps" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_mem" \
    "${TINY[@]}" --steps 2 --attn selective --mem_eps 0.1 --print_every 1
grep -q "| mem " "$W/err" || bad "train --mem_eps: no memory loss in the progress line"
grep -q '"mem_loss":0.[0-9]*[1-9]' "$W/run_mem/log.jsonl" || bad "train --mem_eps: no mem_loss in the log"
expect_ok "train --attn infini" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_inf" \
    "${TINY[@]}" --steps 3 --attn infini --segment 8 --mem_update delta --gate_lr_mult 10
grep -q "infini: segment 8, delta memory update" "$W/err" || bad "train --attn infini: no segment line"
expect_ok "train infini --mem_repeat" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/run_rep" "${TINY[@]}" --steps 2 --attn infini --segment 8 --mem_repeat 100
grep -q "writes weighted by \[1, mem_repeat\]" "$W/err" || bad "train --mem_repeat: not announced"
expect_fail "--mem_repeat with dense" "mem_repeat needs the infini" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --mem_repeat 100
expect_ok "train --init on longer windows" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/run_inf64" --init "$W/run_inf/model.safetensors" --seq 64 --batch 2 --steps 2 --threads 1
grep -q "windows of 64 tokens (the checkpoint's n_ctx was 32)" "$W/err" || bad "--init --seq: no note"
"$MNEMO" info "$W/run_inf64/model.safetensors" | grep -q "n_ctx *64" || bad "--init --seq: n_ctx not 64"
expect_ok "train --init --segment" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_inf16" \
    --init "$W/run_inf/model.safetensors" --segment 16 --batch 2 --steps 2 --threads 1
grep -q "segments of 16 tokens (the checkpoint's were 8)" "$W/err" || bad "--init --segment: no note"
"$MNEMO" info "$W/run_inf16/model.safetensors" | grep -q "segment *16" || bad "--init --segment: not 16"
expect_fail "--init --segment on dense" "only the infini attention kind" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r3" --init "$W/run/model.safetensors" --segment 16
expect_ok "info infini" "$MNEMO" info "$W/run_inf/model.safetensors"
grep -q "segment *8" "$W/out" && grep -q "mem update *delta" "$W/out" || bad "info: no infini settings"
grep -q -E "^state +[0-9.]+ KiB at most, whatever the stream length$" "$W/out" || bad "info: no infini bound"
expect_ok "generate infini past n_ctx" "$MNEMO" generate --model "$W/run_inf/model.safetensors" \
    --n 80 --temperature 0
expect_fail "bad --mem_update" "expected linear or delta" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" --attn infini --mem_update hebbian
expect_fail "--segment with dense" "need --attn infini" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" --segment 8
expect_fail "--segment > n_ctx" "segment must be in" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" "${TINY[@]}" --attn infini --segment 33
expect_fail "bad --gate_lr_mult" "gate_lr_mult" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" "${TINY[@]}" --attn infini --gate_lr_mult 0
expect_fail "memory loss with dense" "needs the selective attention kind" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --mem_eps 0.1
expect_ok "generate --budget" "$MNEMO" generate --model "$W/run_sel/model.safetensors" --n 100 --budget 4
grep -q "attention state" "$W/err" || bad "generate --budget: no state line"
cp "$W/run_sel/model.safetensors" "$W/sel.safetensors"
expect_ok "prune-search" "$MNEMO" prune-search --model "$W/sel.safetensors" --data "$W/data/val.bin" \
    --max_windows 2 --factor 0.5 --tolerance 0.5 --threads 1
grep -q "written to" "$W/out" || bad "prune-search: no result line"
expect_ok "info prune" "$MNEMO" info "$W/sel.safetensors"
grep -q "prune.budgets" "$W/out" || bad "info: no prune.budgets after prune-search"
grep -q -E "^state .* whatever the stream length \(the checkpoint's prune.budgets\)" "$W/out" \
    || bad "info: no pruned bound"
expect_ok "eval with saved budgets" "$MNEMO" eval --model "$W/sel.safetensors" --data "$W/data/val.bin"
grep -q "budgets from the checkpoint" "$W/out" || bad "eval: did not use the checkpoint's budgets"
expect_ok "eval --no_prune" "$MNEMO" eval --model "$W/sel.safetensors" --data "$W/data/val.bin" --no_prune
grep -q "pruned" "$W/out" && bad "eval --no_prune: still pruned"
expect_fail "bad --budgets" "comma-separated integers" "$MNEMO" eval --model "$W/sel.safetensors" \
    --data "$W/data/val.bin" --budgets 4,x
expect_fail "prune-search on dense" "needs a model with selective attention" "$MNEMO" prune-search \
    --model "$W/run/model.safetensors" --data "$W/data/val.bin" --max_windows 1
expect_fail "budget with dense" "pruning needs the selective kind" "$MNEMO" generate \
    --model "$W/run/model.safetensors" --n 5 --budget 4
expect_fail "budget of 1" "budget must be 0" "$MNEMO" generate --model "$W/run_sel/model.safetensors" \
    --n 5 --budget 1
# answer: a task whose answer is the greedy continuation generate prints must be right
expect_ok "generate greedy 6" "$MNEMO" generate --model "$W/run/model.safetensors" --prompt "In the" \
    --n 6 --temperature 0
cont=$(tail -c +7 "$W/out" | head -c 6)
/usr/bin/python3 -c 'import json, sys
print(json.dumps({"prompt": "In the", "answer": sys.argv[1], "group": "greedy"}))
print(json.dumps({"prompt": "In the", "answer": "\u00ff", "group": "wrong"}))
print(json.dumps({"prompt": "In the beginning " * 4, "answer": "G"}))
print(json.dumps({"prompt": "x" * 29, "answer": "abcdef"}))' "$cont" >"$W/tasks.jsonl"
expect_ok "answer" "$MNEMO" answer --model "$W/run/model.safetensors" --tasks "$W/tasks.jsonl" \
    --out "$W/answers.jsonl"
grep -q "greedy *1 / 1" "$W/out" || bad "answer: the greedy continuation was not judged correct"
grep -q "wrong *0 / 1" "$W/out" || bad "answer: a wrong answer was judged correct"
# the third prompt is longer than n_ctx (32); the fourth fits, but not with its answer
grep -q "2 prompts cut to fit" "$W/out" || bad "answer: prompts longer than n_ctx were not cut"
[ "$(grep -c '"correct"' "$W/answers.jsonl")" = 4 ] || bad "answer --out: not one result per task"
expect_ok "answer --budget" "$MNEMO" answer --model "$W/run_sel/model.safetensors" --tasks "$W/tasks.jsonl" --budget 4
grep -q "prompts cut" "$W/out" && bad "answer --budget: a pruned session should take the whole prompt"
echo '{"prompt": "x"}' >"$W/bad_tasks.jsonl"
expect_fail "answer without answer" "bad_tasks.jsonl:1: expected a JSON object" "$MNEMO" answer \
    --model "$W/run/model.safetensors" --tasks "$W/bad_tasks.jsonl"
: >"$W/empty.jsonl"
expect_fail "answer, no tasks" "holds no tasks" "$MNEMO" answer --model "$W/run/model.safetensors" \
    --tasks "$W/empty.jsonl"
expect_fail "answer, no file" "cannot open" "$MNEMO" answer --model "$W/run/model.safetensors" \
    --tasks "$W/nonexistent.jsonl"
expect_ok "help" "$MNEMO" --help
for c in prepare train eval generate info bench prune-search answer; do expect_ok "$c --help" "$MNEMO" $c --help; done

# --- bad input -----------------------------------------------------------------------------------
CK="$W/run/model.safetensors"
expect_fail "no command" "usage" "$MNEMO"
expect_fail "unknown command" "unknown command" "$MNEMO" frobnicate
expect_fail "unknown option" "unknown option" "$MNEMO" train --frobnicate 3
expect_fail "bad number" "not a number" "$MNEMO" train --train x --lr abc
expect_fail "bad integer" "not an integer" "$MNEMO" train --train x --n_layer 2.5
expect_fail "missing value" "needs a value" "$MNEMO" train --train
expect_fail "no train data" "no training data" "$MNEMO" train --out "$W/r3"
expect_fail "missing train file" "cannot open token file" "$MNEMO" train --train "$W/nope.bin" --out "$W/r3"
: >"$W/empty.bin"
expect_fail "empty token file" "not a mnemo token file" "$MNEMO" train --train "$W/empty.bin" --out "$W/r3"
head -c 1000 "$W/data/train.bin" >"$W/trunc.bin"
expect_fail "truncated token file" "truncated or corrupt" "$MNEMO" train --train "$W/trunc.bin" --out "$W/r3"
expect_fail "impossible config" "n_head" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r3" --n_head 3
expect_fail "zero layers" "n_layer" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r3" --n_layer 0
expect_fail "negative lr" "lr" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --lr -1
expect_fail "ema out of range" "ema = 1: must be in" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --ema 1
expect_fail "bad optimizer" "expected adamw or muon" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r3" --optimizer sgd
expect_fail "momentum out of range" "momentum = 1.5: must be in" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --optimizer muon --momentum 1.5
expect_fail "seq > n_ctx" "seq" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --seq 64
expect_ok "train learned" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_lp" \
    "${TINY[@]}" --steps 1 --pos learned
expect_fail "--init learned on longer windows" "learned positions" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/run_lp2" --init "$W/run_lp/model.safetensors" --seq 64
expect_fail "bad pos" "rope or learned" "$MNEMO" train --train "$W/data/train.bin" --pos sinus
expect_fail "bad attn" "unknown attention kind" "$MNEMO" train --train "$W/data/train.bin" --attn magic
expect_fail "missing config" "cannot open config" "$MNEMO" train --config "$W/none.json"
echo '{"lr": 0.1,' >"$W/broken.json"
expect_fail "broken config" "not a JSON object" "$MNEMO" train --config "$W/broken.json"
echo '{"learning_rate": 0.1}' >"$W/unknown.json"
expect_fail "unknown config key" "unknown key" "$MNEMO" train --config "$W/unknown.json"
expect_fail "resume without run" "cannot resume" "$MNEMO" train --train "$W/data/train.bin" --out "$W/empty_run" --resume
# token ids out of the model's range: a token file claiming vocabulary 300 with id 280
python3 - "$W/big.bin" <<'PY' 2>/dev/null || printf 'MNEMOTOK\x01\x00\x00\x00\x02\x00\x00\x00\x2c\x01\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00' >"$W/big.bin"
import struct, sys
toks = [65] * 63 + [280]
open(sys.argv[1], "wb").write(b"MNEMOTOK" + struct.pack("<IIIIQ", 1, 2, 300, 0, len(toks)) + struct.pack("<%dH" % len(toks), *toks))
PY
expect_fail "vocab too large" "vocabulary" "$MNEMO" eval --model "$CK" --data "$W/big.bin"
expect_fail "eval missing model" "cannot open|No such file" "$MNEMO" eval --model "$W/none.safetensors" --data "$W/data/val.bin"
expect_fail "eval no data" "no data" "$MNEMO" eval --model "$CK"
expect_fail "eval stride > window" "stride" "$MNEMO" eval --model "$CK" --data "$W/data/val.bin" --stride 33
head -c 5000 "$CK" >"$W/trunc.safetensors"
expect_fail "truncated checkpoint" "checkpoint|safetensors|truncated|header" "$MNEMO" eval --model "$W/trunc.safetensors" --data "$W/data/val.bin"
{ printf '\x20\x00\x00\x00\x00\x00\x00\x00'; printf '{"a": {"dtype": "F32", "shape"  '; } >"$W/corrupt.safetensors"
expect_fail "corrupt header" "header|JSON" "$MNEMO" info "$W/corrupt.safetensors"
expect_fail "not a checkpoint" "safetensors|header|checkpoint" "$MNEMO" info "$W/text.txt"
expect_fail "info no file" "give one checkpoint" "$MNEMO" info
expect_fail "generate bad top_p" "top_p" "$MNEMO" generate --model "$CK" --top_p 2
expect_fail "generate negative n" "--n" "$MNEMO" generate --model "$CK" --n -5
: >"$W/empty.txt"
expect_fail "prepare empty" "empty" "$MNEMO" prepare --out "$W/d2" "$W/empty.txt"
expect_fail "prepare directory" "directory" "$MNEMO" prepare --out "$W/d2" "$W"
expect_fail "prepare missing" "cannot open" "$MNEMO" prepare --out "$W/d2" "$W/none.txt"
expect_fail "prepare no files" "no input files" "$MNEMO" prepare --out "$W/d2"
expect_fail "prepare bad frac" "val_frac" "$MNEMO" prepare --out "$W/d2" --val_frac 1.5 "$W/text.txt"
# a validation file shorter than one window is refused before any training is done
expect_ok "prepare tiny val" "$MNEMO" prepare --out "$W/dv" --val_frac 0.0005 "$W/text.txt"
expect_fail "val shorter than a window" "fewer than one window" "$MNEMO" train --train "$W/dv/train.bin" --val "$W/dv/val.bin" --out "$W/rv" "${TINY[@]}" --steps 3
# contexts of 1 and 2 tokens: generation keeps BOS + the last n_ctx-1 bytes
for nc in 1 2; do
    expect_ok "train n_ctx $nc" "$MNEMO" train --train "$W/data/train.bin" --out "$W/rc$nc" --n_layer 1 --d_model 16 --n_head 2 --n_ctx $nc --batch 2 --steps 2 --threads 1
    expect_ok "generate n_ctx $nc" "$MNEMO" generate --model "$W/rc$nc/model.safetensors" --prompt abc --n 5
    expect_ok "generate n_ctx $nc, n 0" "$MNEMO" generate --model "$W/rc$nc/model.safetensors" --prompt abc --n 0
done
# the last good checkpoint survives a failed run in the same directory
cp "$CK" "$W/keep.safetensors"
"$MNEMO" train --train "$W/data/train.bin" --out "$W/run" "${TINY[@]}" --lr 1e30 --warmup 0 --grad_clip 0 --weight_decay 0 --steps 3 --overwrite >/dev/null 2>&1
cmp -s "$CK" "$W/keep.safetensors" || bad "a diverged run replaced the last good checkpoint"
[ $? -eq 0 ] && ok

# --- a run directory, and the shape of a resumed or initialised model ---------------------------
cp "$W/run_mu/log.jsonl" "$W/mu_log.jsonl"
expect_fail "fresh run over a run" "holds a run already: continue it with --resume" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/run_mu" "${TINY[@]}" --steps 2
cmp -s "$W/run_mu/log.jsonl" "$W/mu_log.jsonl" || bad "a refused run touched the old run's log"
expect_ok "--overwrite" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_mu" "${TINY[@]}" \
    --steps 2 --overwrite
grep -q "train.step *2" <("$MNEMO" info "$W/run_mu/model.safetensors") || bad "--overwrite: not a new run"
# the same command again plus --resume continues, even when that command had --overwrite
expect_ok "--resume --overwrite" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_mu" \
    "${TINY[@]}" --steps 3 --overwrite --resume
grep -q "overwrite is ignored" "$W/err" && grep -q "starting at step 2" "$W/err" \
    || bad "--resume --overwrite: did not continue the run"
expect_fail "--resume --init" "not both" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/run_mu" --resume --init "$CK"
expect_fail "--resume, another width" "--d_model 64: the checkpoint has 32" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/run_mu" "${TINY[@]}" --d_model 64 --steps 5 --resume
expect_fail "--resume, another width, dashes" "--d_model 64: the checkpoint has 32" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/run_mu" "${TINY[@]}" --d-model 64 --steps 5 --resume
echo '{"d_model": 64}' >"$W/d64.json"
expect_ok "--resume, another width in the config" "$MNEMO" train --config "$W/d64.json" \
    --train "$W/data/train.bin" --out "$W/run_mu" --n_layer 1 --n_head 2 --n_ctx 32 --batch 2 \
    --warmup 2 --threads 1 --steps 4 --resume
grep -q "keeps the checkpoint's d_model 32 (the config says 64)" "$W/err" || bad "--resume: no note on the config's width"
expect_fail "--resume, another kind" "--attn selective: the checkpoint has dense" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/run_mu" "${TINY[@]}" --attn selective --steps 4 --resume
expect_fail "--init, other layers" "--n_layer 3: the checkpoint has 1" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r4" --init "$CK" --n_layer 3
expect_fail "--init, another rule" "--mem_update linear: the checkpoint has delta" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r4" --init "$W/run_inf/model.safetensors" --attn infini \
    --mem_update linear
expect_ok "--init, the same rule, kind from the checkpoint" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r5" --init "$W/run_inf/model.safetensors" --mem_update delta --steps 1 --batch 2 --threads 1
expect_fail "--init dense, a rule" "belong to infini models; the checkpoint has dense" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r4" --init "$CK" --mem_update delta
expect_fail "train --out ''" "cannot create '': No such file" "$MNEMO" train --train "$W/data/train.bin" --out ""
# a second SIGTERM (or Ctrl-C) ends a run at once, in the middle of a long step
"$MNEMO" train --train "$W/data/train.bin" --out "$W/r_sig" "${TINY[@]}" --steps 5 --grad_accum 60000 \
    >/dev/null 2>"$W/sig_err" &
pid=$!
for i in $(seq 100); do grep -q "starting at step" "$W/sig_err" 2>/dev/null && break; sleep 0.1; done
kill -TERM $pid; sleep 0.2; kill -TERM $pid
wait $pid; rc=$?
[ $rc -eq 143 ] && ! grep -q "train: interrupted" "$W/sig_err" && ok || bad "second SIGTERM: exit $rc"
# one SIGTERM stops cleanly after the step: a checkpoint, exit 130, and how to continue
"$MNEMO" train --train "$W/data/train.bin" --out "$W/r_sig1" "${TINY[@]}" --steps 100000 \
    --grad_accum 8 >/dev/null 2>"$W/sig_err" &
pid=$!
for i in $(seq 100); do grep -q "starting at step" "$W/sig_err" 2>/dev/null && break; sleep 0.1; done
kill -TERM $pid
wait $pid; rc=$?
[ $rc -eq 130 ] && grep -q "interrupted; to continue, run the same command with --resume" "$W/sig_err" \
    && [ -s "$W/r_sig1/model.safetensors" ] && ok || bad "one SIGTERM: exit $rc"
expect_fail "grad_accum too large" "grad_accum = 100000000: must be in" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r4" "${TINY[@]}" --grad_accum 100000000

# --- results and outputs are whole or absent ----------------------------------------------------
echo '{"old": "results"}' >"$W/res.jsonl"
cp "$W/res.jsonl" "$W/res_keep.jsonl"
expect_fail "answer, bad task line" "bad_tasks.jsonl:1" "$MNEMO" answer --model "$CK" \
    --tasks "$W/bad_tasks.jsonl" --out "$W/res.jsonl"
cmp -s "$W/res.jsonl" "$W/res_keep.jsonl" || bad "answer: a failed run changed --out"
ls "$W" | grep -q partial && bad "answer: a partial results file was left behind"
# killed while answering: no partial file left, --out as it was (absent), the signal's status
/usr/bin/python3 -c 'import json
for i in range(100000): print(json.dumps({"prompt": "In the", "answer": "x"}))' >"$W/many.jsonl"
"$MNEMO" answer --model "$CK" --tasks "$W/many.jsonl" --out "$W/res2.jsonl" >/dev/null 2>&1 &
pid=$!
for i in $(seq 100); do ls "$W" | grep -q "res2.jsonl.partial" && break; sleep 0.1; done
kill -TERM $pid
wait $pid; rc=$?
[ $rc -eq 143 ] && [ ! -e "$W/res2.jsonl" ] && ! ls "$W" | grep -q partial && ok \
    || bad "answer killed: exit $rc, or a file left behind"
cp "$CK" "$W/ck2.safetensors"
expect_fail "answer --out = model" "is the checkpoint or the task file" "$MNEMO" answer \
    --model "$W/ck2.safetensors" --tasks "$W/tasks.jsonl" --out "$W/ck2.safetensors"
cmp -s "$CK" "$W/ck2.safetensors" || bad "answer --out: the checkpoint was touched"
printf '{"prompt": "a", "answer": "b"} trailing\n' >"$W/trail.jsonl"
expect_fail "answer, text after the object" "trail.jsonl:1: expected a JSON object" "$MNEMO" answer \
    --model "$CK" --tasks "$W/trail.jsonl"
printf '{"prompt": "a", "answer": "x\\u0000y"}\n' >"$W/nul.jsonl"
expect_fail "answer, escaped NUL" "nul.jsonl:1: a text holds U\\+0000" "$MNEMO" answer --model "$CK" \
    --tasks "$W/nul.jsonl"
printf '{"prompt": "a", "answer": "b"}\0{}\n' >"$W/nulbyte.jsonl"
expect_fail "answer, NUL byte" "nulbyte.jsonl:1: the line holds a NUL byte" "$MNEMO" answer \
    --model "$CK" --tasks "$W/nulbyte.jsonl"
/usr/bin/python3 -c 'import json; print(json.dumps({"prompt": "a", "answer": "b" * 40}))' >"$W/long.jsonl"
expect_fail "answer longer than n_ctx" "long.jsonl:1: the answer has 40 bytes" "$MNEMO" answer \
    --model "$CK" --tasks "$W/long.jsonl"
"$MNEMO" info "$CK" >/dev/full 2>"$W/err"; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$W/err")" -eq 1 ] && grep -q "cannot write the standard output" "$W/err" \
    && ok || bad "info >/dev/full: exit $rc"
"$MNEMO" generate --model "$CK" --n 20 >/dev/full 2>"$W/err"; rc=$?
[ $rc -eq 1 ] && grep -q "standard output" "$W/err" && ok || bad "generate >/dev/full: exit $rc"
expect_fail "prune-search, bad factor" "--factor must be in" "$MNEMO" prune-search \
    --model "$W/sel.safetensors" --data "$W/data/val.bin" --factor 1
expect_fail "prune-search, window of 1" "--seq 1: the window must be in" "$MNEMO" prune-search \
    --model "$W/sel.safetensors" --data "$W/data/val.bin" --seq 1
expect_fail "prune-search, --out a directory" "not a regular file" "$MNEMO" prune-search \
    --model "$W/sel.safetensors" --data "$W/data/val.bin" --out "$W"
# a deep model's budget list is written whole and read back by eval
expect_ok "train 70 layers" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r70" --n_layer 70 \
    --d_model 8 --n_head 1 --n_ctx 32 --batch 1 --steps 1 --attn selective --threads 1
expect_ok "prune-search 70 layers" "$MNEMO" prune-search --model "$W/r70/model.safetensors" \
    --data "$W/data/val.bin" --max_windows 1 --factor 0.5 --tolerance 10 --threads 1
expect_ok "eval 70 budgets" "$MNEMO" eval --model "$W/r70/model.safetensors" --data "$W/data/val.bin"
[ "$(grep -o 'prune.budgets): [0-9,]*' "$W/out" | tr -cd , | wc -c)" = 69 ] || bad "eval: not 70 budgets"
# a FIFO is refused at once, never waited on
mkfifo "$W/fifo"
expect_fail "checkpoint FIFO" "not a regular file" timeout 20 "$MNEMO" info "$W/fifo"
expect_fail "token file FIFO" "not a regular file" timeout 20 "$MNEMO" eval --model "$CK" --data "$W/fifo"
expect_fail "tasks FIFO" "not a regular file" timeout 20 "$MNEMO" answer --model "$CK" --tasks "$W/fifo"
# configs: one object and nothing after it; one error line; a directory is not a config
echo '{"lr": 0.001} garbage' >"$W/trail.json"
expect_fail "config, text after the object" "not a JSON object" "$MNEMO" train --config "$W/trail.json"
printf '{"n_layer": 1,}\n\n' >"$W/comma.json"
expect_fail "config, error near a line end" "not a JSON object" "$MNEMO" train --config "$W/comma.json"
expect_fail "config, a directory" "not a regular file" "$MNEMO" train --config "$W"
# a number given as a string and a key given twice (the last wins): under ASan, with leak
# checking on, also that the parser frees the strings it read
printf '{"model": "%s", "model": "%s", "n": "5", "temperature": "0", "prompt": "In the"}\n' \
    "$W/none.safetensors" "$W/run/model.safetensors" >"$W/gen.json"
expect_ok "config, string number and a repeated key" "$MNEMO" generate --config "$W/gen.json"
[ "$(head -c 6 "$W/out")" = "In the" ] || bad "config, repeated key: not the last model's output"
expect_fail "bench, negative warmup" "--warmup >= 0" "$MNEMO" bench --warmup -1
expect_fail "bench, bad shape" "n_head = 3" "$MNEMO" bench --n_head 3
# prepare takes as many files as given
mkdir -p "$W/many"
for i in $(seq 300); do echo "line $i" >"$W/many/f$i.txt"; done
expect_ok "prepare 300 files" "$MNEMO" prepare --out "$W/d300" "$W"/many/*.txt
grep -q "from 300 files" "$W/out" || bad "prepare: not 300 files"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
