#!/usr/bin/env bash
# Streaming a dense checkpoint far past its context without retraining (StreamingLLM, Xiao et
# al. 2023; issue 14 item 4): the main job's model (n_ctx 256, runs/kjv, made by scripts/main.sh
# if missing) reads the first LEN tokens of the KJV validation split as one stream through
# sessions that keep only the last W keys (W = 256, the model's context, 64 and 16), with or
# without the first 4 tokens as attention sinks (then the window is W - 4: the same state), with
# RoPE positions counted within the kept cache (StreamingLLM's rule) or in the stream. Bits per byte every 2,000 tokens (bench_stream --every), beside the model's own
# sliding-window evaluation with recomputation (mnemo eval --stride 64: every prediction sees at
# least 192 tokens, the quality a bounded window can aim for). Writes
# runs/exp/streaming/results.jsonl and streaming.png (docs/experiments.md).
# usage: experiments/streaming_llm.sh [LEN] [MODEL]      (default 100000 runs/kjv/model.safetensors)
set -euo pipefail
cd "$(dirname "$0")/.."
len=${1:-100000}
model=${2:-runs/kjv/model.safetensors}
out=runs/exp/streaming
mkdir -p "$out"
./scripts/setup.sh --experiments >/dev/null
[ -x build/bench/bench_stream ] || { echo "streaming_llm: build first (cmake --build build)" >&2; exit 1; }
[ -s "$model" ] || ./scripts/main.sh
res="$out/results.jsonl"
: >"$res"
for w in 256 64 16; do
  for opts in window=$w,positions=cache window=$((w - 4)),sinks=4,positions=cache \
              window=$w,positions=absolute window=$((w - 4)),sinks=4,positions=absolute; do
    ./build/bench/bench_stream --model "$model" --data data/kjv/val.bin --len "$len" \
        --chunk 1 --every 2000 --threads 2 --attn_opt "$opts" --out "$out/run.jsonl"
    cat "$out/run.jsonl" >>"$res"
  done
done
# the same LEN tokens as a token file of their own (header: magic, version, width, vocab,
# reserved, count; docs/checkpoint.md), scored with recomputation: the baseline
/usr/bin/python3 - data/kjv/val.bin "$len" "$out/first.bin" <<'PY'
import struct, sys
src, n, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b = open(src, "rb").read()
magic, ver, width, vocab, res, count = struct.unpack("<8sIIIIQ", b[:32])
n = min(n, count)
open(dst, "wb").write(struct.pack("<8sIIIIQ", magic, ver, width, vocab, res, n) + b[32:32 + width * n])
PY
ref=$(./build/mnemo eval --model "$model" --data "$out/first.bin" --stride 64 |
      sed -n 's/.*| \([0-9.]*\) bits\/byte$/\1/p')
echo "{\"reference_bpb\": $ref, \"label\": \"the same tokens, sliding windows with recomputation (eval --stride 64)\"}" >>"$res"
/usr/bin/python3 experiments/plot.py streaming "$res" "$out/streaming.png"
