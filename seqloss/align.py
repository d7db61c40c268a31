"""Viterbi alignments and posterior occupancies for every loss (docs/design.md §3.6).

``*_align`` returns the best path given the reference: the frame-level label sequence, the frame
of every target token and the path's score, in that order (path first, score last, as
``torchaudio.functional.forced_align`` and every Viterbi function of the backends).
``*_posteriors`` returns the soft alignment: the posterior probability of every lattice edge,
which is d log P / d score (minus the gradient of the "sum"-reduced loss w.r.t. the
log-probabilities), usable as targets for label smoothing or re-weighting. Both run on the
lattices of the losses, batched, on any device; the best paths use the native Viterbi kernels
where built (``backend=`` / ``SEQLOSS_BACKEND`` as for the losses).
"""
from typing import NamedTuple

import torch

from . import _backend, _checks
from ._lattice import ctc as ctc_lattice
from ._lattice.semiring import occupancy
from ._lattice.transducer import transducer_marginals, transducer_occupancy
from .ctc import class_occupancy
from .packing import packed_positions
from .scores import (
    ctc_emissions,
    ctc_extended_labels,
    logit_rows,
    simple_ctc_edge_scores,
    ssnt_edge_scores,
    ssnt_padded_scores,
    ssnt_token_scores,
    transducer_edge_scores,
    transducer_layout,
)

__all__ = [
    "Alignment", "TransducerPosteriors", "SSNTPosteriors", "ctc_align", "ctc_posteriors", "simple_ctc_align",
    "simple_ctc_posteriors", "rnnt_align", "rnnt_posteriors", "modified_rnnt_align", "modified_rnnt_posteriors",
    "ssnt_align", "ssnt_posteriors",
]


class Alignment(NamedTuple):
    """labels (B, T): token id per frame (blank, or ``fill`` for SSNT, where none is emitted; blank
    past each length); token_frames (B, U): frame of each target token (-1 past the target length);
    scores (B,): log score of the best path (-inf if the utterance is infeasible)."""
    labels: torch.Tensor
    token_frames: torch.Tensor
    scores: torch.Tensor


class TransducerPosteriors(NamedTuple):
    """blank (B, T, U+1): posterior of the blank edge of cell (t, u); emit (B, T, U): of emitting y_{u+1} there."""
    blank: torch.Tensor
    emit: torch.Tensor


class SSNTPosteriors(NamedTuple):
    """emit (B, J, S): posterior that token j is emitted at source frame i; shift (B, J, S): that the
    model shifts past frame i while waiting to emit token j."""
    emit: torch.Tensor
    shift: torch.Tensor


def _frame_labels(token_frames, targets, num_frames, fill):
    """(B, T) label per frame: the first token emitted at that frame, else ``fill``."""
    batch, num_tokens = token_frames.shape
    labels = torch.full((batch, num_frames + 1), fill, dtype=torch.long, device=targets.device)
    frame = torch.where(token_frames >= 0, token_frames, num_frames)  # absent tokens go to a spare column
    # scatter in reverse token order so that the first token of a frame is written last and wins
    order = torch.arange(num_tokens - 1, -1, -1, device=targets.device)
    for k in order.tolist():
        labels[torch.arange(batch, device=targets.device), frame[:, k]] = targets[:, k].long()
    return labels[:, :num_frames]


