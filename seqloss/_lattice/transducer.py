"""The transducer lattice shared by RNN-T, the modified transducer, simplified CTC and SSNT.

A cell (t, u) has two outgoing edges: "blank" to (t+1, u) with score blank(t, u), and "emit" to
(t + delta, u+1) with score emit(t, u). delta = 0 is the RNN-T lattice (emitting stays on the
frame; SSNT is the same lattice with t = source frame, u = target position); delta = 1 is the
one-symbol-per-frame lattice (modified transducer, simplified CTC). The switch between them is the
keyword ``one_symbol_per_frame`` (delta = 1 when True) of every function here and in ``seqloss._ops``.

The grid is extended by one row, t = 0..T, and utterance b ends in the terminal cell (T_b, U_b):

    alpha(0, 0) = 0
    alpha(t, u) = LSE(alpha(t-1, u) + blank(t-1, u), alpha(t-delta, u-1) + emit(t-delta, u-1))
    log P       = alpha(T_b, U_b)
    beta(T_b, U_b) = 0
    beta(t, u)  = LSE(blank(t, u) + beta(t+1, u), emit(t, u) + beta(t+delta, u+1))

Each loss expresses its own end condition through the scores it supplies: RNN-T's final blank is
the edge (T_b-1, U_b) -> (T_b, U_b); SSNT gives that edge score 0. Scores must already be -inf
outside each utterance's valid region (rows t >= T_b, blank columns u > U_b, emit columns
u >= U_b); that makes every cell beyond the terminal unreachable from it.

Edge occupancies (posteriors, = d log P / d score):
    occ_blank(t, u) = exp(alpha(t, u) + blank(t, u) + beta(t+1, u) - log P)
    occ_emit(t, u)  = exp(alpha(t, u) + emit(t, u) + beta(t+delta, u+1) - log P)
"""
import torch

from .._deprecation import renamed_keyword
from .semiring import NEG_INF, log_add, occupancy


def pad_grid(blank: torch.Tensor, emit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,T,U+1) blank, (B,T,U) emit -> both (B,T+1,U+1) with -inf in the extra row/column."""
    blank = torch.nn.functional.pad(blank, (0, 0, 0, 1), value=NEG_INF)
    emit = torch.nn.functional.pad(emit, (0, 1, 0, 1), value=NEG_INF)
    return blank, emit


def shift_u(x: torch.Tensor, k: int) -> torch.Tensor:
    """x[..., u - k] along the last dim with -inf fill (k = 1: from u-1; k = -1: from u+1)."""
    if k > 0:
        return torch.nn.functional.pad(x[..., :-k], (k, 0), value=NEG_INF)
    return torch.nn.functional.pad(x[..., -k:], (0, -k), value=NEG_INF)


# ---------------------------------------------------------------------------------------------
# delta = 1: loop over frames, vectorised over u.
# ---------------------------------------------------------------------------------------------
def _alpha_frame_sync(blank, emit):
    batch, rows, width = blank.shape
    alpha = torch.full((batch, width), NEG_INF, dtype=blank.dtype, device=blank.device)
    alpha = torch.where(torch.arange(width, device=blank.device) == 0, 0.0, alpha)
    alphas = [alpha]
    for t in range(1, rows):
        alpha = log_add(alpha + blank[:, t - 1], shift_u(alpha + emit[:, t - 1], 1))
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def _beta_frame_sync(blank, emit, frames, labels):
    batch, rows, width = blank.shape
    u = torch.arange(width, device=blank.device)
    beta = torch.full((batch, width), NEG_INF, dtype=blank.dtype, device=blank.device)
    betas = []
    for t in range(rows - 1, -1, -1):
        if t < rows - 1:
            beta = log_add(blank[:, t] + beta, emit[:, t] + shift_u(beta, -1))
        terminal = (frames.unsqueeze(1) == t) & (u == labels.unsqueeze(1))
        beta = torch.where(terminal, 0.0, beta)
        betas.append(beta)
    return torch.stack(betas[::-1], dim=1)


# ---------------------------------------------------------------------------------------------
# delta = 0: loop over anti-diagonals n = t + u, vectorised over u. Diagonal tensors D[:, n, u]
# hold cell (n - u, u).
# ---------------------------------------------------------------------------------------------
def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, R, W) grid -> (B, R+W-1, W) diagonals, D[b, n, u] = x[b, n-u, u] (-inf off grid)."""
    batch, rows, width = x.shape
    n = torch.arange(rows + width - 1, device=x.device).unsqueeze(1)
    t = n - torch.arange(width, device=x.device)
    valid = (t >= 0) & (t < rows)
    gathered = x.gather(1, t.clamp(0, rows - 1).unsqueeze(0).expand(batch, -1, -1))
    return torch.where(valid, gathered, NEG_INF)


