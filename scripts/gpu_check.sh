#!/usr/bin/env bash
# Certifies this machine's NVIDIA GPU for seqloss and the recipe: builds the CUDA kernels (through
# scripts/setup_env.sh), runs the GPU tests, benchmarks seqloss against torchaudio and torch's CTC,
# trains every loss for about a minute and decodes on the GPU; prints one table, writes a JSON file
# and exits non-zero if any step failed (docs/gpu_check.md).
#   bash scripts/gpu_check.sh              # on a machine with a CUDA GPU
#   bash scripts/gpu_check.sh --cpu-smoke  # every step on the CPU at tiny sizes (CI)
# PYTHON=/path/to/python uses that interpreter (with seqloss built in place) instead of .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  bash scripts/setup_env.sh
  PYTHON=.venv/bin/python
fi
export WANDB_MODE=${WANDB_MODE:-offline}
exec "$PYTHON" scripts/gpu_check.py --python "$PYTHON" "$@"
