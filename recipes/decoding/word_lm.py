"""Word-level LM scores for token-level beam searches (shallow fusion), with an optional lexicon.

A hypothesis is a sequence of token ids; its words are what ``tokenizer.decode`` makes of it,
split at spaces. A token *starts a word* when its piece begins with ``▁`` (sentencepiece) or is
the space symbol ``▁`` itself (characters); its text is the piece without that ``▁``. The scorer
follows a hypothesis token by token with a small state ``(LM context, tokens of the open word)``
and adds, whenever a word is complete — when the next word starts, and at the end of the
hypothesis for the last word and then ``</s>`` —

    lm_weight * ln P_LM(word | previous words) + word_score

(``ln`` = natural log, the unit of the acoustic scores; the ARPA file holds log10). With a
lexicon, an open word whose tokens are not a prefix of some lexicon word's spelling
(``tokenizer.encode(word)``, its ``▁``-only tokens left out) and a completed word that is not
in the lexicon score ``-inf``: the search never keeps them.

Look-ahead (with a lexicon, ``lookahead=True``): scoring a word only once it is complete favours
hypotheses that have not started their next word yet, and a beam that must compare a finished
word against an open one prunes the wrong one. So while a word is open, the hypothesis already
carries ``lm_weight * ln max_w P_LM(w)`` over the lexicon words ``w`` its open tokens can still
become (the best unigram, the look-ahead of flashlight's lexicon decoder); each token adds the
change of that bound, and completing the word replaces the bound by the word's exact score. The
look-ahead terms cancel on every complete hypothesis, so ``score(tokens)`` is unchanged by it;
only the ranking of partial hypotheses in the search changes.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

from recipes.decoding.arpa import BOS, EOS, LN10, ArpaLM

NEG_INF = float("-inf")
SPACE = "▁"

State = tuple[tuple[str, ...], tuple[int, ...]]  # (LM context: at most order-1 words, open word's token ids)


class TokenSpelling:
    """Per token id: whether it starts a word and the text it adds to the word."""

    def __init__(self, pieces: Sequence[str], blank_id: int = 0) -> None:
        self.starts_word = [piece.startswith(SPACE) for piece in pieces]
        self.text = [piece.removeprefix(SPACE) for piece in pieces]
        self.blank_id = blank_id
        self.text[blank_id] = ""

    @classmethod
    def from_tokenizer(cls, tokenizer) -> TokenSpelling:
        if not hasattr(tokenizer, "token_strings"):
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no token_strings(): the word LM needs the "
                             f"pieces to find word boundaries")
        return cls(tokenizer.token_strings(), getattr(tokenizer, "blank_id", 0))

    def words(self, tokens: Iterable[int]) -> list[str]:
        """The words that ``tokens`` spell (as ``tokenizer.decode(tokens).split()``)."""
        words, current = [], ""
        for token in tokens:
            if self.starts_word[token] and current:
                words.append(current)
                current = ""
            current += self.text[token]
        return [*words, current] if current else words


class WordLMScorer:
    """Fusion scores of token hypotheses under a word n-gram LM (see the module doc).

    ``extend(state, token)`` returns the next state and the score added by ``token``;
    ``finish(state)`` the score of ending there; ``score(tokens)`` the total of a hypothesis.
    ``lexicon``: the words a hypothesis may contain (None: any), spelled with ``tokenizer``;
    ``lookahead``: the unigram look-ahead on open words (needs the lexicon; see the module doc).
    """

    def __init__(self, lm: ArpaLM, spelling: TokenSpelling, lm_weight: float = 0.5, word_score: float = 0.0,
                 lexicon: Iterable[str] | None = None, tokenizer=None, lookahead: bool = True) -> None:
        self.lm, self.spelling = lm, spelling
        self.lm_weight, self.word_score = float(lm_weight), float(word_score)
        self._lm_cache: dict[tuple, float] = {}  # (context, word) -> log10 P
        self._step_cache: dict[tuple, tuple[State, float]] = {}
        self.lexicon: dict[tuple[int, ...], str] | None = None
        self._prefixes: set[tuple[int, ...]] = set()
        self._lookahead: dict[tuple[int, ...], float] = {}  # open word's tokens -> max log10 P(w) over its words
        if lexicon is not None:
            if tokenizer is None:
                raise ValueError("lexicon: a tokenizer is needed to spell the lexicon's words")
            self.lexicon = {}
            for word in lexicon:
                spelling = tuple(t for t in tokenizer.encode(word) if self.spelling.text[t])
                self.lexicon.setdefault(spelling, word)
                self._prefixes.update(spelling[:i] for i in range(1, len(spelling) + 1))
            if not self.lexicon:
                raise ValueError("lexicon: no words")
            if lookahead:
                for spelled, word in self.lexicon.items():
                    log10p = lm.score((), word)
                    for i in range(1, len(spelled) + 1):
                        prefix = spelled[:i]
                        self._lookahead[prefix] = max(self._lookahead.get(prefix, NEG_INF), log10p)

    @property
    def initial(self) -> State:
        return ((BOS,), ())

    def _word(self, context: tuple[str, ...], word: str) -> float:
        key = (context, word)
        log10p = self._lm_cache.get(key)
        if log10p is None:
            if len(self._lm_cache) > 2_000_000:  # bounded memory over a long decode
                self._lm_cache.clear()
            log10p = self._lm_cache[key] = self.lm.score(context, word)
        return self.lm_weight * LN10 * log10p + (self.word_score if word != EOS else 0.0)

    def with_weights(self, lm_weight: float, word_score: float) -> WordLMScorer:
        """A scorer with other weights that shares this one's LM, lexicon and LM-score cache."""
        other = copy.copy(self)
        other.lm_weight, other.word_score = float(lm_weight), float(word_score)
        other._step_cache = {}
        return other

    def _complete(self, context: tuple[str, ...], open_tokens: tuple[int, ...]) -> tuple[tuple[str, ...], float]:
        """(new context, score) of completing the open word."""
        if self.lexicon is not None:
            word = self.lexicon.get(open_tokens)
            if word is None:
                return context, NEG_INF
        else:
            word = "".join(self.spelling.text[t] for t in open_tokens)
        score = self._word(context, word) - self._bound(open_tokens)
        return (context + (word,))[-(self.lm.order - 1):] if self.lm.order > 1 else (), score

    def _bound(self, open_tokens: tuple[int, ...]) -> float:
        """The look-ahead carried by an open word: lm_weight * ln max P_LM(w) over the words it can become."""
        if not open_tokens or not self._lookahead:
            return 0.0
        return self.lm_weight * LN10 * self._lookahead.get(open_tokens, 0.0)  # absent: a dead (-inf) state

    def extend(self, state: State, token: int) -> tuple[State, float]:
        key = (state, token)
        cached = self._step_cache.get(key)
        if cached is not None:
            return cached
        context, open_tokens = state
        delta = 0.0
        if self.spelling.starts_word[token] and open_tokens:
            context, delta = self._complete(context, open_tokens)
            open_tokens = ()
        if self.spelling.text[token]:
            before = self._bound(open_tokens)
            open_tokens = open_tokens + (token,)
            if self.lexicon is not None and open_tokens not in self._prefixes:
                delta = NEG_INF
            else:
                delta += self._bound(open_tokens) - before
        result = ((context, open_tokens), delta)
        if len(self._step_cache) > 2_000_000:
            self._step_cache.clear()
        self._step_cache[key] = result
        return result

    def finish(self, state: State) -> float:
        """The score of ending the hypothesis: its open word (if any), then ``</s>``."""
        context, open_tokens = state
        delta = 0.0
        if open_tokens:
            context, delta = self._complete(context, open_tokens)
        return delta + self._word(context, EOS)

    def score(self, tokens: Iterable[int]) -> float:
        """The total fusion score of a complete hypothesis."""
        state, total = self.initial, 0.0
        for token in tokens:
            state, delta = self.extend(state, token)
            total += delta
        return total + self.finish(state)

    def in_lexicon(self, tokens: Sequence[int]) -> bool:
        """Whether a hypothesis spells only lexicon words (always True without a lexicon)."""
        if self.lexicon is None:
            return True
        open_tokens: tuple[int, ...] = ()
        for token in tokens:
            if self.spelling.starts_word[token] and open_tokens:
                if open_tokens not in self.lexicon:
                    return False
                open_tokens = ()
            if self.spelling.text[token]:
                open_tokens += (token,)
        return not open_tokens or open_tokens in self.lexicon
