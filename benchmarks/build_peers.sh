#!/usr/bin/env bash
# Make the two benchmark peers that have no wheel for a current torch importable from .peers/
# (ignored by git; benchmarks/bench_overhead.py finds them with PYTHONPATH=.peers):
#   * optimized_transducer 1.4 (C++ RNN-T on packed logits), built from its PyPI source for the CPU;
#   * ssnt-loss (pure PyTorch SSNT, ssnt_loss_mem), copied from a clone of its repository if one is given.
#
#   bash benchmarks/build_peers.sh [path/to/ssnt_loss clone]     # about 2 minutes
#   PYTHONPATH=.peers OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py
#
# optimized_transducer's build as released fails on a current torch; this script works around each
# failure (docs/kernels.md, "Benchmark peers"): C++14 -> C++20 (torch's headers need C++17 or newer);
# pybind11 2.6 downloaded at configure time -> a local pybind11 2.13 (pip) found with find_package;
# with a CUDA build of torch, TorchConfig.cmake must find the CUDA toolkit even for a CPU-only build:
# the toolkit root, an architecture list (no GPU to detect) and libnvrtc are given to CMake.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(cd "$(dirname "${PYTHON:-.venv/bin/python}")" && pwd)/$(basename "${PYTHON:-.venv/bin/python}")
dest=$PWD/.peers
OT_VERSION=1.4
PYBIND11_VERSION=2.13.6
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
mkdir -p "$dest"

if PYTHONPATH="$dest" "$PY" -c "import optimized_transducer" 2>/dev/null; then
  echo "[peers] optimized_transducer already in $dest"
else
  echo "[peers] building optimized_transducer $OT_VERSION for the CPU (about 2 minutes on one core)"
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$work" "optimized_transducer==$OT_VERSION"
  "$PY" -m pip install -q --target "$work/pybind11" "pybind11==$PYBIND11_VERSION"
  tar -xzf "$work/optimized_transducer-$OT_VERSION.tar.gz" -C "$work"
  src=$work/optimized_transducer-$OT_VERSION
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 20)/' "$src/CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 20' "$src/CMakeLists.txt" || { echo "[peers] could not set C++20" >&2; exit 1; }
  echo 'find_package(pybind11 CONFIG REQUIRED)' > "$src/cmake/pybind11.cmake"
  args=(-DCMAKE_BUILD_TYPE=Release -DOT_WITH_CUDA=OFF "-DPYTHON_EXECUTABLE=$PY" -Wno-dev
        "-Dpybind11_DIR=$work/pybind11/pybind11/share/cmake/pybind11")
  if "$PY" -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
    cuda_root=${CUDA_HOME:-}
    for candidate in /usr/local/cuda /usr/local/cuda-*; do
      [ -n "$cuda_root" ] || [ ! -f "$candidate/include/cuda_runtime.h" ] || cuda_root=$candidate
    done
    [ -n "$cuda_root" ] || { echo "[peers] torch is a CUDA build: its CMake config needs a CUDA toolkit; set CUDA_HOME" >&2
                             exit 1; }
    nvrtc=$("$PY" -c "import glob, os, torch; d = os.path.dirname(os.path.dirname(torch.__file__)); \
print((sorted(glob.glob(d + '/nvidia/*/lib/libnvrtc.so*')) + sorted(glob.glob('$cuda_root/lib*/libnvrtc.so*')) + [''])[0])")
    args+=("-DCUDA_TOOLKIT_ROOT_DIR=$cuda_root" "-DCUDAToolkit_ROOT=$cuda_root")
    [ -z "$nvrtc" ] || args+=("-DCUDA_nvrtc_LIBRARY=$nvrtc" "-DCUDA_NVRTC_LIB=$nvrtc")
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  fi
  mkdir -p "$work/build"
  (cd "$work/build" && cmake "$src" "${args[@]}" > cmake.log 2>&1 && make -j"${JOBS:-2}" > make.log 2>&1) || {
    tail -30 "$work/build/cmake.log" "$work/build/make.log" >&2 2>/dev/null; echo "[peers] build failed" >&2; exit 1; }
  rm -rf "$dest/optimized_transducer"
  cp -r "$src/optimized_transducer/python/optimized_transducer" "$dest/"
  cp "$work"/build/lib/*.so "$dest/"
  PYTHONPATH="$dest" "$PY" -c "import optimized_transducer as ot; print('[peers] ok:', ot.__file__)"
fi

if [ $# -ge 1 ]; then
  [ -f "$1/ssnt_loss.py" ] || { echo "[peers] $1 has no ssnt_loss.py (a clone of github.com/George0828Zhang/ssnt_loss)" >&2; exit 2; }
  cp "$1/ssnt_loss.py" "$dest/ssnt_loss.py"
  echo "[peers] ssnt_loss.py copied from $1"
fi