# ----------------------------------------------------------------------------------------------- CTC
def ctc_align(log_probs, targets, input_lengths, target_lengths, blank=0, *, backend=None):
    """Viterbi CTC alignment: argmax over frame label sequences that collapse to the target.

    Same arguments as :func:`seqloss.ctc_loss`. For B = 1, ``labels`` equals
    ``torchaudio.functional.forced_align(log_probs.transpose(0, 1), targets, ...)[0]``.
    token_frames holds the first frame of each token's segment.
    """
    log_probs, targets, input_lengths, target_lengths, blank, _ = _checks.prepare_ctc(
        log_probs, targets, input_lengths, target_lengths, blank, "none")
    with torch.no_grad():
        ext, e = _ctc_emissions(log_probs, targets, input_lengths, blank)
        best_path = _backend.ctc_viterbi(_backend.resolve_backend(backend, log_probs.device))
        states, scores = best_path(e, ext, target_lengths, input_lengths, blank)
        labels = torch.where(states >= 0, ext.gather(1, states.clamp(min=0)), blank)
        num_frames = states.shape[1]
        is_label_state = (states >= 0) & (states % 2 == 1)
        entered = is_label_state & torch.cat([torch.ones_like(states[:, :1], dtype=torch.bool),
                                              states[:, 1:] != states[:, :-1]], dim=1)
        token = torch.where(entered, (states - 1) // 2, targets.shape[1])  # spare column for non-entries
        token_frames = torch.full((states.shape[0], targets.shape[1] + 1), -1, dtype=torch.long,
                                  device=states.device)
        frame_index = torch.arange(num_frames, device=states.device).expand_as(states)
        token_frames.scatter_(1, token, frame_index)
        token_frames = token_frames[:, :-1]
        feasible = torch.isfinite(scores).unsqueeze(1)
        token_frames = torch.where(feasible, token_frames, -1)
        labels = torch.where(feasible, labels, blank)
    return Alignment(labels, token_frames, scores)


def ctc_posteriors(log_probs, targets, input_lengths, target_lengths, blank=0):
    """(T, B, V) posterior of each class at each frame: sum over the CTC states labelled v of their
    occupancy. Rows sum to 1 on valid frames; equals -d ctc_loss(reduction="sum") / d log_probs."""
    log_probs, targets, input_lengths, target_lengths, blank, unbatched = _checks.prepare_ctc(
        log_probs, targets, input_lengths, target_lengths, blank, "none")
    with torch.no_grad():
        state = _ctc_state(log_probs, targets, input_lengths, target_lengths, blank)
        mass = class_occupancy(log_probs, targets, blank, state, simple=False)
    return mass[:, 0] if unbatched else mass


def _ctc_emissions(log_probs, targets, input_lengths, blank):
    """Blank-extended labels (B, S) and their emission scores (T, B, S) in the compute dtype."""
    ext = ctc_extended_labels(targets, blank)
    return ext, ctc_emissions(log_probs.to(_checks.compute_dtype(log_probs)), ext, input_lengths)


def _ctc_state(log_probs, targets, input_lengths, target_lengths, blank):
    ext, e = _ctc_emissions(log_probs, targets, input_lengths, blank)
    _, gamma = ctc_lattice.ctc_occupancy(e, ext, target_lengths, input_lengths, blank)
    return [gamma, ext]


def simple_ctc_align(log_probs, targets, input_lengths, target_lengths, blank=0, *, backend=None):
    """Viterbi alignment of the simplified CTC: every frame emits blank or the next label."""
    log_probs, targets, input_lengths, target_lengths, blank, _ = _checks.prepare_ctc(
        log_probs, targets, input_lengths, target_lengths, blank, "none")
    with torch.no_grad():
        blank_s, emit_s = simple_ctc_edge_scores(log_probs, targets, input_lengths, target_lengths, blank)
        best_path = _backend.transducer_viterbi(_backend.resolve_backend(backend, log_probs.device))
        token_frames, scores = best_path(blank_s, emit_s, input_lengths, target_lengths, one_symbol_per_frame=True)
    return Alignment(_frame_labels(token_frames, targets, log_probs.shape[0], blank), token_frames, scores)


def simple_ctc_posteriors(log_probs, targets, input_lengths, target_lengths, blank=0):
    """(T, B, V) class posteriors of the simplified CTC; = -d simple_ctc_loss(reduction="sum") / d log_probs."""
    log_probs, targets, input_lengths, target_lengths, blank, unbatched = _checks.prepare_ctc(
        log_probs, targets, input_lengths, target_lengths, blank, "none")
    with torch.no_grad():
        blank_s, emit_s = simple_ctc_edge_scores(log_probs, targets, input_lengths, target_lengths, blank)
        _, occ_blank, occ_emit = transducer_occupancy(blank_s, emit_s, input_lengths, target_lengths,
                                                      one_symbol_per_frame=True)
        mass = class_occupancy(log_probs, targets, blank, [occ_blank, occ_emit], simple=True)
    return mass[:, 0] if unbatched else mass


# ------------------------------------------------------------------------------------- transducers
def _transducer_scores(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, one_symbol_per_frame,
                       final_blank):
    targets, logit_lengths, target_lengths, blank = _checks.prepare_transducer(
        logits, targets, logit_lengths, target_lengths, blank, -1, "none")
    layout = transducer_layout(logits, logit_lengths, target_lengths)
    _, blank_s, emit_s, _ = transducer_edge_scores(logit_rows(logits), targets, logit_lengths, target_lengths, blank,
                                                   layout, fused_log_softmax=fused_log_softmax,
                                                   one_symbol_per_frame=one_symbol_per_frame, final_blank=final_blank)
    return blank_s, emit_s, targets, logit_lengths, target_lengths, blank


def _transducer_align(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, one_symbol_per_frame,
                      final_blank, backend):
    with torch.no_grad():
        blank_s, emit_s, targets, logit_lengths, target_lengths, blank = _transducer_scores(
            logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, one_symbol_per_frame,
            final_blank)
        best_path = _backend.transducer_viterbi(_backend.resolve_backend(backend, logits.device))
        token_frames, scores = best_path(blank_s, emit_s, logit_lengths, target_lengths,
                                         one_symbol_per_frame=one_symbol_per_frame)
        labels = _frame_labels(token_frames, targets[:, : token_frames.shape[1]], blank_s.shape[1], blank)
    return Alignment(labels, token_frames, scores)


def _transducer_posteriors(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                           one_symbol_per_frame, final_blank):
    with torch.no_grad():
        blank_s, emit_s, _, logit_lengths, target_lengths, _ = _transducer_scores(
            logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, one_symbol_per_frame,
            final_blank)
        _, occ_blank, occ_emit = transducer_occupancy(blank_s, emit_s, logit_lengths, target_lengths,
                                                      one_symbol_per_frame=one_symbol_per_frame)
    return TransducerPosteriors(occ_blank, occ_emit)


def rnnt_align(logits, targets, logit_lengths, target_lengths, blank=-1, *, fused_log_softmax=True, backend=None):
    """Viterbi RNN-T alignment. token_frames[u] is the frame whose cell emitted y_{u+1}; labels[t] is
    the first token emitted on frame t (blank if none). Arguments as :func:`seqloss.rnnt_loss`
    (dense logits give grid-sized outputs; packed logits give the same with T = max T_b)."""
    return _transducer_align(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                             one_symbol_per_frame=False, final_blank=True, backend=backend)


def rnnt_posteriors(logits, targets, logit_lengths, target_lengths, blank=-1, *, fused_log_softmax=True):
    """Edge posteriors of the RNN-T lattice: = d log P / d blank(t, u) and d log P / d emit(t, u)."""
    return _transducer_posteriors(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                                  one_symbol_per_frame=False, final_blank=True)


def modified_rnnt_align(logits, targets, logit_lengths, target_lengths, blank=-1, *, fused_log_softmax=True,
                        final_blank=True, backend=None):
    """Viterbi alignment of the modified (one-symbol-per-frame) transducer; labels[t] is the frame's token."""
    return _transducer_align(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                             one_symbol_per_frame=True, final_blank=final_blank, backend=backend)


def modified_rnnt_posteriors(logits, targets, logit_lengths, target_lengths, blank=-1, *, fused_log_softmax=True,
                             final_blank=True):
    """Edge posteriors of the modified transducer lattice (each frame's blank and emit sum to 1)."""
    return _transducer_posteriors(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                                  one_symbol_per_frame=True, final_blank=final_blank)


# --------------------------------------------------------------------------------------------- SSNT
def _ssnt_lattice(log_probs, targets, log_p_choose, source_lengths, target_lengths):
    targets, source_lengths, target_lengths, packed = _checks.prepare_ssnt(
        log_probs, targets, log_p_choose, source_lengths, target_lengths, "none")
    token, choose = ssnt_padded_scores(ssnt_token_scores(log_probs, targets), log_p_choose, target_lengths,
                                       packed=packed)
    index = packed_positions(target_lengths, targets.shape[0]) if packed else None
    blank, emit, shift = ssnt_edge_scores(token, choose, source_lengths, target_lengths)
    return blank, emit, shift, source_lengths, target_lengths, targets, index


def ssnt_align(log_probs, targets, log_p_choose, source_lengths, target_lengths, fill=-1, *, backend=None):
    """Viterbi SSNT alignment: token_frames[j] is the source frame where token j is emitted; labels[i]
    is the first token emitted at frame i, ``fill`` if none (SSNT has no blank symbol). Padded layout
    gives (B, J) token frames; packed gives them padded to max J_b."""
    with torch.no_grad():
        blank, emit, _, source_lengths, target_lengths, targets, index = _ssnt_lattice(
            log_probs, targets, log_p_choose, source_lengths, target_lengths)
        best_path = _backend.transducer_viterbi(_backend.resolve_backend(backend, log_probs.device))
        token_frames, scores = best_path(blank, emit, source_lengths, target_lengths, one_symbol_per_frame=False)
        if index is not None:
            padded = targets.new_zeros(token_frames.shape)
            targets = padded.index_put(index, targets)
        labels = _frame_labels(token_frames, targets, blank.shape[1], fill)
    return Alignment(labels, token_frames, scores)


def ssnt_posteriors(log_probs, targets, log_p_choose, source_lengths, target_lengths):
    """Posteriors of emitting token j at frame i and of shifting past frame i while waiting for j,
    as padded (B, J, S) tensors. emit = -d ssnt_loss(reduction="sum") / d log_probs[..., y_j]."""
    with torch.no_grad():
        blank, emit, _, source_lengths, target_lengths, _, _ = _ssnt_lattice(
            log_probs, targets, log_p_choose, source_lengths, target_lengths)
        log_p, alpha, beta_shift, beta_emit = transducer_marginals(blank, emit, source_lengths, target_lengths,
                                                                   one_symbol_per_frame=False)
        total = log_p.view(-1, 1, 1)
        occ_emit = occupancy(alpha[..., :-1] + emit + beta_emit, total).transpose(1, 2)
        occ_shift = occupancy(alpha + blank + beta_shift, total)[..., :-1].transpose(1, 2)
        real = torch.arange(occ_shift.shape[1], device=occ_shift.device).view(1, -1, 1) < target_lengths.view(-1, 1, 1)
    return SSNTPosteriors(occ_emit, torch.where(real, occ_shift, 0.0))
