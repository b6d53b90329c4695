#!/usr/bin/env bash
# The Python package in a virtual environment inside the clone: makes .venv from Debian's
# /usr/bin/python3 (--system-site-packages, so that Debian's numpy and PyTorch are seen; Debian's
# Python refuses global pip installs), pip-installs the build backend and the test tools from
# PyPI (scikit-build-core, pytest, safetensors, mypy; never torch), then `pip install .`: one CMake
# build of the library (build-py/, kept between runs) with the binding. Safe to run again.
# usage: scripts/venv.sh            then: .venv/bin/python -c "import mnemo"
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c "import scikit_build_core, pytest, safetensors, mypy" 2>/dev/null; then
    echo "venv: installing scikit-build-core, pytest, safetensors, mypy into .venv"
    .venv/bin/pip install -q --disable-pip-version-check "scikit-build-core>=0.10" pytest safetensors mypy
fi
echo "venv: building and installing mnemo (pip install .)"
# no build isolation: the backend installed above builds, nothing is downloaded per build
.venv/bin/pip install -q --disable-pip-version-check --no-build-isolation .
