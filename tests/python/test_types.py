"""The shipped type hints (py.typed) are complete and consistent: mypy --strict on the package."""
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "python" / "mnemo"


def test_mypy_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                        str(tmp_path), str(PKG)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
