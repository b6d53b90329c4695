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
# expect_stop NAME PATTERN CMD...: a run that fails after it started: exit 1, progress lines on
# stderr, then exactly one error line (the last), matching PATTERN
expect_stop() {
    local name=$1 pat=$2; shift 2
    "$@" >"$W/out" 2>"$W/err"; local rc=$?
    if [ $rc -ne 1 ]; then bad "$name: exit $rc (want 1)"; cat "$W/err"; return; fi
    if [ "$(grep -c '^mnemo ' "$W/err")" -ne 1 ] || ! tail -n 1 "$W/err" | grep -q -E -e "^mnemo .*$pat"; then
        bad "$name: the last stderr line is not the one error line /$pat/"; cat "$W/err"; return
    fi
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
[ -s "$W/run/model.safetensors" ] && [ -s "$W/run/train_state.4.safetensors" ] || bad "train: no checkpoint"
[ "$(ls "$W/run" | grep -c train_state)" = 1 ] || bad "train: the superseded train state was kept"
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
grep -q "infini attention options: segment=8,mem_update=delta" "$W/out" || bad "bench --attn infini: no options line"
expect_fail "bench --segment without infini" "dense attention has no option 'segment'" "$MNEMO" bench --segment 8
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
grep -q "| aux " "$W/err" || bad "train --mem_eps: no auxiliary (memory) loss in the progress line"
grep -q "selective attention options: mem_eps=0.1,mem_tau=1" "$W/err" || bad "train --mem_eps: no options line"
grep -q '"aux_loss":0.[0-9]*[1-9]' "$W/run_mem/log.jsonl" || bad "train --mem_eps: no aux_loss in the log"
grep -q '"mem_loss"' "$W/run_mem/log.jsonl" && bad "train --mem_eps: the log still has mem_loss"
# the aux loss is weighted (eps * L_mem): twice the eps, twice the first step's aux loss
expect_ok "train --mem_eps 0.2" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_mem2" \
    "${TINY[@]}" --steps 1 --attn selective --mem_eps 0.2
/usr/bin/python3 - "$W/run_mem/log.jsonl" "$W/run_mem2/log.jsonl" <<'PY' && ok || bad "aux_loss is not eps * L_mem"
import json, sys
a, b = ([json.loads(l)["aux_loss"] for l in open(p) if '"type":"step"' in l][0] for p in sys.argv[1:])
sys.exit(0 if a > 0 and abs(b / a - 2) < 1e-3 else 1)
PY
expect_ok "train --attn infini" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_inf" \
    "${TINY[@]}" --steps 3 --attn infini --segment 8 --mem_update delta --gate_lr_mult 10
grep -q "infini attention options: segment=8,mem_update=delta,gate_lr_mult=10" "$W/err" \
    || bad "train --attn infini: no options line"
expect_ok "train infini --mem_repeat" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/run_rep" "${TINY[@]}" --steps 2 --attn infini --segment 8 --mem_repeat 100
grep -q "infini attention options: segment=8,.*mem_repeat=100" "$W/err" || bad "train --mem_repeat: not announced"
expect_fail "--mem_repeat with dense" "dense attention has no option 'mem_repeat'" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --mem_repeat 100
expect_ok "train --init on longer windows" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/run_inf64" --init "$W/run_inf/model.safetensors" --seq 64 --batch 2 --steps 2 --threads 1
grep -q "windows of 64 tokens (the checkpoint's n_ctx was 32)" "$W/err" || bad "--init --seq: no note"
"$MNEMO" info "$W/run_inf64/model.safetensors" | grep -q "n_ctx *64" || bad "--init --seq: n_ctx not 64"
expect_ok "train --init --segment" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_inf16" \
    --init "$W/run_inf/model.safetensors" --segment 16 --batch 2 --steps 2 --threads 1
grep -q "^train: segment=16 (the checkpoint had 8)$" "$W/err" || bad "--init --segment: no note"
"$MNEMO" info "$W/run_inf16/model.safetensors" | grep -q "^attn options segment=16,mem_update=delta," \
    || bad "--init --segment: not 16"
expect_fail "--init --segment on dense" "segment=16: dense attention has no option 'segment'" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r3" --init "$W/run/model.safetensors" --segment 16
expect_ok "info infini" "$MNEMO" info "$W/run_inf/model.safetensors"
grep -q "^attn options segment=8,mem_update=delta,gate_lr_mult=10,mem_repeat=0,carry=false$" "$W/out" \
    || bad "info: no infini options"
grep -q -E "^state +[0-9.]+ KiB at most, whatever the stream length$" "$W/out" || bad "info: no infini bound"
expect_ok "generate infini past n_ctx" "$MNEMO" generate --model "$W/run_inf/model.safetensors" \
    --n 80 --temperature 0
expect_fail "bad --mem_update" "option mem_update = 'hebbian': expected one of linear\|delta" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" --attn infini --mem_update hebbian
expect_fail "--segment with dense" "dense attention has no option 'segment'" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" --segment 8
expect_fail "--segment > n_ctx" "option segment = 33 must be in \[1, n_ctx = 32\]" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" "${TINY[@]}" --attn infini --segment 33
expect_fail "bad --gate_lr_mult" "option gate_lr_mult = 0 is out of range" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r3" "${TINY[@]}" --attn infini --gate_lr_mult 0
expect_fail "memory loss with dense" "dense attention has no option 'mem_eps'" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r3" "${TINY[@]}" --mem_eps 0.1
expect_ok "generate --budget" "$MNEMO" generate --model "$W/run_sel/model.safetensors" --n 100 --budget 4
grep -q "attention state" "$W/err" || bad "generate --budget: no state line"
cp "$W/run_sel/model.safetensors" "$W/sel.safetensors"
expect_ok "prune-search" "$MNEMO" prune-search --model "$W/sel.safetensors" --data "$W/data/val.bin" \
    --max_windows 2 --factor 0.5 --tolerance 0.5 --threads 1
grep -q "written to" "$W/out" || bad "prune-search: no result line"
expect_ok "info prune" "$MNEMO" info "$W/sel.safetensors"
grep -q -E "^attn options .*budget=[0-9]+" "$W/out" || bad "info: no budget after prune-search"
grep -q -E "^prune.target_loss +[0-9.]+" "$W/out" || bad "info: no prune.target_loss after prune-search"
grep -q -E "^state +[0-9.]+ KiB at most, whatever the stream length$" "$W/out" || bad "info: no pruned bound"
"$MNEMO" info "$W/run_sel/model.safetensors" | grep -q -E "^state +[0-9.]+ KiB at n_ctx" \
    || bad "info: an unpruned selective model is bounded"
expect_ok "eval with saved budgets" "$MNEMO" eval --model "$W/sel.safetensors" --data "$W/data/val.bin"
grep -q -E "^session: budget=[0-9/]+ \(the checkpoint's\) \| attention state [0-9.]+ KiB at most" "$W/out" \
    || bad "eval: did not use the checkpoint's budgets"
expect_ok "eval --no_prune" "$MNEMO" eval --model "$W/sel.safetensors" --data "$W/data/val.bin" --no_prune
grep -q "^session:" "$W/out" && bad "eval --no_prune: still through a pruned session"
expect_ok "eval --budget over the saved" "$MNEMO" eval --model "$W/sel.safetensors" --data "$W/data/val.bin" \
    --budget 8
grep -q "^session: budget=8 (given)" "$W/out" || bad "eval --budget: the given budget did not win"
expect_fail "bad --budget" "option budget = 'x' is not an integer" "$MNEMO" eval \
    --model "$W/sel.safetensors" --data "$W/data/val.bin" --budget x
expect_fail "--budget K1,K2" "one value \(a per-layer list is written a/b/c\)" "$MNEMO" eval \
    --model "$W/sel.safetensors" --data "$W/data/val.bin" --budget 4,5
expect_fail "--budget, a list per layer too long" "option budget lists 2 values for 1 layers" "$MNEMO" eval \
    --model "$W/sel.safetensors" --data "$W/data/val.bin" --budget 4/5
expect_fail "prune-search on dense" "has dense attention, which has no budget option" "$MNEMO" prune-search \
    --model "$W/run/model.safetensors" --data "$W/data/val.bin" --max_windows 1
expect_fail "budget with dense" "dense attention has no option 'budget'" "$MNEMO" generate \
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

# --- the attention kinds' options (--attn_opt KEY=VALUE,..., --KEY VALUE, JSON keys) ------------
expect_ok "train --attn_opt" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_ao" "${TINY[@]}" \
    --steps 1 --attn infini --attn_opt segment=16,mem_update=delta
grep -q "^infini attention options: segment=16,mem_update=delta," "$W/err" || bad "train --attn_opt: no options line"
expect_ok "info --attn_opt" "$MNEMO" info "$W/run_ao/model.safetensors"
grep -q "^attn options segment=16,mem_update=delta,gate_lr_mult=30,mem_repeat=0,carry=false$" "$W/out" \
    || bad "info: not the --attn_opt options"
expect_ok "--attn_opt=..., repeated" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_ao2" \
    "${TINY[@]}" --steps 1 --attn infini --attn_opt=segment=4 --attn_opt mem_repeat=8 --mem_update delta
grep -q "^infini attention options: segment=4,mem_update=delta,gate_lr_mult=30,mem_repeat=8,carry=false$" "$W/err" \
    || bad "--attn_opt repeated: not every option taken"
expect_fail "unknown kind option" "dense attention has no option 'no_such_opt'" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r_ko" "${TINY[@]}" --attn dense --attn_opt no_such_opt=4
expect_fail "unknown kind option, infini" "infini attention has no option 'no_such_opt' \(segment, mem_update" \
    "$MNEMO" train --train "$W/data/train.bin" --out "$W/r_ko" "${TINY[@]}" --attn infini \
    --attn_opt segment=8,no_such_opt=4
expect_fail "--KEY of no kind" "unknown option '--no_such_opt'" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r_ko" "${TINY[@]}" --attn infini --no_such_opt 4
expect_fail "--attn_opt without =" "--attn_opt: 'segment' is not KEY=VALUE" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r_ko" "${TINY[@]}" --attn infini --attn_opt segment
expect_fail "kind option out of range" "option segment = -1 is out of range" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r_ko" "${TINY[@]}" --attn infini --attn_opt segment=-1
expect_fail "float kind option out of range" "option mem_tau = 0 is out of range" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r_ko" "${TINY[@]}" --attn selective --mem_tau 0
expect_fail "int kind option not a number" "option segment = 'x' is not an integer" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r_ko" "${TINY[@]}" --attn infini --segment x
# scopes: a session option given to train is taken (and kept in the checkpoint); a model or a
# training option given to a session is refused, saying which it is
expect_ok "train, a session option" "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_sb" \
    "${TINY[@]}" --steps 1 --attn selective --budget 4
"$MNEMO" info "$W/run_sb/model.safetensors" | grep -q "^attn options .*budget=4" \
    || bad "train --budget: not kept in the checkpoint"
expect_ok "eval, the train's session option" "$MNEMO" eval --model "$W/run_sb/model.safetensors" \
    --data "$W/data/val.bin"
grep -q "^session: budget=4 (the checkpoint's)" "$W/out" || bad "eval: not the budget given to train"
expect_fail "generate, a model option" "option segment is a model option; a session does not take it" \
    "$MNEMO" generate --model "$W/run_inf/model.safetensors" --n 5 --attn_opt segment=8
expect_fail "generate, a model option as --KEY" "option segment is a model option" "$MNEMO" generate \
    --model "$W/run_inf/model.safetensors" --n 5 --segment 16
expect_fail "eval, a training option" "option mem_eps is a training option; a session does not take it" \
    "$MNEMO" eval --model "$W/run_sel/model.safetensors" --data "$W/data/val.bin" --mem_eps 0.1
expect_fail "eval, no such option" "dense attention has no option 'no_such_opt'" "$MNEMO" eval \
    --model "$W/run/model.safetensors" --data "$W/data/val.bin" --attn_opt no_such_opt=1
expect_ok "generate --threshold" "$MNEMO" generate --model "$W/run_sel/model.safetensors" --n 20 \
    --threshold 0.5
grep -q "session options threshold=0.5 (given)" "$W/err" || bad "generate --threshold: not in force"
# the kinds and their options: info --kinds, and the --help of the commands that take them
expect_ok "info --kinds" "$MNEMO" info --kinds
for k in dense selective infini; do grep -q "^  $k" "$W/out" || bad "info --kinds: no kind $k"; done
for o in budget threshold mem_eps mem_tau segment mem_update gate_lr_mult mem_repeat; do
    grep -q -E "^    $o +[A-Za-z|]+.*(model|train|session), default" "$W/out" || bad "info --kinds: no option $o"
done
expect_fail "info --kinds CK" "--kinds takes no checkpoint" "$MNEMO" info --kinds "$W/run/model.safetensors"
for c in train eval generate answer bench; do
    expect_ok "$c --help, kinds" "$MNEMO" $c --help
    grep -q -- "--attn_opt K=V" "$W/out" && grep -q "^  infini$" "$W/out" \
        && grep -q -E "^    segment +INT in \[0, [0-9]+\], model, default 0" "$W/out" \
        && grep -q -E "^    budget +INT .*\(per layer\), session" "$W/out" || bad "$c --help: no kinds and options"
done
# JSON keys of a --config file: kind options by name, or "attn_opt"; flags override the file
printf '{"train": "%s", "n_layer": 1, "d_model": 32, "n_head": 2, "n_ctx": 32, "batch": 2, "steps": 1, "threads": 1, "attn": "infini", "segment": 16, "mem_update": "delta", "gate_lr_mult": 5}\n' \
    "$W/data/train.bin" >"$W/inf_cfg.json"
expect_ok "config kind options" "$MNEMO" train --config "$W/inf_cfg.json" --out "$W/run_cfgi"
"$MNEMO" info "$W/run_cfgi/model.safetensors" | grep -q "^attn options segment=16,mem_update=delta,gate_lr_mult=5," \
    || bad "config kind options: not in the checkpoint"
expect_ok "config kind option overridden" "$MNEMO" train --config "$W/inf_cfg.json" --out "$W/run_cfgi2" \
    --segment 8
grep -q "^infini attention options: segment=8,mem_update=delta,gate_lr_mult=5," "$W/err" \
    || bad "config kind option: the flag did not override the file"
printf '{"attn": "infini", "attn_opt": "segment=4,mem_update=delta"}\n' >"$W/ao_cfg.json"
expect_ok "config attn_opt" "$MNEMO" train --config "$W/ao_cfg.json" --train "$W/data/train.bin" \
    --out "$W/run_cfgi3" "${TINY[@]}" --steps 1
grep -q "^infini attention options: segment=4,mem_update=delta," "$W/err" || bad "config attn_opt: not taken"
echo '{"segment": [16]}' >"$W/seg_list.json"
expect_fail "config kind option, bad type" "segment: expected a number, a string or a boolean" "$MNEMO" \
    train --config "$W/seg_list.json" --train "$W/data/train.bin" --out "$W/r_ko"
echo '{"segment": 16}' >"$W/seg_dense.json"
expect_fail "config kind option, another kind" "dense attention has no option 'segment'" "$MNEMO" \
    train --config "$W/seg_dense.json" --train "$W/data/train.bin" --out "$W/r_ko" "${TINY[@]}"
# --resume keeps the checkpoint's model options: a different one typed is refused, one from a
# config is noted and left; training options may change
cp -r "$W/run_inf" "$W/run_infr"
expect_fail "--resume, another model option" "--segment=16: the checkpoint has segment=8 \(--resume keeps" \
    "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_infr" "${TINY[@]}" --steps 4 --resume --segment 16
expect_fail "--resume, another model option, --attn_opt" "the checkpoint has mem_update=delta" "$MNEMO" \
    train --train "$W/data/train.bin" --out "$W/run_infr" "${TINY[@]}" --steps 4 --resume \
    --attn_opt mem_update=linear
echo '{"segment": 16}' >"$W/seg16.json"
expect_ok "--resume, the same model options, another in the config, a training option" "$MNEMO" train \
    --config "$W/seg16.json" --train "$W/data/train.bin" --out "$W/run_infr" "${TINY[@]}" --steps 4 --resume \
    --attn infini --mem_update delta --gate_lr_mult 20
grep -q "^train: --resume keeps the checkpoint's segment=8 (the config says segment=16)$" "$W/err" \
    || bad "--resume: no note on the config's segment"
grep -q "^infini attention options: segment=8,mem_update=delta,gate_lr_mult=20," "$W/err" \
    && grep -q "starting at step 3" "$W/err" || bad "--resume: not the checkpoint's options with the new gate_lr_mult"
# eval windows longer than n_ctx stream through a bounded session (infini), or are refused
expect_ok "eval --seq > n_ctx, infini" "$MNEMO" eval --model "$W/run_inf/model.safetensors" \
    --data "$W/data/val.bin" --seq 64
grep -q "^session: defaults | attention state [0-9.]* KiB at most, whatever the stream length$" "$W/out" \
    && grep -q "(windows of 64, stride 64)" "$W/out" || bad "eval --seq 64 on infini: not streamed"
expect_fail "eval --seq > n_ctx, dense" "windows of 64 tokens are longer than n_ctx = 32, and the dense attention state is not bounded" \
    "$MNEMO" eval --model "$W/run/model.safetensors" --data "$W/data/val.bin" --seq 64
expect_ok "eval --seq > n_ctx, budgeted selective" "$MNEMO" eval --model "$W/run_sel/model.safetensors" \
    --data "$W/data/val.bin" --seq 64 --budget 8
grep -q "^session: budget=8 (given)" "$W/out" && grep -q "(windows of 64, stride 64)" "$W/out" \
    || bad "eval --seq 64 --budget 8: not streamed"
expect_fail "eval --seq > n_ctx, selective unbudgeted" "the selective attention state is not bounded" \
    "$MNEMO" eval --model "$W/run_sel/model.safetensors" --data "$W/data/val.bin" --seq 64

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
expect_fail "resume without run" "cannot resume: .* holds no checkpoint" "$MNEMO" train --train "$W/data/train.bin" --out "$W/empty_run" --resume
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
# a non-finite weight is never saved: the step and the tensor are named; an exploding loss stops
expect_stop "non-finite weights" "the update made parameter '[a-z.0-9]+' \(element [0-9]+\) non-finite \(-?inf\) at step 1;" \
    "$MNEMO" train --train "$W/data/train.bin" --out "$W/r_inf" "${TINY[@]}" --steps 1 --warmup 0 \
    --lr 1e38 --lr_min 0 --weight_decay 0
[ -e "$W/r_inf/model.safetensors" ] && bad "non-finite weights: a model was written"
expect_stop "exploding loss" "exceeds 10 ln\(vocab\) = 55.5 .*the run diverged at step [0-9]+;" \
    "$MNEMO" train --train "$W/data/train.bin" --out "$W/r_exp" "${TINY[@]}" --steps 50 --lr 1e6 \
    --weight_decay 0 --ckpt_every 1

# --- hostile checkpoints cost memory in proportion to their size, not to their claims ----------
# 280 bytes claiming 8 layers of width 2048 (1.6 GB of weights) and no tensor; 32 KB claiming
# n_ctx = 4M (a 512 MiB cache). Run under an address-space limit of 512 MB when a valid small
# checkpoint runs under it (sanitizer builds reserve terabytes; OpenBLAS on a many-core
# machine may need more than the limit at start-up): then the message alone is checked.
DATA=$(cd "$(dirname "$0")" && pwd)/data
VLIM=524288
(ulimit -v $VLIM; timeout 60 "$MNEMO" info "$CK") >/dev/null 2>&1 || VLIM=
limited() { if [ -n "$VLIM" ]; then (ulimit -v $VLIM; exec timeout 60 "$@"); else "$@"; fi; }
[ -n "$VLIM" ] || echo "note: no address-space limit here; hostile checkpoints: messages only"
expect_fail "hostile checkpoint, 1.6 GB claimed" "has no tensor 'wte.weight'" limited "$MNEMO" \
    info "$DATA/ckpt_bigalloc_1p9GB.safetensors"
expect_ok "info n_ctx 4M" limited "$MNEMO" info "$DATA/ckpt_nctx4M.safetensors"
grep -q -E "^state +524288.1 KiB at n_ctx" "$W/out" || { bad "info n_ctx 4M: no state bound"; cat "$W/out"; }

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
expect_fail "--init, another rule" "mem_update=linear: .*option mem_update is fixed by the model's parameters \(it has delta\)" "$MNEMO" train \
    --train "$W/data/train.bin" --out "$W/r4" --init "$W/run_inf/model.safetensors" --attn infini \
    --mem_update linear
expect_ok "--init, the same rule, kind from the checkpoint" "$MNEMO" train --train "$W/data/train.bin" \
    --out "$W/r5" --init "$W/run_inf/model.safetensors" --mem_update delta --steps 1 --batch 2 --threads 1
expect_fail "--init dense, a rule" "mem_update=delta: dense attention has no option 'mem_update'" "$MNEMO" train \
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

# --- killed at any moment, a run continues from its newest complete checkpoint pair --------------
# Each run is continued as a user would (the same command plus --resume when the folder holds a
# model, else the same command: a run killed during its first checkpoint holds none) until its
# model is at the last step; that model must equal an uninterrupted run's byte for byte, the
# log must hold every step once, and no temporary file or superseded state may be left.
KRUN=(--train "$W/data/train.bin" --val "$W/data/val.bin" "${TINY[@]}" --eval_every 3)
kargs() { # DIR STEPS CKPT_EVERY: the command's arguments into KA
    KA=("${KRUN[@]}" --out "$1" --steps "$2" --ckpt_every "$3")
    [ -e "$1/model.safetensors" ] && KA+=(--resume)
}
kstart() { kargs "$@"; "$MNEMO" train "${KA[@]}"; }
kfinish() { # NAME DIR STEPS CKPT_EVERY REF_DIR
    local name=$1 dir=$2 n=$3 every=$4 ref=$5 tries=0 restarted=0
    while ! "$MNEMO" info "$dir/model.safetensors" 2>/dev/null | grep -q "^train.step *$n\$"; do
        tries=$((tries + 1)); restarted=1
        if [ $tries -gt 3 ] || ! kstart "$dir" "$n" "$every" >/dev/null 2>"$W/k_err"; then
            bad "$name: cannot continue the run"; cat "$W/k_err"; return
        fi
    done
    cmp -s "$ref/model.safetensors" "$dir/model.safetensors" || { bad "$name: the final model differs"; return; }
    local steps; steps=$(grep -o '"type":"step","step":[0-9]*' "$dir/log.jsonl" | grep -o '[0-9]*$' | tr '\n' ' ')
    [ "$steps" = "$(seq -s ' ' 1 "$n") " ] || { bad "$name: log steps '$steps'"; return; }
    ls "$dir" | grep -q '\.tmp\.' && { bad "$name: a temporary file was left: $(ls "$dir")"; return; }
    # a kill after the last model was in place, before its superseded state was removed, leaves
    # that state until the next start: only a finished (restarted) run must have none
    [ $restarted -eq 0 ] || [ "$(ls "$dir" | grep -c '^train_state')" = 1 ] \
        || { bad "$name: states left: $(ls "$dir")"; return; }
    ok
}
"$MNEMO" train "${KRUN[@]}" --out "$W/k_ref6" --steps 6 --ckpt_every 2 >/dev/null 2>&1 || bad "kill: reference run"
# SIGKILL at each rename, fsync and unlink of a run, in turn (strace's syscall fault injection;
# where strace is missing or cannot trace, the timed kills below remain)
if strace -f -qq -o /dev/null true 2>/dev/null; then
    for point in rename,renameat,renameat2:6 fsync,fdatasync:12 unlink,unlinkat:2; do
        calls=${point%:*}
        for k in $(seq 1 "${point#*:}"); do
            rm -rf "$W/k_s"
            strace -f -qq -o /dev/null -e trace="$calls" -e inject="$calls":signal=KILL:when=$k \
                "$MNEMO" train "${KRUN[@]}" --out "$W/k_s" --steps 6 --ckpt_every 2 >/dev/null 2>&1
            kfinish "SIGKILL at ${calls%%,*} $k" "$W/k_s" 6 2 "$W/k_ref6"
        done
    done
else
    echo "note: strace cannot trace here; SIGKILL at chosen system calls not tested"
fi
# kill -9 at whatever the run is doing a tenth of its time after each start, seven times in a
# row, in a run with a checkpoint at every step
t0=$(date +%s%N)
"$MNEMO" train "${KRUN[@]}" --out "$W/k_ref" --steps 40 --ckpt_every 1 >/dev/null 2>&1 || bad "kill: reference run"
ms=$(( ($(date +%s%N) - t0) / 10000000 + 1 )) # a tenth, in milliseconds
kills=0
for i in 1 2 3 4 5 6 7; do
    kargs "$W/k_run" 40 1
    "$MNEMO" train "${KA[@]}" >/dev/null 2>&1 &
    pid=$!
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill -9 $pid 2>/dev/null
    wait $pid
    [ $? -eq 137 ] && kills=$((kills + 1))
done
echo "kill -9 loop: $kills of 7 kills hit a running process, each $ms ms after its start"
[ $kills -ge 3 ] && ok || bad "kill -9 loop: only $kills of 7 kills hit a running process"
kfinish "kill -9 loop ($kills kills)" "$W/k_run" 40 1 "$W/k_ref"

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
grep -q -E "^session: budget=[0-9/]+ \(the checkpoint's\)" "$W/out" || bad "eval: not the 70 layers' budgets"
# (equal budgets are written as one value) a list of 70 different ones is written whole into the
# checkpoint and read back by info and eval
B70=$(seq -s / 10 79)
expect_ok "train --init, 70 budgets" "$MNEMO" train --train "$W/data/train.bin" --out "$W/r70b" \
    --init "$W/r70/model.safetensors" --budget "$B70" --batch 1 --steps 1 --threads 1
"$MNEMO" info "$W/r70b/model.safetensors" | grep -q "^attn options .*budget=$B70\$" \
    || bad "info: not the 70 budgets given"
expect_ok "eval 70 different budgets" "$MNEMO" eval --model "$W/r70b/model.safetensors" --data "$W/data/val.bin"
grep -q "^session: budget=$B70 (the checkpoint's)" "$W/out" || bad "eval: not the 70 budgets saved"
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

# a build without MPI started by an MPI launcher: each process says so in one line, nothing
# is trained (they would each train alone and race for the same files)
if command -v mpirun >/dev/null; then
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
        mpirun -np 2 "$MNEMO" train --train "$W/data/train.bin" --out "$W/run_mpi" "${TINY[@]}" \
        --steps 2 >"$W/out" 2>"$W/err"
    rc=$?
    if [ $rc -ne 0 ] && [ "$(grep -c '^mnemo train: .*built without MPI: rebuild with -DMNEMO_MPI=ON' "$W/err")" = 2 ] &&
       [ ! -e "$W/run_mpi/model.safetensors" ]; then ok; else bad "mpirun of a build without MPI"; cat "$W/err"; fi
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
