"""Beam search with a word n-gram LM (shallow fusion), optionally constrained to a lexicon.

The search of :class:`~recipes.decoding.beam.BeamSearchDecoder` for the model's loss, where every
hypothesis also carries ``lm_weight * ln P_LM(words) + word_score * #words`` (see
:mod:`recipes.decoding.word_lm`). With ``rescore``, the n-best list and the greedy hypothesis are
then ranked by the exact objective's ``log P(y | x)`` plus that fusion score. With ``lexicon``,
the result only ever contains training words, spelled as the tokenizer spells them (when no
candidate qualifies, the empty hypothesis).
"""
from __future__ import annotations

import torch

from recipes.decoding.arpa import ArpaLM
from recipes.decoding.beam import BeamSearchDecoder, objective_log_likelihood
from recipes.decoding.word_lm import TokenSpelling, WordLMScorer


class BeamLMDecoder(BeamSearchDecoder):
    """``decoding=beam_lm``: beam search with word-LM fusion. Call :meth:`prepare` before decoding.

    ``lm_order`` names the n-gram order of the LM that decode.py builds (or loads) from the
    training transcripts; ``lexicon`` restricts hypotheses to the training words; ``lookahead``
    lets an open word carry its best lexicon word's unigram score (see :mod:`recipes.decoding.word_lm`).
    """

    needs_word_lm = True

    def __init__(self, beam_size: int = 8, lm_weight: float = 0.5, word_score: float = 0.0, lexicon: bool = True,
                 lm_order: int = 3, max_symbols_per_frame: int = 3, rescore: bool = True,
                 lookahead: bool = True) -> None:
        super().__init__(beam_size, max_symbols_per_frame, rescore)
        if not isinstance(lm_order, int) or lm_order < 1:
            raise ValueError(f"lm_order must be an int >= 1, got {lm_order!r}")
        if lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
        self.lm_weight, self.word_score = float(lm_weight), float(word_score)
        self.lexicon, self.lm_order, self.lookahead = bool(lexicon), lm_order, bool(lookahead)
        self.scorer: WordLMScorer | None = None

    def prepare(self, lm: ArpaLM, tokenizer, lexicon_words=None) -> BeamLMDecoder:
        """Attach the LM, and with ``lexicon`` the words hypotheses may use; returns self."""
        if self.lexicon and lexicon_words is None:
            raise ValueError("lexicon=true needs the lexicon's words (the training words)")
        self.scorer = WordLMScorer(lm, TokenSpelling.from_tokenizer(tokenizer), self.lm_weight, self.word_score,
                                   lexicon=lexicon_words if self.lexicon else None, tokenizer=tokenizer,
                                   lookahead=self.lookahead)
        return self

    def with_weights(self, lm_weight: float, word_score: float) -> BeamLMDecoder:
        """A prepared copy with other weights (sharing the LM and the lexicon)."""
        if self.scorer is None:
            raise RuntimeError("BeamLMDecoder: call prepare() first")
        other = BeamLMDecoder(self.beam_size, lm_weight, word_score, self.lexicon, self.lm_order,
                              self.max_symbols_per_frame, self.rescore, self.lookahead)
        other.scorer = self.scorer.with_weights(lm_weight, word_score)
        return other

    @torch.no_grad()
    def __call__(self, model, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        scorer = self.scorer
        if scorer is None:
            raise RuntimeError("BeamLMDecoder: call prepare() with the word LM before decoding")
        greedy = self.greedy(model, enc, lengths) if self.rescore else None
        hyps = []
        nbests = self.nbest(model, enc, lengths, scorer=scorer)
        for b, (length, nbest) in enumerate(zip(lengths.tolist(), nbests, strict=True)):
            candidates = [tokens for tokens, _ in nbest]
            if self.rescore:
                extra = [greedy[b], []] if self.lexicon else [greedy[b]]  # [] is always in the lexicon
                candidates = list({tuple(c): c for c in [*candidates, *extra]}.values())
            candidates = [c for c in candidates if scorer.in_lexicon(c)] or [[]]
            if not self.rescore or len(candidates) == 1:
                hyps.append(candidates[0])
                continue
            acoustic = objective_log_likelihood(model, enc[b : b + 1, :length], candidates)
            fusion = torch.tensor([scorer.score(c) for c in candidates], dtype=torch.float64)
            hyps.append(candidates[int(torch.argmax(acoustic + fusion))])
        return hyps
