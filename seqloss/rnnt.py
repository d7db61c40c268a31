"""RNN-T and the modified (one-symbol-per-frame) transducer: drop-ins for torchaudio's rnnt_loss.

Stage 1 (``seqloss.scores``): per lattice cell, lse = logsumexp over V (when fused_log_softmax),
the blank score x[blank] - lse and the emit score x[y_{u+1}] - lse, on the (N, V) rows of dense or
packed logits. Stage 2: the transducer lattice. Stage 3 (chain back, here):
    d loss / d x[v] = gamma(t, u) softmax(x)[v] - occ_blank(t, u) [v = blank] - occ_emit(t, u) [v = y_{u+1}]
with gamma = occ_blank + occ_emit (the cell occupancy); without fused_log_softmax, only the two
occupancy terms. Only the small (B, T, U+1) tensors are kept between forward and backward.
"""
import torch

from . import _backend, _checks, _ops
from ._lattice.transducer import transducer_log_likelihood, transducer_occupancy
from .scores import from_grid, invalid_rows, logit_rows, transducer_edge_scores, transducer_layout

__all__ = ["rnnt_loss", "modified_rnnt_loss"]


def _logits_grad(x2d, lse, occ_blank, occ_emit, row_targets, scale, blank, clamp, fused, row_valid):
    """Stage 3 as one expression (one pass under torch.compile): d loss / d logits rows (N, V).

        grad[v] = (softmax(x)[v] (occ_blank + occ_emit) if fused) - occ_blank [v = blank] - occ_emit [v = y],
    clamped to [-clamp, clamp] when clamp > 0, times the upstream gradient of the row's utterance;
    0 on the rows outside every utterance (``row_valid`` False; None: every row is valid).
    """
    dtype = lse.dtype if fused else occ_blank.dtype
    classes = torch.arange(x2d.shape[1], device=x2d.device)
    if fused:
        grad = torch.exp(x2d.to(dtype) - lse.unsqueeze(1)) * (occ_blank + occ_emit).unsqueeze(1)
    else:
        grad = torch.zeros((), dtype=dtype, device=x2d.device)
    grad = grad - torch.where(classes == blank, occ_blank.unsqueeze(1), 0.0)
    grad = grad - torch.where(classes == row_targets.unsqueeze(1), occ_emit.unsqueeze(1), 0.0)
    if clamp > 0:
        grad = grad.clamp(-clamp, clamp)
    grad = grad * scale.unsqueeze(1)
    if row_valid is not None:
        grad = torch.where(row_valid.unsqueeze(1), grad, 0.0)
    return grad.to(x2d.dtype)


def _logits_grad_eager(x2d, lse, occ_blank, occ_emit, row_targets, scale, blank, clamp, fused, row_valid):
    """:func:`_logits_grad` with in-place ops: the same numbers, one (N, V) allocation."""
    dtype = lse.dtype if fused else occ_blank.dtype
    if fused:
        grad = x2d.to(dtype, copy=True).sub_(lse.unsqueeze(1)).exp_().mul_((occ_blank + occ_emit).unsqueeze(1))
    else:
        grad = torch.zeros(x2d.shape, dtype=dtype, device=x2d.device)
    grad[:, blank] -= occ_blank
    grad.scatter_add_(1, row_targets.unsqueeze(1), -occ_emit.unsqueeze(1))
    if clamp > 0:
        grad.clamp_(-clamp, clamp)
    grad.mul_(scale.unsqueeze(1))
    if row_valid is not None:
        grad.masked_fill_(~row_valid.unsqueeze(1), 0.0)
    return grad.to(x2d.dtype)


_INPLACE_CHUNK_ELEMENTS = 1 << 22


