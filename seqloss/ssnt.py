"""SSNT, segment-to-segment neural transduction (Yu et al. 2016, arXiv 1609.08194).

With l_j(i) = log_probs[j, i, y_j], q_j(i) = log_p_choose[j, i] (log prob of emitting y_j at
source frame i) and r_j(i) = log(1 - exp(q_j(i))) (log prob of shifting past frame i):

    A_0(0) = 0, A_0(i > 0) = -inf
    A_{j+1}(i) = l_j(i) + q_j(i) + LSE_{k <= i}(A_j(k) + sum_{m=k}^{i-1} r_j(m))
    loss_b = -A_{J_b}(S_b - 1)

This is the transducer lattice with t = source frame i and u = target position j: "blank" is the
shift edge (score r_j(i)), "emit" is (score q_j(i) + l_j(i)); the path must end by emitting the
last token on frame S_b - 1, expressed as a zero-score edge (S_b - 1, J_b) -> (S_b, J_b).
Stage 1 (these scores, masked) is in ``seqloss.scores``. Chain back (:func:`ssnt_gradients`):
d log P / d l_j(i) = occ_emit, d log P / d q_j(i) = occ_emit + occ_shift * dr/dq with
dr/dq = -exp(q - r), i.e. occ_emit - exp(alpha + q + beta_next - log P) on the shift edge.
"""
import torch

from . import _backend, _checks, _ops
from ._lattice.semiring import occupancy
from ._lattice.transducer import transducer_log_likelihood
from .scores import ssnt_edge_scores, ssnt_padded_scores, ssnt_token_scores

__all__ = ["ssnt_loss", "ssnt_loss_gathered", "ssnt_gradients"]


def _ssnt_nll(token, choose, source_lengths, target_lengths):
    """-log P (B,) from padded (B, J, S) token and choose log-probs, differentiable (torch reference)."""
    blank, emit, _ = ssnt_edge_scores(token, choose, source_lengths, target_lengths)
    return -transducer_log_likelihood(blank, emit, source_lengths, target_lengths, one_symbol_per_frame=False)


def ssnt_gradients(token, choose, source_lengths, target_lengths, *, backend: str):
    """log P (B,) and d log P / d token, d log P / d choose (B, J, S) through the transducer lattice of `backend`.

    token l_j(i) and choose q_j(i) are padded (B, J, S) in the compute dtype (``seqloss.scores``):
        d log P / d l_j(i) = occ_emit(i, j)
        d log P / d q_j(i) = occ_emit(i, j) - exp(alpha(i, j) + q_j(i) + beta(i+1, j) - log P)
    (the second term is the shift edge's occupancy times d r / d q, written without r).
    """
    blank, emit, shift = ssnt_edge_scores(token, choose, source_lengths, target_lengths)
    log_p, alpha, beta_shift, beta_emit = _backend.transducer_marginals(backend)(
        blank, emit, source_lengths, target_lengths, one_symbol_per_frame=False)
    total = log_p.view(-1, 1, 1)
    occ_emit = occupancy(alpha[..., :-1] + emit + beta_emit, total).transpose(1, 2)  # (B, J, S)
    # d log P / d q through r = log(1 - e^q) is -occ_shift * e^q / (1 - e^q) = -exp(alpha + q + beta_next - log P),
    # computed without r so that it stays finite as q -> 0 (r -> -inf). Since occ_shift <= 1 the exponent is
    # at most q - r, which bounds float rounding as the clamp in `occupancy` does for probabilities.
    choose_t, shift_t = choose.transpose(1, 2), shift.transpose(1, 2)
    exponent = torch.minimum(alpha[..., :-1] + choose_t + beta_shift[..., :-1] - total, choose_t - shift_t)
    d_shift = -torch.where(torch.isfinite(total) & torch.isfinite(exponent), torch.exp(exponent), 0.0)
    d_shift = d_shift.transpose(1, 2)
    real_shift = torch.arange(d_shift.shape[1], device=d_shift.device).view(1, -1, 1) < target_lengths.view(-1, 1, 1)
    d_shift = torch.where(real_shift, d_shift, 0.0)  # not the final zero-score edge, not padding
    return log_p, occ_emit, occ_emit + d_shift


def _ssnt_grads(token, choose, source_lengths, target_lengths, backend):
    """log P, d log P / d token, d log P / d choose: one fused native pass on CPU, else the generic lattice."""
    if backend == "native" and token.device.type == "cpu":
        return _ops.ssnt_lattice(token, choose, source_lengths, target_lengths)
    return ssnt_gradients(token, choose, source_lengths, target_lengths, backend=backend)


def _invalid_utterances(token, choose, source_lengths, target_lengths):
    """(B,) bool: a NaN or +inf token score, or a NaN or positive log_p_choose (p > 1), within the lengths.

    log(1 - p) is NaN for p > 1, so such an utterance's loss is NaN on both backends.
    """
    j = torch.arange(token.shape[1], device=token.device).view(1, -1, 1)
    i = torch.arange(token.shape[2], device=token.device).view(1, 1, -1)
    valid = (j < target_lengths.view(-1, 1, 1)) & (i < source_lengths.view(-1, 1, 1))
    bad = torch.isnan(token) | torch.isposinf(token) | torch.isnan(choose) | (choose > 0)
    return (valid & bad).flatten(1).any(1)


