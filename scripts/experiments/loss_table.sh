#!/usr/bin/env bash
# RESULTS.md's per-loss table in one command: every loss trained under the README budget (14 minutes,
# one thread, one training after the other; scripts/experiments/per_loss.sh, which also decodes the
# test set greedy and with beam search, average of the last 4 epoch checkpoints), then beam + word LM
# with lm_weight x word_score tuned on dev, run on the other core beside the next loss's training (a
# decode's result does not depend on the load), and the markdown table.
#   bash scripts/experiments/loss_table.sh
# LOSSES="rnnt ssnt" limits the losses; OUT_ROOT the folder (default logs/experiments/loss_table);
# TUNE_LM_WEIGHTS / TUNE_WORD_SCORES the dev grid; TRAIN=0 skips training (decode existing runs).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
root=${OUT_ROOT:-logs/experiments/loss_table}
losses=(${LOSSES:-rnnt modified_rnnt ssnt ctc})
weights=${TUNE_LM_WEIGHTS:-[0.0,0.25,0.5]}
scores=${TUNE_WORD_SCORES:-[-0.5,0.0,0.5,1.0,2.0]}
export OMP_NUM_THREADS=1
tune() {
  "$PY" decode.py ckpt_path="$root/$1/checkpoints/last.ckpt" avg=4 decoding=beam_lm tune=true num_threads=1 \
      "tune_lm_weights=$weights" "tune_word_scores=$scores" > "$root/$1/beam_lm.log" 2>&1 \
    || { echo "beam_lm tuning of $1 failed; the end of $root/$1/beam_lm.log:" >&2; tail -20 "$root/$1/beam_lm.log" >&2; return 1; }
}
pids=()
for loss in "${losses[@]}"; do
  if [ "${TRAIN:-1}" != 0 ]; then OUT_ROOT="$root" bash scripts/experiments/per_loss.sh "$loss"; fi
  # one tuning at a time beside the trainings: wait for the previous loss's before starting this one's
  for pid in "${pids[@]}"; do wait "$pid"; done
  tune "$loss" & pids=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$PY" scripts/experiments/loss_table.py "$root" | tee "$root/table.md"
