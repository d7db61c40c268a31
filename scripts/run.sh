#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, train the default model (LSTM transducer,
# loss=rnnt) on the embedded synthetic corpus (train.py generates it first when it is missing),
# decode the test set with the average of the last 4 epoch checkpoints (greedy, then beam search)
# and print the WERs.
# Extra arguments are Hydra overrides for train.py (e.g. scripts/run.sh loss=ctc). Training runs for
# 14 minutes (experiment=readme_run) unless another experiment is given, which then has no cap.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
experiment=(experiment=readme_run)
for arg in "$@"; do
  case "$arg" in experiment=*|+experiment=*|++experiment=*) experiment=() ;; esac
done
.venv/bin/python train.py "${experiment[@]}" "$@"
.venv/bin/python decode.py ckpt_path=last avg=4 decoding=greedy
.venv/bin/python decode.py ckpt_path=last avg=4 decoding=beam
