"""The CTC lattice over the blank-extended label sequence.

For a target y_1..y_L, the extended sequence is l' = (blank, y_1, blank, y_2, ..., y_L, blank),
S = 2L + 1 states. With e_t(s) = lp_t(l'_s):

    alpha_0(0) = e_0(0),  alpha_0(1) = e_0(1),  alpha_0(s > 1) = -inf
    alpha_t(s) = e_t(s) + LSE(alpha_{t-1}(s), alpha_{t-1}(s-1), [alpha_{t-1}(s-2) if l'_s != blank, l'_s != l'_{s-2}])
    log P      = LSE(alpha_{T-1}(S-1), alpha_{T-1}(S-2))

beta mirrors it from the end (beta_t includes e_t(s)); the state occupancy is
gamma_t(s) = exp(alpha_t(s) + beta_t(s) - e_t(s) - log P) = d log P / d e_t(s). The extended
labels and the emissions e come from stage 1 (``seqloss.scores.ctc_extended_labels``, ``ctc_emissions``).
"""
import torch

from .semiring import NEG_INF, log_add, occupancy


def skip_allowed(ext: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, S) bool: the transition s-2 -> s is allowed (a label different from the one before)."""
    allowed = torch.zeros_like(ext, dtype=torch.bool)
    allowed[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return allowed


def shift_states(x: torch.Tensor, k: int) -> torch.Tensor:
    """x[..., s - k] along the last dim with -inf fill (k > 0 shifts right, k < 0 left)."""
    fill = torch.full_like(x[..., : abs(k)], NEG_INF)
    if k > 0:
        return torch.cat([fill, x[..., :-k]], dim=-1)
    return torch.cat([x[..., -k:], fill], dim=-1)


def ctc_alpha(e: torch.Tensor, ext: torch.Tensor, target_lengths: torch.Tensor, input_lengths: torch.Tensor,
              blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward variables alpha (T, B, S) and log P (B,). Differentiable (used for double backward)."""
    num_frames, _, num_states = e.shape
    if num_frames == 0:  # no frames: only the empty target has a path (the empty one)
        return e.new_empty(e.shape), _empty_input_log_p(e, target_lengths)
    skip = skip_allowed(ext, blank)
    state = torch.arange(num_states, device=e.device)
    alpha = torch.where(state < 2, e[0], NEG_INF)
    alphas = [alpha]
    for t in range(1, num_frames):
        prev = log_add(alpha, shift_states(alpha, 1))
        prev = log_add(prev, torch.where(skip, shift_states(alpha, 2), NEG_INF))
        alpha = e[t] + prev
        alphas.append(alpha)
    alphas = torch.stack(alphas)
    last = alphas.gather(0, (input_lengths - 1).clamp(min=0).view(1, -1, 1).expand(1, -1, num_states))[0]
    end = 2 * target_lengths
    log_p = log_add(last.gather(1, end.unsqueeze(1))[:, 0],
                    torch.where(end > 0, last.gather(1, (end - 1).clamp(min=0).unsqueeze(1))[:, 0], NEG_INF))
    log_p = torch.where(input_lengths > 0, log_p, _empty_input_log_p(e, target_lengths))
    return alphas, log_p


def _empty_input_log_p(e: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """log P of an utterance without frames: 0 for an empty target, -inf otherwise."""
    return torch.where(target_lengths == 0, 0.0, NEG_INF).to(e.dtype)


def ctc_beta(e: torch.Tensor, ext: torch.Tensor, target_lengths: torch.Tensor, input_lengths: torch.Tensor,
             blank: int) -> torch.Tensor:
    """Backward variables beta (T, B, S), beta_t(s) = log P(frames t..T_b-1 | state s at t), incl. e_t(s)."""
    num_frames, _, num_states = e.shape
    if num_frames == 0:
        return e.new_empty(e.shape)
    skip_into = shift_states(torch.where(skip_allowed(ext, blank), 0.0, NEG_INF), -2)  # allowed s -> s+2
    state = torch.arange(num_states, device=e.device).unsqueeze(0)
    end = 2 * target_lengths.unsqueeze(1)
    final = (state == end) | ((state == end - 1) & (end > 0))
    beta = torch.full_like(e[0], NEG_INF)
    betas = []
    for t in range(num_frames - 1, -1, -1):
        nxt = log_add(beta, shift_states(beta, -1))
        nxt = log_add(nxt, shift_states(beta, -2) + skip_into)
        is_last = (input_lengths - 1 == t).unsqueeze(1)
        beta = e[t] + torch.where(is_last, torch.where(final, 0.0, NEG_INF), nxt)
        betas.append(beta)
    return torch.stack(betas[::-1])


def ctc_occupancy(e, ext, target_lengths, input_lengths, blank):
    """log P (B,) and state occupancies gamma (T, B, S) = d log P / d e."""
    alpha, log_p = ctc_alpha(e, ext, target_lengths, input_lengths, blank)
    beta = ctc_beta(e, ext, target_lengths, input_lengths, blank)
    gamma = occupancy(alpha + beta - e, log_p.view(1, -1, 1))
    return log_p, gamma
