"""The one text normaliser, shared by the data pipeline and WER scoring."""

from __future__ import annotations

import re

# Anything that is neither a word character nor an apostrophe separates words; "_" is a word
# character for `\w` but never part of a spoken word.
_SEPARATORS = re.compile(r"[^\w']+|_")
# An apostrophe belongs to a word only between two word characters ("DON'T", "JOHN'S").
_STRAY_APOSTROPHES = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Return ``text`` upper-cased, with punctuation removed and words separated by one space.

    Apostrophes inside words are kept (LibriSpeech spells "DON'T"); every other character that is
    not a letter or a digit becomes a word boundary. The result has no leading or trailing space.
    This is the normalisation applied to references and hypotheses before WER is computed.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    text = _SEPARATORS.sub(" ", text.upper())
    text = _STRAY_APOSTROPHES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()
