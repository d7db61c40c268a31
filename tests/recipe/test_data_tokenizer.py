"""Tokenizers: blank at 0, round trips, training once, pickling for loader workers."""

import pickle

import pytest

from recipes.data.librispeech import read_librispeech_split
from recipes.data.text import normalize_text
from recipes.data.tokenizer import CharTokenizer, build_char_tokenizer, build_sentencepiece_tokenizer


@pytest.fixture(scope="module")
def texts(tiny_corpus):
    return {split: [normalize_text(u.text) for u in read_librispeech_split(tiny_corpus / split)[0]]
            for split in ("train", "test")}


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_round_trip(texts, tmp_path, model_type):
    tokenizer = build_sentencepiece_tokenizer(texts["train"], tmp_path, vocab_size=80,
                                              model_type=model_type)
    assert tokenizer.blank_id == 0 and 3 <= tokenizer.vocab_size <= 80
    for text in texts["test"]:  # sentences never seen in training
        ids = tokenizer.encode(text)
        assert ids and all(1 <= i < tokenizer.vocab_size for i in ids)
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode([0, *ids[:1], 0, *ids[1:], 0]) == text
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode(texts["test"][0]) == tokenizer.encode(texts["test"][0])


def test_sentencepiece_is_trained_once(texts, tmp_path):
    first = build_sentencepiece_tokenizer(texts["train"], tmp_path, vocab_size=60)
    model = tmp_path / "lang_bpe_60" / "sp.model"
    stamp = model.stat().st_mtime_ns
    second = build_sentencepiece_tokenizer(["SOMETHING ELSE ENTIRELY"], tmp_path, vocab_size=60)
    assert model.stat().st_mtime_ns == stamp
    assert second.encode(texts["test"][0]) == first.encode(texts["test"][0])


def test_sentencepiece_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        build_sentencepiece_tokenizer(["A B"], tmp_path, model_type="word")
    with pytest.raises(ValueError, match="vocab_size"):
        build_sentencepiece_tokenizer(["A B"], tmp_path, vocab_size=1)


def test_char_round_trip_and_storage(texts, tmp_path):
    tokenizer = build_char_tokenizer(texts["train"], tmp_path)
    assert tokenizer.blank_id == 0 and tokenizer.tokens[0] == "<blk>"
    assert (tmp_path / "lang_char" / "tokens.txt").read_text().splitlines() == tokenizer.tokens
    for text in texts["test"]:
        ids = tokenizer.encode(text)
        assert len(ids) == len(text) and min(ids) >= 1 and max(ids) < tokenizer.vocab_size
        assert tokenizer.decode(ids) == text
    with pytest.raises(ValueError, match="'#'"):
        tokenizer.encode("A#B")
    with pytest.raises(ValueError, match="tokens"):
        CharTokenizer(["A", "A"])
