"""Beam search algorithms for every loss family, and the beam search decoder with n-best rescoring.

* CTC: prefix beam search over the CTC head's log-probabilities (blank / non-blank prefix scores).
* RNN-T and the modified transducer: icefall's "modified beam search" (at most one symbol per
  frame and hypothesis, hypotheses with the same tokens merged by log-add).
* SSNT: per source frame, up to ``max_symbols_per_frame`` rounds in which each pending hypothesis
  either emits a token (log P(emit) + log P(token)) and stays, or shifts (log(1 - P(emit))).

Each search runs on one utterance and returns its n-best list [(tokens, search score)], best
first; an objective's ``beam`` hook (recipes/models/objectives.py) calls the one for its loss.
In each search one loop extends hypotheses by a token (the ``total = scores + ... + token
log-probabilities`` line): a score term per emitted token belongs there.

Search scores only approximate log P(y | x) (the transducer searches keep one alignment family).
So :class:`BeamSearchDecoder` rescores the n-best list, together with the greedy hypothesis, with
the exact objective (the training loss, -log P(y | x) summed over all alignments) and returns the
best: beam search can never do worse than greedy on the model's own objective.
"""
import math

import torch

from recipes.decoding.greedy import GreedyDecoder
from recipes.models.heads import ssnt_scores

NEG_INF = float("-inf")


