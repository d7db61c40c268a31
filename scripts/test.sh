#!/usr/bin/env bash
# The test command: sets up .venv on a fresh machine, then runs the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow" tests/seqloss).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_MODE=${WANDB_MODE:-offline}
exec .venv/bin/python -m pytest "$@"
