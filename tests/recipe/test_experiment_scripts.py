"""The analysis scripts behind RESULTS.md's per-loss table: scripts/experiments/lm_headroom.py (which
errors a word LM could act on) and scripts/experiments/loss_table.py (the table from the runs)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from recipes.decoding.kneser_ney import build_word_lm
from recipes.decoding.wer_files import write_results

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


lm_headroom = _script("lm_headroom")
loss_table = _script("loss_table")


def _errs(tmp_path: Path, results) -> Path:
    write_results(tmp_path, "test", "beam", results)
    return tmp_path / "errs-test-beam.txt"


def test_headroom_splits_errors_by_slot(tmp_path, capsys):
    errs = _errs(tmp_path, [
        # CAT -> DOG: both NOUNs (same slot); TWO -> TOO: a non-word; a deletion; an insertion
        ("u1", "ALICE FOUND THE CAT", "ALICE FOUND THE DOG"),
        ("u2", "THEY TOOK TWO RED CATS", "THEY TOOK TOO RED CATS"),
        ("u3", "TOM RAN QUICKLY", "TOM RAN"),
        ("u4", "ANNA SLEPT TODAY", "ANNA SLEPT THE TODAY"),
        # CAT -> CATS: singular and plural are different slots (the template decides)
        ("u5", "MY BIG CAT SLEPT", "MY BIG CATS SLEPT"),
        ("u6", "JACK SMILED AGAIN", "JACK SMILED AGAIN"),
    ])
    counts = lm_headroom.classify(lm_headroom.utterances(errs))
    assert counts["ref_words"] == 4 + 5 + 3 + 3 + 4 + 3
    kinds = ("same_slot", "other_substitutions", "deletions", "insertions")
    assert tuple(counts[k] for k in kinds) == (1, 2, 1, 1)
    lm_headroom.main([str(errs)])
    out = capsys.readouterr().out
    assert "floor for any word LM (only the same-slot substitutions left): 4.55%" in out  # 1 of 22 words


def test_headroom_lm_votes_follow_the_lm(tmp_path, capsys):
    # an LM that has seen "alice found the cat" but never "the dog" prefers the reference in u1
    lm = build_word_lm(["ALICE FOUND THE CAT", "TOM FOUND THE CAT", "DOG RAN"], tmp_path / "lm", 3)
    errs = _errs(tmp_path, [("u1", "ALICE FOUND THE CAT", "ALICE FOUND THE DOG"),
                            ("u2", "DOG RAN", "CAT RAN"),
                            ("u3", "TOM RAN QUICKLY", "TOM RAN")])  # a deletion: not voted on
    lm_headroom.main([str(errs), "--lm", str(lm)])
    out = capsys.readouterr().out
    assert "2 utterances with substitutions only: the n-gram prefers the reference in 2, the hypothesis in 0" in out


def test_headroom_rejects_other_files(tmp_path):
    other = tmp_path / "recogs.txt"
    other.write_text("u1:\tref=['A']\n")
    with pytest.raises(SystemExit, match="not an errs"):
        lm_headroom.main([str(other)])


def _run(root: Path, loss: str, steps: int, wers: dict) -> None:
    run = root / loss
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": steps}, run / "checkpoints" / "last.ckpt")
    (run / "decode").mkdir()
    for prefix, (wer, tuned) in wers.items():
        settings = {"tuned": tuned} if tuned else {}
        (run / "decode" / f"results-test-{prefix}_size4_last-avg4.json").write_text(
            json.dumps({"wer": wer, "settings": settings}))


def test_loss_table_reads_every_run(tmp_path, capsys):
    _run(tmp_path, "rnnt", 3500, {"greedy": (0.0646, None), "beam": (0.061, None),
                                  "beamlm": (0.052, {"lm_weight": 0.0, "word_score": 1.0, "dev_wer": 0.0209})})
    _run(tmp_path, "ctc", 4000, {"greedy": (0.13, None), "beam": (0.129, None),
                                 # an untuned beam_lm decode is not the table's beam + LM column
                                 "beamlm": (0.09, None)})
    assert loss_table.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| ctc | 4,000 | 13.00% | **12.90%** | - | - |"
    assert lines[3] == "| rnnt | 3,500 | 6.46% | 6.10% | **5.20%** (0, 1) | 2.09% |"
    assert loss_table.main([str(tmp_path / "nothing")]) == 2
