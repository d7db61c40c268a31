#!/usr/bin/env bash
# Creates .venv (once) with every pinned dependency and the project installed in editable mode.
# Works on a fresh machine that has only Python 3.10+; re-running is cheap (pip skips what is there).
# The install step builds seqloss's native kernels (docs/install.md): the C++ CPU extension always, the CUDA extension
# when nvcc is on the PATH (CUDA_HOME and TORCH_CUDA_ARCH_LIST default to that toolkit and 8.0;9.0;12.0+PTX).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
if command -v nvcc >/dev/null 2>&1; then
  nvcc_dir=$(dirname "$(dirname "$(command -v nvcc)")")
  # nvcc may be a wrapper script: the toolkit is then the `cuda` folder next to its bin folder.
  if [ -z "${CUDA_HOME:-}" ]; then
    if [ -d "$nvcc_dir/cuda/lib64" ]; then export CUDA_HOME="$nvcc_dir/cuda"; else export CUDA_HOME="$nvcc_dir"; fi
  fi
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0;12.0+PTX"}
  export SEQLOSS_BUILD_CUDA=${SEQLOSS_BUILD_CUDA:-1}
fi
export MAX_JOBS=${MAX_JOBS:-2}
stamp=.venv/.requirements.sha
want=$(cat requirements.txt pyproject.toml setup.py $(find seqloss/csrc -type f | sort) | sha256sum | cut -d' ' -f1)
want="$want-cuda${SEQLOSS_BUILD_CUDA:-auto}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned requirements (torch takes about a minute)"
  .venv/bin/pip install -q -r requirements.txt
  echo "[setup] installing seqloss and building its native kernels (CUDA: ${SEQLOSS_BUILD_CUDA:-auto})"
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
