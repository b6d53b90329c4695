"""The examples of docs/python.md run as written (each ```python block, in a fresh namespace)."""
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_blocks_found():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_example_runs(i, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[i], f"docs/python.md block {i}", "exec"), {"__name__": "__doc__"})
    assert capsys.readouterr().out  # every example prints what it shows
