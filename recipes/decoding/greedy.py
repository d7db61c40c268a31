"""Batched greedy search algorithms for CTC, the transducers and SSNT, and the greedy decoder.

The search functions take encoder output (B, T, E) with lengths and return one list of token ids
per utterance (blank never appears in a hypothesis). Each objective's `greedy` hook
(recipes/models/objectives.py) calls the one for its loss; :class:`GreedyDecoder` calls the hook.
"""
import inspect

import torch
from torch import nn

from recipes.models.heads import ssnt_scores


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
    """Best path per frame, repeats merged, blanks removed. log_probs (B, T, V)."""
    best = log_probs.argmax(dim=-1).cpu()
    hyps = []
    for b, length in enumerate(lengths.tolist()):
        path = best[b, :length]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        hyps.append([tok for tok in path[keep].tolist() if tok != blank_id])
    return hyps


def _label_loop(enc, lengths, predictor, joiner, max_symbols_per_frame, choose):
    """Shared frame-synchronous loop: at frame t, up to `max_symbols_per_frame` tokens are emitted.

    `choose(hidden)` maps the joiner's hidden activation (B, D) to (emit mask (B,), token (B,)).
    The predictor advances only for the utterances that emitted.
    """
    batch, frames, _ = enc.shape
    enc_proj = joiner.encoder_proj(enc)
    tokens = torch.full((batch,), predictor.blank_id, dtype=torch.long, device=enc.device)
    pred_out, state = predictor.step(tokens, None)
    pred_proj = joiner.predictor_proj(pred_out)
    hyps: list[list[int]] = [[] for _ in range(batch)]
    for t in range(frames):
        active = lengths > t
        for _ in range(max_symbols_per_frame):
            emit, tokens = choose(joiner.hidden(enc_proj[:, t], pred_proj))
            emit = emit & active
            if not bool(emit.any()):
                break
            for b in emit.nonzero().flatten().tolist():
                hyps[b].append(int(tokens[b]))
            new_out, new_state = predictor.step(tokens, state)
            mask = emit[:, None]
            pred_proj = torch.where(mask, joiner.predictor_proj(new_out), pred_proj)
            state = tuple(torch.where(mask[None], new, old) for new, old in zip(new_state, state))
            active = emit
    return hyps


def transducer_greedy(
    enc: torch.Tensor,
    lengths: torch.Tensor,
    predictor: nn.Module,
    joiner: nn.Module,
    blank_id: int = 0,
    max_symbols_per_frame: int = 3,
) -> list[list[int]]:
    """RNN-T greedy search: per frame, emit the argmax token until blank wins (or the symbol cap).

    The modified (one-symbol-per-frame) transducer is this search with `max_symbols_per_frame=1`.
    """

    def choose(hidden):
        best = joiner.output(hidden).argmax(dim=-1)
        return best != blank_id, best

    return _label_loop(enc, lengths, predictor, joiner, max_symbols_per_frame, choose)


SSNT_EMIT_RULES = ("best_move", "marginal")


