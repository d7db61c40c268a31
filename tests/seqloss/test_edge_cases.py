"""Edge cases on which the native and torch backends must agree (CPU): no frames, NaN or +inf
scores, the blank id among CTC targets, and lengths on the meta device."""
import math

import pytest
import torch
from helpers import ctc_batch, ssnt_batch, transducer_batch

import seqloss
from seqloss import _ops

BACKENDS = ["native", "torch"] if _ops.CPU_AVAILABLE else ["torch"]
CTC_LOSSES = {"ctc": seqloss.ctc_loss, "simple_ctc": seqloss.simple_ctc_loss}
CTC_ALIGNS = {"ctc": seqloss.ctc_align, "simple_ctc": seqloss.simple_ctc_align}


def _loss_and_grad(fn, inputs):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    losses = fn(*leaves)
    grads = torch.autograd.grad(torch.where(torch.isinf(losses), 0.0, losses).sum(), leaves)
    return losses.detach(), grads


# ------------------------------------------------------------------------------------ no frames
@pytest.mark.parametrize("kind", list(CTC_LOSSES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctc_without_frames(kind, backend):
    """T = 0: loss 0 for an empty target, +inf otherwise; a zero-size gradient; alignments of length 0."""
    x = torch.randn(0, 3, 5, dtype=torch.float64)
    targets, input_lengths, target_lengths = torch.tensor([[1, 2], [3, 3], [0, 0]]), torch.zeros(3, dtype=torch.long), \
        torch.tensor([2, 1, 0])
    losses, (grad,) = _loss_and_grad(lambda v: CTC_LOSSES[kind](v, targets, input_lengths, target_lengths,
                                                                reduction="none", backend=backend), [x])
    assert losses.tolist() == [math.inf, math.inf, 0.0] and grad.shape == x.shape
    assert CTC_LOSSES[kind](x, targets, input_lengths, target_lengths, zero_infinity=True, backend=backend) == 0
    alignment = CTC_ALIGNS[kind](x, targets, input_lengths, target_lengths, backend=backend)
    assert alignment.labels.shape == (3, 0) and (alignment.token_frames == -1).all()
    assert alignment.scores.tolist() == [-math.inf, -math.inf, 0.0]


@pytest.mark.parametrize("kind", list(CTC_LOSSES))
def test_ctc_utterance_without_frames_in_a_batch(kind):
    """input_lengths[b] = 0 next to longer utterances: same losses, gradients and best paths on both backends."""
    x, targets, _, _ = ctc_batch(4, 7, 3, 5, 2)
    input_lengths, target_lengths = torch.tensor([0, 0, 7]), torch.tensor([2, 0, 2])
    results = [_loss_and_grad(lambda v, b=b: CTC_LOSSES[kind](v, targets, input_lengths, target_lengths,
                                                              reduction="none", backend=b), [x]) for b in BACKENDS]
    assert results[0][0][:2].tolist() == [math.inf, 0.0] and math.isfinite(results[0][0][2])
    aligns = [CTC_ALIGNS[kind](x, targets, input_lengths, target_lengths, backend=b) for b in BACKENDS]
    assert aligns[0].scores[1].item() == 0.0
    for (loss, grads), alignment in zip(results[1:], aligns[1:]):
        torch.testing.assert_close(loss, results[0][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(grads[0], results[0][1][0], rtol=1e-12, atol=1e-12)
        for got, expected in zip(alignment, aligns[0]):
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- NaN and +inf in
def _ctc_case(simple):
    x, targets, input_lengths, target_lengths = ctc_batch(5, 9, 3, 6, 3)
    input_lengths, target_lengths = torch.tensor([9, 8, 6]), torch.tensor([3, 2, 2])
    loss = seqloss.simple_ctc_loss if simple else seqloss.ctc_loss

    def poison(x, value):
        x[4, 0, targets[0, 1]] = value  # a target's score on a valid frame of utterance 0
        x[7, 2, 0] = value              # utterance 2 has 6 frames: frame 7 is padding, ignored
        return x
    return [x], poison, lambda v, backend: loss(v, targets, input_lengths, target_lengths, reduction="none",
                                                 backend=backend), 1


def _transducer_case(modified, fused=True):
    logits, targets, logit_lengths, target_lengths = transducer_batch(6, 3, 6, 3, 7)
    logit_lengths, target_lengths = torch.tensor([6, 5, 4]), torch.tensor([3, 2, 1])
    loss = seqloss.modified_rnnt_loss if modified else seqloss.rnnt_loss

    def poison(x, value):
        # fused: any class of a valid row; otherwise the blank score of a valid cell
        x[0, 2, 1, 5 if fused else 0] = value
        x[2, 5, 0, 0] = value  # utterance 2 has 4 frames: frame 5 is padding, ignored
        return x
    return [logits], poison, lambda v, backend: loss(v, targets, logit_lengths, target_lengths, blank=0,
                                                      reduction="none", fused_log_softmax=fused, backend=backend), 0


def _ssnt_case(where):
    log_probs, targets, choose, source_lengths, target_lengths = ssnt_batch(7, 3, 3, 6, 5)
    source_lengths, target_lengths = torch.tensor([6, 5, 4]), torch.tensor([3, 2, 2])

    def poison(x, value):
        if where == "choose":
            x[1][0, 1, 2] = value if not value > 0 else 0.5  # +inf choose: tested as a log-prob > 0
            x[1][2, 2, 0] = value  # target position 2 of utterance 2 is padding
        else:
            x[0][0, 1, 2, targets[0, 1]] = value
            x[0][2, 0, 5] = value  # frame 5 of utterance 2 is padding
        return x
    return [log_probs, choose], poison, lambda lp, ch, backend: seqloss.ssnt_loss(
        lp, targets, ch, source_lengths, target_lengths, reduction="none", backend=backend), 0


CASES = {
    "ctc": lambda: _ctc_case(False), "simple_ctc": lambda: _ctc_case(True),
    "rnnt": lambda: _transducer_case(False), "rnnt_unfused": lambda: _transducer_case(False, fused=False),
    "modified_rnnt": lambda: _transducer_case(True), "ssnt": lambda: _ssnt_case("token"),
    "ssnt_choose": lambda: _ssnt_case("choose"),
}


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "posinf"])
@pytest.mark.parametrize("case", list(CASES))
def test_nan_or_posinf_in_gives_nan_out_on_both_backends(case, value):
    """Utterance 0 gets a bad score inside its lengths (NaN loss and gradient), utterance 2 one in
    its padding (ignored: finite loss), utterance 1 none; both backends give the same results."""
    inputs, poison, loss_fn, batch_dim = CASES[case]()
    inputs = poison([x.clone() for x in inputs] if len(inputs) > 1 else inputs[0].clone(), value)
    inputs = inputs if isinstance(inputs, list) else [inputs]
    results = []
    for backend in BACKENDS:
        leaves = [x.detach().clone().requires_grad_() for x in inputs]
        losses = loss_fn(*leaves, backend=backend)
        grads = [g.movedim(batch_dim, 0) for g in torch.autograd.grad(losses.sum(), leaves)]
        assert torch.isnan(losses[0]) and torch.isfinite(losses[1:]).all(), (backend, losses)
        assert any(torch.isnan(g[0]).any() for g in grads)  # the poisoned utterance's gradient
        assert all(torch.isfinite(g[1]).all() for g in grads)  # an untouched utterance's
        results.append((losses, grads))
    for losses, grads in results[1:]:
        torch.testing.assert_close(losses, results[0][0], rtol=1e-9, atol=1e-9, equal_nan=True)
        for g, expected in zip(grads, results[0][1]):
            torch.testing.assert_close(g, expected, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_negative_infinity_is_a_valid_score():
    """-inf on a class no path needs changes nothing; on one every path needs, the loss is +inf (not NaN)."""
    x, targets, input_lengths, target_lengths = ctc_batch(8, 6, 2, 5, 2)
    input_lengths, target_lengths = torch.tensor([6, 6]), torch.tensor([1, 1])
    targets[:, 0] = torch.tensor([1, 2])
    x[:, 0, 4] = -math.inf
    x[:, 1, 2] = -math.inf  # utterance 1's only label is impossible
    for backend in BACKENDS:
        losses = seqloss.ctc_loss(x, targets, input_lengths, target_lengths, reduction="none", backend=backend)
        assert math.isfinite(losses[0]) and losses[1].item() == math.inf


# --------------------------------------------------------------------------- blank in targets
@pytest.mark.parametrize("kind", list(CTC_LOSSES))
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_ctc_targets_containing_blank_are_rejected(kind, layout):
    x, _, _, _ = ctc_batch(9, 8, 2, 5, 3)
    targets, input_lengths, target_lengths = torch.tensor([[1, 3, 0], [2, 0, 0]]), torch.tensor([8, 8]), \
        torch.tensor([2, 1])
    if layout == "concatenated":
        targets = torch.tensor([1, 3, 2])
    # blank only in the padding: accepted
    CTC_LOSSES[kind](x, targets, input_lengths, target_lengths)
    bad = targets.clone()
    bad[..., 1] = 0 if layout == "padded" else bad[1]
    if layout == "concatenated":
        bad[1] = 0
    with pytest.raises(ValueError, match=r"targets must not contain the blank id 0"):
        CTC_LOSSES[kind](x, bad, input_lengths, target_lengths)
    with pytest.raises(ValueError, match=r"targets.*blank id 4"):
        CTC_LOSSES[kind](x, torch.tensor([[1, 4], [2, 0]]), input_lengths, target_lengths, blank=-1)


# -------------------------------------------------------------------------------- meta device
def test_lengths_on_the_meta_device_are_rejected_by_name():
    x, targets, input_lengths, target_lengths = ctc_batch(0, 8, 2, 5, 3)
    with pytest.raises(ValueError, match="input_lengths is on the meta device"):
        seqloss.ctc_loss(x, targets, input_lengths.to("meta"), target_lengths)
    with pytest.raises(ValueError, match="target_lengths is on the meta device"):
        seqloss.ctc_align(x, targets, input_lengths, target_lengths.to("meta"))
    with pytest.raises(ValueError, match="log_probs is on the meta device"):
        seqloss.ctc_loss(x.to("meta"), targets, input_lengths, target_lengths)
    logits, rtargets, logit_lengths, rtarget_lengths = transducer_batch(0, 2, 4, 2, 5)
    with pytest.raises(ValueError, match="logit_lengths is on the meta device"):
        seqloss.rnnt_loss(logits, rtargets, logit_lengths.to("meta"), rtarget_lengths, blank=0)
    log_probs, stargets, choose, source_lengths, starget_lengths = ssnt_batch(0, 2, 2, 4, 3)
    with pytest.raises(ValueError, match="source_lengths is on the meta device"):
        seqloss.ssnt_loss(log_probs, stargets, choose, source_lengths.to("meta"), starget_lengths)
    with pytest.raises(ValueError, match="targets is on the meta device"):
        seqloss.ssnt_loss(log_probs, stargets.to("meta"), choose, source_lengths, starget_lengths)
