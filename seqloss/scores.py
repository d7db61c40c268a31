"""Stage 1 of every loss (docs/design.md §2): from logits or log-probabilities to the lattice's edge scores.

This is the only stage that reads the V-wide input. It reduces it to the few scores the lattice
of stage 2 needs, each set to -inf outside its utterance's valid region:

* transducers (RNN-T, modified transducer), lattice cell (t, u), with lse(t, u) = LSE_v x(t, u)[v]
  when ``fused_log_softmax`` (else lse = 0 and x are log-probabilities already):

      blank(t, u) = x(t, u)[blank] - lse(t, u)          for t < T_b, u <= U_b
      emit(t, u)  = x(t, u)[y_{u+1}] - lse(t, u)        for t < T_b, u < U_b
                                                         (t < T_b - 1 with one_symbol_per_frame and final_blank)

* simplified CTC, the same two edges from (T, B, V) log-probs, independent of u:
  blank(t, l) = lp_t(blank), emit(t, l) = lp_t(y_{l+1});
* CTC, one score per state of the blank-extended labels l' = (blank, y_1, blank, ..., y_L, blank):
  e_t(s) = lp_t(l'_s) for t < T_b;
* SSNT, with l_j(i) = log_probs[j, i, y_j], q_j(i) = log_p_choose[j, i], r_j(i) = log(1 - e^{q_j(i)}),
  on the transducer grid with t = source frame i, u = target position j:

      blank(i, j) = r_j(i) (shift past frame i)   for i < S_b, j < J_b;   blank(S_b - 1, J_b) = 0 (the end)
      emit(i, j)  = l_j(i) + q_j(i)               for i < S_b, j < J_b

The public functions (:func:`transducer_scores`, :func:`simple_ctc_scores`, :func:`ctc_scores`,
:func:`ssnt_scores`) take a loss's own arguments, check them as the loss does and return these
scores; the losses themselves call the building blocks below on arguments already checked.
Dense (B, T, U+1, V) and packed (sum_b T_b (U_b+1), V) transducer logits are both handled as an
(N, V) view with a row -> (b, t, u) map (:class:`TransducerLayout`), so one code path serves both.
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import _backend, _checks, _zero_pages
from ._lattice.semiring import NEG_INF
from .packing import packed_cells, packed_to_padded

__all__ = [
    "EdgeScores", "CTCScores", "transducer_scores", "simple_ctc_scores", "ctc_scores", "ssnt_scores",
    "TransducerLayout", "transducer_layout", "to_grid", "from_grid", "logit_rows", "row_scores", "fused_row_scores",
    "transducer_edge_scores", "invalid_rows", "simple_ctc_edge_scores", "ctc_extended_labels", "ctc_emissions",
    "log1mexp", "ssnt_token_scores", "ssnt_padded_scores", "ssnt_edge_scores",
]


class EdgeScores(NamedTuple):
    """The two edges leaving each cell (t, u) of the transducer lattice, -inf outside the utterance.

    blank (B, T, U+1): score of the edge to (t+1, u); emit (B, T, U): score of the edge to (t+δ, u+1)
    (δ = 1 with one symbol per frame, else 0). For SSNT, t is the source frame and u the target
    position, ``blank`` the shift edge and ``emit`` the emission of the target token.
    """
    blank: torch.Tensor
    emit: torch.Tensor


class CTCScores(NamedTuple):
    """labels (B, 2L+1): the blank-extended label sequence l'; emissions (T, B, 2L+1): e_t(s) = lp_t(l'_s)."""
    labels: torch.Tensor
    emissions: torch.Tensor


# ------------------------------------------------------------------------------------- transducers
@dataclass(kw_only=True)
class TransducerLayout:
    """Where each row of the (N, V) logits view sits in the (B, T, U+1) lattice grid."""
    batch: torch.Tensor   # (N,) utterance of each row
    frame: torch.Tensor   # (N,) t
    label: torch.Tensor   # (N,) u
    grid: tuple           # (B, T_grid, U_grid + 1)
    dense: bool           # rows are the whole grid in order (no scatter needed)


def transducer_layout(logits: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor
                      ) -> TransducerLayout:
    """The row -> (b, t, u) map of dense (B, T, U+1, V) logits (every cell, in order) or packed 2-D logits."""
    device = logits.device
    if logits.dim() == 4:
        batch, frames, width, _ = logits.shape
        b, t, u = torch.meshgrid(torch.arange(batch, device=device), torch.arange(frames, device=device),
                                 torch.arange(width, device=device), indexing="ij")
        return TransducerLayout(batch=b.reshape(-1), frame=t.reshape(-1), label=u.reshape(-1),
                                grid=(batch, frames, width), dense=True)
    b, t, u = packed_cells(logit_lengths, target_lengths, num_rows=logits.shape[0])
    grid = (logit_lengths.shape[0], int(logit_lengths.max()), int(target_lengths.max()) + 1)
    return TransducerLayout(batch=b, frame=t, label=u, grid=grid, dense=False)


def to_grid(values: torch.Tensor, layout: TransducerLayout, fill=NEG_INF) -> torch.Tensor:
    """(N,) per-row values -> the (B, T, U+1) grid, ``fill`` in cells without a row."""
    if layout.dense:
        return values.view(layout.grid)
    grid = values.new_full(layout.grid, fill)
    return grid.index_put((layout.batch, layout.frame, layout.label), values)


def from_grid(grid: torch.Tensor, layout: TransducerLayout) -> torch.Tensor:
    """The (B, T, U+1) grid's value at each row's cell, (N,)."""
    if layout.dense:
        return grid.reshape(-1)
    return grid[layout.batch, layout.frame, layout.label]


def logit_rows(logits: torch.Tensor) -> torch.Tensor:
    """Dense (B, T, U+1, V) or packed (N, V) logits as the (N, V) view of their rows."""
    return logits.reshape(-1, logits.shape[-1])


def row_scores(x2d, row_targets, blank: int, *, fused_log_softmax: bool):
    """(N, V) rows -> lse (N,) (None without fused_log_softmax), blank score (N,), emit score (N,).

    lse = LSE_v x[v], blank score x[blank] - lse, emit score x[row_targets] - lse (without
    fused_log_softmax: x[blank] and x[row_targets]). Half types are computed in float32.
    """
    if fused_log_softmax and not torch.is_grad_enabled():  # the fast path (not the double-backward recursion)
        return _backend.v_wide(fused_row_scores, x2d, row_targets, blank)
    x = x2d.to(_checks.compute_dtype(x2d)) if x2d.dtype in (torch.float16, torch.bfloat16) else x2d
    blank_s = x[:, blank]
    emit_s = x.gather(1, row_targets.unsqueeze(1))[:, 0]
    if not fused_log_softmax:
        return None, blank_s, emit_s
    lse = torch.logsumexp(x, dim=1)
    return lse, blank_s - lse, emit_s - lse


def fused_row_scores(x2d, row_targets, blank: int):
    """:func:`row_scores` with fused_log_softmax as one pass over the logits (under torch.compile).

    Returns only (N,) tensors, never a view of an (N, V) intermediate, so inductor fuses the
    log-sum-exp with both gathers.
    """
    x = x2d.to(_checks.compute_dtype(x2d))
    lse = torch.logsumexp(x, dim=1)
    return lse, x[:, blank] - lse, x.gather(1, row_targets.unsqueeze(1))[:, 0] - lse


def transducer_edge_scores(x2d, targets, logit_lengths, target_lengths, blank: int, layout: TransducerLayout, *,
                           fused_log_softmax: bool, one_symbol_per_frame: bool, final_blank: bool = True):
    """Masked lattice scores from checked arguments: (lse rows (N,) or None, blank (B,T,U+1), emit (B,T,U),
    row_targets (N,)), row_targets[r] = y_{u+1} of row r's cell (the class its emit edge scores).

    Emits on the last frame are -inf when ``one_symbol_per_frame and final_blank`` (the path must end
    with a blank there); blank and emit outside t < T_b, u <= U_b (emit: u < U_b) are -inf.
    """
    if targets.shape[1]:
        row_targets = targets[layout.batch, layout.label.clamp(max=targets.shape[1] - 1)]
    else:
        row_targets = torch.zeros_like(layout.label)
    lse, blank_rows, emit_rows = row_scores(x2d, row_targets, blank, fused_log_softmax=fused_log_softmax)
    blank_s, emit_s = to_grid(blank_rows, layout), to_grid(emit_rows, layout)[:, :, :-1]
    t = torch.arange(layout.grid[1], device=x2d.device).view(1, -1, 1)
    u = torch.arange(layout.grid[2], device=x2d.device).view(1, 1, -1)
    frames, labels = logit_lengths.view(-1, 1, 1), target_lengths.view(-1, 1, 1)
    emit_frames = frames - 1 if one_symbol_per_frame and final_blank else frames
    blank_s = torch.where((t < frames) & (u <= labels), blank_s, NEG_INF)
    emit_s = torch.where((t < emit_frames) & (u[..., :-1] < labels), emit_s, NEG_INF)
    return lse, blank_s, emit_s, row_targets


def invalid_rows(lse, layout: TransducerLayout, logit_lengths, target_lengths) -> torch.Tensor:
    """(B,) bool: a valid lattice row (t < T_b, u <= U_b) whose log-sum-exp is NaN or +inf (a NaN or +inf logit)."""
    grid = to_grid(lse, layout, fill=0.0)
    t = torch.arange(layout.grid[1], device=lse.device).view(1, -1, 1)
    u = torch.arange(layout.grid[2], device=lse.device).view(1, 1, -1)
    valid = (t < logit_lengths.view(-1, 1, 1)) & (u <= target_lengths.view(-1, 1, 1))
    return (valid & (torch.isnan(grid) | torch.isposinf(grid))).flatten(1).any(1)


def transducer_scores(logits, targets, logit_lengths, target_lengths, blank=-1, *, fused_log_softmax=True,
                      one_symbol_per_frame=False, final_blank=True) -> EdgeScores:
    """The blank and emit log-probs of every transducer lattice cell: stage 1 of rnnt_loss / modified_rnnt_loss.

        blank(t, u) = log_softmax(logits[b, t, u])[blank]      (B, T, U+1), -inf unless t < T_b, u <= U_b
        emit(t, u)  = log_softmax(logits[b, t, u])[y_{u+1}]    (B, T, U),   -inf unless t < T_b, u < U_b

    With ``fused_log_softmax=False`` the logits are taken as log-probabilities (no log_softmax).
    ``one_symbol_per_frame=False`` gives the scores of :func:`seqloss.rnnt_loss`; ``True`` those of
    :func:`seqloss.modified_rnnt_loss`, whose ``final_blank=True`` also sets emit(T_b - 1, u) = -inf
    (the last frame emits blank). Arguments, shapes (dense or packed logits) and checks as
    :func:`seqloss.rnnt_loss`; packed logits give grids of T = max T_b, U = max U_b. Differentiable.
    """
    if not one_symbol_per_frame and not final_blank:
        raise ValueError("final_blank=False needs one_symbol_per_frame=True (an RNN-T path always ends with a blank)")
    targets, logit_lengths, target_lengths, blank = _checks.prepare_transducer(
        logits, targets, logit_lengths, target_lengths, blank, -1, "none")
    layout = transducer_layout(logits, logit_lengths, target_lengths)
    _, blank_s, emit_s, _ = transducer_edge_scores(
        logit_rows(logits), targets, logit_lengths, target_lengths, blank, layout, fused_log_softmax=fused_log_softmax,
        one_symbol_per_frame=one_symbol_per_frame, final_blank=final_blank)
    return EdgeScores(blank_s, emit_s)


# --------------------------------------------------------------------------------------------- CTC
def simple_ctc_edge_scores(log_probs, targets, input_lengths, target_lengths, blank: int):
    """Checked (T,B,V) log-probs -> blank (B,T,L+1) = lp_t(blank), emit (B,T,L) = lp_t(y_{l+1}), -inf outside."""
    x = log_probs.to(_checks.compute_dtype(log_probs)).transpose(0, 1)  # (B, T, V)
    num_labels = targets.shape[1]
    frame_ok = (torch.arange(x.shape[1], device=x.device) < input_lengths.unsqueeze(1)).unsqueeze(2)
    label = torch.arange(num_labels + 1, device=x.device)
    blank_scores = torch.where(frame_ok & (label <= target_lengths.view(-1, 1, 1)),
                               x[:, :, blank : blank + 1], NEG_INF)
    emit_scores = x.gather(2, targets.unsqueeze(1).expand(-1, x.shape[1], -1))
    emit_scores = torch.where(frame_ok & (label[:-1] < target_lengths.view(-1, 1, 1)), emit_scores, NEG_INF)
    return blank_scores, emit_scores


def simple_ctc_scores(log_probs, targets, input_lengths, target_lengths, blank=0) -> EdgeScores:
    """The edge scores of the simplified CTC lattice: stage 1 of :func:`seqloss.simple_ctc_loss`.

        blank(t, l) = log_probs[t, b, blank]     (B, T, L+1), -inf unless t < T_b, l <= L_b
        emit(t, l)  = log_probs[t, b, y_{l+1}]   (B, T, L),   -inf unless t < T_b, l < L_b

    Arguments and checks as :func:`seqloss.ctc_loss` (an unbatched (T, V) input gives B = 1).
    """
    log_probs, targets, input_lengths, target_lengths, blank, _ = _checks.prepare_ctc(
        log_probs, targets, input_lengths, target_lengths, blank, "none")
    return EdgeScores(*simple_ctc_edge_scores(log_probs, targets, input_lengths, target_lengths, blank))


def ctc_extended_labels(targets: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, L) targets -> (B, 2L+1) blank-interleaved label sequence l' = (blank, y_1, blank, ..., y_L, blank)."""
    batch, max_len = targets.shape
    ext = torch.full((batch, 2 * max_len + 1), blank, dtype=targets.dtype, device=targets.device)
    ext[:, 1::2] = targets
    return ext


