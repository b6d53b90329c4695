"""st_compat.py -- mnemo's safetensors files against independent readers and writers.

usage: st_compat.py TEST_ST_BINARY WORKDIR       (registered by tests/st_compat.cmake)

1. test_st --write-compat writes the reference tensor set; it is loaded here with the numpy
   reader of st_io.py, with PyTorch (torch.from_numpy) and, when importable, with the
   `safetensors` package, and every dtype, shape, value and metadata string is compared.
2. Files written here by an independent writer (unpadded header, data stored in a different
   order than the header lists it, raw UTF-8 or \\u-escaped JSON) are read back by
   test_st --check-compat, which checks every value.
3. Negative controls: a changed value and a header with a hole must make the C side fail.
Exit 0 on success, 1 on failure, 77 (skipped) without numpy.
"""
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
except ImportError:
    print("numpy not available: skipped")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import load  # noqa: E402  (the reference tests' reader)

UNI = "\u00fcn\u00ef.\u540d"  # the same "ünï.名" as NAME_UNI in tests/test_st.c


def expected():
    """The tensor set of compat_fill() in tests/test_st.c, built independently."""
    t = {
        "w.f32": np.array([(i - 5) * 0.25 for i in range(12)], np.float32).reshape(3, 4),
        "b.i32": np.array([i * i * 1000 - 7 for i in range(5)], np.int32),
        "ids.u16": np.array([65535 - 1000 * i for i in range(6)], np.uint16).reshape(2, 3),
        "bytes.u8": np.array([(31 * i) % 256 for i in range(8)], np.uint8).reshape(2, 2, 2),
        "step.i64": np.array(2**40 + 3, np.int64),
        "empty": np.zeros((0, 3), np.float32),
        UNI: np.array([1.5, -2.5], np.float32),
    }
    meta = {"format": "mnemo-test", "quote": 'a "b" \\ c\n\ttab',
            "\u00fcnicode": "h\u00e9llo \u2713 \U0001F642"}
    return t, meta


def save(path, tensors, meta, ensure_ascii=False, hole=False):
    """Independent writer: no header padding, data in reverse header order."""
    order = list(tensors)
    header, blobs, off = {"__metadata__": meta}, {}, 0
    names = {np.dtype(v).str: k for k, v in
             {"F32": "<f4", "I32": "<i4", "U16": "<u2", "U8": "|u1", "I64": "<i8"}.items()}
    for name in reversed(order):
        a = np.array(tensors[name], order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        blobs[name] = a.tobytes()
        if hole and off:
            off += 4
            blobs[name] = b"\0" * 4 + blobs[name]
            header[name] = {"data_offsets": [off, off + a.nbytes]}
        else:
            header[name] = {"data_offsets": [off, off + a.nbytes]}
        header[name].update(dtype=names[a.dtype.str], shape=list(a.shape))
        off = header[name]["data_offsets"][1]
    header = {k: header[k] for k in ["__metadata__"] + order}  # header order != data order
    text = json.dumps(header, ensure_ascii=ensure_ascii, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in reversed(order):
            f.write(blobs[name])


def compare(got, got_meta, want, want_meta, who):
    ok = True
    if set(got) != set(want):
        print(f"{who}: names {sorted(got)} != {sorted(want)}")
        return False
    for k, w in want.items():
        g = np.asarray(got[k])
        if g.dtype != w.dtype or g.shape != w.shape or not np.array_equal(g, w):
            print(f"{who}: tensor {k!r}: got {g.dtype} {g.shape} {g.ravel()[:5]}, "
                  f"want {w.dtype} {w.shape} {w.ravel()[:5]}")
            ok = False
    if got_meta != want_meta:
        print(f"{who}: metadata {got_meta!r} != {want_meta!r}")
        ok = False
    return ok


def main():
    exe, work = sys.argv[1], sys.argv[2]
    want, want_meta = expected()
    ok = True

    # 1. C writes, Python reads.
    path = os.path.join(work, "st_compat_c.safetensors")
    subprocess.run([exe, "--write-compat", path], check=True)
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    if (8 + n) % 8 or raw[8:9] != b"{" or raw[8:8 + n].rstrip(b" ")[-1:] != b"}":
        print(f"layout: header length {n}, data section not 8-aligned or header not padded JSON")
        ok = False
    got, meta = load(path)
    ok &= compare(got, meta, want, want_meta, "numpy reader")

    import torch
    for k, w in want.items():
        g = got[k].astype(np.int32) if w.dtype == np.uint16 else got[k]  # no uint16 in torch 1.13
        w = w.astype(np.int32) if w.dtype == np.uint16 else w
        tt = torch.from_numpy(g)
        if list(tt.shape) != list(w.shape) or not torch.equal(tt, torch.from_numpy(w)):
            print(f"torch: tensor {k!r} differs")
            ok = False
    if not torch.equal(torch.from_numpy(got["w.f32"]),
                       torch.arange(-5, 7, dtype=torch.float32).reshape(3, 4) * 0.25):
        print("torch: w.f32 differs from torch.arange reference")
        ok = False

    try:
        from safetensors import safe_open
        from safetensors.numpy import load_file
    except ImportError:
        print("safetensors package not importable: that check skipped")
    else:
        ok &= compare(load_file(path), safe_open(path, "np").metadata(), want, want_meta,
                      "safetensors package")

    # 2. Python writes, C reads (both JSON spellings).
    for ascii_ in (False, True):
        p = os.path.join(work, f"st_compat_py{int(ascii_)}.safetensors")
        save(p, want, want_meta, ensure_ascii=ascii_)
        r = subprocess.run([exe, "--check-compat", p])
        if r.returncode != 0:
            print(f"C reader rejected the Python-written file (ensure_ascii={ascii_})")
            ok = False

    # 3. The C checker must notice a wrong value and a file with a hole.
    bad = dict(want)
    bad["b.i32"] = want["b.i32"].copy()
    bad["b.i32"][3] += 1
    p = os.path.join(work, "st_compat_bad.safetensors")
    for label, tensors, hole in (("changed value", bad, False), ("hole", want, True)):
        save(p, tensors, want_meta, hole=hole)
        r = subprocess.run([exe, "--check-compat", p], capture_output=True, text=True)
        if r.returncode == 0:
            print(f"negative control '{label}' was accepted by the C side")
            ok = False
        else:
            print(f"negative control '{label}' rejected as expected: {r.stdout.strip()}")

    print("st_compat:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
