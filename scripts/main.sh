#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is needed, build, prepare the King
# James Bible corpus, train the default model (configs/kjv.json), evaluate it on the held-out
# 5%, and print a generated sample. Re-running skips the steps already done except training.
# usage: scripts/main.sh [extra flags for mnemo train]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --main
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs" >/dev/null
if [ ! -s data/kjv/train.bin ] || [ ! -s data/kjv/val.bin ]; then
    bible -f "Gen1:1-Rev22:21" | ./build/mnemo prepare --out data/kjv -
fi
# training starts over each time (--overwrite), unless the flags given continue it (--resume)
over=--overwrite
for a in "$@"; do [ "$a" = --resume ] && over=; done
./build/mnemo train --config configs/kjv.json $over "$@"
# Sliding windows a quarter of a window apart: every scored byte sees at least 192 bytes of context
# (configs/kjv.json trains windows of 256). The training's last "eval" line is the
# disjoint-window figure of the same model.
./build/mnemo eval --model runs/kjv/model.safetensors --data data/kjv/val.bin --stride 64
echo "== sample"
./build/mnemo generate --model runs/kjv/model.safetensors --prompt "And God said" --n 400 --seed 7
