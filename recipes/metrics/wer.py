"""Word error rate from a Levenshtein alignment, with insertion / deletion / substitution counts.

The same code scores `val/wer` during training and the WER files of decode.py; both normalise
reference and hypothesis with `recipes.data.text.normalize_text` first.
"""
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Pair = tuple[str | None, str | None]  # (reference word, hypothesis word); None marks a gap


@dataclass
class EditCounts:
    """Error counts over one or more utterances; `wer` = (S + D + I) / N."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference word; with no reference words, 0 if no errors else inf."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref_words

    def __add__(self, other: "EditCounts") -> "EditCounts":
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_words + other.ref_words,
        )


def align(ref: list[str], hyp: list[str]) -> list[Pair]:
    """A minimum-edit alignment of two word sequences.

    Returns pairs in order: (r, h) a match or substitution, (r, None) a deletion, (None, h) an
    insertion. Among equally short alignments, a match/substitution is preferred, then a
    deletion, then an insertion (so the result is deterministic).
    """
    n, m = len(ref), len(hyp)
    # cost[i][j]: edits between ref[:i] and hyp[:j]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = i
    for j in range(1, m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        row, prev, r = cost[i], cost[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (r != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    pairs: list[Pair] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((ref[i - 1], None))
            i -= 1
        else:
            pairs.append((None, hyp[j - 1]))
            j -= 1
    return pairs[::-1]


def edit_counts(ref: list[str], hyp: list[str]) -> EditCounts:
    """Substitution, deletion and insertion counts of the alignment of `hyp` to `ref`."""
    counts = EditCounts(ref_words=len(ref))
    for r, h in align(ref, hyp):
        if r is None:
            counts.insertions += 1
        elif h is None:
            counts.deletions += 1
        elif r != h:
            counts.substitutions += 1
    return counts


def word_error_counts(
    refs: Iterable[str], hyps: Iterable[str], normalize: Callable[[str], str] | None = None
) -> EditCounts:
    """Summed counts over utterances; texts are normalised by `normalize` (if given) then split on spaces."""
    total = EditCounts()
    for ref, hyp in zip(refs, hyps, strict=True):
        if normalize is not None:
            ref, hyp = normalize(ref), normalize(hyp)
        total += edit_counts(ref.split(), hyp.split())
    return total
