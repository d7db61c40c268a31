"""Extreme scores, -inf entries, half precision, infeasible utterances, SSNT without a floor."""
import pytest
import torch
from brute_force import ssnt_logp
from helpers import ctc_batch, ssnt_batch, transducer_batch

import seqloss


def _grad(fn, *xs):
    xs = [x.detach().clone().requires_grad_() for x in xs]
    loss = fn(*xs)
    return loss.detach(), torch.autograd.grad(loss.sum(), xs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scores_of_magnitude_1e10(dtype):
    x, targets, il, tl = ctc_batch(0, 20, 3, 5, 4, dtype=dtype, normalised=False)
    x = x * 1e10
    for loss in (seqloss.ctc_loss, seqloss.simple_ctc_loss):
        value, (grad,) = _grad(lambda v: loss(v.log_softmax(-1), targets, il, tl, reduction="none"), x)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()
        # the loss of the best path, in units of 1e10, is what float64 computes at normal scale
        reference = loss((x.double() / 1e10 * 1e10).log_softmax(-1), targets, il, tl, reduction="none")
        torch.testing.assert_close(value.double(), reference, rtol=1e-6, atol=1.0)
    logits, targets, ll, tl = transducer_batch(1, 3, 10, 4, 6, dtype=dtype)
    logits = logits * 1e10
    for loss in (seqloss.rnnt_loss, seqloss.modified_rnnt_loss):
        value, (grad,) = _grad(lambda v: loss(v, targets, ll, tl, blank=0, reduction="none"), logits)
        assert torch.isfinite(grad).all() and not torch.isnan(value).any()
        assert (grad.abs() <= 1 + 1e-6).all()  # posterior differences are bounded by 1


def test_minus_inf_on_classes_no_path_needs():
    x, targets, il, tl = ctc_batch(2, 15, 3, 6, 4, dtype=torch.float64)
    targets = targets.clamp(max=3)
    masked = x.clone()
    masked[:, :, 4:] = float("-inf")  # classes 4 and 5 are never in the targets
    value, (grad,) = _grad(lambda v: seqloss.ctc_loss(v, targets, il, tl, reduction="none"), masked)
    finite = torch.where(torch.isinf(masked), -1e30, masked)
    torch.testing.assert_close(value, seqloss.ctc_loss(finite, targets, il, tl, reduction="none"))
    assert torch.isfinite(grad).all() and (grad[:, :, 4:] == 0).all()
    logits, targets, ll, tl = transducer_batch(3, 3, 8, 3, 6, dtype=torch.float64)
    targets = targets.clamp(max=3)
    logits[..., 4:] = float("-inf")
    for fused in (True, False):
        value, (grad,) = _grad(lambda v: seqloss.rnnt_loss(v, targets, ll, tl, blank=0, reduction="none",
                                                           fused_log_softmax=fused), logits)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all() and (grad[..., 4:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    """Half inputs: float32 loss computed in float32, gradient in the input dtype."""
    tolerance = 1e-2 if dtype == torch.float16 else 5e-2
    x, targets, il, tl = ctc_batch(4, 30, 3, 8, 6, dtype=torch.float32)
    half = x.to(dtype)
    for loss in (seqloss.ctc_loss, seqloss.simple_ctc_loss):
        value, (grad,) = _grad(lambda v: loss(v, targets, il, tl, reduction="none"), half)
        assert value.dtype == torch.float32 and grad.dtype == dtype
        ref, (ref_grad,) = _grad(lambda v: loss(v, targets, il, tl, reduction="none"), half.float())
        torch.testing.assert_close(value, ref)  # same float32 arithmetic on the same (rounded) values
        torch.testing.assert_close(grad.float(), ref_grad, atol=tolerance, rtol=tolerance)
    logits, targets, ll, tl = transducer_batch(5, 3, 12, 4, 10, dtype=torch.float32)
    for loss in (seqloss.rnnt_loss, seqloss.modified_rnnt_loss):
        value, (grad,) = _grad(lambda v: loss(v, targets, ll, tl, blank=0), logits.to(dtype))
        ref, (ref_grad,) = _grad(lambda v: loss(v, targets, ll, tl, blank=0), logits.to(dtype).float())
        assert value.dtype == torch.float32 and grad.dtype == dtype
        torch.testing.assert_close(value, ref)
        torch.testing.assert_close(grad.float(), ref_grad, atol=tolerance, rtol=tolerance)
    lp, tg, ch, sl, tlen = ssnt_batch(6, 2, 3, 5, 4, dtype=torch.float32)
    value, grads = _grad(lambda a, b: seqloss.ssnt_loss(a, tg, b, sl, tlen), lp.to(dtype), ch.to(dtype))
    assert value.dtype == torch.float32 and all(g.dtype == dtype for g in grads)


def test_infeasible_utterances_do_not_disturb_the_batch():
    logits, targets, ll, tl = transducer_batch(8, 3, 4, 5, 7, dtype=torch.float64)
    ll, tl = torch.tensor([4, 2, 4]), torch.tensor([2, 5, 3])  # utterance 1: 5 symbols cannot fit in 2 frames
    value, (grad,) = _grad(lambda v: seqloss.modified_rnnt_loss(v, targets, ll, tl, blank=0, reduction="none"), logits)
    assert torch.isinf(value[1]) and value[1] > 0 and torch.isfinite(value[[0, 2]]).all()
    assert torch.isfinite(grad).all() and grad[1].abs().sum() == 0
    alone = seqloss.modified_rnnt_loss(logits[[0, 2]], targets[[0, 2]], ll[[0, 2]], tl[[0, 2]], blank=0,
                                       reduction="none")
    torch.testing.assert_close(value[[0, 2]], alone)
    x, tg, il, tlc = ctc_batch(9, 10, 3, 5, 8, dtype=torch.float64)
    il, tlc = il.clone(), tlc.clone()
    il[0], tlc[0] = 3, 6
    for loss in (seqloss.ctc_loss, seqloss.simple_ctc_loss):
        assert torch.isinf(loss(x, tg, il, tlc, reduction="none")[0])
        value, (grad,) = _grad(lambda v: loss(v, tg, il, tlc, reduction="sum", zero_infinity=True), x)
        assert torch.isfinite(value) and grad[:, 0].abs().sum() == 0


def test_ssnt_reference_vector():
    """docs/design.md §3.5: the seed ssnt-loss values, reproduced."""
    log_probs = torch.sin(torch.arange(36.0)).reshape(2, 2, 3, 3).log_softmax(-1)
    log_p_choose = torch.nn.functional.logsigmoid(torch.cos(torch.arange(12.0)).reshape(2, 2, 3))
    targets = torch.tensor([[1, 2], [2, 0]])
    losses = seqloss.ssnt_loss(log_probs, targets, log_p_choose, torch.tensor([3, 2]), torch.tensor([2, 1]),
                               reduction="none")
    torch.testing.assert_close(losses, torch.tensor([4.3494873, 3.8322430]), rtol=0, atol=1e-6)
    mean = seqloss.ssnt_loss(log_probs, targets, log_p_choose, torch.tensor([3, 2]), torch.tensor([2, 1]))
    torch.testing.assert_close(mean, losses.mean())


def test_ssnt_has_no_floor():
    """The seed floors log P at -1e4 (loss 1e4, zero gradient); ours returns the true loss and a gradient."""
    lp, tg, ch, sl, tl = ssnt_batch(7, 1, 3, 6, 5, dtype=torch.float64)
    lp = lp.clone()
    lp[0, :, :, tg[0, 0]] = -5000.0  # the first target token is nearly impossible everywhere
    (value, (g_lp, g_ch)) = _grad(lambda a, b: seqloss.ssnt_loss(a, tg, b, sl, tl, reduction="none"), lp, ch)
    reference = -ssnt_logp(lp[0, : tl[0], : sl[0]], tg[0, : tl[0]].tolist(), ch[0, : tl[0], : sl[0]])
    assert value[0] > 1e4  # the seed would report exactly 1e4 here
    torch.testing.assert_close(value[0], reference.detach())
    assert g_lp.abs().sum() > 0 and g_ch.abs().sum() > 0 and torch.isfinite(g_lp).all()


def test_ssnt_empty_target():
    lp, tg, ch, _, _ = ssnt_batch(8, 2, 2, 3, 4)
    losses = seqloss.ssnt_loss(lp, tg, ch, torch.tensor([1, 3]), torch.tensor([0, 0]), reduction="none")
    assert losses[0] == 0 and torch.isinf(losses[1])
