"""Random inputs for the seqloss tests (ragged batches, padded and packed layouts)."""
import torch


def ragged_lengths(gen, batch, max_len, min_len=0):
    """Random lengths in [min_len, max_len] with the maximum always present (so tensors are tight)."""
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=gen)
    lengths[torch.randint(0, batch, (1,), generator=gen)] = max_len
    return lengths


def transducer_batch(seed, batch, frames, labels, classes, dtype=torch.float64, blank=0, min_frames=1):
    """Dense logits (B, T, U+1, V), targets avoiding blank, ragged lengths."""
    gen = torch.Generator().manual_seed(seed)
    logit_lengths = ragged_lengths(gen, batch, frames, min_frames)
    target_lengths = ragged_lengths(gen, batch, labels)
    logits = torch.randn(batch, frames, labels + 1, classes, generator=gen, dtype=dtype)
    blank = blank % classes
    targets = torch.randint(0, classes - 1, (batch, labels), generator=gen)
    targets = targets + (targets >= blank).long()  # skip the blank id
    return logits, targets.int(), logit_lengths.int(), target_lengths.int()


def pack_transducer(logits, logit_lengths, target_lengths):
    """Dense (B, T, U+1, V) -> packed (sum_b T_b (U_b+1), V), rows b, t, u."""
    return torch.cat([logits[b, : logit_lengths[b], : target_lengths[b] + 1].reshape(-1, logits.shape[-1])
                      for b in range(logits.shape[0])])


def ctc_batch(seed, frames, batch, classes, labels, dtype=torch.float64, normalised=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, batch, classes, generator=gen, dtype=dtype)
    if normalised:
        x = x.log_softmax(-1)
    input_lengths = ragged_lengths(gen, batch, frames, 1)
    target_lengths = torch.minimum(ragged_lengths(gen, batch, labels), input_lengths // 2)  # feasible with repeats
    targets = torch.randint(1, classes, (batch, labels), generator=gen)
    return x, targets, input_lengths, target_lengths


def ssnt_batch(seed, batch, targets_max, frames, classes, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(batch, targets_max, frames, classes, generator=gen, dtype=dtype).log_softmax(-1)
    log_p_choose = torch.nn.functional.logsigmoid(torch.randn(batch, targets_max, frames, generator=gen, dtype=dtype))
    targets = torch.randint(0, classes, (batch, targets_max), generator=gen)
    source_lengths = ragged_lengths(gen, batch, frames, 1)
    target_lengths = ragged_lengths(gen, batch, targets_max)
    return log_probs, targets, log_p_choose, source_lengths, target_lengths


def pack_rows(x, lengths):
    """Padded (B, J, ...) -> packed (sum_b J_b, ...)."""
    return torch.cat([x[b, : lengths[b]] for b in range(x.shape[0])])
