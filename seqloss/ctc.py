"""CTC and simplified CTC: drop-in replacements for ``torch.nn.functional.ctc_loss``.

Stage 1 (``seqloss.scores``) gathers the scores each path needs from log_probs (T, B, V); stage 2
runs the lattice (``_lattice.ctc`` or, for simplified CTC, the one-symbol-per-frame transducer
lattice); stage 3 (:func:`class_occupancy`) scatters the occupancies back to (T, B, V). log_probs
are treated as free scores: the gradient is d(-log P)/d log_probs = -occupancy, which is right
whether or not the input is normalised. Simplified CTC (tf_seq2seq_losses: every frame emits blank
or the next label, no merging) is the one-symbol-per-frame transducer lattice with scores that do
not depend on u.
"""
import torch

from . import _backend, _checks, _ops
from ._lattice import ctc as ctc_lattice
from ._lattice.transducer import transducer_log_likelihood, transducer_occupancy
from .scores import ctc_emissions, ctc_extended_labels, simple_ctc_edge_scores

__all__ = ["ctc_loss", "simple_ctc_loss", "class_occupancy"]


def _scatter_to_classes(mass: torch.Tensor, index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """out[..., v] = sum_k mass[..., k] * [index[..., k] == v]; deterministic on every device."""
    if mass.device.type == "cpu":
        out = mass.new_zeros(*mass.shape[:-1], num_classes)
        return out.scatter_add_(-1, index.expand_as(mass), mass)
    one_hot = torch.nn.functional.one_hot(index, num_classes).to(mass.dtype)  # (..., K, V)
    return torch.matmul(mass.unsqueeze(-2), one_hot.expand(*mass.shape, num_classes)).squeeze(-2)


def _ctc_nll(log_probs, targets, input_lengths, target_lengths, blank, simple, zero_infinity):
    """-log P per utterance through differentiable ops (the double-backward path)."""
    if simple:
        blank_s, emit_s = simple_ctc_edge_scores(log_probs, targets, input_lengths, target_lengths, blank)
        log_p = transducer_log_likelihood(blank_s, emit_s, input_lengths, target_lengths, one_symbol_per_frame=True)
    else:
        ext = ctc_extended_labels(targets, blank)
        e = ctc_emissions(log_probs.to(_checks.compute_dtype(log_probs)), ext, input_lengths)
        log_p = ctc_lattice.ctc_alpha(e, ext, target_lengths, input_lengths, blank)[1]
    return torch.where(torch.isinf(log_p), 0.0, -log_p) if zero_infinity else -log_p


def class_occupancy(log_probs, targets, blank, state, *, simple, scale=None):
    """Stage 3 of the CTC losses: sum_b scale[b] d log P_b / d log_probs (T, B, V), the occupancy of each class.

    ``state`` holds the lattice posteriors: [gamma (T, B, S), extended labels (B, S)] for CTC
    (out[t, b, v] = sum_{s: l'_s = v} gamma_t(s)), [occ_blank (B, T, L+1), occ_emit (B, T, L)] for the
    simplified CTC (``simple=True``; out[t, b, blank] = sum_l occ_blank, out[t, b, y_{l+1}] += occ_emit).
    The (B,)-sized scale (default: all ones) is applied to the small posteriors before they are
    scattered over V.
    """
    if not simple:
        gamma, ext = state
        if scale is not None:
            gamma = gamma * scale.view(1, -1, 1)
        return _scatter_to_classes(gamma, ext.unsqueeze(0), log_probs.shape[2])
    occ_blank, occ_emit = state
    if scale is not None:
        occ_emit, occ_blank = occ_emit * scale.view(-1, 1, 1), occ_blank * scale.view(-1, 1, 1)
    mass = _scatter_to_classes(occ_emit, targets.unsqueeze(1).expand(-1, occ_emit.shape[1], -1), log_probs.shape[2])
    mass[:, :, blank] += occ_blank.sum(2)
    return mass.transpose(0, 1)


def _on_frames(bad, input_lengths, frame_dim: int, num_frames: int):
    """bad (B,) restricted to each utterance's frames: (T, B, 1) (frame_dim 0) or (B, T, 1) (frame_dim 1)."""
    frame = torch.arange(num_frames, device=bad.device)
    if frame_dim == 0:
        return (bad & (frame.unsqueeze(1) < input_lengths)).unsqueeze(2)
    return (bad.unsqueeze(1) & (frame < input_lengths.unsqueeze(1))).unsqueeze(2)


class _CTCFunction(torch.autograd.Function):
    """CTC (simple=False) or simplified CTC (simple=True): per-utterance -log P, gradient from posteriors."""

    @staticmethod
    def forward(ctx, log_probs, targets, input_lengths, target_lengths, blank, zero_infinity, simple, backend):
        ctx.config = (blank, zero_infinity, simple)
        ctx.fused_native = (not simple and backend == "native" and _ops.FUSED_CTC and log_probs.device.type == "cpu"
                            and log_probs.dtype in (torch.float32, torch.float64))
        if ctx.fused_native:
            # one op gathers each utterance's emissions, runs its lattice and flags NaN / +inf scores
            log_p, gamma = _ops.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank)
            ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, gamma)
            return torch.where(torch.isinf(log_p), 0.0, -log_p) if zero_infinity else -log_p
        # NaN in, NaN out, whatever the backend's recursion makes of it: log P, and the posteriors on the
        # utterance's frames (the gradient of padded frames stays 0)
        if simple:
            blank_s, emit_s = simple_ctc_edge_scores(log_probs, targets, input_lengths, target_lengths, blank)
            log_p, *state = transducer_occupancy(blank_s, emit_s, input_lengths, target_lengths,
                                                 one_symbol_per_frame=True,
                                                 marginals=_backend.transducer_marginals(backend))
            bad = _checks.invalid_utterances(0, blank_s, emit_s)
            on_frames = _on_frames(bad, input_lengths, 1, blank_s.shape[1])
            state = [torch.where(on_frames, float("nan"), occupancy) for occupancy in state]
        else:
            ext = ctc_extended_labels(targets, blank)
            e = ctc_emissions(log_probs.to(_checks.compute_dtype(log_probs)), ext, input_lengths)
            log_p, gamma = _backend.ctc_occupancy(backend)(e, ext, target_lengths, input_lengths, blank)
            bad = _checks.invalid_utterances(1, e)
            state = [torch.where(_on_frames(bad, input_lengths, 0, e.shape[0]), float("nan"), gamma), ext]
        log_p = _checks.poison(bad, log_p)
        ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, *state)
        return torch.where(torch.isinf(log_p), 0.0, -log_p) if zero_infinity else -log_p

    @staticmethod
    def backward(ctx, grad_losses):
        log_probs, targets, input_lengths, target_lengths, *state = ctx.saved_tensors
        blank, zero_infinity, simple = ctx.config
        none = (None,) * 7
        if torch.is_grad_enabled():
            grads = _checks.recompute_grads(
                lambda x: _ctc_nll(x, targets, input_lengths, target_lengths, blank, simple, zero_infinity),
                [log_probs], grad_losses)
            return (grads[0],) + none
        scale = -grad_losses.to(state[0].dtype)
        if ctx.fused_native:
            return (_ops.ctc_loss_grad(log_probs, targets, input_lengths, target_lengths, state[0],
                                       scale.contiguous(), blank),) + none
        grad = class_occupancy(log_probs, targets, blank, state, simple=simple, scale=scale)
        return (grad.to(log_probs.dtype),) + none


