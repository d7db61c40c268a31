"""WER: edit alignment and ins/del/sub counts, checked by hand and against jiwer."""
import random

import jiwer
import pytest

from recipes.data.text import normalize_text
from recipes.metrics.wer import EditCounts, align, edit_counts, word_error_counts


def test_counts_by_hand():
    counts = edit_counts("the cat sat on the mat".split(), "the bat sat the mat today".split())
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.ref_words) == (1, 1, 1, 6)
    assert counts.wer == pytest.approx(3 / 6)


def test_ties_prefer_substitution():
    # "a b" -> "b c" costs 2 either as two substitutions or as a deletion plus an insertion
    assert edit_counts(["a", "b"], ["b", "c"]) == EditCounts(2, 0, 0, 2)


def test_alignment_pairs_cover_both_sequences():
    ref, hyp = "a b c d".split(), "x a c d e".split()
    pairs = align(ref, hyp)
    assert [r for r, _ in pairs if r is not None] == ref
    assert [h for _, h in pairs if h is not None] == hyp
    assert sum(r != h for r, h in pairs) == 3
    assert align("a b c d".split(), "x a b d".split()) == [(None, "x"), ("a", "a"), ("b", "b"), ("c", None), ("d", "d")]


def test_empty_sides():
    assert edit_counts([], []).wer == 0.0
    assert edit_counts([], ["a"]).wer == float("inf")
    assert edit_counts(["a", "b"], []).deletions == 2


def test_matches_jiwer_on_random_sentences():
    rng = random.Random(0)
    words = ["a", "b", "c", "d", "e"]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(200)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(200)]
    ours = word_error_counts(refs, hyps)
    theirs = jiwer.process_words(refs, hyps)
    assert ours.errors == theirs.substitutions + theirs.deletions + theirs.insertions
    assert ours.wer == pytest.approx(theirs.wer)
    # the edit distance is the minimum: no tie-break may change the total per utterance
    for ref, hyp in zip(refs[:50], hyps[:50]):
        per = jiwer.process_words(ref, hyp)
        assert edit_counts(ref.split(), hyp.split()).errors == per.substitutions + per.deletions + per.insertions


def test_normaliser_applies_to_both_sides():
    counts = word_error_counts(["Hello, world!"], ["hello world"], normalize_text)
    assert counts.errors == 0 and counts.ref_words == 2


def test_counts_add():
    total = EditCounts(1, 2, 3, 10) + EditCounts(1, 0, 0, 5)
    assert (total.substitutions, total.deletions, total.insertions, total.ref_words) == (2, 2, 3, 15)
    assert total.wer == pytest.approx(7 / 15)
