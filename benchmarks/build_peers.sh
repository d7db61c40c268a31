#!/usr/bin/env bash
# Make the two benchmark peers that have no wheel for a current torch importable, into .peers/
# (ignored by git; benchmarks/bench_overhead.py finds them with PYTHONPATH=.peers):
#   * optimized_transducer 1.4 (C++ RNN-T on packed logits), built from its PyPI source for the CPU;
#   * ssnt-loss (pure PyTorch SSNT, ssnt_loss_mem), from a clone of its repository if one is given.
#
#   bash benchmarks/build_peers.sh [path/to/ssnt_loss checkout]
#   PYTHONPATH=.peers OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py
#
# optimized_transducer's own build does not work on a current torch as released: it asks for C++14
# (torch's headers need C++17; it is built here as C++20) and downloads pybind11 2.6 at configure
# time (it is given a local pybind11 source instead). CUDA is left out (OT_WITH_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
dest=$PWD/.peers
OT_VERSION=1.4
PYBIND11_VERSION=2.13.6
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

if "$PY" -c "import sys; sys.path.insert(0, '$dest'); import optimized_transducer" 2>/dev/null; then
  echo "[peers] optimized_transducer already in $dest"
else
  echo "[peers] building optimized_transducer $OT_VERSION (about 2 minutes on one core)"
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$work" "optimized_transducer==$OT_VERSION" \
      "pybind11==$PYBIND11_VERSION"
  tar -xzf "$work/optimized_transducer-$OT_VERSION.tar.gz" -C "$work"
  tar -xzf "$work/pybind11-$PYBIND11_VERSION.tar.gz" -C "$work"
  src=$work/optimized_transducer-$OT_VERSION
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 20)/' "$src/CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 20' "$src/CMakeLists.txt" || { echo "[peers] could not set C++20" >&2; exit 1; }
  OT_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DOT_WITH_CUDA=OFF -DPYTHON_EXECUTABLE=$(realpath "$PY")
  -DFETCHCONTENT_SOURCE_DIR_PYBIND11=$work/pybind11-$PYBIND11_VERSION" \
  OT_MAKE_ARGS="-j${JOBS:-2}" \
      "$PY" -m pip install -q --no-build-isolation --no-deps --target "$dest" "$src"
  "$PY" -c "import sys; sys.path.insert(0, '$dest'); import optimized_transducer as ot; print('[peers] ok:', ot.__file__)"
fi

if [ $# -ge 1 ]; then
  [ -f "$1/ssnt_loss.py" ] || { echo "[peers] $1 has no ssnt_loss.py (a clone of github.com/George0828Zhang/ssnt_loss)" >&2; exit 2; }
  cp "$1/ssnt_loss.py" "$dest/ssnt_loss.py"
  echo "[peers] ssnt_loss.py copied from $1"
fi
