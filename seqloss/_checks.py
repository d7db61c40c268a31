"""Argument checking shared by every loss: clear errors that name the argument.

The ``prepare_*`` functions check the whole argument list of one loss family (CTC, transducer,
SSNT) and return it normalised (int64 index tensors, a resolved blank id, padded targets); the
losses, their scores (``seqloss.scores``) and their alignments (``seqloss.align``) all start there.
Checks of tensor *values* (lengths within bounds, target ids within the vocabulary) need the data
on the host; they are skipped while ``torch.compile`` traces, where they would break the graph.
"""
from collections.abc import Sequence

import torch

from .packing import packed_offsets

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
    Inputs that do not require grad (e.g. a fixed SSNT choose tensor) get None.
    """
    with torch.enable_grad():
        losses = loss_fn(*inputs)
        wanted = [x for x in inputs if x.requires_grad]
        grads = iter(torch.autograd.grad(losses, wanted, grad_losses, create_graph=True, allow_unused=True))
        return tuple(next(grads) if x.requires_grad else None for x in inputs)


def prepare_ctc(log_probs, targets, input_lengths, target_lengths, blank, reduction):
    """Check a ctc_loss call; return (log_probs (T,B,V), padded targets (B,L), lengths, blank, unbatched).

    Concatenated 1-D targets are padded; padding (past target_lengths) is set to the blank id so that
    it never reaches a gather out of range.
    """
    check_reduction(reduction)
    check_scores("log_probs", log_probs, (2, 3))
    unbatched = log_probs.dim() == 2
    device = log_probs.device
    targets = as_index_tensor("targets", targets, device)
    input_lengths = as_index_tensor("input_lengths", input_lengths, device)
    target_lengths = as_index_tensor("target_lengths", target_lengths, device)
    if unbatched:
        if targets.dim() != 1:
            raise ValueError(f"targets must be 1-D for unbatched (T, C) log_probs, got shape {tuple(targets.shape)}")
        log_probs, targets = log_probs.unsqueeze(1), targets.unsqueeze(0)
        input_lengths, target_lengths = input_lengths.reshape(1), target_lengths.reshape(1)
    num_frames, batch, num_classes = log_probs.shape
    check_batch("log_probs", batch)
    blank = resolve_blank(blank, num_classes)
    check_lengths("input_lengths", input_lengths, batch, num_frames, "log_probs.shape[0]")
    if targets.dim() == 1:  # concatenated targets
        check_lengths("target_lengths", target_lengths, batch, None, "")
        if not tracing() and int(target_lengths.sum()) != targets.numel():
            raise ValueError(f"concatenated targets must have sum(target_lengths) = {int(target_lengths.sum())} "
                             f"elements, got {targets.numel()}")
        max_len = int(target_lengths.max()) if batch else 0
        position = torch.arange(max_len, device=device)
        valid = position < target_lengths.unsqueeze(1)
        index = torch.where(valid, packed_offsets(target_lengths).unsqueeze(1) + position, 0)
        targets = torch.where(valid, targets[index] if targets.numel() else torch.zeros_like(index), 0)
    elif targets.dim() == 2:
        if targets.shape[0] != batch:
            raise ValueError(f"targets must have batch size {batch} (log_probs.shape[1]), got {targets.shape[0]}")
        check_lengths("target_lengths", target_lengths, batch, targets.shape[1], "targets.shape[1]")
    else:
        raise ValueError(f"targets must be 2-D (padded) or 1-D (concatenated), got shape {tuple(targets.shape)}")
    check_target_values(targets, target_lengths, num_classes, blank)
    valid = torch.arange(targets.shape[1], device=device) < target_lengths.unsqueeze(1)
    targets = torch.where(valid, targets, blank)  # padding never reaches a gather out of range
    return log_probs, targets, input_lengths, target_lengths, blank, unbatched


def prepare_transducer(logits, targets, logit_lengths, target_lengths, blank, clamp, reduction):
    """Check an rnnt_loss call (dense or packed logits); return (targets, logit_lengths, target_lengths, blank).

    Target padding (past target_lengths) is replaced by a valid non-blank id, so that gathers stay in range.
    """
    check_reduction(reduction)
    check_scores("logits", logits, (2, 4))
    device = logits.device
    targets = as_index_tensor("targets", targets, device)
    logit_lengths = as_index_tensor("logit_lengths", logit_lengths, device)
    target_lengths = as_index_tensor("target_lengths", target_lengths, device)
    if targets.dim() != 2:
        raise ValueError(f"targets must be 2-D (B, U), got shape {tuple(targets.shape)}")
    batch, num_classes = targets.shape[0], logits.shape[-1]
    check_batch("targets", batch)
    if not isinstance(clamp, (int, float)) or isinstance(clamp, bool):
        raise TypeError(f"clamp must be a number (<= 0 disables clamping), got {type(clamp).__name__}")
    blank = resolve_blank(blank, num_classes)
    if logits.dim() == 4:
        if logits.shape[0] != batch:
            raise ValueError(f"logits must have batch size {batch} (targets.shape[0]), got {logits.shape[0]}")
        check_lengths("logit_lengths", logit_lengths, batch, logits.shape[1], "logits.shape[1]")
        check_lengths("target_lengths", target_lengths, batch, min(targets.shape[1], logits.shape[2] - 1),
                      "min(targets.shape[1], logits.shape[2] - 1)")
    else:
        check_lengths("logit_lengths", logit_lengths, batch, None, "")
        check_lengths("target_lengths", target_lengths, batch, targets.shape[1], "targets.shape[1]")
        if not tracing():
            rows = int((logit_lengths * (target_lengths + 1)).sum())
            if rows != logits.shape[0]:
                raise ValueError(f"packed logits must have sum_b logit_lengths[b] * (target_lengths[b] + 1) = {rows} "
                                 f"rows, got {logits.shape[0]}")
    if not tracing() and bool((logit_lengths == 0).any()):
        raise ValueError("logit_lengths must be >= 1 for transducer losses (an utterance needs a frame)")
    check_target_values(targets, target_lengths, num_classes, blank)
    valid = torch.arange(targets.shape[1], device=device) < target_lengths.unsqueeze(1)
    targets = torch.where(valid, targets, 0 if blank != 0 else min(1, num_classes - 1))
    return targets, logit_lengths, target_lengths, blank


def check_ssnt_lengths(name, scores, frames_dim, source_lengths, target_lengths, *, packed: bool) -> None:
    """Lengths against padded (B, J, S, ...) or packed (sum_b J_b, S, ...) SSNT scores; S is dim `frames_dim`."""
    batch = source_lengths.shape[0] if packed else scores.shape[0]
    check_batch("source_lengths" if packed else name, batch)
    check_lengths("source_lengths", source_lengths, batch, scores.shape[frames_dim], f"{name}.shape[{frames_dim}]")
    if packed:
        check_lengths("target_lengths", target_lengths, batch, None, "")
        if not tracing() and int(target_lengths.sum()) != scores.shape[0]:
            raise ValueError(f"packed {name} must have sum(target_lengths) = {int(target_lengths.sum())} rows, "
                             f"got {scores.shape[0]}")
    else:
        check_lengths("target_lengths", target_lengths, batch, scores.shape[1], f"{name}.shape[1]")


def prepare_ssnt(log_probs, targets, log_p_choose, source_lengths, target_lengths, reduction):
    """Check an ssnt_loss call (padded or packed); return (targets, source_lengths, target_lengths, packed)."""
    check_reduction(reduction)
    check_scores("log_probs", log_probs, (3, 4))
    check_scores("log_p_choose", log_p_choose, (2, 3))
    packed = log_probs.dim() == 3
    device = log_probs.device
    targets = as_index_tensor("targets", targets, device)
    source_lengths = as_index_tensor("source_lengths", source_lengths, device)
    target_lengths = as_index_tensor("target_lengths", target_lengths, device)
    num_classes = log_probs.shape[-1]
    if log_p_choose.shape != log_probs.shape[:-1]:
        raise ValueError(f"log_p_choose must have shape {tuple(log_probs.shape[:-1])} (log_probs without V), "
                         f"got {tuple(log_p_choose.shape)}")
    if targets.shape != log_probs.shape[:-2]:
        raise ValueError(f"targets must have shape {tuple(log_probs.shape[:-2])} "
                         f"({'sum_b J_b' if packed else '(B, J)'} from log_probs), got {tuple(targets.shape)}")
    check_ssnt_lengths("log_probs", log_probs, log_probs.dim() - 2, source_lengths, target_lengths, packed=packed)
    if packed:
        check_target_values(targets.unsqueeze(0), target_lengths.sum().view(1), num_classes, None)
    else:
        check_target_values(targets, target_lengths, num_classes, None)
        valid = torch.arange(targets.shape[1], device=device) < target_lengths.unsqueeze(1)
        targets = torch.where(valid, targets, 0)
    return targets, source_lengths, target_lengths, packed