def ctc_emissions(log_probs: torch.Tensor, ext: torch.Tensor, input_lengths: torch.Tensor) -> torch.Tensor:
    """(T, B, V) scores -> (T, B, S) e_t(s) = lp_t(l'_s), -inf on frames t >= T_b."""
    num_frames = log_probs.shape[0]
    e = log_probs.gather(2, ext.unsqueeze(0).expand(num_frames, -1, -1))
    frame = torch.arange(num_frames, device=log_probs.device).unsqueeze(1)
    return torch.where((frame < input_lengths.unsqueeze(0)).unsqueeze(2), e, NEG_INF)


def ctc_scores(log_probs, targets, input_lengths, target_lengths, blank=0) -> CTCScores:
    """The state scores of the CTC lattice: stage 1 of :func:`seqloss.ctc_loss`.

        labels = l' = (blank, y_1, blank, ..., y_L, blank)      (B, 2L+1), L = max L_b
        emissions[t, b, s] = log_probs[t, b, l'_s]               (T, B, 2L+1), -inf for t >= T_b

    in the compute dtype (float64 stays float64, other types give float32). Arguments and checks
    as :func:`seqloss.ctc_loss` (an unbatched (T, V) input gives B = 1).
    """
    log_probs, targets, input_lengths, _, blank, _ = _checks.prepare_ctc(
        log_probs, targets, input_lengths, target_lengths, blank, "none")
    ext = ctc_extended_labels(targets, blank)
    return CTCScores(ext, ctc_emissions(log_probs.to(_checks.compute_dtype(log_probs)), ext, input_lengths))


