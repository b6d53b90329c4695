#!/usr/bin/env bash
# Installs what mnemo needs on Debian 12 (run as root, or with sudo available):
# the compiler and CMake, OpenBLAS (both the pthread build, which provides the headers, and the
# OpenMP build that mnemo links), cJSON, cmocka, the KJV text, and Python 3 with PyTorch (CPU)
# and numpy for the reference tests, python3-venv for the Python package's environment
# (scripts/venv.sh), strace (the CLI test kills runs at chosen system calls
# with it), clang with libFuzzer (libclang-rt-14-dev) for the fuzzers' short runs, and Open MPI
# (the MPI build's data-parallel test; -DMNEMO_MPI=ON). Safe to run again.
# usage: scripts/setup.sh [--main | --experiments]
#   --main: only what the main job needs, no test packages
#   --experiments: the main job's packages plus Python 3 with matplotlib (experiments/*.sh plots)
set -euo pipefail

pkgs=(build-essential cmake pkg-config libopenblas-dev libopenblas0-openmp libcjson-dev bible-kjv)
case "${1:-}" in
    --main) ;;
    --experiments) pkgs+=(python3 python3-matplotlib) ;;
    "") pkgs+=(libcmocka-dev python3 python3-numpy python3-torch python3-venv strace clang
               libclang-rt-14-dev libopenmpi-dev openmpi-bin) ;;
    *) echo "usage: scripts/setup.sh [--main | --experiments]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all packages present"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
