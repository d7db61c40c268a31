"""WER files: counts against jiwer, file names and formats."""
import json

import jiwer
import pytest

from recipes.decoding.wer_files import read_alignments, write_results

CASES = [
    ("u1", "the cat sat on the mat", "the cat sat on mat"),
    ("u2", "a quick brown fox", "a quick brown box jumps"),
    ("u3", "hello world", "hello, World!"),
    ("u4", "one two three four", "two three for"),
]


def test_counts_match_jiwer(tmp_path):
    summary = write_results(tmp_path, "test", "greedy_demo", CASES)
    refs = [r.upper() for _, r, _ in CASES]
    hyps = [h.upper().replace(",", "").replace("!", "") for _, _, h in CASES]
    out = jiwer.process_words(refs, hyps)
    assert summary["wer"] == pytest.approx(out.wer)
    assert (summary["substitutions"], summary["deletions"], summary["insertions"]) == \
        (out.substitutions, out.deletions, out.insertions)
    assert summary["cer"] == pytest.approx(jiwer.cer([r.replace(" ", "") for r in refs],
                                                     [h.replace(" ", "") for h in hyps]))


def test_files_are_named_by_settings_and_formatted(tmp_path):
    write_results(tmp_path, "test", "greedy_epoch-3", CASES, settings={"decoding": "greedy"}, real_time_factor=0.01)
    write_results(tmp_path, "test", "beam_4_epoch-3", CASES[:2])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{kind}-test-{s}.{ext}" for s in ("greedy_epoch-3", "beam_4_epoch-3")
                           for kind, ext in (("recogs", "txt"), ("errs", "txt"), ("wer-summary", "txt"),
                                             ("results", "json")))
    errs = (tmp_path / "errs-test-greedy_epoch-3.txt").read_text()
    assert errs.startswith("%WER 31.25 [ 5 / 16, 1 ins, 2 del, 2 sub ]")
    assert "u1:\tTHE CAT SAT ON (THE->*) MAT" in errs
    assert "1   FOUR -> FOR" in errs and "INSERTIONS: count hyp\n1   BOX" in errs
    recogs = (tmp_path / "recogs-test-greedy_epoch-3.txt").read_text().splitlines()
    assert recogs[0] == "u1:\tref=['THE', 'CAT', 'SAT', 'ON', 'THE', 'MAT']"
    summary = json.loads((tmp_path / "results-test-greedy_epoch-3.json").read_text())
    assert summary["settings"] == {"decoding": "greedy"} and summary["real_time_factor"] == 0.01
    assert (tmp_path / "wer-summary-test-beam_4_epoch-3.txt").read_text().splitlines()[1].startswith("beam_4_epoch-3\t")


def test_read_alignments_reads_back_what_write_results_wrote(tmp_path):
    write_results(tmp_path, "test", "x", [("u1", "A B C", "A X C D"), ("u2", "A B", "B"), ("u3", "A", "A")])
    alignments = read_alignments(tmp_path / "errs-test-x.txt")
    assert alignments == {"u1": [("A", "A"), ("B", "X"), ("C", "C"), (None, "D")],
                          "u2": [("A", None), ("B", "B")], "u3": [("A", "A")]}
    with pytest.raises(ValueError, match="recogs-test-x.txt: not an errs"):
        read_alignments(tmp_path / "recogs-test-x.txt")
