"""Ragged batches in one tensor: the packed layouts the losses accept and how they map to padded ones.

A *packed* tensor concatenates the utterances of a batch along its first dimension, without
padding; utterance b owns ``sizes[b]`` consecutive rows starting at ``offsets[b]``:

    offsets[b] = sizes[0] + ... + sizes[b-1]                       (packed_offsets)
    row r belongs to utterance b(r), at position p(r) = r - offsets[b(r)]   (packed_positions)

The layouts used by seqloss:

* transducer logits (rnnt_loss, modified_rnnt_loss): utterance b owns T_b (U_b+1) rows, ordered
  t, then u (the layout of optimized_transducer); row -> (b, t, u) is :func:`packed_cells`;
* SSNT scores (ssnt_loss, ssnt_loss_gathered): utterance b owns J_b rows, one per target position;
  :func:`packed_to_padded` turns them into the padded (B, max J_b, ...) tensor;
* concatenated CTC targets (ctc_loss): utterance b owns its L_b labels; :func:`packed_to_padded`
  gives the padded (B, max L_b) targets.

Sizes may be int tensors or sequences of ints; every index returned is int64 on the sizes' device.
Size tensors are not read back to the host (no device synchronisation) except where a result's
shape needs their sum or maximum.
"""
from collections.abc import Sequence

import torch

__all__ = ["packed_offsets", "packed_positions", "packed_cells", "packed_to_padded"]


def _sizes(name: str, value, device=None) -> torch.Tensor:
    """A (B,) int64 tensor of non-negative sizes from a tensor or a sequence of ints."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (int32 or int64), got {value.dtype}")
        tensor = value.to(device=device if device is not None else value.device, dtype=torch.long)
    elif isinstance(value, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        tensor = torch.tensor(list(value), dtype=torch.long, device=device)
    else:
        raise TypeError(f"{name} must be an integer tensor or a sequence of ints, got {type(value).__name__}")
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one size per utterance), got shape {tuple(tensor.shape)}")
    if not isinstance(value, torch.Tensor) and any(v < 0 for v in value):  # tensors: checked by the caller
        raise ValueError(f"{name} must be non-negative, got {list(value)}")
    return tensor


def packed_offsets(sizes) -> torch.Tensor:
    """First row of each utterance: offsets[b] = sum_{b' < b} sizes[b'] (the exclusive cumulative sum), (B,)."""
    sizes = _sizes("sizes", sizes)
    return torch.cumsum(sizes, 0) - sizes


def packed_positions(sizes, num_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(utterance, position) of every packed row: b(r) and p(r) = r - offsets[b(r)], each (sum_b sizes[b],).

    ``num_rows`` (= sum(sizes)) may be given to avoid reading the sum back from the device.
    """
    sizes = _sizes("sizes", sizes)
    if num_rows is None:
        num_rows = int(sizes.sum())
    device = sizes.device
    utterance = torch.repeat_interleave(torch.arange(sizes.shape[0], device=device), sizes, output_size=num_rows)
    position = torch.arange(num_rows, device=device) - (torch.cumsum(sizes, 0) - sizes)[utterance]
    return utterance, position


def packed_cells(logit_lengths, target_lengths, device=None, *, num_rows: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, t, u) of every row of packed transducer logits: utterance b owns T_b (U_b + 1) rows, t-major.

    Row r of ``seqloss.Joiner.packed(...)`` (and of packed ``rnnt_loss`` logits) is the lattice cell
    (t, u) of utterance b, with local = r - offsets[b], t = local // (U_b + 1), u = local % (U_b + 1).
    Each result is (sum_b T_b (U_b + 1),) int64 on ``device`` (default: the lengths' device);
    ``num_rows`` (that sum, e.g. the packed tensor's row count) saves reading it back from the device.
    """
    logit_lengths = _sizes("logit_lengths", logit_lengths, device)
    target_lengths = _sizes("target_lengths", target_lengths, logit_lengths.device)
    if target_lengths.shape != logit_lengths.shape:
        raise ValueError(f"target_lengths must have the shape of logit_lengths {tuple(logit_lengths.shape)}, "
                         f"got {tuple(target_lengths.shape)}")
    width = target_lengths + 1
    utterance, local = packed_positions(logit_lengths * width, num_rows)
    width = width[utterance]
    return utterance, local // width, local % width


def packed_to_padded(rows: torch.Tensor, sizes, max_size: int | None = None, fill=0.0) -> torch.Tensor:
    """Packed (sum_b sizes[b], ...) rows -> padded (B, max_size, ...), entries past sizes[b] set to ``fill``.

    ``max_size`` defaults to max(sizes).
    """
    sizes = _sizes("sizes", sizes, rows.device)
    if max_size is None:
        max_size = int(sizes.max()) if sizes.numel() else 0
    index = packed_positions(sizes, rows.shape[0])
    padded = rows.new_full((sizes.shape[0], max_size, *rows.shape[1:]), fill)
    return padded.index_put(index, rows)
