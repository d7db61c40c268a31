"""Log-semiring helpers that stay NaN-free, in value and in first and second derivatives.

``log_add(-inf, -inf)`` must be ``-inf`` with a zero gradient: the usual ``max + log(sum exp)``
produces ``0 * inf = nan`` in backward there, and unreachable lattice cells are everywhere.
"""
import torch

NEG_INF = float("-inf")


def log_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(exp(a) + exp(b)) = max + log1p(exp(min - max)) elementwise; -inf when both are -inf."""
    high, low = torch.maximum(a, b), torch.minimum(a, b)
    finite = torch.isfinite(high)
    safe_high = torch.where(finite, high, torch.zeros_like(high))
    return torch.where(finite, safe_high + torch.log1p(torch.exp(low - safe_high)), high)


def log_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """log(sum(exp(x), dim)); -inf for an all -inf slice, with zero gradient there."""
    m = torch.amax(x, dim=dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(x - m).sum(dim=dim, keepdim=True)
    positive = s > 0
    out = torch.where(positive, m + torch.log(torch.where(positive, s, torch.ones_like(s))), NEG_INF)
    return out.squeeze(dim)


def occupancy(log_numerator: torch.Tensor, log_total: torch.Tensor) -> torch.Tensor:
    """exp(log_numerator - log_total): the posterior probability of an edge or state.

    A probability never exceeds 1, so the exponent is clamped at 0: in float32 with scores of
    magnitude 1e10 the sum alpha + score + beta - log P can round to a large positive number.
    Utterances with log_total = -inf (no path) get occupancy 0.
    """
    feasible = torch.isfinite(log_total)
    safe_total = torch.where(feasible, log_total, torch.zeros_like(log_total))
    exponent = (log_numerator - safe_total).clamp(max=0)
    return torch.where(feasible & torch.isfinite(log_numerator), torch.exp(exponent), torch.zeros_like(exponent))
