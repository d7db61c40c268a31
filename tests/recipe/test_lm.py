"""Word n-gram LM: modified Kneser-Ney against hand computations, normalisation, ARPA round trip, kenlm."""
import logging
import math
import random

import pytest

from recipes.decoding.arpa import ArpaError, ArpaLM
from recipes.decoding.kneser_ney import (
    FALLBACK_DISCOUNTS,
    KneserNeyEstimate,
    build_word_lm,
    modified_kn_discounts,
    texts_key,
)

# <s> a b </s> / <s> a b a </s> / <s> b </s>
TOY = [["a", "b"], ["a", "b", "a"], ["b"]]


def test_discounts_from_counts_of_counts():
    """n = (10, 5, 3, 2): Y = 10 / 20 = 0.5; D1 = 1 - 2 Y 5/10 = 0.5; D2 = 2 - 3 Y 3/5 = 1.1;
    D3+ = 3 - 4 Y 2/3 = 5/3."""
    assert modified_kn_discounts((10, 5, 3, 2)) == pytest.approx((0.5, 1.1, 5 / 3), rel=1e-12)
    assert modified_kn_discounts((1, 0, 1, 1)) is None  # n2 = 0
    assert modified_kn_discounts((10, 1, 10, 1)) is None  # D2 = 2 - 3 (10/12) 10 < 0


def test_bigram_probabilities_by_hand(caplog):
    """Order 2. Bigram counts (highest order: raw): <s> a 2, <s> b 1, a b 2, a </s> 1, b </s> 2, b a 1.
    Unigram continuation counts: a 2 (<s>, b), b 2 (<s>, a), </s> 2 (a, b); |V| = 4 (a, b, </s>, <unk>).
    Counts-of-counts are too few for the formula: D = (0.5, 1, 1.5) at both orders.
    Unigrams: c(.) = 6, gamma = 1 * 3 / 6 = 1/2: p(a) = (2 - 1)/6 + 1/2 * 1/4 = 7/24 = p(b) = p(</s>),
    p(<unk>) = 1/2 * 1/4 = 3/24.
    History <s>: c(.) = 3, gamma = (0.5 + 1) / 3 = 1/2: p(a|<s>) = 1/3 + 1/2 * 7/24 = 23/48,
    p(b|<s>) = 0.5/3 + 7/48 = 15/48, p(</s>|<s>) = 7/48, p(<unk>|<s>) = 3/48.
    History a: p(b|a) = 23/48, p(</s>|a) = 15/48, p(a|a) = 7/48. History b: p(</s>|b) = 23/48, p(a|b) = 15/48."""
    with caplog.at_level(logging.WARNING):
        model = KneserNeyEstimate(TOY, order=2)
    assert "give no valid discounts" in caplog.text
    assert model.discounts == {1: FALLBACK_DISCOUNTS, 2: FALLBACK_DISCOUNTS}
    assert model.counts[1] == {("<s>",): 3, ("a",): 2, ("b",): 2, ("</s>",): 2}
    assert model.vocab == ["</s>", "<unk>", "a", "b"]
    expected = {((), "a"): 7 / 24, ((), "b"): 7 / 24, ((), "</s>"): 7 / 24, ((), "<unk>"): 3 / 24,
                (("<s>",), "a"): 23 / 48, (("<s>",), "b"): 15 / 48, (("<s>",), "</s>"): 7 / 48,
                (("<s>",), "zzz"): 3 / 48, (("a",), "b"): 23 / 48, (("a",), "</s>"): 15 / 48,
                (("a",), "a"): 7 / 48, (("b",), "</s>"): 23 / 48, (("b",), "a"): 15 / 48, (("b",), "b"): 7 / 48}
    for (history, word), p in expected.items():
        assert model.probability(history, word) == pytest.approx(p, rel=1e-12), (history, word)


def test_trigram_probabilities_by_hand(tmp_path):
    """Order 3 on the same corpus. Trigrams (raw): <s> a b 2, a b </s> 1, a b a 1, b a </s> 1, <s> b </s> 1.
    Bigrams: <s> a 2, <s> b 1 (raw: they start with <s>); a b 1 (<s>), b </s> 2 (a, <s>), b a 1 (a),
    a </s> 1 (b) (continuation counts). Unigrams as for order 2. D = (0.5, 1, 1.5).
    Order 2: p(b|a) = 0.5/2 + 1/2 * 7/24 = 19/48 = p(</s>|a); p(</s>|b) = 23/48, p(a|b) = 15/48.
    History <s> a: c(.) = 2, gamma = 1/2: p(b|<s> a) = 1/2 + 1/2 * 19/48 = 67/96, p(</s>|<s> a) = 19/96.
    History a b: c(.) = 2, gamma = 0.5 * 2 / 2 = 1/2: p(</s>|a b) = 1/4 + 1/2 * 23/48 = 47/96,
    p(a|a b) = 1/4 + 1/2 * 15/48 = 39/96, p(b|a b) = 1/2 * 7/48 = 7/96.
    History b b (never seen): p(a|b b) = p(a|b) = 15/48."""
    model = KneserNeyEstimate(TOY, order=3)
    assert model.counts[2] == {("<s>", "a"): 2, ("<s>", "b"): 1, ("a", "b"): 1, ("b", "</s>"): 2,
                               ("b", "a"): 1, ("a", "</s>"): 1}
    expected = {(("a",), "b"): 19 / 48, (("<s>", "a"), "b"): 67 / 96, (("<s>", "a"), "</s>"): 19 / 96,
                (("a", "b"), "</s>"): 47 / 96, (("a", "b"), "a"): 39 / 96, (("a", "b"), "b"): 7 / 96,
                (("b", "a"), "</s>"): 1 / 2 + 19 / 96, (("b", "b"), "a"): 15 / 48}
    lm = ArpaLM.load(model.write_arpa(tmp_path / "toy.arpa"))
    for (history, word), p in expected.items():
        assert model.probability(history, word) == pytest.approx(p, rel=1e-12), (history, word)
        assert 10 ** lm.score(history, word) == pytest.approx(p, rel=1e-7), (history, word)
    assert lm.sentence_score(["a", "b"]) == pytest.approx(math.log10(23 / 48 * 67 / 96 * 47 / 96), rel=1e-7)


