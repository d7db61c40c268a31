#!/usr/bin/env bash
# One loss under the README budget: train LOSS for 14 minutes on one thread, then decode the test set
# with the average of the last 4 epoch checkpoints, greedy and with beam search (RESULTS.md, "Which loss wins").
#   bash scripts/experiments/per_loss.sh rnnt [extra train.py overrides...]
# The run goes to $OUT_ROOT/<loss> (default logs/experiments/per_loss/<loss>), the decode files to its decode/.
# STEPS=<n> trains for n optimizer steps instead of 14 minutes (the same work whatever else loads the machine).
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0
fi
loss=$1; shift
case "$loss" in ctc|rnnt|modified_rnnt|ssnt) ;; *) echo "LOSS must be ctc, rnnt, modified_rnnt or ssnt, got '$loss'" >&2; exit 2;; esac
root=${OUT_ROOT:-logs/experiments/per_loss}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
run_dir="$root/$loss"
export OMP_NUM_THREADS=1
if [ -n "${STEPS:-}" ]; then budget=(trainer.max_time=null trainer.max_steps="$STEPS"); else budget=(trainer.max_time=00:00:14:00); fi
"$PY" train.py loss="$loss" logger=csv trainer.max_epochs=100 "${budget[@]}" num_threads=1 \
    hydra.run.dir="$run_dir" "$@"
for decoding in greedy beam; do
  "$PY" decode.py ckpt_path="$run_dir/checkpoints/last.ckpt" avg=4 decoding=$decoding num_threads=1
done
