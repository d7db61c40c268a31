"""Best paths (max-plus recursions with backpointers) over the CTC and transducer lattices.

The recursions are those of ``ctc.py`` and ``transducer.py`` with log-add replaced by max; each
cell remembers which predecessor won, and a batched backtrack from the terminal recovers the path.
Ties go to the first candidate in the order the recursion lists them (stay / blank first).
"""
import torch

from .._deprecation import renamed_keyword
from .ctc import shift_states, skip_allowed
from .semiring import NEG_INF
from .transducer import pad_grid, shift_u, skew, unskew


def ctc_viterbi(e: torch.Tensor, ext: torch.Tensor, target_lengths, input_lengths, blank: int):
    """Best CTC path. e (T, B, S) emission scores of the extended labels (-inf past T_b).

    Returns (states (B, T) index into ext of the state at each frame, -1 past T_b; score (B,)).
    """
    num_frames, batch, num_states = e.shape
    no_frames_score = torch.where(target_lengths == 0, 0.0, NEG_INF).to(e.dtype)
    if num_frames == 0:  # no frames: the empty path, feasible for an empty target only
        return torch.full((batch, 0), -1, dtype=torch.long, device=e.device), no_frames_score
    skip = skip_allowed(ext, blank)
    state = torch.arange(num_states, device=e.device)
    best = torch.where(state < 2, e[0], NEG_INF)
    back = [torch.zeros(batch, num_states, dtype=torch.long, device=e.device)]
    history = [best]
    for t in range(1, num_frames):
        candidates = torch.stack([best, shift_states(best, 1), torch.where(skip, shift_states(best, 2), NEG_INF)])
        value, offset = candidates.max(dim=0)  # first maximum wins: stay, then advance, then skip
        best = e[t] + value
        back.append(offset)
        history.append(best)
    history, back = torch.stack(history), torch.stack(back)  # (T, B, S)
    rows = torch.arange(batch, device=e.device)
    last_frame = (input_lengths - 1).clamp(min=0)
    final = history[last_frame, rows]                         # (B, S)
    end = 2 * target_lengths
    end_score = final.gather(1, end.unsqueeze(1))[:, 0]
    before_end = torch.where(end > 0, final.gather(1, (end - 1).clamp(min=0).unsqueeze(1))[:, 0], NEG_INF)
    use_before = before_end > end_score
    score = torch.where(use_before, before_end, end_score)
    score = torch.where(input_lengths > 0, score, no_frames_score)
    current = torch.where(use_before, end - 1, end)
    states = torch.full((batch, num_frames), -1, dtype=torch.long, device=e.device)
    for t in range(num_frames - 1, -1, -1):
        active = t <= last_frame
        states[:, t] = torch.where(active, current, -1)
        step = back[t, rows, current.clamp(min=0)]
        current = torch.where(active, current - step, current)
    return states, score


@renamed_keyword("emit_advances_time", "one_symbol_per_frame")
def transducer_viterbi(blank, emit, frames, labels, *, one_symbol_per_frame: bool):
    """Best path through the transducer lattice (scores masked as for ``transducer_occupancy``).

    Returns (emit_frame (B, U): the frame t of the cell whose emit edge produced label u, -1 past
    U_b; score (B,): the best path's total score).
    """
    batch, num_frames, width = blank.shape
    blank, emit = pad_grid(blank, emit)
    rows = num_frames + 1
    # delta = 1 steps frame by frame; delta = 0 steps along anti-diagonals of the skewed grid.
    # The step is the same: from index u by blank, from index u - 1 by emit.
    step_blank, step_emit = (blank, emit) if one_symbol_per_frame else (skew(blank), skew(emit))
    best = torch.where(torch.arange(width, device=blank.device) == 0, 0.0,
                       torch.full((batch, width), NEG_INF, dtype=blank.dtype, device=blank.device))
    came_by_emit = [torch.zeros(batch, width, dtype=torch.bool, device=blank.device)]
    values = [best]
    for n in range(1, step_blank.shape[1]):
        by_blank, by_emit = best + step_blank[:, n - 1], shift_u(best + step_emit[:, n - 1], 1)
        came_by_emit.append(by_emit > by_blank)
        best = torch.maximum(by_blank, by_emit)
        values.append(best)
    values, came_by_emit = torch.stack(values, 1), torch.stack(came_by_emit, 1)
    if not one_symbol_per_frame:
        values = unskew(values, rows)
        came_by_emit = unskew(came_by_emit.to(torch.uint8), rows).bool()
    index = torch.arange(batch, device=blank.device)
    score = values[index, frames, labels]
    emit_frame = torch.full((batch, max(width - 1, 0)), -1, dtype=torch.long, device=blank.device)
    feasible = torch.isfinite(score)
    t, u = frames.clone(), labels.clone()
    delta = 1 if one_symbol_per_frame else 0
    for _ in range(rows + width):
        active = ((t > 0) | (u > 0)) & feasible
        if not bool(active.any()):
            break
        by_emit = came_by_emit[index, t, u] & active & (u > 0)
        source_t = t - delta
        emit_frame[index[by_emit], u[by_emit] - 1] = source_t[by_emit]
        t = torch.where(by_emit, source_t, torch.where(active, t - 1, t))
        u = torch.where(by_emit, u - 1, u)
    return emit_frame, score
