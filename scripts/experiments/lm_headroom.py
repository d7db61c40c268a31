#!/usr/bin/env python
"""How much of a decode's error a word LM could remove on the embedded corpus (RESULTS.md, per-loss table).

    python scripts/experiments/lm_headroom.py logs/experiments/loss_table/rnnt/decode/errs-test-beam_*.txt

The embedded corpus's sentences come from templates whose slots are filled uniformly at random
(``recipes.data.synthesis``: e.g. "NAME VT DET NOUN", each NOUN one of 120 equally likely). So the
true distribution of the text gives a substituted word the same probability as the reference word
whenever both fill the same slot: no language model, however good, can prefer the reference there.
This script splits every error of an ``errs-*.txt`` file (written by decode.py) into

* same-slot substitutions: reference and hypothesis word are in one slot's word list;
* other substitutions, deletions, insertions (what an LM and a word bonus can act on),

and prints the WER left if every error of the second kind were fixed: a floor for any LM. A word
in two slots (ORANGE, THE) makes a pair same-slot through either, so the count can be a few too
high where the sentence used the other slot. With
``--lm`` (an ARPA file, e.g. the one ``decoding=beam_lm`` estimated under the corpus's cache) it also
counts, over the utterances whose only errors are substitutions, how often that n-gram gives the
reference a higher log-probability than the hypothesis.
"""
import argparse
import math
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `recipes`
from recipes.data.synthesis import _WORD  # noqa: E402
from recipes.decoding.wer_files import read_alignments  # noqa: E402

SLOTS = [frozenset(w.upper() for w in words) for words in _WORD.values()]


def same_slot(ref: str, hyp: str) -> bool:
    """Whether one slot of the grammar can produce both words."""
    return any(ref in slot and hyp in slot for slot in SLOTS)


def utterances(errs: Path) -> dict[str, list[tuple[str | None, str | None]]]:
    """utterance id -> aligned (ref, hyp) pairs (None for the missing side) from an errs file."""
    try:
        return read_alignments(errs)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def classify(utts: dict) -> Counter:
    counts = Counter()
    for pairs in utts.values():
        for ref, hyp in pairs:
            counts["ref_words"] += ref is not None
            if ref is None:
                counts["insertions"] += 1
            elif hyp is None:
                counts["deletions"] += 1
            elif ref != hyp:
                counts["same_slot" if same_slot(ref, hyp) else "other_substitutions"] += 1
    return counts


def lm_votes(utts: dict, lm) -> Counter:
    """Over utterances whose errors are all substitutions: does the n-gram score the reference higher?"""
    votes = Counter()
    for pairs in utts.values():
        if all(r == h for r, h in pairs) or any(r is None or h is None for r, h in pairs):
            continue
        ref = [r for r, _ in pairs]  # normalised as the LM's training transcripts are
        hyp = [h for _, h in pairs]
        margin = (lm.sentence_score(ref) - lm.sentence_score(hyp)) * math.log(10)
        votes["reference" if margin > 0.01 else "hypothesis" if margin < -0.01 else "tie"] += 1
        votes["margins"] += margin
    return votes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("errs", type=Path, nargs="+", help="errs-<set>-<suffix>.txt files written by decode.py")
    parser.add_argument("--lm", type=Path, help="an ARPA word LM to ask which of reference and hypothesis it prefers")
    args = parser.parse_args(argv)
    lm = None
    if args.lm is not None:
        from recipes.decoding.arpa import ArpaLM
        lm = ArpaLM.load(args.lm)
    for errs in args.errs:
        if not errs.is_file():
            raise SystemExit(f"{errs}: not a file")
        utts = utterances(errs)
        c = classify(utts)
        n = max(c["ref_words"], 1)
        errors = c["same_slot"] + c["other_substitutions"] + c["deletions"] + c["insertions"]
        print(f"{errs.name}: WER {100 * errors / n:.2f}% ({errors} errors / {c['ref_words']} words): "
              f"{c['same_slot']} same-slot substitutions, {c['other_substitutions']} other substitutions, "
              f"{c['deletions']} deletions, {c['insertions']} insertions")
        print(f"  floor for any word LM (only the same-slot substitutions left): {100 * c['same_slot'] / n:.2f}%")
        if lm is not None:
            v = lm_votes(utts, lm)
            k = v["reference"] + v["hypothesis"] + v["tie"]
            if k:
                print(f"  {k} utterances with substitutions only: the n-gram prefers the reference in "
                      f"{v['reference']}, "
                      f"the hypothesis in {v['hypothesis']}, ties {v['tie']} (mean ln P(ref) - ln P(hyp) "
                      f"{v['margins'] / k:+.2f})")


if __name__ == "__main__":
    main()
