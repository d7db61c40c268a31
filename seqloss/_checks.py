"""Argument checking shared by every loss: clear errors that name the argument.

Checks of tensor *values* (lengths within bounds, target ids within the vocabulary) need the data
on the host; they are skipped while ``torch.compile`` traces, where they would break the graph.
"""
from collections.abc import Sequence

import torch

REDUCTIONS = ("none", "mean", "sum")


def tracing() -> bool:
    return torch.compiler.is_compiling()


def check_reduction(reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_not_meta(name: str, x: torch.Tensor) -> None:
    """Meta tensors carry shapes but no values; the losses need the values (lengths, scores)."""
    if x.device.type == "meta" and not tracing():
        raise ValueError(f"{name} is on the meta device (it has a shape but no values); pass a tensor with data")


def check_scores(name: str, x, ndims: Sequence[int]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    _check_not_meta(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), got {x.dtype}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {tuple(x.shape)}")


def invalid_utterances(batch_dim: int, *scores: torch.Tensor) -> torch.Tensor:
    """(B,) bool: utterances with a NaN or +inf among `scores` (each already -inf outside its utterance).

    -inf is a valid score (an impossible event); NaN and +inf are not, and make the utterance's
    loss NaN on every backend (:func:`poison`). Runs on the small gathered scores, never over V.
    """
    bad = None
    for x in scores:
        flag = (torch.isnan(x) | torch.isposinf(x)).movedim(batch_dim, 0).reshape(x.shape[batch_dim], -1).any(1)
        bad = flag if bad is None else bad | flag
    return bad


def poison(bad: torch.Tensor, x: torch.Tensor, batch_dim: int = 0) -> torch.Tensor:
    """x with NaN in every entry of the utterances flagged in `bad` (B,) along `batch_dim`."""
    shape = [1] * x.dim()
    shape[batch_dim] = -1
    return torch.where(bad.view(shape), float("nan"), x)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Arithmetic dtype: float64 stays float64, everything else runs in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def as_index_tensor(name: str, value, device) -> torch.Tensor:
    """Lengths or targets given as a tensor, a sequence or an int -> int64 tensor on `device`."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (int32 or int64), got {value.dtype}")
        _check_not_meta(name, value)
        return value.to(device=device, dtype=torch.long)
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.long, device=device)
    if isinstance(value, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return torch.tensor(list(value), dtype=torch.long, device=device)
    raise TypeError(f"{name} must be an integer tensor or a sequence of ints, got {type(value).__name__}")


def check_lengths(name: str, lengths: torch.Tensor, batch: int, upper: int | None, upper_name: str) -> None:
    """lengths: shape (batch,), 0 <= lengths[b] <= upper."""
    if lengths.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one length per utterance), got {tuple(lengths.shape)}")
    if tracing():
        return
    if batch and int(lengths.min()) < 0:
        raise ValueError(f"{name} must be non-negative, got min {int(lengths.min())}")
    if upper is not None and batch and int(lengths.max()) > upper:
        raise ValueError(f"{name} must be <= {upper} ({upper_name}), got max {int(lengths.max())}")


def check_batch(name: str, batch: int) -> None:
    if batch == 0:
        raise ValueError(f"{name} has an empty batch (size 0)")


def check_target_values(targets: torch.Tensor, lengths: torch.Tensor, num_classes: int, blank: int | None) -> None:
    """Within each utterance's length: 0 <= id < num_classes, and id != blank when blank is given."""
    if tracing() or targets.numel() == 0:
        return
    valid = torch.arange(targets.shape[1], device=targets.device) < lengths.unsqueeze(1)
    ids = targets[valid]
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"targets must be in [0, {num_classes}) within target_lengths, got values in [{low}, {high}]")
    if blank is not None and bool((ids == blank).any()):
        raise ValueError(f"targets must not contain the blank id {blank} within target_lengths")


def resolve_blank(blank, num_classes: int) -> int:
    if not isinstance(blank, int) or isinstance(blank, bool):
        raise TypeError(f"blank must be an int, got {type(blank).__name__}")
    resolved = blank + num_classes if blank < 0 else blank
    if not 0 <= resolved < num_classes:
        raise ValueError(f"blank must be in [-{num_classes}, {num_classes}) for {num_classes} classes, got {blank}")
    return resolved


def reduce(losses: torch.Tensor, reduction: str, divisor: torch.Tensor | None = None) -> torch.Tensor:
    """'none' -> per-utterance vector; 'sum'; 'mean' -> mean of losses / divisor (divisor optional)."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if divisor is not None:
        losses = losses / divisor.clamp(min=1).to(losses.dtype)
    return losses.mean()


def output_dtype(x: torch.Tensor) -> torch.dtype:
    """The loss dtype: the input's, float32 for half types."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def recompute_grads(loss_fn, inputs: Sequence[torch.Tensor], grad_losses: torch.Tensor):
    """Gradients of sum_b grad_losses[b] * loss_fn(*inputs)[b], with a graph for double backward.

    The fast path computes gradients from lattice occupancies; when backward itself must be
    differentiable (create_graph=True), the forward recursion is re-run under autograd instead.
    """
    with torch.enable_grad():
        losses = loss_fn(*inputs)
        return torch.autograd.grad(losses, list(inputs), grad_losses, create_graph=True, allow_unused=True)