# -------------------------------------------------------------------------------------------- SSNT
def log1mexp(q: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(q)) for q <= 0: log(-expm1(q)) above -log 2, log1p(-exp(q)) below (accurate on both sides)."""
    near_zero = q > -0.6931471805599453
    return torch.where(near_zero, torch.log(-torch.expm1(torch.where(near_zero, q, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near_zero, -1.0, q))))


def ssnt_token_scores(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """l_j(i) = log_probs[..., j, i, y_j]: (B, J, S, V) -> (B, J, S), or packed (sum J_b, S, V) -> (sum J_b, S)."""
    index = targets.unsqueeze(-1).unsqueeze(-1).expand(*targets.shape, log_probs.shape[-2], 1)
    if log_probs.requires_grad and _zero_pages.worthwhile(log_probs.shape, log_probs.dtype, log_probs.device):
        return _GatherIntoZeroPages.apply(log_probs, index)[..., 0]
    return log_probs.gather(-1, index)[..., 0]


class _GatherIntoZeroPages(torch.autograd.Function):
    """x.gather(-1, index), whose gradient (one entry per gathered row; nothing on the padded rows of a
    dense input) is written into fresh zero pages (``_zero_pages.zeros``), non-zero entries only: the
    pages of padded rows are never touched. Twice differentiable (the second time through ``scatter``)."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.shape = x.shape
        return x.gather(-1, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the scatter stays in the graph
            return torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device).scatter(-1, index, grad), None
        out = _zero_pages.zeros(ctx.shape, grad.dtype, grad.device)
        flat_grad, flat_index = grad.reshape(-1), index.reshape(-1)
        rows = flat_grad.nonzero()[:, 0]  # NaN counts as non-zero
        out.view(-1, ctx.shape[-1])[rows, flat_index[rows]] = flat_grad[rows]
        return out, None


