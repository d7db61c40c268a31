"""The transducer joiner, a packed joiner, and a fused joiner + loss that never builds (B, T, U+1, V).

``Joiner``: logits(t, u) = W_out act(W_e enc_t + b_e + W_p pred_u + b_p) + b_out, the usual additive
transducer joiner.

``fused_transducer_loss`` returns exactly the loss of the dense path
(``rnnt_loss(joiner(enc, pred), ...)``, likewise ``modified_rnnt_loss`` and ``ssnt_loss``) while
holding only a chunk of frames of the joiner output at a time:

* forward, chunk by chunk over the valid frames (b, t) (t < T_b; padded frames are never
  computed), each frame with all U+1 predictor columns: logits -> the lattice scores
  (log-softmax of the blank and target entries; for SSNT the target's log-prob and the choose
  head's log-sigmoid). Only these (B, T, U+1)-sized tensors are kept.
* the loss itself is the package's loss on a 2-channel tensor of those scores
  (channel 0 = blank, channel 1 = emit, fused_log_softmax=False), so it is the same lattice, with
  the same checks, as the dense path; its gradient gives the edge occupancies.
* backward, chunk by chunk: recompute the logits, form d loss / d logits from the occupancies
  (gamma * softmax - occ_blank [v = blank] - occ_emit [v = y]), and backpropagate it through the
  joiner to the encoder/predictor projections and every parameter.

Where the output layer is a plain ``nn.Linear`` (the :class:`Joiner`'s), both loops write every
chunk's logits into one buffer allocated per call, turn them into the log-sum-exp / softmax in
place, and apply the layer's backward by hand (dW += g^T h, db += sum_rows g, dh = g W): no V-wide
tensor is allocated per chunk. Any other output module goes through autograd, chunk by chunk.
"""

import torch
from torch import nn

