#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan, into build-fuzz/) and runs one of them
# for SECONDS seconds: first over fresh seeds (build-fuzz/seeds/NAME: checkpoints and token
# files written by the library, configs and task lines from the project's own files), then
# growing its corpus (build-fuzz/corpus/NAME, kept between runs). A crash, leak, timeout or
# failed check stops the run, saves the input as build-fuzz/crashes/NAME-* and exits non-zero.
# libFuzzer's output goes to build-fuzz/logs/NAME.log; the last line printed sums the run up.
# usage: scripts/fuzz.sh NAME SECONDS [libFuzzer options...]
#   NAME: ckpt | tokens | opts | task   (docs/internals/fuzzing.md)
# To replay one input: build-fuzz/fuzz/fuzz_NAME FILE
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh ckpt|tokens|opts|task SECONDS [libFuzzer options...]" >&2
    exit 2
fi
name=$1 secs=$2
shift 2
case "$name" in
    ckpt|tokens|opts|task) ;;
    *) echo "scripts/fuzz.sh: unknown fuzzer '$name' (ckpt, tokens, opts or task)" >&2; exit 2 ;;
esac
command -v clang >/dev/null || { echo "scripts/fuzz.sh: clang not found (scripts/setup.sh installs it)" >&2; exit 1; }
B=build-fuzz
jobs=$(nproc 2>/dev/null || echo 2)

# Single-threaded (no OpenMP): a fuzzer runs one input at a time, and every run is the same.
cmake -S . -B "$B" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMNEMO_FUZZ=ON \
      -DMNEMO_OPENMP=OFF -DMNEMO_BUILD_TESTS=OFF -DMNEMO_BUILD_BENCH=OFF >/dev/null
cmake --build "$B" -j"$jobs" --target "fuzz_$name" fuzz_seeds >/dev/null

# ---- seeds ------------------------------------------------------------------------------------
S="$B/seeds/$name"
rm -rf "$S"
mkdir -p "$S" "$B/corpus/$name" "$B/crashes" "$B/logs"
case "$name" in
    ckpt|tokens)
        mkdir -p "$B/seeds/lib/ckpt" "$B/seeds/lib/tokens"
        "$B/fuzz/fuzz_seeds" "$B/seeds/lib"
        cp "$B/seeds/lib/$name"/* "$S/" ;;
    opts) # CONFIG \0 ARG \0 ARG ... ("@" is the config's path; fuzz/fuzz_opts.c)
        { cat configs/kjv.json; printf '\0--config\0@'; } >"$S/kjv"
        { cat configs/kjv.json; printf '\0pos1\0--config=@\0--lr\0000.01\0--n-layer=2\0--resume'; } >"$S/kjv_flags"
        printf '{"n": "3", "out": "a", "out": "b", "resume": true, "_c": 1}\0--config\0@\0@' >"$S/repeat"
        printf '{"seed": 18446744073709551615, "lr": 1e-3, "steps": 2.5}\0--config\0@\0--seed\0-1' >"$S/numbers"
        printf '{"prompt": "--config", "resume": "yes"}\0--prompt\0--config\0--config\0@' >"$S/prompt"
        printf '\0--ema\0nan\0--threads=1e3\0--help' >"$S/flags"
        printf '[1, 2]\0--config\0@' >"$S/not_object" ;;
    task) # JSON Lines, blank lines, and the refusals of cli/task.c
        if command -v python3 >/dev/null; then
            python3 experiments/varassign.py tasks "$S/varassign" --n 3 --seed 7
        fi
        printf '{"prompt": "abc", "answer": "d", "group": "g1"}\n\n  \t\r\n' >"$S/group"
        printf '{"prompt": "caf\\u00e9 \\ud83d\\ude00", "answer": "\\u00ff"}\n' >"$S/unicode"
        printf '{"prompt": "a\\u0000b", "answer": "c"}\n{"prompt": "a", "answer": ""}\n' >"$S/refused"
        printf '{"prompt": "a", "answer": "b"} x\n{"prompt": "a\0", "answer": "b"}\n' >"$S/trailing"
        printf '[{"prompt": 1}]\n{"prompt": "p", "answer": "a", "group": 7}' >"$S/types" ;;
esac

# ---- the run ----------------------------------------------------------------------------------
log="$B/logs/$name.log"
set +e
"$B/fuzz/fuzz_$name" -max_total_time="$secs" -timeout=10 -close_fd_mask=3 -print_final_stats=1 \
    -artifact_prefix="$B/crashes/$name-" "$@" "$B/corpus/$name" "$S" >"$log" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz $name: FAILED (exit $rc), input saved as $B/crashes/$name-*, log $log" >&2
    exit 1
fi
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
echo "fuzz $name: ${runs:-?} runs in $secs s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?} inputs"