def _logits_grad_into(x2d, lse, occ_blank, occ_emit, row_targets, scale, blank, clamp, fused, row_valid):
    """:func:`_logits_grad_eager` written over ``x2d`` itself (rows in chunks of about 4 M elements).

    Every chunk's gradient depends only on that chunk's logits, so overwriting them in place is
    safe; the extra memory is one chunk in the compute dtype instead of a whole (N, V) gradient.
    """
    rows = max(1, _INPLACE_CHUNK_ELEMENTS // max(1, x2d.shape[1]))
    for start in range(0, x2d.shape[0], rows):
        part = slice(start, start + rows)
        x2d[part] = _logits_grad_eager(x2d[part], None if lse is None else lse[part], occ_blank[part],
                                       occ_emit[part], row_targets[part], scale[part], blank, clamp, fused,
                                       None if row_valid is None else row_valid[part])
    return x2d


def _transducer_nll(logits, targets, logit_lengths, target_lengths, blank, fused, one_symbol_per_frame, final_blank):
    """-log P per utterance, differentiable (the double-backward path)."""
    layout = transducer_layout(logits, logit_lengths, target_lengths)
    x2d = logit_rows(logits)
    if fused:
        x2d = x2d.to(_checks.compute_dtype(x2d))
    _, blank_s, emit_s, _ = transducer_edge_scores(x2d, targets, logit_lengths, target_lengths, blank, layout,
                                                   fused_log_softmax=fused, one_symbol_per_frame=one_symbol_per_frame,
                                                   final_blank=final_blank)
    return -transducer_log_likelihood(blank_s, emit_s, logit_lengths, target_lengths,
                                      one_symbol_per_frame=one_symbol_per_frame)


def _fused_native(logits, backend) -> bool:
    """Whether the fused CPU op (``seqloss._ops.transducer_loss``) runs all three stages of this call."""
    return (backend == "native" and _ops.FUSED_TRANSDUCER and logits.device.type == "cpu"
            and logits.dtype in (torch.float32, torch.float64))


class _TransducerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, clamp, fused, one_symbol_per_frame,
                final_blank, backend, inplace_grad=False):
        ctx.config = (blank, clamp, fused, one_symbol_per_frame, final_blank)
        ctx.inplace_grad = inplace_grad
        ctx.fused_native = _fused_native(logits, backend)
        if ctx.fused_native:
            # one op reads the rows of valid cells only; the grids it returns are all backward needs
            if logits.dim() == 4:
                max_frames, max_labels = logits.shape[1], logits.shape[2] - 1
            else:
                max_frames, max_labels = int(logit_lengths.max()), int(target_lengths.max())
            log_p, *grids = _ops.transducer_loss(logits, targets, logit_lengths, target_lengths, blank,
                                                 fused_log_softmax=fused, one_symbol_per_frame=one_symbol_per_frame,
                                                 final_blank=final_blank, max_frames=max_frames,
                                                 max_labels=max_labels)
            ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, *grids)
            return -log_p
        layout = transducer_layout(logits, logit_lengths, target_lengths)
        lse, blank_s, emit_s, row_targets = transducer_edge_scores(
            logit_rows(logits), targets, logit_lengths, target_lengths, blank, layout, fused_log_softmax=fused,
            one_symbol_per_frame=one_symbol_per_frame, final_blank=final_blank)
        log_p, occ_blank, occ_emit = transducer_occupancy(blank_s, emit_s, logit_lengths, target_lengths,
                                                          one_symbol_per_frame=one_symbol_per_frame,
                                                          marginals=_backend.transducer_marginals(backend))
        # NaN in, NaN out on every backend: a NaN or +inf score, or logit of a valid row (through lse)
        bad = _checks.invalid_utterances(0, blank_s, emit_s)
        if fused:
            bad = bad | invalid_rows(lse, layout, logit_lengths, target_lengths)
        log_p, occ_blank, occ_emit = (_checks.poison(bad, x) for x in (log_p, occ_blank, occ_emit))
        occ_emit = torch.nn.functional.pad(occ_emit, (0, 1))
        saved = [logits, targets, logit_lengths, target_lengths, from_grid(occ_blank, layout),
                 from_grid(occ_emit, layout), row_targets, layout.batch]
        if layout.dense:  # rows of padded cells get a zero gradient
            saved.append((layout.frame < logit_lengths[layout.batch]) & (layout.label <= target_lengths[layout.batch]))
        if fused:
            saved.append(lse)
        ctx.save_for_backward(*saved)
        ctx.dense = layout.dense
        return -log_p

    @staticmethod
    def backward(ctx, grad_losses):
        logits, targets, logit_lengths, target_lengths, *rest = ctx.saved_tensors
        blank, clamp, fused, one_symbol_per_frame, final_blank = ctx.config
        none = (None,) * 10
        if torch.is_grad_enabled():
            def nll(x):
                return _transducer_nll(x, targets, logit_lengths, target_lengths, blank, fused, one_symbol_per_frame,
                                       final_blank)
            if clamp <= 0:
                return (_checks.recompute_grads(nll, [logits], grad_losses)[0],) + none
            unit = _checks.recompute_grads(nll, [logits], torch.ones_like(grad_losses))[0].clamp(-clamp, clamp)
            return (unit * grad_losses.view(-1, *([1] * (logits.dim() - 1))).to(unit.dtype),) + none
        if ctx.fused_native:
            # in place: the logits are not needed after this, their storage becomes the gradient
            grad = _ops.transducer_loss_grad(logits.detach(), targets, logit_lengths, target_lengths, *rest,
                                             grad_losses.to(logits.dtype).contiguous(), blank, clamp,
                                             fused_log_softmax=fused, inplace=ctx.inplace_grad)
            if ctx.inplace_grad:
                # a second backward through a retained graph then fails autograd's saved-tensor version check
                torch.autograd.graph.increment_version(logits)
            return (grad,) + none
        occ_blank, occ_emit, row_targets, row_batch, *rest = rest
        row_valid = rest.pop(0) if ctx.dense else None
        x2d = logit_rows(logits)
        if fused:
            lse = rest[0]
            lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        else:
            lse = None
        scale = grad_losses.to(_checks.compute_dtype(x2d))[row_batch]
        if ctx.inplace_grad:
            # the logits are not needed after this: their storage becomes the gradient
            # (a second backward through a retained graph then fails autograd's saved-tensor version check)
            grad = _logits_grad_into(x2d.detach(), lse, occ_blank, occ_emit, row_targets, scale, blank, clamp, fused,
                                     row_valid)
            return (grad.view(logits.shape),) + none
        grad = _backend.v_wide(_logits_grad, x2d, lse, occ_blank, occ_emit, row_targets, scale, blank, clamp, fused,
                               row_valid, eager=_logits_grad_eager)
        return (grad.view(logits.shape),) + none


