#!/usr/bin/env bash
# Step time with and without flushing subnormals (RESULTS.md, "What each recipe change bought"):
# a 4-minute RNN-T run on one thread with flush_denormal=F; compare perf/step_time_s in the CSV log.
#   bash scripts/experiments/flush_denormal.sh true      # and, at the same time, ... false
set -euo pipefail
if [ $# -ne 1 ] || { [ "$1" != true ] && [ "$1" != false ]; }; then
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; exit $?
fi
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
"$PY" train.py loss=rnnt logger=csv trainer.max_epochs=100 trainer.max_time=00:00:04:00 num_threads=1 \
    flush_denormal="$1" test=false trainer.limit_val_batches=1 hydra.run.dir=logs/experiments/flush_denormal/$1
"$PY" scripts/experiments/step_times.py logs/experiments/flush_denormal/$1/csv/metrics.csv
