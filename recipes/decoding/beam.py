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


def ctc_prefix_beam_search(log_probs: torch.Tensor, beam_size: int, blank_id: int = 0) -> list[tuple[list[int], float]]:
    """n-best (tokens, log P) for one utterance's log_probs (T, V) by CTC prefix beam search."""
    beams = {(): (0.0, NEG_INF)}  # prefix -> (log P ending in blank, log P ending in a token)
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
                if prefix and prefix[-1] == v:
                    _accumulate(new, extended, NEG_INF, p_b + row[v])   # a repeat needs a blank in between
                    _accumulate(new, prefix, NEG_INF, p_t + row[v])     # or it merges into the last token
                else:
                    _accumulate(new, extended, NEG_INF, total + row[v])
        beams = dict(sorted(new.items(), key=lambda kv: -_log_add(*kv[1]))[:beam_size])
    return [(list(prefix), _log_add(*scores)) for prefix, scores in beams.items()]


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


def transducer_beam_search(model, enc: torch.Tensor, beam_size: int,
                           blank_id: int | None = None) -> list[tuple[list[int], float]]:
    """Modified beam search for one utterance's encoder output (T, E); at most one symbol per frame.

    `model` has `predictor` and `joiner`; `blank_id` (default: the model objective's) is the blank.
    """
    blank = model.objective.blank_id if blank_id is None else blank_id
    enc_proj = model.joiner.encoder_proj(enc)
    cache = _start_cache(model, enc.device)
    beams = {(): 0.0}
    for t in range(enc.shape[0]):
        histories = list(beams)
        scores = torch.tensor([beams[h] for h in histories], dtype=torch.float64)
        pred_proj = _predictor_outputs(model, histories, cache)
        logits = model.joiner.output(model.joiner.hidden(enc_proj[t : t + 1], pred_proj))
        total = scores[:, None] + logits.log_softmax(-1).double().cpu()
        flat = torch.topk(total.flatten(), min(beam_size, total.numel()))
        new: dict[tuple, float] = {}
        for value, index in zip(flat.values.tolist(), flat.indices.tolist()):
            k, v = divmod(index, total.shape[1])
            history = histories[k] if v == blank else histories[k] + (v,)
            new[history] = _log_add(new.get(history, NEG_INF), value)
        beams = new
    return sorted(((list(h), s) for h, s in beams.items()), key=lambda x: -x[1])


def ssnt_beam_search(model, enc: torch.Tensor, beam_size: int, max_symbols_per_frame: int = 3,
                     blank_id: int | None = None, end_token: bool | None = None) -> list[tuple[list[int], float]]:
    """SSNT beam search for one utterance's encoder output (S, E).

    On frame i a hypothesis emits up to ``max_symbols_per_frame`` tokens, then shifts; on the last
    frame it must end with an emission (the SSNT path ends by emitting on frame S-1, no shift):
    any emission, or with ``end_token`` the end token (id ``blank_id``), which then ends the path.
    Hypotheses never contain ``blank_id``. `model` has `predictor`, `joiner` and `choose_head`;
    `blank_id` and `end_token` default to the model objective's.
    """
    blank = model.objective.blank_id if blank_id is None else blank_id
    end_token = getattr(model.objective, "end_token", False) if end_token is None else end_token
    enc_proj = model.joiner.encoder_proj(enc)
    cache = _start_cache(model, enc.device)
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
            flat = torch.topk(total.flatten(), min(beam_size, total.numel()))
            pending = {}
            for value, index in zip(flat.values.tolist(), flat.indices.tolist()):
                k, v = divmod(index, total.shape[1])
                pending[histories[k] + (v,)] = _log_add(pending.get(histories[k] + (v,), NEG_INF), value)
        beams = dict(sorted((ended or pending).items(), key=lambda kv: -kv[1])[:beam_size])
    return sorted(((list(h), s) for h, s in beams.items()), key=lambda x: -x[1])


class BeamSearchDecoder:
    """Beam search for the model's loss, then rescoring of n-best + greedy by the exact objective."""

    def __init__(self, beam_size: int = 4, max_symbols_per_frame: int = 3, rescore: bool = True) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.beam_size = beam_size
        self.max_symbols_per_frame = max_symbols_per_frame
        self.rescore = rescore
        self.greedy = GreedyDecoder(max_symbols_per_frame)

    def nbest(self, model, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[tuple[list[int], float]]]:
        """Search-score n-best list of each utterance of encoder output `enc` (B, T, E): the objective's `beam`
        hook."""
        return model.objective.beam(model, enc, lengths, self.beam_size,
                                    max_symbols_per_frame=self.max_symbols_per_frame)

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
