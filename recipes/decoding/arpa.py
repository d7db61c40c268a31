"""Reading, scoring and writing ARPA n-gram language models (log10 probabilities with backoff).

A model of order ``N`` lists, per order ``k``, lines ``log10 p  w_1 .. w_k  [log10 bow]``. The
probability of ``w`` after a history ``h`` (its last ``N - 1`` words) is that of the longest
listed n-gram ``h_i .. h_m w``, times the backoff weights of the longer histories that were not
followed by ``w`` (a history that is not listed has weight 1)::

    log10 p(w | h) = log10 p(h w)                      if h w is listed
                     log10 bow(h) + log10 p(w | h')    otherwise (h' = h without its first word)

A word that is not a unigram of the model is scored as ``<unk>``. ``score`` with ``</s>`` ends a
sentence; ``<s>`` starts every history of a sentence.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from recipes.utils.files import partial_path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN10 = math.log(10.0)


class ArpaError(ValueError):
    """A malformed ARPA file; the message names the file and line."""


class ArpaLM:
    """An ARPA model in memory: ``order``, ``ngrams[k]`` ``{words tuple: (log10 p, log10 bow)}``."""

    def __init__(self, ngrams: dict[int, dict[tuple[str, ...], tuple[float, float]]], source: str = "") -> None:
        if not ngrams or sorted(ngrams) != list(range(1, max(ngrams) + 1)):
            raise ValueError(f"ngrams must have the orders 1..N, got {sorted(ngrams)}")
        self.ngrams = ngrams
        self.order = max(ngrams)
        self.source = source
        self.has_unk = (UNK,) in ngrams[1]

    @classmethod
    def load(cls, path: str | os.PathLike) -> ArpaLM:
        """Read an ARPA file; raises :class:`ArpaError` naming the file and line when it is malformed."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ARPA language model: no such file {path}")
        sizes: dict[int, int] = {}
        ngrams: dict[int, dict] = {}
        section = None  # "data", or the order k of "\k-grams:"
        ended = False
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                line = line.strip()
                where = f"{path}, line {number}"
                if not line or ended:
                    continue
                if line == "\\data\\":
                    section = "data"
                elif line == "\\end\\":
                    ended = True
                elif line.startswith("\\") and line.endswith("-grams:"):
                    try:
                        section = int(line[1 : -len("-grams:")])
                    except ValueError:
                        raise ArpaError(f"{where}: bad section header {line!r}") from None
                    if section not in sizes:
                        raise ArpaError(f"{where}: {line} is not announced in \\data\\")
                    ngrams[section] = {}
                elif section == "data":
                    if not line.startswith("ngram ") or "=" not in line:
                        raise ArpaError(f"{where}: expected 'ngram k=count' in \\data\\, got {line!r}")
                    k, _, count = line[len("ngram "):].partition("=")
                    try:
                        sizes[int(k)] = int(count)
                    except ValueError:
                        raise ArpaError(f"{where}: expected 'ngram k=count', got {line!r}") from None
                elif isinstance(section, int):
                    fields = line.split()
                    if len(fields) not in (section + 1, section + 2):
                        raise ArpaError(f"{where}: a {section}-gram line needs log10 p, {section} words and an "
                                        f"optional backoff, got {line!r}")
                    try:
                        logp = float(fields[0])
                        bow = float(fields[section + 1]) if len(fields) == section + 2 else 0.0
                    except ValueError:
                        raise ArpaError(f"{where}: not a number in {line!r}") from None
                    words = tuple(sys.intern(w) for w in fields[1 : section + 1])
                    ngrams[section][words] = (logp, bow)
                else:
                    raise ArpaError(f"{where}: text before \\data\\: {line!r}")
        if not ended:
            raise ArpaError(f"{path}: no \\end\\ line (a truncated file?)")
        for k, size in sizes.items():
            if len(ngrams.get(k, {})) != size:
                raise ArpaError(f"{path}: \\data\\ announces {size} {k}-grams, the file lists "
                                f"{len(ngrams.get(k, {}))}")
        if not sizes:
            raise ArpaError(f"{path}: no \\data\\ section")
        return cls(ngrams, source=str(path))

    @property
    def vocab(self) -> list[str]:
        """The unigrams, sorted."""
        return sorted(g[0] for g in self.ngrams[1])

    def __contains__(self, word: str) -> bool:
        return (word,) in self.ngrams[1]

    def score(self, history: Sequence[str], word: str) -> float:
        """log10 p(word | history); ``history`` starts with ``<s>`` at a sentence start."""
        if (word,) not in self.ngrams[1]:
            if not self.has_unk:
                raise KeyError(f"word {word!r} is not in the language model {self.source} and it has no {UNK}")
            word = UNK
        history = tuple(history)
        history = history[max(0, len(history) - self.order + 1):] if self.order > 1 else ()
        total = 0.0
        for start in range(len(history) + 1):
            context = history[start:]
            entry = self.ngrams[len(context) + 1].get(context + (word,))
            if entry is not None:
                return total + entry[0]
            if context:
                total += self.ngrams[len(context)].get(context, (0.0, 0.0))[1]
        raise AssertionError("unreachable: the word is a unigram")

    def sentence_score(self, words: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """log10 p of ``words`` (with ``</s>`` when ``eos``), from a ``<s>`` history when ``bos``."""
        history = [BOS] if bos else []
        total = 0.0
        for word in [*words, EOS] if eos else words:
            total += self.score(history, word)
            history.append(word)
        return total

    def lines(self) -> Iterable[str]:
        """The model as ARPA lines (without newlines), n-grams sorted within each order."""
        yield ""
        yield "\\data\\"
        for k in range(1, self.order + 1):
            yield f"ngram {k}={len(self.ngrams[k])}"
        for k in range(1, self.order + 1):
            yield ""
            yield f"\\{k}-grams:"
            for words in sorted(self.ngrams[k]):
                logp, bow = self.ngrams[k][words]
                yield f"{logp!r}\t{' '.join(words)}" + (f"\t{bow!r}" if bow != 0.0 else "")
        yield ""
        yield "\\end\\"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the model as an ARPA file (atomically); return ``path``."""
        path = Path(path)
        partial = partial_path(path)
        with open(partial, "w", encoding="utf-8") as out:
            for line in self.lines():
                out.write(line + "\n")
        os.replace(partial, path)
        return path
