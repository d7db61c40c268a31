"""Interpolated modified Kneser-Ney word n-gram estimation, written as an ARPA file.

Why our own estimator: the PyPI ``kenlm`` package (and flashlight-text's copy of KenLM) only
*query* models; KenLM's estimator ``lmplz`` is a C++ program that needs a CMake/Boost build, and
no well-kept pure-Python package estimates modified Kneser-Ney exactly (NLTK's ``KneserNeyInterpolated``
has one discount and no ARPA output). Training transcripts are small (LibriSpeech 960 h: 9.4 M
words), so an exact estimator in Python fits; :mod:`recipes.decoding.arpa` reads the result and the
tests check it against ``kenlm``'s scores of the same file.

The model (Chen & Goodman 1998, interpolated, as KenLM's ``lmplz`` defines it). Sentences are
padded as ``<s> w_1 .. w_n </s>``. For order ``N``:

* counts: an ``N``-gram's count is its raw count; a lower-order n-gram ``g`` gets its
  continuation count ``N1+(. g)``, the number of distinct words seen before it, except when ``g``
  starts with ``<s>`` (nothing can precede it): then its raw count.
* discounts per order ``k`` from the counts-of-counts ``n_r`` (n-grams with count ``r``):
  ``Y = n1 / (n1 + 2 n2)``, ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2``, ``D3+ = 3 - 4Y n4/n3``.
  When an ``n_r`` is 0 or a discount leaves ``(0, r]`` (small corpora), the order uses
  ``FALLBACK_DISCOUNTS`` (0.5, 1, 1.5; KenLM's ``--discount_fallback``) and a warning says so.
* probabilities, with ``c`` the counts above, ``h'`` the history without its first word::

      p(w | h) = max(c(hw) - D(c(hw)), 0) / c(h.) + gamma(h) p(w | h')
      gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / c(h.)

  where ``c(h.)`` sums ``c(hw)`` over ``w`` and ``N_r(h.)`` counts the words ``w`` with
  ``c(hw) = r`` (``>= 3`` for ``N3+``). A history never seen at an order passes to the lower
  order unchanged. The recursion ends in the uniform distribution ``1 / |V|`` over the
  vocabulary: every training word, ``</s>`` and ``<unk>`` (not ``<s>``, which is never predicted).

In ARPA form every seen n-gram stores ``log10 p(w | h)`` and every seen history its backoff
``log10 gamma(h)``; an unseen ``hw`` is ``gamma(h) p(w | h')`` (see :class:`~recipes.decoding.arpa.ArpaLM`).
``<s>`` has probability ``-99`` (never predicted), as in KenLM and SRILM files.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from recipes.utils.files import partial_path

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
NO_PROB = -99.0  # log10 "probability" of <s>, which the model never predicts


def modified_kn_discounts(counts_of_counts: Sequence[int]) -> tuple[float, float, float] | None:
    """(D1, D2, D3+) from ``(n1, n2, n3, n4)``, or None where the formula does not give discounts
    with ``0 < D_r <= r`` (an ``n_r`` of 0, or a discount out of range)."""
    n1, n2, n3, n4 = counts_of_counts
    if min(n1, n2, n3, n4) <= 0:
        return None
    y = n1 / (n1 + 2 * n2)
    discounts = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d <= r for r, d in enumerate(discounts, start=1)):
        return None
    return discounts


class KneserNeyEstimate:
    """A modified Kneser-Ney model estimated from ``sentences`` (lists of words).

    After construction: ``order``; ``vocab`` (predicted words: training words, ``</s>``,
    ``<unk>``); ``counts[k]`` the counts of the ``k``-grams (1-based, see the module doc);
    ``discounts[k]`` the ``(D1, D2, D3+)`` used at order ``k``; ``prob[k]`` ``{k-gram: p}`` for every
    seen ``k``-gram; ``backoff[k]`` ``{k-gram: gamma}`` for every ``k``-gram seen as a history.
    ``discounts`` may be given as ``{order: (D1, D2, D3+)}`` to override the estimate (tests).
    """

    def __init__(self, sentences: Iterable[Sequence[str]], order: int = 3,
                 discounts: dict[int, Sequence[float]] | None = None) -> None:
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        self.order = order
        raw = self._raw_counts(sentences)
        self.counts = self._adjusted_counts(raw)
        words = {g[0] for g in raw[1]} - {BOS}
        self.vocab = sorted(words | {EOS, UNK})
        self.discounts = {k: self._discounts(k, (discounts or {}).get(k)) for k in range(1, order + 1)}
        self.prob: dict[int, dict[tuple, float]] = {}
        self.backoff: dict[int, dict[tuple, float]] = {}
        self._totals: dict[int, dict[tuple, int]] = {}
        self._gamma: dict[int, dict[tuple, float]] = {}
        self._estimate()

    def _raw_counts(self, sentences: Iterable[Sequence[str]]) -> dict[int, Counter]:
        raw = {k: Counter() for k in range(1, self.order + 1)}
        count = 0
        for words in sentences:
            bad = [w for w in words if w in (BOS, EOS, UNK) or not w or any(c.isspace() for c in w)]
            if bad:
                raise ValueError(f"sentences[{count}]: words must be non-empty, without spaces and other than "
                                 f"{BOS}, {EOS}, {UNK}; got {bad[0]!r}")
            count += 1
            padded = (BOS, *words, EOS)
            for k in range(1, self.order + 1):
                for i in range(len(padded) - k + 1):
                    raw[k][padded[i : i + k]] += 1
        if not count:
            raise ValueError("sentences: no sentence to estimate a language model from")
        self.num_sentences = count
        return raw

    def _adjusted_counts(self, raw: dict[int, Counter]) -> dict[int, dict[tuple, int]]:
        counts = {self.order: dict(raw[self.order])}
        for k in range(self.order - 1, 0, -1):
            left = Counter(g[1:] for g in raw[k + 1])  # distinct left words of each k-gram
            counts[k] = {g: (c if g[0] == BOS else left[g]) for g, c in raw[k].items()}
        return counts

    def _discounts(self, k: int, given: Sequence[float] | None) -> tuple[float, float, float]:
        if given is not None:
            given = tuple(float(d) for d in given)
            if len(given) != 3 or not all(0 <= d <= r for r, d in enumerate(given, start=1)):
                raise ValueError(f"discounts[{k}] must be (D1, D2, D3+) with 0 <= D_r <= r, got {given}")
            return given
        of = Counter(min(c, 5) for g, c in self.counts[k].items() if g[-1] != BOS)
        counts_of_counts = [of[r] for r in range(1, 5)]
        estimated = modified_kn_discounts(counts_of_counts)
        if estimated is None:
            log.warning("Kneser-Ney order %d: counts-of-counts n1..n4 = %s give no valid discounts (a small "
                        "corpus); using %s", k, counts_of_counts, FALLBACK_DISCOUNTS)
            return FALLBACK_DISCOUNTS
        return estimated

    def _estimate(self) -> None:
        lower = {(w,): 1.0 / len(self.vocab) for w in self.vocab}  # order 0: uniform
        for k in range(1, self.order + 1):
            d1, d2, d3 = self.discounts[k]
            totals: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, 0])  # c(h.), N1, N2, N3+
            for g, c in self.counts[k].items():
                if g[-1] == BOS:
                    continue
                stats = totals[g[:-1]]
                stats[0] += c
                stats[min(c, 3)] += 1
            gamma = {h: (d1 * n1 + d2 * n2 + d3 * n3) / total for h, (total, n1, n2, n3) in totals.items()}
            prob = {}
            for g, c in self.counts[k].items():
                if g[-1] == BOS:
                    continue
                h = g[:-1]
                discount = (0.0, d1, d2, d3)[min(c, 3)]
                prob[g] = max(c - discount, 0.0) / totals[h][0] + gamma[h] * lower[g[1:] if k > 1 else g]
            if k == 1:  # <unk> is never seen: it has the uniform share only
                prob[(UNK,)] = gamma[()] / len(self.vocab)
            self.prob[k] = prob
            self._totals[k] = {h: stats[0] for h, stats in totals.items()}
            self._gamma[k] = gamma
            if k > 1:
                self.backoff[k - 1] = {h: gamma[h] for h in totals}
            lower = prob
        self.backoff.setdefault(self.order, {})

    def probability(self, history: Sequence[str], word: str) -> float:
        """p(word | history) by the interpolation formula of the module doc, from the counts (an
        independent computation of what the ARPA file stores in backoff form)."""
        history = tuple(history)[max(0, len(history) - self.order + 1):] if self.order > 1 else ()
        return self._interpolated(history, word if (word,) in self.prob[1] else UNK)

    def _interpolated(self, history: tuple, word: str) -> float:
        k = len(history) + 1
        lower = self._interpolated(history[1:], word) if history else 1.0 / len(self.vocab)
        if history not in self._totals[k]:
            return lower
        count = self.counts[k].get(history + (word,), 0)
        discount = (0.0, *self.discounts[k])[min(count, 3)]
        return max(count - discount, 0.0) / self._totals[k][history] + self._gamma[k][history] * lower

    # -- ARPA ----------------------------------------------------------------------------------
    def arpa_lines(self) -> Iterable[str]:
        """The model as the lines of an ARPA file (without newlines)."""
        yield ""
        yield "\\data\\"
        sizes = {k: len(self.prob[k]) + (k == 1) for k in range(1, self.order + 1)}  # + <s>
        for k in range(1, self.order + 1):
            yield f"ngram {k}={sizes[k]}"
        for k in range(1, self.order + 1):
            yield ""
            yield f"\\{k}-grams:"
            entries = dict(self.prob[k])
            if k == 1:
                entries[(BOS,)] = None
            for g in sorted(entries):
                p = entries[g]
                logp = NO_PROB if p is None else math.log10(p)
                fields = [f"{logp:.9g}", " ".join(g)]
                if k < self.order and g in self.backoff.get(k, {}):
                    fields.append(f"{math.log10(self.backoff[k][g]):.9g}")
                yield "\t".join(fields)
        yield ""
        yield "\\end\\"

    def write_arpa(self, path: str | os.PathLike) -> Path:
        """Write the ARPA file to ``path`` atomically; return ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(path)
        with open(partial, "w") as out:
            for line in self.arpa_lines():
                out.write(line + "\n")
        os.replace(partial, path)
        return path


def texts_key(names: Sequence[str], texts: Sequence[str]) -> str:
    """A folder name for an LM of ``texts``: the training splits' ``names`` and a hash of the texts."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:10]
    return f"{'+'.join(names) or 'train'}-{digest}"


def build_word_lm(texts: Sequence[str], out_dir: str | os.PathLike, order: int = 3) -> Path:
    """Return ``<out_dir>/<order>gram.arpa``, estimated from ``texts`` (normalised transcripts,
    words separated by spaces) the first time and reused afterwards."""
    path = Path(out_dir) / f"{order}gram.arpa"
    if path.exists():
        return path
    start = time.perf_counter()
    log.info("estimating a %d-gram Kneser-Ney word LM from %d training transcripts into %s", order, len(texts), path)
    model = KneserNeyEstimate((text.split() for text in texts), order=order)
    model.write_arpa(path)
    log.info("wrote %s (%s n-grams, vocabulary %d) in %.1f s", path,
             "/".join(str(len(model.prob[k]) + (k == 1)) for k in range(1, order + 1)), len(model.vocab),
             time.perf_counter() - start)
    return path
