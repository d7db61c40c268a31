"""Tokenizers with the blank at id 0: sentencepiece (unigram/BPE) and characters.

Both satisfy one contract: ``vocab_size`` counts every id including the blank, ``blank_id == 0``,
``encode(text)`` returns ids in ``1..vocab_size-1`` and ``decode(ids)`` ignores blanks. They are
trained on the training transcripts once and stored with the data (``<cache_dir>/lang_*``);
later runs load the stored files. The Hydra configs build *factories*
(``build_sentencepiece_tokenizer`` / ``build_char_tokenizer`` with ``_partial_: true``) that the
data module calls with the transcripts and the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from recipes.utils.files import partial_path as partial_path_for

BLANK = "<blk>"
SPACE = "▁"  # how a word boundary is spelled in tokens.txt and by sentencepiece


class SentencePieceTokenizer:
    """A sentencepiece model whose id 0 is the blank (trained with ``pad_id=0``).

    Characters the model has never seen map to ``<unk>`` (id 1).
    """

    blank_id = 0

    def __init__(self, model_path: str | os.PathLike) -> None:
        import sentencepiece

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ValueError(f"model_path: no such file {model_path}")
        self.model_path = model_path
        self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
        if self._processor.id_to_piece(0) != BLANK:
            raise ValueError(f"model_path: {model_path} does not have {BLANK} at id 0")

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    @property
    def unk_id(self) -> int:
        """The id that text the model cannot spell is mapped to."""
        return self._processor.unk_id()

    def describe(self) -> str:
        """Return how error messages name this tokenizer: its kind and model file."""
        return f"sentencepiece tokenizer {self.model_path}"

    def unknown_characters(self, text: str) -> list[str]:
        """Return the distinct characters of ``text`` that the model maps to ``<unk>``."""
        return sorted({char for char in text if char != " "
                       and self.unk_id in self._processor.encode(char)})

    def token_strings(self) -> list[str]:
        """The piece of every id (``<blk>`` first); ``▁`` starts a word."""
        return [self._processor.id_to_piece(i) for i in range(self.vocab_size)]

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.decode([int(i) for i in ids if i != self.blank_id])

    def __getstate__(self) -> dict:  # data loader workers receive the path, not the C++ object
        return {"model_path": self.model_path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_path"])


def build_sentencepiece_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike,
                                  vocab_size: int = 256, model_type: str = "bpe",
                                  ) -> SentencePieceTokenizer:
    """Return the sentencepiece tokenizer stored in ``<out_dir>/lang_<model_type>_<vocab_size>``.

    It is trained on ``texts`` (normalised transcripts, one utterance each) the first time and
    loaded afterwards. ``vocab_size`` includes the blank and ``<unk>``; on a corpus too small for
    it the model comes out smaller (``hard_vocab_limit=False``): read ``vocab_size`` back.
    """
    import sentencepiece

    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    if not isinstance(vocab_size, int) or vocab_size < 3:
        raise ValueError(f"vocab_size must be an int >= 3, got {vocab_size!r}")
    lang_dir = Path(out_dir) / f"lang_{model_type}_{vocab_size}"
    model_path = lang_dir / "sp.model"
    if not model_path.exists():
        lang_dir.mkdir(parents=True, exist_ok=True)
        transcript = partial_path_for(lang_dir / "transcript.txt")
        transcript.write_text("".join(f"{text}\n" for text in texts))
        prefix = partial_path_for(lang_dir / "sp")
        sentencepiece.SentencePieceTrainer.train(
            input=str(transcript), model_prefix=str(prefix), vocab_size=vocab_size,
            model_type=model_type, character_coverage=1.0, hard_vocab_limit=False,
            pad_id=0, pad_piece=BLANK, unk_id=1, bos_id=-1, eos_id=-1, num_threads=1,
            minloglevel=2,
        )
        os.replace(f"{prefix}.vocab", lang_dir / "sp.vocab")  # sentencepiece appends .model / .vocab
        os.replace(transcript, lang_dir / "transcript.txt")
        os.replace(f"{prefix}.model", model_path)  # last: marks a finished model
    return SentencePieceTokenizer(model_path)


class CharTokenizer:
    """Characters as tokens: id 0 is the blank, then the symbols of ``tokens`` in order.

    A space is spelled ``▁``. Encoding a character outside the symbol set raises a ValueError.
    ``path`` is the ``tokens.txt`` it was loaded from, if any.
    """

    blank_id = 0

    def __init__(self, tokens: Sequence[str], path: str | os.PathLike | None = None) -> None:
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens) or any(len(t) != 1 for t in tokens) or BLANK in tokens:
            raise ValueError(f"tokens must be distinct single characters, got {tokens!r}")
        self.tokens = [BLANK, *tokens]
        self._ids = {token: index for index, token in enumerate(self.tokens)}
        self.path = Path(path) if path is not None else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        """Return the tokenizer stored as a ``tokens.txt`` (one symbol a line, blank first)."""
        lines = Path(path).read_text().splitlines()
        if not lines or lines[0] != BLANK:
            raise ValueError(f"path: {path} does not start with {BLANK}")
        return cls(lines[1:], path=path)

    def describe(self) -> str:
        """Return how error messages name this tokenizer: its kind and ``tokens.txt``, if any."""
        return f"character tokenizer {self.path}" if self.path else "character tokenizer"

    def unknown_characters(self, text: str) -> list[str]:
        """Return the distinct characters of ``text`` outside the vocabulary."""
        return sorted({char for char in text.replace(" ", SPACE) if char not in self._ids})

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text("".join(f"{token}\n" for token in self.tokens))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def token_strings(self) -> list[str]:
        """The symbol of every id (``<blk>`` first); ``▁`` is the space between words."""
        return list(self.tokens)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[char] for char in text.replace(" ", SPACE)]
        except KeyError as error:
            raise ValueError(f"text: character {error.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i != self.blank_id).replace(SPACE, " ")


def build_char_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike) -> CharTokenizer:
    """Return the character tokenizer stored in ``<out_dir>/lang_char/tokens.txt``.

    The first time, its symbols are the sorted characters of ``texts``; later it is loaded.
    """
    path = Path(out_dir) / "lang_char" / "tokens.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        symbols = sorted({char for text in texts for char in text.replace(" ", SPACE)})
        partial_path = partial_path_for(path)
        CharTokenizer(symbols).save(partial_path)
        os.replace(partial_path, path)
    return CharTokenizer.load(path)


class TranscriptError(ValueError):
    """Transcripts that the tokenizer cannot encode; the message names their utterances."""


_SHOWN = 5  # utterances spelled out in one error message


def _name(tokenizer) -> str:
    return tokenizer.describe() if hasattr(tokenizer, "describe") else type(tokenizer).__name__


def _unknown_characters(tokenizer, text: str) -> str:
    finder = getattr(tokenizer, "unknown_characters", None)
    characters = finder(text) if finder is not None else []
    return ", ".join(map(repr, characters)) if characters else "pieces it cannot spell"


def _utterance_name(utterance) -> str:
    return utterance.describe() if hasattr(utterance, "describe") else f"utterance {utterance.id!r}"


def encode_transcripts(tokenizer, utterances: Sequence, texts: Sequence[str]) -> list[list[int]]:
    """Return ``tokenizer.encode(text)`` of every normalised transcript in ``texts``.

    ``utterances`` are the records the texts belong to (anything with ``id`` and, optionally,
    ``describe()`` naming its manifest and line). A text with characters outside the
    tokenizer's vocabulary (a character tokenizer raises, sentencepiece maps them to
    ``unk_id``) is an error, not a silent drop: it means the tokenizer was built from other data
    or the normaliser lets through something new, and dropping such utterances from a test set
    would bias its WER. One :class:`TranscriptError` names how many there are and, for the first
    few, the utterance, its manifest and line, and the characters.
    """
    if len(utterances) != len(texts):
        raise ValueError(f"utterances and texts must have one entry each, got {len(utterances)} "
                         f"and {len(texts)}")
    unk_id = getattr(tokenizer, "unk_id", None)
    targets, bad = [], []
    for utterance, text in zip(utterances, texts):
        try:
            ids = tokenizer.encode(text)
        except ValueError:  # a character tokenizer meeting a character it does not have
            ids = None
        if ids is None or (unk_id is not None and unk_id in ids):
            bad.append((utterance, text))
        targets.append(ids)
    if bad:
        listed = "; ".join(f"{_utterance_name(u)}: {_unknown_characters(tokenizer, text)} in "
                           f"{text!r}" for u, text in bad[:_SHOWN])
        raise TranscriptError(
            f"{len(bad)} of {len(texts)} transcripts have characters outside the vocabulary of "
            f"the {_name(tokenizer)}: {listed}{'; ...' if len(bad) > _SHOWN else ''}. Rebuild the "
            f"tokenizer from this corpus (delete its folder) or fix the transcripts")
    return targets