class _SSNTFunction(torch.autograd.Function):
    """-log P (B,) from padded (B, J, S) token and choose log-probs; the gradient comes from the forward pass."""

    @staticmethod
    def forward(ctx, token, choose, source_lengths, target_lengths, backend):
        log_p, grad_token, grad_choose = _ssnt_grads(token, choose, source_lengths, target_lengths, backend)
        bad = _invalid_utterances(token, choose, source_lengths, target_lengths)
        log_p, grad_token, grad_choose = (_checks.poison(bad, x) for x in (log_p, grad_token, grad_choose))
        ctx.save_for_backward(token, choose, source_lengths, target_lengths, grad_token, grad_choose)
        return -log_p

    @staticmethod
    def backward(ctx, grad_losses):
        token, choose, source_lengths, target_lengths, grad_token, grad_choose = ctx.saved_tensors
        if torch.is_grad_enabled():
            grads = _checks.recompute_grads(lambda t, c: _ssnt_nll(t, c, source_lengths, target_lengths),
                                            [token, choose], grad_losses)
            return grads[0], grads[1], None, None, None
        scale = -grad_losses.view(-1, 1, 1).to(grad_token.dtype)
        return grad_token * scale, grad_choose * scale, None, None, None


def ssnt_loss(log_probs, targets, log_p_choose, source_lengths, target_lengths, reduction="mean", *, backend=None):
    """SSNT loss -A_{J_b}(S_b - 1) (see the module docstring for the recursion).

    Args:
        log_probs: padded (B, J, S, V) or packed (sum_b J_b, S, V) token log-probabilities, where
            log_probs[j, i] is the distribution over tokens for target position j at source frame i.
        targets: padded (B, J) or packed (sum_b J_b,) int; rows ordered b then j when packed.
        log_p_choose: padded (B, J, S) or packed (sum_b J_b, S) log-probability of emitting (vs shifting).
        source_lengths (S_b), target_lengths (J_b): (B,) int.
        reduction: "mean" (batch mean, no length division) | "sum" | "none".
        backend: "native" (C++/CUDA lattice kernels) | "torch" (pure-PyTorch reference) | None
            (``SEQLOSS_BACKEND``, else native where built); both give the same numbers.

    No floor is applied: an unlikely target gives its true (large) loss and a non-zero gradient.
    An empty target gives 0 when S_b = 1 and +inf otherwise. Within the lengths, a NaN or +inf
    target-token log-prob, or a NaN or positive log_p_choose, makes that utterance's loss and
    gradient NaN on both backends; -inf is a valid score.
    """
    targets, source_lengths, target_lengths, packed = _checks.prepare_ssnt(
        log_probs, targets, log_p_choose, source_lengths, target_lengths, reduction)
    backend = _backend.resolve_backend(backend, log_probs.device)
    token, choose = ssnt_padded_scores(ssnt_token_scores(log_probs, targets), log_p_choose, target_lengths,
                                       packed=packed)
    losses = _SSNTFunction.apply(token, choose, source_lengths, target_lengths, backend)
    return _checks.reduce(losses.to(_checks.output_dtype(log_probs)), reduction)


def ssnt_loss_gathered(token_log_probs, log_p_choose, source_lengths, target_lengths, reduction="mean", *,
                       backend=None):
    """The SSNT loss from already gathered token scores: ``ssnt_loss`` without the V dimension.

    ``token_log_probs[j, i]`` is l_j(i) = log P(y_j | j, i), the log-probability of the target token
    itself (``log_probs[..., y_j]`` in :func:`ssnt_loss`), so that

        ssnt_loss_gathered(log_probs.gather(-1, y[..., None, None].expand(..., S, 1))[..., 0], log_p_choose, ...)
            == ssnt_loss(log_probs, y, log_p_choose, ...)

    with the same gradients w.r.t. the gathered scores. A model that scores only the target tokens
    (e.g. a factorised or sampled-softmax output layer, or the gather done inside a fused joiner)
    pays neither the (B, J, S, V) input nor its dense gradient; what remains is the lattice.

    Args:
        token_log_probs: padded (B, J, S) or packed (sum_b J_b, S) token log-probabilities.
        log_p_choose: the same shape: log-probability of emitting (vs shifting) at each cell.
        source_lengths (S_b), target_lengths (J_b): (B,) int.
        reduction, backend: as for :func:`ssnt_loss`.
    """
    _checks.check_reduction(reduction)
    _checks.check_scores("token_log_probs", token_log_probs, (2, 3))
    _checks.check_scores("log_p_choose", log_p_choose, (2, 3))
    if log_p_choose.shape != token_log_probs.shape:
        raise ValueError(f"log_p_choose must have the shape of token_log_probs {tuple(token_log_probs.shape)}, "
                         f"got {tuple(log_p_choose.shape)}")
    packed = token_log_probs.dim() == 2
    device = token_log_probs.device
    source_lengths = _checks.as_index_tensor("source_lengths", source_lengths, device)
    target_lengths = _checks.as_index_tensor("target_lengths", target_lengths, device)
    _checks.check_ssnt_lengths("token_log_probs", token_log_probs, token_log_probs.dim() - 1, source_lengths,
                               target_lengths, packed=packed)
    backend = _backend.resolve_backend(backend, device)
    token, choose = ssnt_padded_scores(token_log_probs, log_p_choose, target_lengths, packed=packed)
    losses = _SSNTFunction.apply(token, choose, source_lengths, target_lengths, backend)
    return _checks.reduce(losses.to(_checks.output_dtype(token_log_probs)), reduction)
