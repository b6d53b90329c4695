#!/usr/bin/env python3
"""gates.py -- Infini-attention's learned gates g = sigmoid(beta) of a checkpoint, per layer and
head (the spec's sanity check, section 10: after training the heads split into local-only
(g ~ 0), memory-only (g ~ 1) and mixers (g ~ 0.5)). Reads the safetensors file directly
(stdlib only): tensors blocks.{l}.attn.gate (checkpoint format 2; blocks.{l}.attn.kind in
format 1), one beta per head.

usage: experiments/gates.py CKPT [CKPT...]
"""
import json
import math
import struct
import sys


def gates(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, t in header.items():
            if not (name.startswith("blocks.") and name.endswith((".attn.gate", ".attn.kind"))):
                continue
            if t["dtype"] != "F32":
                raise SystemExit("gates.py: %s: %s is %s, expected F32" % (path, name, t["dtype"]))
            a, b = t["data_offsets"]
            f.seek(base + a)
            beta = struct.unpack("<%df" % ((b - a) // 4), f.read(b - a))
            out[int(name.split(".")[1])] = [1 / (1 + math.exp(-x)) for x in beta]
    return [out[k] for k in sorted(out)]


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    for path in sys.argv[1:]:
        try:
            g = gates(path)
        except (OSError, ValueError, KeyError, struct.error) as e:
            sys.stderr.write("gates.py: cannot read %s: %s\n" % (path, e))
            return 1
        if not g:
            sys.stderr.write("gates.py: %s has no gates (not an infini model?)\n" % path)
            return 1
        print(path)
        for l, row in enumerate(g):
            print("  layer %d: %s" % (l, "  ".join("%.3f" % x for x in row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
