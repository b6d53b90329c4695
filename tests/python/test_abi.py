"""The ctypes mirrors of the public structs against the C header: every field's offset and
each struct's size, from a small C program compiled against include/mnemo.h (a field added,
removed or retyped in the header fails here instead of corrupting memory)."""
import ctypes
import os
import subprocess
from pathlib import Path

from mnemo import _lib

ROOT = Path(__file__).resolve().parents[2]
STRUCTS = {"mnemo_model_config": _lib.ModelConfig, "mnemo_train_config": _lib.TrainConfig,
           "mnemo_train_event": _lib.TrainEvent, "mnemo_eval_result": _lib.EvalResult,
           "mnemo_session_config": _lib.SessionConfig,
           "mnemo_sampler_config": _lib.SamplerConfig, "mnemo_attn_opt": _lib.AttnOpt,
           "mnemo_attn_cfg": _lib.AttnCfg, "mnemo_attn_param": _lib.AttnParam,
           "mnemo_attn_io": _lib.AttnIo, "mnemo_attn_ops": _lib.AttnOps}
RENAMED = {("mnemo_attn_opt", "defval"): "def"}


def test_struct_layouts(tmp_path):
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "mnemo_attn.h"',
             "int main(void) {"]
    for cname, py in STRUCTS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for f, _ in py._fields_:
            c = RENAMED.get((cname, f), f)
            lines.append(f'printf("{cname} {f} %zu\\n", offsetof(struct {cname}, {c}));')
    lines.append("return 0; }")
    src = tmp_path / "abi.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "abi"
    subprocess.run([os.environ.get("CC", "cc"), "-std=c11", "-I", str(ROOT / "include"), str(src),
                    "-o", str(exe)], check=True)
    got = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        s, f, v = line.split()
        got[(s, f)] = int(v)
    for cname, py in STRUCTS.items():
        assert got[(cname, "size")] == ctypes.sizeof(py), cname
        for f, _ in py._fields_:
            assert got[(cname, f)] == getattr(py, f).offset, f"{cname}.{f}"


def test_enums_match_header():
    text = (ROOT / "include" / "mnemo.h").read_text()
    for name, v in [("MNEMO_ERR_NOMEM", -1), ("MNEMO_ERR_IO", -2), ("MNEMO_ERR_FORMAT", -3),
                    ("MNEMO_ERR_ARG", -4), ("MNEMO_ERR_NUMERIC", -5),
                    ("MNEMO_ERR_UNSUPPORTED", -6), ("MNEMO_ERR_FULL", -7),
                    ("MNEMO_TRAIN_EV_STEP", 1), ("MNEMO_TOK_BOS", 256)]:
        assert f"{name} = {v}" in text or f"{name} {v}" in text, name
