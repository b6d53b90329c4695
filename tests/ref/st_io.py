"""st_io -- a small numpy reader/writer for safetensors files.

Layout: an 8-byte little-endian header length N, N bytes of JSON, then the raw little-endian
tensor data. The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the start of the data section) and may hold "__metadata__", a
string -> string map. Supported dtypes: F32, I32, I64, U16, U8 (what mnemo writes and reads).

    tensors, meta = load(path)          # dict name -> numpy array, dict str -> str
    save(path, tensors, meta)

Every malformed file raises StFormatError (a ValueError) whose message names the file and the
problem; callers print it as one line. This module depends on numpy only.
"""

import json
import os
import struct

import numpy as np

DTYPES = {
    "F32": np.dtype("<f4"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
}
# Largest JSON header we accept (the safetensors spec uses 100 MB); guards against a hostile size.
MAX_HEADER = 100 * 1024 * 1024


class StFormatError(ValueError):
    """A file that is not a valid (supported) safetensors file."""


def _dtype_name(arr):
    for name, dt in DTYPES.items():
        if arr.dtype.newbyteorder("<") == dt or arr.dtype == dt:
            return name
    raise StFormatError("unsupported numpy dtype %s (supported: %s)"
                        % (arr.dtype, ", ".join(DTYPES)))


def load(path):
    """Read a safetensors file into ({name: ndarray}, {key: value}).

    The arrays are fresh native-endian copies. Raises OSError if the file cannot be read and
    StFormatError if it is malformed (bad header length, bad JSON, overlapping or out-of-range
    offsets, a size that does not match the shape, an unsupported dtype).
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise StFormatError("%s: truncated (%d bytes, need at least 8)" % (path, len(blob)))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise StFormatError("%s: header length %d exceeds the file size %d" % (path, n, len(blob)))
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StFormatError("%s: header is not valid JSON (%s)" % (path, e)) from None
    if not isinstance(header, dict):
        raise StFormatError("%s: header is not a JSON object" % path)
    data = memoryview(blob)[8 + n:]

    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise StFormatError("%s: __metadata__ must map strings to strings" % path)

    tensors = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise StFormatError("%s: entry %r is not an object" % (path, name))
        dt = DTYPES.get(info.get("dtype"))
        if dt is None:
            raise StFormatError("%s: tensor %r has unsupported dtype %r"
                                % (path, name, info.get("dtype")))
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if (not isinstance(shape, list) or
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                        for d in shape)):
            raise StFormatError("%s: tensor %r has a bad shape %r" % (path, name, shape))
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise StFormatError("%s: tensor %r has bad data_offsets %r" % (path, name, offs))
        b, e = offs
        count = 1
        for d in shape:
            count *= d
        if not 0 <= b <= e <= len(data):
            raise StFormatError("%s: tensor %r data_offsets [%d, %d] outside the data (%d bytes)"
                                % (path, name, b, e, len(data)))
        if e - b != count * dt.itemsize:
            raise StFormatError("%s: tensor %r has %d bytes, its shape %s needs %d"
                                % (path, name, e - b, shape, count * dt.itemsize))
        spans.append((b, e, name))
        arr = np.frombuffer(data[b:e], dtype=dt).reshape(shape)
        tensors[name] = arr.astype(dt.newbyteorder("="), copy=True)
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise StFormatError("%s: tensors %r and %r overlap" % (path, n0, n1))
    return tensors, dict(meta)


def save(path, tensors, metadata=None):
    """Write {name: ndarray} (and optional string metadata) as a safetensors file.

    Tensors are written in name order, contiguous, little-endian; the header is padded with
    spaces to a multiple of 8 bytes. The write goes to a temporary file renamed into place.
    """
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise StFormatError("metadata must map strings to strings (%r: %r)" % (k, v))
        header["__metadata__"] = dict(metadata)
    chunks = []
    off = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise StFormatError("'__metadata__' is not a valid tensor name")
        arr = np.asarray(tensors[name])
        dname = _dtype_name(arr)
        raw = np.ascontiguousarray(arr, dtype=DTYPES[dname]).tobytes()
        header[name] = {"dtype": dname, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)