def _corpus(seed=0, sentences=300):
    """Sentences from a small Markov chain over 30 words (enough for estimated discounts)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(30)]
    return [[rng.choice(words[: 5 + (k % 25)]) for k in range(rng.randint(0, 12))] for _ in range(sentences)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_sum_to_one(tmp_path, order):
    corpus = _corpus()
    model = KneserNeyEstimate(corpus, order=order)
    if order > 1:
        assert model.discounts[order] != FALLBACK_DISCOUNTS  # estimated from the counts-of-counts
    lm = ArpaLM.load(model.write_arpa(tmp_path / "lm.arpa"))
    vocab = [w for w in lm.vocab if w != "<s>"]
    assert sorted(vocab) == sorted(model.vocab)
    histories = [(), ("<s>",), ("<s>", "w0"), ("w1", "w2"), ("w0", "w0", "w0"), ("unseen", "w3"), ("w4", "unseen")]
    histories += [("<s>", *s[:2]) for s in corpus[:10]] + [tuple(s[-3:]) for s in corpus[:10]]
    for history in histories:
        total = sum(10 ** lm.score(history, w) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-6), history
        exact = sum(model.probability(history, w) for w in model.vocab)
        assert exact == pytest.approx(1.0, abs=1e-12), history
        for w in vocab:  # the backoff form in the file equals the interpolation formula
            assert 10 ** lm.score(history, w) == pytest.approx(model.probability(history, w), rel=1e-6)


def test_arpa_round_trip(tmp_path):
    model = KneserNeyEstimate(_corpus(1), order=3)
    first = ArpaLM.load(model.write_arpa(tmp_path / "a.arpa"))
    second = ArpaLM.load(first.write(tmp_path / "b.arpa"))
    assert second.ngrams == first.ngrams and second.order == 3
    assert (tmp_path / "b.arpa").read_text() == ArpaLM.load(tmp_path / "b.arpa").write(tmp_path / "c.arpa").read_text()
    for sentence in _corpus(2, 20) + [["unseen", "w1"]]:
        assert second.sentence_score(sentence) == first.sentence_score(sentence)
    assert first.score(["w1"], "never-seen") == first.score(["w1"], "<unk>")


def test_arpa_errors_name_the_file_and_line(tmp_path):
    good = KneserNeyEstimate(TOY, order=2).write_arpa(tmp_path / "good.arpa").read_text()
    cases = {"truncated": (good[: good.index("\\2-grams:")], "no \\\\end\\\\"),
             "count": (good.replace("ngram 2=6", "ngram 2=7"), "announces 7 2-grams"),
             "number": (good.replace("-0.", "x0.", 1), "not a number"),
             "fields": (good.replace("\ta b\n", "\ta b c d\n", 1), "a 2-gram line needs")}
    for name, (text, message) in cases.items():
        assert text != good, name
        path = tmp_path / f"{name}.arpa"
        path.write_text(text)
        with pytest.raises(ArpaError, match=message) as error:
            ArpaLM.load(path)
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        ArpaLM.load(tmp_path / "missing.arpa")


def test_kenlm_scores_our_arpa_the_same(tmp_path):
    try:
        import kenlm
    except ImportError:
        pytest.fail("kenlm is not installed: run `bash scripts/setup_env.sh` (it is pinned in requirements.txt)")
    for order in (2, 3, 4):
        path = KneserNeyEstimate(_corpus(3), order=order).write_arpa(tmp_path / f"{order}.arpa")
        ours, theirs = ArpaLM.load(path), kenlm.Model(str(path))
        assert theirs.order == order
        for sentence in _corpus(4, 50) + [["unseen", "w2", "w3"], []]:
            text = " ".join(sentence)
            assert ours.sentence_score(sentence) == pytest.approx(theirs.score(text, bos=True, eos=True), abs=2e-5)
            ken_words = [score for score, _, _ in theirs.full_scores(text)]
            history = ["<s>"]
            for word, ken in zip([*sentence, "</s>"], ken_words):
                assert ours.score(history, word) == pytest.approx(ken, abs=1e-5), (sentence, word)
                history.append(word)


def test_build_word_lm_is_made_once(tmp_path, caplog):
    texts = [" ".join(s) for s in _corpus(5, 50)]
    with caplog.at_level(logging.INFO):
        path = build_word_lm(texts, tmp_path / "lm", order=2)
    assert path.name == "2gram.arpa" and "estimating a 2-gram Kneser-Ney word LM from 50" in caplog.text
    stamp = path.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert build_word_lm(["other text"], tmp_path / "lm", order=2) == path
    assert path.stat().st_mtime_ns == stamp and "estimating" not in caplog.text
    assert texts_key(["train-clean-100"], texts) != texts_key(["train-clean-100"], texts[1:])
    assert texts_key(["a", "b"], texts).startswith("a+b-")


def test_bad_sentences_are_refused():
    with pytest.raises(ValueError, match=r"sentences\[1\].*'<s>'"):
        KneserNeyEstimate([["a"], ["<s>", "b"]])
    with pytest.raises(ValueError, match="no sentence"):
        KneserNeyEstimate([])
    with pytest.raises(ValueError, match="order"):
        KneserNeyEstimate(TOY, order=0)
