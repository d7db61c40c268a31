#!/usr/bin/env bash
# One recipe variant, for one-change-at-a-time comparisons (RESULTS.md, "What each recipe change bought"):
# train RNN-T on one thread for MAX_TIME (default 14 min) keeping 8 epoch checkpoints, then decode
# the test set greedily with the best checkpoint, the last one and the average of the last AVG (default 4).
#   bash scripts/experiments/recipe_round.sh NAME [train.py overrides...]
#   MAX_TIME=00:00:16:00 AVG=3 bash scripts/experiments/recipe_round.sh cooldown trainer.max_steps=1600 \
#       model.scheduler.cooldown_fraction=0.3
# The run goes to logs/experiments/rounds/NAME. Run two at a time on a 2-core machine: both see the same batches.
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0
fi
name=$1; shift
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
run_dir=logs/experiments/rounds/$name
export OMP_NUM_THREADS=1
"$PY" train.py loss=${LOSS:-rnnt} logger=csv callbacks.epoch_checkpoint.save_top_k=8 trainer.max_epochs=100 \
    trainer.max_time=${MAX_TIME:-00:00:14:00} num_threads=1 hydra.run.dir="$run_dir" "$@"
best=$(ls "$run_dir"/checkpoints/best-*.ckpt | head -1)
"$PY" decode.py ckpt_path="$best" decoding=greedy num_threads=1
"$PY" decode.py ckpt_path="$run_dir/checkpoints/last.ckpt" decoding=greedy num_threads=1
"$PY" decode.py ckpt_path="$run_dir/checkpoints/last.ckpt" avg=${AVG:-4} decoding=greedy num_threads=1
