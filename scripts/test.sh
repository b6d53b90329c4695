#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/setup.sh), builds in Release and runs
# every test (unit tests, CLI behaviour, PyTorch reference checks), then installs the Python
# package into .venv (scripts/venv.sh: pip install ., one CMake build) and runs its pytest suite
# (tests/python), then the MPI build and its
# data-parallel test (mpirun on this machine), then builds the unit tests with AddressSanitizer + UndefinedBehaviorSanitizer and runs them again, and last runs each
# fuzzer for a few seconds (scripts/fuzz.sh), so that they keep building and passing.
# usage: scripts/test.sh            (from the repository root or anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)

echo "== Release build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMNEMO_WERROR=ON >/dev/null
cmake --build build -j"$jobs" >/dev/null
(cd build && OMP_NUM_THREADS=2 ctest --output-on-failure --no-tests=error)

echo "== Python package (scripts/venv.sh) and its tests (tests/python, pytest)"
./scripts/venv.sh
OMP_NUM_THREADS=2 .venv/bin/python -m pytest -q -p no:cacheprovider tests/python

echo "== MPI build and data-parallel tests (tests/mpi_test.sh)"
cmake -S . -B build-mpi -DCMAKE_BUILD_TYPE=Release -DMNEMO_MPI=ON -DMNEMO_BUILD_BENCH=OFF \
      -DMNEMO_WERROR=ON >/dev/null
cmake --build build-mpi -j"$jobs" --target mnemo_cli >/dev/null
(cd build-mpi && ctest --output-on-failure --no-tests=error -R '^mpi$')

echo "== ASan + UBSan build and unit tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMNEMO_SANITIZE=ON -DMNEMO_BUILD_BENCH=OFF \
      -DMNEMO_WERROR=ON >/dev/null
cmake --build build-asan -j"$jobs" >/dev/null
# Leak checking is on for mnemo's own allocations; tests/lsan.supp leaves out only the OpenMP
# runtime's and OpenBLAS's (thread pools and buffers kept until exit), and print_suppressions=0
# keeps LeakSanitizer's note about them off the CLI tests' one-line stderr.
# Fresh heap memory is filled with 0xff bytes (a NaN as float), not only its first 4 KiB:
# a computation that reads a buffer before writing it shows up as a NaN in the results.
supp="$PWD/tests/lsan.supp"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:max_malloc_fill_size=2147483647:malloc_fill_byte=255 \
    LSAN_OPTIONS=suppressions="$supp":print_suppressions=0 \
    UBSAN_OPTIONS=print_stacktrace=1 OMP_NUM_THREADS=2 \
    ctest --output-on-failure --no-tests=error -E '^(ref_|st_compat)')

echo "== Fuzzers, a short run of each (long runs: docs/fuzzing.md)"
for f in ckpt tokens opts task; do
    ./scripts/fuzz.sh "$f" 5
done
