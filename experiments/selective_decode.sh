#!/usr/bin/env bash
# Selective Attention, experiment (d): streaming decode from 1K to 16K tokens, dense attention
# (a cache of every key) beside selective attention pruned to a budget per layer, one token per
# step, in one run of bench/decode (same shape, random weights). Writes
# runs/exp/decode/results.jsonl (tokens/s and live attention bytes at 1K, 2K, ... 16K) and
# decode.png. Run it on a quiet machine: it measures time.
# usage: experiments/selective_decode.sh [LEN] [BUDGET]   (default 16384 64)
set -euo pipefail
cd "$(dirname "$0")/.."
len=${1:-16384}
budget=${2:-64}
out=runs/exp/decode
mkdir -p "$out"
./scripts/setup.sh --experiments >/dev/null
[ -x build/bench/bench_decode ] || { echo "selective_decode: build first (cmake --build build)" >&2; exit 1; }
./build/bench/bench_decode --len "$len" --budget "$budget" --out "$out/results.jsonl"
/usr/bin/python3 experiments/plot.py decode "$out/results.jsonl" "$out/decode.png"