def _log_add(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _accumulate(beams: dict, prefix: tuple, blank_score: float, token_score: float) -> None:
    """beams[prefix] += (blank_score, token_score) in log space (log-add per component)."""
    old_b, old_t = beams.get(prefix, (NEG_INF, NEG_INF))
    beams[prefix] = (_log_add(old_b, blank_score), _log_add(old_t, token_score))


def ctc_prefix_beam_search(log_probs: torch.Tensor, beam_size: int, blank_id: int = 0,
                           scorer=None) -> list[tuple[list[int], float]]:
    """n-best (tokens, log P) for one utterance's log_probs (T, V) by CTC prefix beam search.

    With a ``scorer`` (:class:`~recipes.decoding.word_lm.WordLMScorer`), each prefix also carries
    its word-LM fusion score, which takes part in the pruning; the returned score is then
    log P + the fusion score of the complete hypothesis (``scorer.finish`` included), best first.
    """
    beams = {(): (0.0, NEG_INF)}  # prefix -> (log P ending in blank, log P ending in a token)
    fused = {(): (scorer.initial, 0.0)} if scorer is not None else None  # prefix -> (LM state, fusion score)
    lp = log_probs.double().cpu()
    candidates_per_frame = min(lp.shape[1], beam_size + 1)
    for t in range(lp.shape[0]):
        top = torch.topk(lp[t], candidates_per_frame).indices.tolist()
        if blank_id not in top:
            top.append(blank_id)
        row = lp[t].tolist()
        new: dict[tuple, tuple[float, float]] = {}

        for prefix, (p_b, p_t) in beams.items():
            total = _log_add(p_b, p_t)
            for v in top:
                if v == blank_id:
                    _accumulate(new, prefix, total + row[v], NEG_INF)
                    continue
                extended = prefix + (v,)
                allowed = True
                if fused is not None and extended not in fused:
                    state, delta = scorer.extend(fused[prefix][0], v)
                    allowed = delta != NEG_INF  # e.g. out of the lexicon
                    if allowed:
                        fused[extended] = (state, fused[prefix][1] + delta)
                if prefix and prefix[-1] == v:
                    if allowed:
                        _accumulate(new, extended, NEG_INF, p_b + row[v])  # a repeat needs a blank in between
                    _accumulate(new, prefix, NEG_INF, p_t + row[v])  # or it merges into the last token
                elif allowed:
                    _accumulate(new, extended, NEG_INF, total + row[v])
        if fused is None:
            beams = dict(sorted(new.items(), key=lambda kv: -_log_add(*kv[1]))[:beam_size])
        else:
            beams = dict(sorted(new.items(), key=lambda kv: -(_log_add(*kv[1]) + fused[kv[0]][1]))[:beam_size])
            fused = {prefix: fused[prefix] for prefix in beams}
    if fused is None:
        return [(list(prefix), _log_add(*scores)) for prefix, scores in beams.items()]
    ended = [(list(prefix), _log_add(*scores) + fused[prefix][1] + scorer.finish(fused[prefix][0]))
             for prefix, scores in beams.items()]
    return sorted(ended, key=lambda x: -x[1])


def _predictor_outputs(model, histories: list[tuple[int, ...]], cache: dict):
    """Projected predictor output for each token history (batched over the uncached ones)."""
    missing = [h for h in histories if h not in cache]
    if missing:
        parents = [cache[h[:-1]] for h in missing]
        tokens = torch.tensor([h[-1] for h in missing], device=parents[0][0].device)
        state = tuple(torch.cat([p[1][i] for p in parents], dim=1) for i in range(len(parents[0][1])))
        out, new_state = model.predictor.step(tokens, state)
        proj = model.joiner.predictor_proj(out)
        for k, h in enumerate(missing):
            cache[h] = (proj[k : k + 1], tuple(s[:, k : k + 1] for s in new_state))
    return torch.cat([cache[h][0] for h in histories])


def _start_cache(model, device):
    """The predictor's start: its output and state after its own start symbol (`predictor.blank_id`)."""
    out, state = model.predictor.step(torch.tensor([model.predictor.blank_id], device=device), None)
    return {(): (model.joiner.predictor_proj(out), state)}


class _Fusion:
    """Word-LM fusion for the transducer and SSNT searches: each history's scorer state and fusion
    score, candidate selection by acoustic + fusion score. Without a scorer every fusion score is 0
    and selection is the plain search's global top-k."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.states = {(): (scorer.initial, 0.0)} if scorer is not None else {}

    def score(self, history: tuple) -> float:
        return self.states[history][1] if self.scorer is not None else 0.0

    def _extend(self, history: tuple, token: int) -> float:
        """The fusion score of history + (token,) (recorded), -inf when the scorer forbids it."""
        extended = history + (token,)
        if extended not in self.states:
            state, delta = self.scorer.extend(self.states[history][0], token)
            if delta == NEG_INF:
                return NEG_INF
            self.states[extended] = (state, self.states[history][1] + delta)
        return self.states[extended][1]

    def select(self, total: torch.Tensor, histories: list, beam_size: int, blank: int | None):
        """The best ``beam_size`` (acoustic score, hypothesis index, token) of ``total`` (H, V) (acoustic
        scores of each history extended by each token; ``blank`` extends nothing), best first."""
        if self.scorer is None:
            flat = torch.topk(total.flatten(), min(beam_size, total.numel()))
            return [(value, *divmod(index, total.shape[1]))
                    for value, index in zip(flat.values.tolist(), flat.indices.tolist())]
        # the global top-k lies within each history's top-k tokens: score those with the LM
        top = torch.topk(total, min(beam_size + 1, total.shape[1]), dim=1)
        entries = []
        for k, history in enumerate(histories):
            tokens = top.indices[k].tolist()
            if blank is not None and blank not in tokens:
                tokens.append(blank)
            for v in tokens:
                value = float(total[k, v])
                if value == NEG_INF:
                    continue
                fusion = self.score(history) if v == blank else self._extend(history, v)
                if fusion != NEG_INF:
                    entries.append((value + fusion, value, k, v))
        entries.sort(key=lambda e: -e[0])
        return [(value, k, v) for _, value, k, v in entries[:beam_size]]

    def keep(self, histories) -> None:
        if self.scorer is not None:
            self.states = {h: self.states[h] for h in histories}

    def ranked(self, beams: dict) -> list[tuple[list[int], float]]:
        """(tokens, score) best first: score = acoustic, plus with a scorer the complete fusion score."""
        if self.scorer is None:
            return sorted(((list(h), s) for h, s in beams.items()), key=lambda x: -x[1])
        return sorted(((list(h), s + self.score(h) + self.scorer.finish(self.states[h][0])) for h, s in beams.items()),
                      key=lambda x: -x[1])


def transducer_beam_search(model, enc: torch.Tensor, beam_size: int, blank_id: int | None = None,
                           scorer=None) -> list[tuple[list[int], float]]:
    """Modified beam search for one utterance's encoder output (T, E); at most one symbol per frame.

    `model` has `predictor` and `joiner`; `blank_id` (default: the model objective's) is the blank.
    ``scorer``: word-LM fusion (see :func:`ctc_prefix_beam_search`).
    """
    blank = model.objective.blank_id if blank_id is None else blank_id
    enc_proj = model.joiner.encoder_proj(enc)
    cache = _start_cache(model, enc.device)
    fusion = _Fusion(scorer)
    beams = {(): 0.0}
    for t in range(enc.shape[0]):
        histories = list(beams)
        scores = torch.tensor([beams[h] for h in histories], dtype=torch.float64)
        pred_proj = _predictor_outputs(model, histories, cache)
        logits = model.joiner.output(model.joiner.hidden(enc_proj[t : t + 1], pred_proj))
        total = scores[:, None] + logits.log_softmax(-1).double().cpu()
        new: dict[tuple, float] = {}
        for value, k, v in fusion.select(total, histories, beam_size, blank):
            history = histories[k] if v == blank else histories[k] + (v,)
            new[history] = _log_add(new.get(history, NEG_INF), value)
        beams = new
        fusion.keep(beams)
    return fusion.ranked(beams)


def ssnt_beam_search(model, enc: torch.Tensor, beam_size: int, max_symbols_per_frame: int = 3,
                     blank_id: int | None = None, end_token: bool | None = None,
                     scorer=None) -> list[tuple[list[int], float]]:
    """SSNT beam search for one utterance's encoder output (S, E).

    On frame i a hypothesis emits up to ``max_symbols_per_frame`` tokens, then shifts; on the last
    frame it must end with an emission (the SSNT path ends by emitting on frame S-1, no shift):
    any emission, or with ``end_token`` the end token (id ``blank_id``), which then ends the path.
    Hypotheses never contain ``blank_id``. `model` has `predictor`, `joiner` and `choose_head`;
    `blank_id` and `end_token` default to the model objective's. ``scorer``: word-LM fusion (see
    :func:`ctc_prefix_beam_search`).
    """
    blank = model.objective.blank_id if blank_id is None else blank_id
    end_token = getattr(model.objective, "end_token", False) if end_token is None else end_token
    enc_proj = model.joiner.encoder_proj(enc)
    cache = _start_cache(model, enc.device)
    fusion = _Fusion(scorer)
    beams = {(): 0.0}
    for i in range(enc.shape[0]):
        last_frame = i == enc.shape[0] - 1
        pending, ended = beams, {}
        for round_ in range(max_symbols_per_frame + 1):
            histories = list(pending)
            scores = torch.tensor([pending[h] for h in histories], dtype=torch.float64)
            hidden = model.joiner.hidden(enc_proj[i : i + 1], _predictor_outputs(model, histories, cache))
            token_lp, log_emit = (x.double().cpu() for x in ssnt_scores(model.joiner, model.choose_head, hidden))
            log_shift = torch.log(-torch.expm1(log_emit.clamp(max=-1e-12)))
            for k, (h, score) in enumerate(zip(histories, scores.tolist())):
                if not last_frame:
                    complete = score + float(log_shift[k])
                elif end_token:  # the end token on the last frame completes the path
                    complete = score + float(log_emit[k] + token_lp[k, blank])
                elif round_ > 0:  # emitted on the last frame: a complete path
                    complete = score
                else:
                    continue
                ended[h] = _log_add(ended.get(h, NEG_INF), complete)
            if round_ == max_symbols_per_frame:
                break
            token_lp[:, blank] = NEG_INF
            total = scores[:, None] + log_emit[:, None] + token_lp
            pending = {}
            for value, k, v in fusion.select(total, histories, beam_size, None):
                pending[histories[k] + (v,)] = _log_add(pending.get(histories[k] + (v,), NEG_INF), value)
        beams = dict(sorted((ended or pending).items(), key=lambda kv: -(kv[1] + fusion.score(kv[0])))[:beam_size])
        fusion.keep(beams)
    return fusion.ranked(beams)


class BeamSearchDecoder:
    """Beam search for the model's loss, then rescoring of n-best + greedy by the exact objective."""

    def __init__(self, beam_size: int = 4, max_symbols_per_frame: int = 3, rescore: bool = True) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.beam_size = beam_size
        self.max_symbols_per_frame = max_symbols_per_frame
        self.rescore = rescore
        self.greedy = GreedyDecoder(max_symbols_per_frame)

    def nbest(self, model, enc: torch.Tensor, lengths: torch.Tensor,
              scorer=None) -> list[list[tuple[list[int], float]]]:
        """Search-score n-best list of each utterance of encoder output `enc` (B, T, E): the objective's `beam`
        hook; ``scorer`` (word-LM fusion, :class:`~recipes.decoding.word_lm.WordLMScorer`) is passed on when
        given."""
        fusion = {"scorer": scorer} if scorer is not None else {}
        return model.objective.beam(model, enc, lengths, self.beam_size,
                                    max_symbols_per_frame=self.max_symbols_per_frame, **fusion)

    @torch.no_grad()
    def __call__(self, model, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        greedy = self.greedy(model, enc, lengths)
        hyps = []
        for b, (length, nbest) in enumerate(zip(lengths.tolist(), self.nbest(model, enc, lengths), strict=True)):
            candidates = [tokens for tokens, _ in nbest]
            if not self.rescore:
                hyps.append(candidates[0])
                continue
            candidates = list({tuple(c): c for c in candidates + [greedy[b]]}.values())
            scores = objective_log_likelihood(model, enc[b : b + 1, :length], candidates)
            hyps.append(candidates[int(torch.argmax(scores))])
        return hyps


def objective_log_likelihood(model, enc: torch.Tensor, hypotheses: list[list[int]]) -> torch.Tensor:
    """log P(y | x) under the model's training objective for each hypothesis y of one utterance."""
    count = len(hypotheses)
    max_len = max(1, max(len(h) for h in hypotheses))
    targets = torch.zeros(count, max_len, dtype=torch.long, device=enc.device)
    for k, h in enumerate(hypotheses):
        targets[k, : len(h)] = torch.tensor(h, dtype=torch.long, device=enc.device)
    target_lengths = torch.tensor([len(h) for h in hypotheses], device=enc.device)
    enc = enc.expand(count, -1, -1)
    enc_lengths = torch.full((count,), enc.shape[1], device=enc.device)
    return -model.objective(model, enc, enc_lengths, targets, target_lengths).double().cpu()