def unskew(d: torch.Tensor, rows: int) -> torch.Tensor:
    """Inverse of skew: (B, R+W-1, W) diagonals -> (B, R, W) grid."""
    batch, _, width = d.shape
    n = torch.arange(rows, device=d.device).unsqueeze(1) + torch.arange(width, device=d.device)
    return d.gather(1, n.unsqueeze(0).expand(batch, -1, -1))


def _alpha_diagonal(blank, emit):
    batch, rows, width = blank.shape
    sb, se = skew(blank), skew(emit)
    d = torch.full((batch, width), NEG_INF, dtype=blank.dtype, device=blank.device)
    d = torch.where(torch.arange(width, device=blank.device) == 0, 0.0, d)
    diagonals = [d]
    for n in range(1, rows + width - 1):
        d = log_add(d + sb[:, n - 1], shift_u(d + se[:, n - 1], 1))
        diagonals.append(d)
    return unskew(torch.stack(diagonals, dim=1), rows)


def _beta_diagonal(blank, emit, frames, labels):
    batch, rows, width = blank.shape
    sb, se = skew(blank), skew(emit)
    u = torch.arange(width, device=blank.device)
    d = torch.full((batch, width), NEG_INF, dtype=blank.dtype, device=blank.device)
    diagonals = []
    for n in range(rows + width - 2, -1, -1):
        d = log_add(sb[:, n] + d, se[:, n] + shift_u(d, -1))
        terminal = (frames.unsqueeze(1) + u == n) & (u == labels.unsqueeze(1))
        d = torch.where(terminal, 0.0, d)
        diagonals.append(d)
    return unskew(torch.stack(diagonals[::-1], dim=1), rows)


def _gather_cell(grid: torch.Tensor, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    batch = grid.shape[0]
    return grid[torch.arange(batch, device=grid.device), frames, labels]


@renamed_keyword("emit_advances_time", "one_symbol_per_frame")
def transducer_log_likelihood(blank, emit, frames, labels, *, one_symbol_per_frame: bool):
    """log P (B,) of the lattice ending at (frames, labels); differentiable in blank and emit.

    blank (B, T, U+1), emit (B, T, U): scores already -inf outside each utterance's region.
    """
    blank, emit = pad_grid(blank, emit)
    alpha = (_alpha_frame_sync if one_symbol_per_frame else _alpha_diagonal)(blank, emit)
    return _gather_cell(alpha, frames, labels)


@renamed_keyword("emit_advances_time", "one_symbol_per_frame")
def transducer_marginals(blank, emit, frames, labels, *, one_symbol_per_frame: bool):
    """log P (B,), and for every real cell (t < T): alpha, beta after its blank edge, beta after its emit edge.

    Returns (log_p, alpha (B,T,U+1), beta_blank (B,T,U+1), beta_emit (B,T,U)) where beta_blank(t, u) =
    beta(t+1, u) and beta_emit(t, u) = beta(t+delta, u+1). The posterior of an edge with score s is
    exp(alpha + s + beta_next - log P); see :func:`seqloss._lattice.semiring.occupancy`.
    """
    num_frames, width = blank.shape[1], blank.shape[2]
    blank, emit = pad_grid(blank, emit)
    if one_symbol_per_frame:
        alpha = _alpha_frame_sync(blank, emit)
        beta = _beta_frame_sync(blank, emit, frames, labels)
        beta_emit = shift_u(beta[:, 1:], -1)
    else:
        alpha = _alpha_diagonal(blank, emit)
        beta = _beta_diagonal(blank, emit, frames, labels)
        beta_emit = shift_u(beta[:, :-1], -1)
    log_p = _gather_cell(alpha, frames, labels)
    return log_p, alpha[:, :num_frames], beta[:, 1:], beta_emit[:, :num_frames, : width - 1]


@renamed_keyword("emit_advances_time", "one_symbol_per_frame")
def transducer_occupancy(blank, emit, frames, labels, *, one_symbol_per_frame: bool, marginals=transducer_marginals):
    """log P (B,), occ_blank (B, T, U+1) and occ_emit (B, T, U): edge posteriors = d log P / d score.

    `marginals` computes the forward/backward variables: :func:`transducer_marginals` or its native
    counterpart ``seqloss._ops.transducer_marginals``.
    """
    log_p, alpha, beta_blank, beta_emit = marginals(blank, emit, frames, labels,
                                                    one_symbol_per_frame=one_symbol_per_frame)
    total = log_p.view(-1, 1, 1)
    occ_blank = occupancy(alpha + blank + beta_blank, total)
    occ_emit = occupancy(alpha[..., :-1] + emit + beta_emit, total)
    return log_p, occ_blank, occ_emit
