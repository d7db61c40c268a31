"""The opt-in `inplace_grad=True` of rnnt_loss / modified_rnnt_loss: the gradient written over the logits.

Reference: the same call without it (the same numbers, bit for bit: both run the same eager
chain-back expressions at these sizes).
"""
import pytest
import torch
from helpers import pack_transducer, transducer_batch

import seqloss
from seqloss import rnnt as rnnt_module

LOSSES = {"rnnt": seqloss.rnnt_loss, "modified_rnnt": seqloss.modified_rnnt_loss}


def _loss_and_grad(loss_fn, leaf, targets, logit_lengths, target_lengths, layout, **kwargs):
    leaf = leaf.detach().clone().requires_grad_()
    logits = leaf * 1.0  # an intermediate, as the joiner's output is
    if layout == "packed":
        logits = pack_transducer(logits, logit_lengths, target_lengths)
    loss = loss_fn(logits, targets, logit_lengths, target_lengths, blank=0, reduction="sum", **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad, logits.detach()


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("layout", ["dense", "packed"])
@pytest.mark.parametrize("fused_log_softmax", [True, False])
@pytest.mark.parametrize("clamp", [-1.0, 0.05])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_same_numbers_and_the_logits_hold_the_gradient(name, layout, fused_log_softmax, clamp, dtype, monkeypatch):
    monkeypatch.setattr(rnnt_module, "_INPLACE_CHUNK_ELEMENTS", 40)  # several chunks even at this size
    logits, targets, logit_lengths, target_lengths = transducer_batch(7, 3, 6, 3, 5, dtype=dtype, min_frames=4)
    kwargs = dict(fused_log_softmax=fused_log_softmax, clamp=clamp)
    loss, grad, _ = _loss_and_grad(LOSSES[name], logits, targets, logit_lengths, target_lengths, layout, **kwargs)
    loss_in, grad_in, overwritten = _loss_and_grad(LOSSES[name], logits, targets, logit_lengths, target_lengths,
                                                   layout, inplace_grad=True, **kwargs)
    assert torch.equal(loss_in, loss)
    assert torch.equal(grad_in, grad)
    expected_storage = grad if layout == "dense" else pack_transducer(grad, logit_lengths, target_lengths)
    assert torch.equal(overwritten, expected_storage)


def test_a_leaf_is_refused():
    logits, targets, logit_lengths, target_lengths = transducer_batch(1, 2, 4, 2, 4)
    with pytest.raises(ValueError, match="inplace_grad=True needs logits computed by an operation"):
        seqloss.rnnt_loss(logits.requires_grad_(), targets, logit_lengths, target_lengths, blank=0, inplace_grad=True)
    with pytest.raises(TypeError, match="inplace_grad must be a bool"):
        seqloss.rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=0, inplace_grad=1)
    with pytest.raises(ValueError, match="contiguous"):
        strided = (logits * 1).transpose(1, 2).contiguous().transpose(1, 2)  # the right shape, not contiguous
        seqloss.rnnt_loss(strided, targets, logit_lengths, target_lengths, blank=0, inplace_grad=True)


def test_a_second_backward_is_refused():
    leaf, targets, logit_lengths, target_lengths = transducer_batch(2, 2, 4, 2, 4)
    leaf.requires_grad_()
    loss = seqloss.rnnt_loss(leaf * 1.0, targets, logit_lengths, target_lengths, blank=0, inplace_grad=True)
    loss.backward(retain_graph=True)
    # the first backward overwrote the saved logits: autograd's version check refuses to reuse them
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
