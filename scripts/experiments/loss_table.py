"""Prints RESULTS.md's per-loss table from the runs that scripts/experiments/loss_table.sh made.

    python scripts/experiments/loss_table.py logs/experiments/loss_table

For every loss folder under the root (``<root>/<loss>``) it reads the optimizer steps the training
reached (``global_step`` of ``checkpoints/last.ckpt``) and the test-set results that decode.py wrote
under ``decode/`` for the average of the last 4 epoch checkpoints: greedy, beam search and beam + word
LM with the weights tune=true chose on dev (``results-test-*.json``; the chosen point and its dev WER
are in the file's settings). A missing result is printed as ``-``; the row of the best test WER per
loss is marked in bold.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

LOSSES = ("ctc", "rnnt", "modified_rnnt", "ssnt")


def _results(decode_dir: Path, prefix: str, tuned: bool = False) -> dict | None:
    """The newest ``results-test-<prefix>*-avg4.json`` (by modification time; with `tuned`, only one
    whose weights tune=true chose on dev), or None."""
    files = sorted(decode_dir.glob(f"results-test-{prefix}*-avg4.json"), key=lambda p: p.stat().st_mtime)
    results = [json.loads(f.read_text()) for f in files]
    results = [r for r in results if not tuned or r.get("settings", {}).get("tuned")]
    return results[-1] if results else None


def loss_row(run_dir: Path) -> dict:
    """Steps and the three test WERs (fractions, None when not decoded) of one loss's run."""
    last = run_dir / "checkpoints" / "last.ckpt"
    steps = torch.load(last, map_location="cpu", weights_only=False)["global_step"] if last.exists() else None
    decode_dir = run_dir / "decode"
    greedy, beam, lm = _results(decode_dir, "greedy_"), _results(decode_dir, "beam_"), \
        _results(decode_dir, "beamlm_", tuned=True)
    tuned = (lm or {}).get("settings", {}).get("tuned") or {}
    return {"steps": steps,
            "greedy": greedy and greedy["wer"], "beam": beam and beam["wer"], "beam_lm": lm and lm["wer"],
            "lm_weight": tuned.get("lm_weight"), "word_score": tuned.get("word_score"),
            "dev_wer": tuned.get("dev_wer")}


def markdown(rows: dict[str, dict]) -> str:
    def pct(x, bold=False):
        return "-" if x is None else (f"**{100 * x:.2f}%**" if bold else f"{100 * x:.2f}%")

    lines = ["| loss | steps | test greedy | test beam 4 | test beam + LM (λ, β chosen on dev) "
             "| dev WER of that point |",
             "|---|---|---|---|---|---|"]
    for loss, r in rows.items():
        best = min((r[k] for k in ("greedy", "beam", "beam_lm") if r[k] is not None), default=None)
        cells = {k: pct(r[k], r[k] is not None and r[k] == best) for k in ("greedy", "beam", "beam_lm")}
        weights = f" ({r['lm_weight']:g}, {r['word_score']:g})" if r["lm_weight"] is not None else ""
        steps = "-" if r["steps"] is None else f"{r['steps']:,}"
        lines.append(f"| {loss} | {steps} | {cells['greedy']} | {cells['beam']} | {cells['beam_lm']}{weights} | "
                     f"{pct(r['dev_wer'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder holding one run folder per loss")
    args = parser.parse_args(argv)
    runs = {loss: args.root / loss for loss in LOSSES if (args.root / loss).is_dir()}
    if not runs:
        print(f"no run folder of {', '.join(LOSSES)} under {args.root}", file=sys.stderr)
        return 2
    print(markdown({loss: loss_row(run) for loss, run in runs.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
