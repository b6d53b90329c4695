"""st_read.py -- a minimal, independent safetensors reader on numpy (for reference tests).

load(path) -> (dict name -> numpy array, metadata dict). Follows the published layout:
u64 little-endian header length N, N bytes of UTF-8 JSON, then the data section that the
"data_offsets" of each tensor index. BF16 is not a numpy dtype and is returned as raw uint16.
"""
import json
import struct

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
          "BOOL": "?"}


def load(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = memoryview(buf)[8 + n:]
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=np.dtype(DTYPES[e["dtype"]]))
        out[name] = arr.reshape(e["shape"]).copy()
    return out, meta