def _ctc_family(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, *, simple,
                backend):
    log_probs, targets, input_lengths, target_lengths, blank, unbatched = _checks.prepare_ctc(
        log_probs, targets, input_lengths, target_lengths, blank, reduction)
    backend = _backend.resolve_backend(backend, log_probs.device)
    losses = _CTCFunction.apply(log_probs, targets, input_lengths, target_lengths, blank, bool(zero_infinity),
                                simple, backend)
    losses = losses.to(_checks.output_dtype(log_probs))
    if unbatched and reduction == "none":
        return losses[0]
    return _checks.reduce(losses, reduction, target_lengths)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False, *,
             backend=None):
    """Connectionist temporal classification loss, -log P(targets | log_probs).

    log P = log sum over frame label sequences pi in {0..C-1}^{T_b} that collapse (merge repeats,
    drop blanks) to the target, of sum_t log_probs[t, b, pi_t]; computed by the alpha recursion of
    ``seqloss._lattice.ctc``.

    Args:
        log_probs: (T, B, C) or unbatched (T, C) scores, usually log_softmax outputs; any float dtype.
        targets: (B, S) padded or 1-D concatenated int targets (values past target_lengths ignored).
        input_lengths, target_lengths: (B,) int tensors or sequences.
        blank: blank class id. reduction: "none" | "mean" (each loss / its target length, clamped
            to >= 1, then batch mean) | "sum". zero_infinity: infeasible utterances give 0 and no gradient.
        backend: "native" (C++/CUDA lattice kernels) | "torch" (pure-PyTorch reference) | None
            (``SEQLOSS_BACKEND``, else native where built); both give the same numbers.

    A drop-in for ``torch.nn.functional.ctc_loss``: the same argument list, so ``zero_infinity``
    stays positional (7th) as it is there, while ``backend`` is keyword-only.

    Unlike torch's, the gradient treats log_probs as free scores (right for unnormalised input),
    double backward works, and results are deterministic on every device. Targets must not
    contain the blank id (within target_lengths). No frames (T = 0 or input_lengths[b] = 0) give
    loss 0 for an empty target and +inf otherwise. A NaN or +inf among the scores the loss reads
    (the blank's and the target's log_probs on each utterance's frames) makes that utterance's
    loss and the gradient of its frames NaN, on both backends; -inf is a valid score. Frames past
    input_lengths get a zero gradient whatever they hold (the native CPU op does not read them).
    """
    return _ctc_family(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                       simple=False, backend=backend)


def simple_ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                    zero_infinity=False, *, backend=None):
    """Simplified CTC loss (tf_seq2seq_losses): every frame emits blank or the next label.

        alpha_0 = (0, -inf, ...);  alpha_{t+1}(l) = LSE(alpha_t(l) + lp_t(blank), alpha_t(l-1) + lp_t(y_l))
        loss = -alpha_{T_b}(L_b)

    Repeats are not merged, so no blank is needed between equal labels; L > T is infeasible (+inf,
    or 0 with zero_infinity). Same arguments (``zero_infinity`` positional, as in the argument list
    of ``torch.nn.functional.ctc_loss``), shapes, reductions, target rule and NaN rule as
    :func:`ctc_loss`.
    """
    return _ctc_family(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                       simple=True, backend=backend)