def ssnt_padded_scores(token, choose, target_lengths, *, packed: bool):
    """Gathered token and choose log-probs, padded (B, J, S) or packed (sum_b J_b, S) -> padded (B, J, S)
    in the compute dtype, -inf past J_b when packed. Differentiable."""
    dtype = _checks.compute_dtype(token)
    token, choose = token.to(dtype), choose.to(dtype)
    if packed:
        max_targets = int(target_lengths.max())
        token = packed_to_padded(token, target_lengths, max_targets, fill=NEG_INF)
        choose = packed_to_padded(choose, target_lengths, max_targets, fill=NEG_INF)
    return token, choose


def ssnt_edge_scores(token, choose, source_lengths, target_lengths):
    """Padded (B,J,S) token l and choose q log-probs -> blank (B,S,J+1), emit (B,S,J) and shift r = log(1 - e^q)
    (B,J,S), masked as in the module docstring (blank(S_b - 1, J_b) = 0 is the end of every path)."""
    _, max_targets, num_frames = token.shape
    shift = log1mexp(choose)
    i = torch.arange(num_frames, device=token.device).view(1, -1, 1)
    j = torch.arange(max_targets + 1, device=token.device).view(1, 1, -1)
    frames, labels = source_lengths.view(-1, 1, 1), target_lengths.view(-1, 1, 1)
    blank = torch.nn.functional.pad(shift.transpose(1, 2), (0, 1), value=NEG_INF)
    blank = torch.where((i < frames) & (j < labels), blank, NEG_INF)
    blank = torch.where((i == frames - 1) & (j == labels), 0.0, blank)
    emit = torch.where((i < frames) & (j[..., :-1] < labels), (token + choose).transpose(1, 2), NEG_INF)
    return blank, emit, shift


def ssnt_scores(log_probs, targets, log_p_choose, source_lengths, target_lengths) -> EdgeScores:
    """The edge scores of the SSNT lattice: stage 1 of :func:`seqloss.ssnt_loss`, on the transducer grid.

        blank(i, j) = log(1 - exp(log_p_choose[j, i]))             (B, S, J+1): shift past frame i
        emit(i, j)  = log_probs[j, i, y_j] + log_p_choose[j, i]    (B, S, J):   emit y_j at frame i

    -inf outside i < S_b, j < J_b, except blank(S_b - 1, J_b) = 0 (the path ends on the last frame).
    Arguments (padded or packed) and checks as :func:`seqloss.ssnt_loss`; the grids are padded.
    """
    targets, source_lengths, target_lengths, packed = _checks.prepare_ssnt(
        log_probs, targets, log_p_choose, source_lengths, target_lengths, "none")
    token, choose = ssnt_padded_scores(ssnt_token_scores(log_probs, targets), log_p_choose, target_lengths,
                                       packed=packed)
    blank, emit, _ = ssnt_edge_scores(token, choose, source_lengths, target_lengths)
    return EdgeScores(blank, emit)
