"""How many of a decode's substitutions produce a non-word: a hypothesis word that never occurs in
the training transcripts (RESULTS.md: CTC spells, the transducers' predictor learns the word inventory).

    python scripts/experiments/nonwords.py logs/experiments/per_loss/ctc/decode/errs-test-*.txt \\
        --corpus data/corpora/synthetic-v2

Reads the per-utterance alignments of an errs-*.txt file written by decode.py, where a
substitution is rendered "(REF->HYP)" and a deletion "(REF->*)".
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `recipes`
from recipes.data.text import normalize_text  # noqa: E402
from recipes.decoding.wer_files import read_alignments  # noqa: E402


def training_words(corpus: Path) -> set[str]:
    """Every word of the training transcripts (<corpus>/train/**/*.trans.txt), normalised as for scoring."""
    files = sorted((corpus / "train").rglob("*.trans.txt"))
    if not files:
        raise SystemExit(f"{corpus}/train: no *.trans.txt transcripts (is --corpus a prepared corpus?)")
    words = set()
    for path in files:
        for line in path.read_text().splitlines():
            _, _, text = line.partition(" ")
            words.update(normalize_text(text).split())
    return words


def substitutions(errs: Path) -> Counter:
    """(ref, hyp) -> count over the PER-UTT DETAILS section of an errs file."""
    try:
        alignments = read_alignments(errs)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return Counter((r, h) for pairs in alignments.values() for r, h in pairs if r and h and r != h)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("errs", type=Path, nargs="+", help="errs-<set>-<suffix>.txt files written by decode.py")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpora/synthetic-v2"),
                        help="the corpus whose train/ transcripts define the word inventory")
    parser.add_argument("--show", type=int, default=5, help="print this many non-word substitutions per file")
    args = parser.parse_args(argv)
    vocabulary = training_words(args.corpus)
    for errs in args.errs:
        if not errs.is_file():
            raise SystemExit(f"{errs}: not a file")
        subs = substitutions(errs)
        total = sum(subs.values())
        nonword = Counter({pair: n for pair, n in subs.items() if pair[1] not in vocabulary})
        print(f"{errs.name}: {sum(nonword.values())} of {total} substitutions are non-words")
        for (ref, hyp), n in nonword.most_common(args.show):
            print(f"  {n} x {ref} -> {hyp}")


if __name__ == "__main__":
    main(sys.argv[1:])
