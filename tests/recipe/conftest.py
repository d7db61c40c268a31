"""Shared fixtures of the recipe tests: a tiny synthetic corpus, generated once per session."""

from __future__ import annotations

import functools

import pytest

from recipes.data.synthesis import SyntheticCorpus, ensure_synthetic_corpus

# 84 utterances, ~1 minute of audio; two held-out speakers each for dev and test.
TINY_CORPUS = {"num_train": 60, "num_dev": 12, "num_test": 12, "num_dev_speakers": 2,
               "num_test_speakers": 2, "utts_per_train_speaker": 20, "seed": 0}


@pytest.fixture(scope="session")
def tiny_corpus_config() -> dict:
    """The :class:`SyntheticCorpusConfig` fields of ``tiny_corpus`` (a copy: mutate freely)."""
    return dict(TINY_CORPUS)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Root ``Path`` of a tiny synthetic corpus in the LibriSpeech layout (train/dev/test).

    Generated once per session; derived files (manifests, tokenizers, CMVN) accumulate in it.
    """
    return ensure_synthetic_corpus(tmp_path_factory.mktemp("tiny_corpus") / "synthetic",
                                   progress=False, **TINY_CORPUS)


@pytest.fixture
def tiny_data_overrides(tiny_corpus) -> list[str]:
    """Hydra overrides pointing ``data=synthetic`` at ``tiny_corpus``, small and CPU-friendly."""
    corpus = [f"data.corpus.{key}={value}" for key, value in TINY_CORPUS.items()]
    return [f"data.root={tiny_corpus}", *corpus, "data.max_duration=10",
            "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20",
            "tokenizer.vocab_size=64"]


@pytest.fixture
def tiny_datamodule_kwargs(tiny_corpus) -> dict:
    """Keyword arguments of an ``ASRDataModule`` over ``tiny_corpus`` (BPE, 64 tokens)."""
    from recipes.data.tokenizer import build_sentencepiece_tokenizer

    return {
        "root": tiny_corpus,
        "corpus": functools.partial(SyntheticCorpus, **TINY_CORPUS),
        "tokenizer": functools.partial(build_sentencepiece_tokenizer, vocab_size=64),
        "max_duration": 10.0,
        "eval_max_duration": 20.0,
        "num_workers": 0,
        "cmvn_max_utts": 20,
    }