def _check_inplace(logits, inplace_grad):
    if not isinstance(inplace_grad, bool):
        raise TypeError(f"inplace_grad must be a bool, got {type(inplace_grad).__name__}")
    if inplace_grad and logits.requires_grad and logits.is_leaf:
        raise ValueError("inplace_grad=True needs logits computed by an operation (e.g. the joiner's output layer), "
                         "not a leaf tensor: its .grad would share (and the backward pass overwrite) its storage")
    if inplace_grad and not logits.is_contiguous():
        raise ValueError("inplace_grad=True needs contiguous logits (the gradient is written over their storage)")


def _transducer_loss(logits, targets, logit_lengths, target_lengths, blank, clamp, reduction, fused_log_softmax, *,
                     one_symbol_per_frame, final_blank, backend, inplace_grad):
    targets, logit_lengths, target_lengths, blank = _checks.prepare_transducer(
        logits, targets, logit_lengths, target_lengths, blank, clamp, reduction)
    _check_inplace(logits, inplace_grad)
    backend = _backend.resolve_backend(backend, logits.device)
    losses = _TransducerFunction.apply(logits, targets, logit_lengths, target_lengths, blank, float(clamp),
                                       bool(fused_log_softmax), one_symbol_per_frame, bool(final_blank), backend,
                                       inplace_grad)
    return _checks.reduce(losses.to(_checks.output_dtype(logits)), reduction)


def rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=-1, clamp=-1, reduction="mean",
              fused_log_softmax=True, *, backend=None, inplace_grad=False):
    """RNN-T loss (Graves 2012), a drop-in for ``torchaudio.functional.rnnt_loss``.

        alpha(0, 0) = 0
        alpha(t, u) = LSE(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + emit(t, u-1))
        loss_b      = -(alpha(T_b-1, U_b) + blank(T_b-1, U_b))

    with blank(t, u) = log P(blank | t, u) and emit(t, u) = log P(y_{u+1} | t, u), the log-softmax of
    the logits (or the logits themselves when fused_log_softmax=False).

    Args:
        logits: (B, T, U+1, V) dense, or packed (sum_b T_b (U_b+1), V) with rows ordered b, t, u.
        targets: (B, U) int; ids past target_lengths are ignored; blank is not allowed as a target.
        logit_lengths, target_lengths: (B,) int.
        blank: blank id; negative counts from the end (default: the last class).
        clamp: if > 0, each gradient element w.r.t. the logits is clamped to [-clamp, clamp]
            (per utterance, before scaling by the upstream gradient), on every device.
        reduction: "mean" (batch mean) | "sum" | "none".
        fused_log_softmax: True takes logits; False takes log-probabilities (or any scores).
            Positional (8th) as in torchaudio's argument list; the flags below are keyword-only.
        backend: "native" (C++/CUDA lattice kernels) | "torch" (pure-PyTorch reference) | None
            (``SEQLOSS_BACKEND``, else native where built); both give the same numbers.
            A NaN or +inf logit in a valid row (t < T_b, u <= U_b; with fused_log_softmax=False,
            a NaN or +inf blank or target score there) makes that utterance's loss and the
            gradient of its valid rows NaN on both backends; -inf is a valid score. Rows outside
            every utterance (padded cells of dense logits) get a zero gradient whatever they hold
            (the native CPU op does not even read them).
        inplace_grad: opt-in; the backward pass writes the gradient over the logits' own storage
            (as optimized_transducer does) instead of allocating a second (B, T, U+1, V) tensor.
            The logits must be the output of an operation whose backward does not need them (the
            joiner's linear layer), contiguous, and not used after backward. Same numbers.
    """
    return _transducer_loss(logits, targets, logit_lengths, target_lengths, blank, clamp, reduction,
                            fused_log_softmax, one_symbol_per_frame=False, final_blank=True, backend=backend,
                            inplace_grad=inplace_grad)


def modified_rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=-1, clamp=-1, reduction="mean",
                       fused_log_softmax=True, *, final_blank=True, backend=None, inplace_grad=False):
    """Modified (one-symbol-per-frame) transducer loss: every frame emits blank or one symbol.

        alpha(0, 0) = 0
        alpha(t, u) = LSE(alpha(t-1, u) + blank(t-1, u), alpha(t-1, u-1) + emit(t-1, u-1))
        final_blank=True  (optimized_transducer's one_sym_per_frame): loss_b = -(alpha(T_b-1, U_b) + blank(T_b-1, U_b)),
                           feasible when U_b <= T_b - 1;
        final_blank=False (k2's rnnt_type="modified"):             loss_b = -alpha(T_b, U_b), feasible when U_b <= T_b.

    Infeasible utterances give +inf (and zero gradient). Other arguments (``fused_log_softmax``
    positional, as in torchaudio's argument list; ``final_blank`` keyword-only), and the NaN rule,
    as :func:`rnnt_loss`.
    """
    return _transducer_loss(logits, targets, logit_lengths, target_lengths, blank, clamp, reduction,
                            fused_log_softmax, one_symbol_per_frame=True, final_blank=final_blank, backend=backend,
                            inplace_grad=inplace_grad)
