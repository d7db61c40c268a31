"""gradcheck / gradgradcheck in float64, and bitwise determinism of repeated backward passes."""
import pytest
import torch
from helpers import ctc_batch, pack_rows, pack_transducer, ssnt_batch, transducer_batch
from torch.autograd import gradcheck, gradgradcheck

import seqloss


def _ctc_case(loss):
    x, targets, il, tl = ctc_batch(1, 6, 2, 4, 2, normalised=False)
    return lambda v: loss(v, targets, il, tl, reduction="mean"), (x.requires_grad_(),)


def _transducer_case(loss, packed=False, **kwargs):
    logits, targets, ll, tl = transducer_batch(2, 2, 4, 2, 4)
    if packed:
        logits = pack_transducer(logits, ll, tl)
    return lambda v: loss(v, targets, ll, tl, blank=0, reduction="mean", **kwargs), (logits.requires_grad_(),)


def _ssnt_case(packed=False, fixed_choose=False):
    lp, tg, ch, sl, tl = ssnt_batch(3, 2, 2, 4, 3)
    if packed:
        lp, tg, ch = pack_rows(lp, tl), pack_rows(tg, tl), pack_rows(ch, tl)
    if fixed_choose:  # only the token log-probs are differentiated (the choose scores are data)
        return lambda a: seqloss.ssnt_loss(a, tg, ch, sl, tl, reduction="sum"), (lp.requires_grad_(),)
    return lambda a, b: seqloss.ssnt_loss(a, tg, b, sl, tl, reduction="sum"), (lp.requires_grad_(), ch.requires_grad_())


CASES = {
    "ctc": lambda: _ctc_case(seqloss.ctc_loss),
    "simple_ctc": lambda: _ctc_case(seqloss.simple_ctc_loss),
    "rnnt": lambda: _transducer_case(seqloss.rnnt_loss),
    "rnnt_packed": lambda: _transducer_case(seqloss.rnnt_loss, packed=True),
    "rnnt_log_probs": lambda: _transducer_case(seqloss.rnnt_loss, fused_log_softmax=False),
    "modified": lambda: _transducer_case(seqloss.modified_rnnt_loss),
    "modified_no_final_blank": lambda: _transducer_case(seqloss.modified_rnnt_loss, final_blank=False),
    "ssnt": lambda: _ssnt_case(),
    "ssnt_packed": lambda: _ssnt_case(packed=True),
    "ssnt_fixed_choose": lambda: _ssnt_case(fixed_choose=True),
}


@pytest.mark.parametrize("case", CASES)
def test_gradcheck(case):
    fn, inputs = CASES[case]()
    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("case", CASES)
def test_gradgradcheck(case):
    fn, inputs = CASES[case]()
    assert gradgradcheck(fn, inputs)


def test_clamped_rnnt_double_backward_is_consistent():
    """With clamp, backward(create_graph=True) gives the same first gradient as the fast path."""
    logits, targets, ll, tl = transducer_batch(4, 2, 5, 3, 6)
    logits.requires_grad_()
    loss = seqloss.rnnt_loss(logits, targets, ll, tl, blank=0, clamp=0.05)
    (fast,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (graph,) = torch.autograd.grad(loss, logits, create_graph=True)
    torch.testing.assert_close(graph, fast)
    assert graph.requires_grad


@pytest.mark.parametrize("case", ["ctc", "simple_ctc", "rnnt", "rnnt_packed", "modified", "ssnt"])
def test_backward_is_bitwise_deterministic(case):
    fn, inputs = CASES[case]()
    inputs = [x.detach().float().requires_grad_() for x in inputs]
    first = torch.autograd.grad(fn(*inputs), inputs)
    for _ in range(3):
        again = torch.autograd.grad(fn(*inputs), inputs)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