from . import _checks
from .packing import packed_cells
from .rnnt import modified_rnnt_loss, rnnt_loss
from .ssnt import ssnt_loss_gathered

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Joiner(nn.Module):
    """logits = output(act(encoder_proj(enc)[:, :, None] + predictor_proj(pred)[:, None]))."""

    def __init__(self, encoder_dim: int, predictor_dim: int, joiner_dim: int, vocab_size: int,
                 activation: str = "tanh"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joiner_dim)
        self.activation = ACTIVATIONS[activation]()
        self.output = nn.Linear(joiner_dim, vocab_size)

    def hidden(self, enc_proj: torch.Tensor, pred_proj: torch.Tensor) -> torch.Tensor:
        """act(enc_proj + pred_proj) for projections already shaped to broadcast (e.g. (B, T, 1, H)
        and (B, 1, U+1, H) give the (B, T, U+1, H) hidden states)."""
        return self.activation(enc_proj + pred_proj)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Dense logits (B, T, U+1, V) from encoder (B, T, H_e) and predictor (B, U+1, H_p) outputs."""
        return self.output(self.hidden(self.encoder_proj(enc).unsqueeze(2), self.predictor_proj(pred).unsqueeze(1)))

    def packed(self, enc: torch.Tensor, pred: torch.Tensor, logit_lengths, target_lengths) -> torch.Tensor:
        """Packed logits (sum_b T_b (U_b+1), V), rows ordered b, t, u over the valid cells only
        (the optimized_transducer layout, accepted by ``rnnt_loss`` and ``modified_rnnt_loss``;
        ``seqloss.packing.packed_cells`` gives each row's (b, t, u))."""
        b, t, u = packed_cells(logit_lengths, target_lengths, enc.device)
        enc_proj, pred_proj = self.encoder_proj(enc), self.predictor_proj(pred)
        return self.output(self.hidden(enc_proj[b, t], pred_proj[b, u]))


def _chunk_rows(columns, vocab, hidden, element_size, by_hand, memory_budget_mb, chunk_size):
    """Frames (b, t) per chunk. One frame's working set is about columns * (vocab + 6 hidden) elements
    where the output layer is applied by hand (`by_hand`: the reused logits buffer; the gathered
    predictor rows, the pre-activation and activation, their gradients), columns * (3 vocab + 4 hidden)
    otherwise (logits, softmax/gradient and autograd's buffers, allocated per chunk)."""
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        return chunk_size
    per_frame = columns * ((vocab + 6 * hidden) if by_hand else (3 * vocab + 4 * hidden)) * element_size
    return max(1, int(memory_budget_mb * 2**20 // max(per_frame, 1)))


def _valid_frames(logit_lengths, frames):
    """(b, t) of every frame inside its utterance (t < T_b), b-major: the only frames the joiner runs on."""
    inside = torch.arange(frames, device=logit_lengths.device)[None, :] < logit_lengths[:, None]
    return inside.nonzero(as_tuple=True)


def _chunks(spec):
    """(b, t) index tensors of each chunk of valid frames."""
    frame_b, frame_t = spec["frames"]
    for r0 in range(0, frame_b.numel(), spec["chunk"]):
        yield frame_b[r0 : r0 + spec["chunk"]], frame_t[r0 : r0 + spec["chunk"]]


def _linear_output(joiner, enc_proj, pred_proj):
    """(weight (V, H), bias (V,) or None) of the joiner's output layer where the chunk loops may apply it
    themselves: a plain ``nn.Linear`` whose weight has the dtype of both projections and of the loss's
    compute dtype, with autocast off on their device. Else None: the loops then call ``joiner.output``
    (under autocast, in whatever dtype autocast picks) and let autograd differentiate it."""
    output = joiner.output
    dtype = _checks.compute_dtype(enc_proj)
    if (type(output) is not nn.Linear or torch.is_autocast_enabled(enc_proj.device.type)
            or not output.weight.dtype == enc_proj.dtype == pred_proj.dtype == dtype):
        return None
    return output.weight, output.bias


def _output_logits(spec, linear, hidden, buffer, dtype):
    """The chunk's logits (rows, V), rows = hidden's (N, C) flattened: into `buffer` (reused from chunk to
    chunk, so that no V-wide tensor is allocated, nor its fresh pages faulted in, per chunk) where the
    output layer is a plain Linear, else from ``joiner.output``."""
    rows = hidden.shape[0] * hidden.shape[1]
    if linear is None:
        return spec["joiner"].output(hidden).to(dtype).reshape(rows, -1)
    weight, bias = linear
    out = buffer[:rows]
    h2d = hidden.reshape(rows, -1)
    if bias is None:
        return torch.mm(h2d, weight.t(), out=out)
    return torch.addmm(bias, h2d, weight.t(), out=out)


def _chunk_buffer(spec, columns, vocab, dtype, device):
    """One (frames per chunk * columns, V) buffer for the logits of every chunk."""
    return torch.empty(min(spec["chunk"], max(spec["frames"][0].numel(), 1)) * columns, vocab, dtype=dtype,
                       device=device)


def _chunked_scores(spec, enc_proj, pred_proj):
    """Lattice scores (B, T, C) chunk by chunk: blank (or SSNT choose) and emit log-probs, and the lse.
    Frames past an utterance's length are never computed (they stay 0; no loss reads them)."""
    joiner, choose_head = spec["joiner"], spec["choose_head"]
    ssnt, blank = spec["loss"] == "ssnt", spec["blank"]
    batch, frames = enc_proj.shape[:2]
    columns = pred_proj.shape[1]
    dtype = _checks.compute_dtype(enc_proj)
    blank_scores = enc_proj.new_zeros(batch, frames, columns, dtype=dtype)
    emit_scores = enc_proj.new_zeros(batch, frames, columns, dtype=dtype)
    lse = enc_proj.new_zeros(batch, frames, columns, dtype=dtype)
    column_targets = _column_targets(spec["targets"], columns, ssnt)
    with torch.no_grad():
        linear = _linear_output(joiner, enc_proj, pred_proj)
        buffer = _chunk_buffer(spec, columns, joiner.output.out_features, dtype, enc_proj.device) if linear else None
        for b, t in _chunks(spec):
            hidden = joiner.hidden(enc_proj[b, t].unsqueeze(1), pred_proj[b])  # (N, C, H)
            logits = _output_logits(spec, linear, hidden, buffer, dtype)  # (N C, V)
            emit = logits.gather(-1, column_targets[b].reshape(-1, 1))[:, 0]
            if ssnt:
                blank_scores[b, t] = choose_head(hidden).to(dtype)
            else:
                blank_logit = logits[:, blank].clone()
            # log-sum-exp in place: the logits are not needed after it
            peak = logits.amax(dim=-1)
            peak = torch.where(torch.isfinite(peak), peak, 0.0)  # rows of +-inf: as torch.logsumexp
            chunk_lse = logits.sub_(peak[:, None]).exp_().sum(dim=-1).log_().add_(peak).view(b.numel(), columns)
            lse[b, t] = chunk_lse
            emit_scores[b, t] = emit.view_as(chunk_lse) - chunk_lse
            if not ssnt:
                blank_scores[b, t] = blank_logit.view_as(chunk_lse) - chunk_lse
    return blank_scores, emit_scores, lse


class _FusedJoinerLoss(torch.autograd.Function):
    """Per-utterance loss of (joiner -> loss), recomputing the joiner chunk by chunk in backward."""

    @staticmethod
    def forward(ctx, spec, enc_proj, pred_proj, *params):
        blank_scores, emit_scores, lse = _chunked_scores(spec, enc_proj, pred_proj)
        with torch.enable_grad():
            blank_leaf = blank_scores.requires_grad_()
            emit_leaf = emit_scores.requires_grad_()
            losses = _small_loss(spec, blank_leaf, emit_leaf)
            finite = torch.isfinite(losses)
            d_blank, d_emit = torch.autograd.grad(losses[finite].sum(), (blank_leaf, emit_leaf), allow_unused=True)
        d_blank = torch.zeros_like(blank_scores) if d_blank is None else d_blank
        d_emit = torch.zeros_like(emit_scores) if d_emit is None else d_emit
        ctx.spec = spec
        device_type = enc_proj.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.save_for_backward(enc_proj, pred_proj, lse, d_blank, d_emit, *params)
        return losses.detach()

    @staticmethod
    def backward(ctx, grad_losses):
        """The chunks are recomputed under the autocast state the forward pass ran in (backward usually
        runs outside the autocast region), so that they are the forward's chunks, in its dtypes."""
        device_type, enabled, dtype = ctx.autocast
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            return _FusedJoinerLoss._backward(ctx, grad_losses)

    @staticmethod
    def _backward(ctx, grad_losses):
        """Per chunk: d loss / d logits = scale (softmax * -(d_blank + d_emit) + d_blank [v = blank]
        + d_emit [v = y]) (clamped before scaling; SSNT: no blank term, d_blank goes to the choose head),
        then back through the output layer (by hand for a Linear: dW += g^T h, db += sum g, dh = g W)
        and, with autograd, through ``joiner.hidden`` (and the choose head) to the projections."""
        spec = ctx.spec
        enc_proj, pred_proj, lse, d_blank, d_emit, *params = ctx.saved_tensors
        joiner, choose_head = spec["joiner"], spec["choose_head"]
        ssnt, blank, clamp = spec["loss"] == "ssnt", spec["blank"], spec["clamp"]
        columns = pred_proj.shape[1]
        dtype = lse.dtype
        column_targets = _column_targets(spec["targets"], columns, ssnt)
        linear = _linear_output(joiner, enc_proj, pred_proj)
        if linear is not None:  # positions in params of the output layer's weight and bias (or None)
            weight, bias = linear
            weight_at = _index_of(params, weight)
            bias_at = None if bias is None else _index_of(params, bias)
        by_hand = () if linear is None else (weight_at, bias_at)
        others = [i for i in range(len(params)) if i not in by_hand]  # differentiated by autograd
        clamped = clamp > 0 and not ssnt  # unclamped, the upstream gradient is folded into the coefficients
        grad_enc = torch.zeros_like(enc_proj)
        grad_pred = torch.zeros_like(pred_proj)
        grad_params = [torch.zeros_like(p) for p in params]
        buffer = _chunk_buffer(spec, columns, joiner.output.out_features, dtype, lse.device) if linear else None
        grad_scale = grad_losses.to(dtype)
        for b, t in _chunks(spec):
            rows = b.numel() * columns
            scale = grad_scale[b].repeat_interleave(columns)[:, None]  # (rows, 1)
            with torch.enable_grad():
                e = enc_proj[b, t].detach().unsqueeze(1).requires_grad_()  # (N, 1, H)
                p = pred_proj[b].detach().requires_grad_()  # (N, C, H)
                hidden = joiner.hidden(e, p)
                outputs = [hidden if linear else joiner.output(hidden)]  # what autograd goes back from
                if ssnt:
                    log_p_choose = choose_head(hidden)
                    outputs.append(log_p_choose)
                    grad_choose = (d_blank[b, t] * grad_scale[b].view(-1, 1)).to(log_p_choose.dtype)
            with torch.no_grad():
                if linear:
                    g = _output_logits(spec, linear, hidden.detach(), buffer, dtype)
                else:
                    g = outputs[0].detach().to(dtype).reshape(rows, -1).clone()
                g.sub_(lse[b, t].reshape(rows, 1)).exp_()  # softmax
                emit_occ = d_emit[b, t].reshape(rows, 1)  # d loss / d emit score (already carries the sign)
                index = column_targets[b].reshape(rows, 1)
                if not clamped:
                    emit_occ = emit_occ * scale
                if ssnt:
                    g.mul_(-emit_occ)
                else:
                    blank_occ = d_blank[b, t].reshape(rows, 1)
                    if not clamped:
                        blank_occ = blank_occ * scale
                    g.mul_(-(blank_occ + emit_occ))
                    g[:, blank] += blank_occ[:, 0]
                g.scatter_add_(-1, index, emit_occ)
                if clamped:
                    g.clamp_(-clamp, clamp).mul_(scale)
                if linear:
                    grad_params[weight_at].addmm_(g.t(), hidden.detach().reshape(rows, -1))
                    if bias is not None:
                        grad_params[bias_at] += g.sum(0)
                    grads_out = [torch.mm(g, weight).view_as(hidden)]
                else:
                    grads_out = [g.view_as(outputs[0]).to(outputs[0].dtype)]
            if ssnt:
                grads_out.append(grad_choose)
            leaves = [e, p] + [params[i] for i in others]
            grads = torch.autograd.grad(outputs, leaves, grads_out, allow_unused=True)
            grad_enc[b, t] = grads[0][:, 0]  # each valid frame is in exactly one chunk
            grad_pred.index_add_(0, b, grads[1])
            for i, g_param in zip(others, grads[2:]):
                if g_param is not None:
                    grad_params[i] += g_param
        return (None, grad_enc, grad_pred, *grad_params)


def _index_of(params, tensor):
    """Position of `tensor` (by identity) in `params`."""
    return next(i for i, p in enumerate(params) if p is tensor)


def _column_targets(targets, columns, ssnt):
    """(B, columns) token id scored at each predictor column: y_{u+1} (transducers) or y_j (SSNT)."""
    out = targets.new_zeros(targets.shape[0], columns)
    width = min(columns, targets.shape[1])
    out[:, :width] = targets[:, :width]
    return out.clamp(min=0)


def _small_loss(spec, blank_scores, emit_scores):
    """The package's per-utterance loss on the lattice scores, via a 2-channel (blank, emit) tensor."""
    if spec["loss"] == "ssnt":
        columns = spec["targets"].shape[1]
        token = emit_scores[:, :, :columns].transpose(1, 2)   # (B, J, S)
        choose = blank_scores[:, :, :columns].transpose(1, 2)
        return ssnt_loss_gathered(token, choose, spec["logit_lengths"], spec["target_lengths"], reduction="none")
    two_channel = torch.stack([blank_scores, emit_scores], dim=-1)
    ones = torch.ones_like(spec["targets"])
    loss_fn = rnnt_loss if spec["loss"] == "rnnt" else modified_rnnt_loss
    extra = {} if spec["loss"] == "rnnt" else {"final_blank": spec["final_blank"]}
    return loss_fn(two_channel, ones, spec["logit_lengths"], spec["target_lengths"], blank=0, reduction="none",
                   fused_log_softmax=False, **extra)


def fused_transducer_loss(joiner, enc, pred, targets, logit_lengths, target_lengths, loss="rnnt", blank=-1,
                          reduction="mean", *, clamp=-1, final_blank=True, choose_head=None, chunk_size=None,
                          memory_budget_mb=8):
    """The loss of ``joiner(enc, pred)`` without materialising the (B, T, U+1, V) logits.

    Equals ``rnnt_loss(joiner(enc, pred), targets, logit_lengths, target_lengths, blank, clamp, reduction)``
    (loss="rnnt"), ``modified_rnnt_loss(..., final_blank=final_blank)`` (loss="modified_rnnt"), or for
    loss="ssnt" ``ssnt_loss(log_softmax(logits).transpose(1, 2)[:, :J], targets,
    choose_head(hidden).transpose(1, 2)[:, :J], logit_lengths, target_lengths)``
    with hidden = joiner.hidden(enc_proj[:, :, None], pred_proj[:, None]) and J = targets.shape[1]
    (the predictor state before token j).

    Args:
        joiner: a :class:`Joiner` (or any module with ``encoder_proj``, ``predictor_proj``,
            ``hidden(enc_proj, pred_proj)`` for broadcastable projections, and ``output``).
        enc: (B, T, H_e) encoder output; pred: (B, U+1, H_p) predictor output.
        choose_head (SSNT): maps hidden states (..., H) to log P(emit) (...), e.g. logsigmoid(Linear(H, 1)).
        chunk_size: frames (b, t) per chunk; by default chosen so that one chunk's working set
            stays under ``memory_budget_mb``. Only frames inside an utterance (t < logit_lengths[b])
            are computed, in chunks that may span utterances. Gradients flow to enc, pred and every
            joiner (and choose head) parameter.
    """
    if loss not in ("rnnt", "modified_rnnt", "ssnt"):
        raise ValueError(f"loss must be 'rnnt', 'modified_rnnt' or 'ssnt', got {loss!r}")
    if loss == "ssnt" and choose_head is None:
        raise ValueError("choose_head is required for loss='ssnt' (a module mapping joiner hidden states (..., H) "
                         "to log P(emit) (...))")
    _checks.check_reduction(reduction)
    _checks.check_scores("enc", enc, (3,))
    _checks.check_scores("pred", pred, (3,))
    if enc.shape[0] != pred.shape[0]:
        raise ValueError(f"enc and pred must have the same batch size, got {enc.shape[0]} and {pred.shape[0]}")
    device = enc.device
    targets = _checks.as_index_tensor("targets", targets, device)
    logit_lengths = _checks.as_index_tensor("logit_lengths", logit_lengths, device)
    target_lengths = _checks.as_index_tensor("target_lengths", target_lengths, device)
    vocab = joiner.output.out_features
    if loss != "ssnt":
        blank = _checks.resolve_blank(blank, vocab)
    if targets.dim() != 2 or target_lengths.shape != (targets.shape[0],):
        raise ValueError(f"targets must be (B, U) with target_lengths (B,), got {tuple(targets.shape)} and "
                         f"{tuple(target_lengths.shape)}")
    _checks.check_target_values(targets, target_lengths, vocab, None if loss == "ssnt" else blank)
    enc_proj, pred_proj = joiner.encoder_proj(enc), joiner.predictor_proj(pred)
    if loss == "ssnt":
        pred_proj = pred_proj[:, : targets.shape[1]]
    by_hand = _linear_output(joiner, enc_proj, pred_proj) is not None
    chunk = _chunk_rows(pred_proj.shape[1], vocab, enc_proj.shape[-1], max(4, enc_proj.element_size()), by_hand,
                        memory_budget_mb, chunk_size)
    spec = {"joiner": joiner, "choose_head": choose_head, "loss": loss, "targets": targets, "blank": blank,
            "clamp": float(clamp), "final_blank": bool(final_blank), "logit_lengths": logit_lengths,
            "target_lengths": target_lengths, "chunk": chunk, "frames": _valid_frames(logit_lengths, enc.shape[1])}
    # everything after the two projections: the output layer and any parameters of hidden()
    params = [p for name, p in joiner.named_parameters() if not name.startswith(("encoder_proj.", "predictor_proj."))]
    if choose_head is not None:
        params += list(choose_head.parameters())
    if torch.is_grad_enabled():
        losses = _FusedJoinerLoss.apply(spec, enc_proj, pred_proj, *params)
    else:  # evaluation (no_grad / inference_mode): the scores and the loss, no occupancies
        losses = _small_loss(spec, *_chunked_scores(spec, enc_proj, pred_proj)[:2])
    return _checks.reduce(losses.to(_checks.output_dtype(enc)), reduction)


__all__ = ["Joiner", "fused_transducer_loss"]