def ssnt_greedy(
    enc: torch.Tensor,
    lengths: torch.Tensor,
    predictor: nn.Module,
    joiner: nn.Module,
    choose_head: nn.Module,
    blank_id: int = 0,
    max_symbols_per_frame: int = 3,
    end_token: bool = False,
    emit_rule: str = "best_move",
) -> list[list[int]]:
    """SSNT greedy search: at each step the best move of the loss's lattice.

    In state j on frame i (not the last) the moves are: shift, score log(1 − P(emit)), or emit
    token k ≠ `blank_id`, score log P(emit) + log q(k) with q the training's softmax; the search
    takes the best, emitting up to `max_symbols_per_frame` tokens per frame. An SSNT path ends by
    emitting on the last frame, where shifting is no move: without `end_token` it emits the best
    token once (ending then costs nothing, another emission costs log P(emit) + log q < 0); with
    `end_token` (id `blank_id` ends the sentence) it emits the arg-max of q over all ids until that
    is the end token. `blank_id` never appears in a hypothesis.

    `emit_rule` decides between emitting and shifting on a frame that is not the last:
    "best_move" (the default, above) emits iff log P(emit) + max_k log q(k) > log(1 − P(emit));
    "marginal" emits iff P(emit) > 1/2, the probability of emitting some token against that of
    shifting, and then emits the arg-max of q. They differ when q spreads its mass over several
    tokens; on the embedded corpus neither is better throughout (docs/recipe.md, SSNT).
    """
    if emit_rule not in SSNT_EMIT_RULES:
        raise ValueError(f"emit_rule must be one of {SSNT_EMIT_RULES}, got {emit_rule!r}")
    batch, frames, _ = enc.shape
    enc_proj = joiner.encoder_proj(enc)
    tokens = torch.full((batch,), predictor.blank_id, dtype=torch.long, device=enc.device)
    pred_out, state = predictor.step(tokens, None)
    pred_proj = joiner.predictor_proj(pred_out)
    hyps: list[list[int]] = [[] for _ in range(batch)]
    blank = torch.tensor([blank_id], device=enc.device)
    for t in range(frames):
        active = lengths > t
        last = lengths - 1 == t
        for _ in range(max_symbols_per_frame):
            log_q, log_emit = ssnt_scores(joiner, choose_head, joiner.hidden(enc_proj[:, t], pred_proj))
            no_blank = log_q.index_fill(1, blank, float("-inf"))
            log_q = torch.where(last[:, None], log_q, no_blank) if end_token else no_blank
            best_log_q, best = log_q.max(dim=-1)
            log_shift = torch.log(-torch.expm1(log_emit))
            emit_score = log_emit + best_log_q if emit_rule == "best_move" else log_emit
            emit = active & (last | (emit_score > log_shift))
            if end_token:
                emit &= best != blank_id  # the end token on the last frame: the path is complete
            if not bool(emit.any()):
                break
            for b in emit.nonzero().flatten().tolist():
                hyps[b].append(int(best[b]))
            new_out, new_state = predictor.step(best, state)
            mask = emit[:, None]
            pred_proj = torch.where(mask, joiner.predictor_proj(new_out), pred_proj)
            state = tuple(torch.where(mask[None], new, old) for new, old in zip(new_state, state))
            active = emit if end_token else emit & ~last
    return hyps


class GreedyDecoder:
    """Greedy decoding of a model with the recipe's components, for whichever loss it was trained with:
    the model's objective's `greedy` hook.

    `max_symbols_per_frame` caps RNN-T and SSNT emissions per encoder frame (the modified
    transducer always uses 1). `ssnt_emit_rule` is SSNT's rule for emitting or shifting
    (``ssnt_greedy``'s `emit_rule`: "best_move" or "marginal"), passed to any objective whose
    greedy hook has an `emit_rule` parameter (the SSNT objective's); the others never see it.
    """

    def __init__(self, max_symbols_per_frame: int = 3, ssnt_emit_rule: str = "best_move") -> None:
        if max_symbols_per_frame < 1:
            raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        if ssnt_emit_rule not in SSNT_EMIT_RULES:
            raise ValueError(f"ssnt_emit_rule must be one of {SSNT_EMIT_RULES}, got {ssnt_emit_rule!r}")
        self.max_symbols_per_frame = max_symbols_per_frame
        self.ssnt_emit_rule = ssnt_emit_rule

    @torch.no_grad()
    def __call__(self, model, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Hypotheses for encoder output `enc` of `model` (which has `objective` and the heads it uses)."""
        # options beyond the hook's base signature go to the objectives whose greedy hook takes them
        accepted = inspect.signature(model.objective.greedy).parameters
        options = {name: value for name, value in {"emit_rule": self.ssnt_emit_rule}.items() if name in accepted}
        return model.objective.greedy(model, enc, lengths, max_symbols_per_frame=self.max_symbols_per_frame,
                                      **options)
