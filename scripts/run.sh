#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then train the default model (LSTM transducer,
# loss=rnnt) on the embedded synthetic corpus, which train.py generates first when it is missing.
# Extra arguments are Hydra overrides for train.py (e.g. scripts/run.sh loss=ctc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python train.py "$@"
