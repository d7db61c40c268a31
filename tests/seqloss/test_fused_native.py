"""The fused CPU ops of the native backend: the transducer loss (transducer_loss, transducer_loss_grad and
the in-place transducer_loss_grad_) and the CTC loss (ctc_loss, ctc_loss_grad).

* Padded cells cost nothing and are never read: garbage (NaN, +inf, huge values) in the padded rows of
  dense logits, or in CTC frames past input_lengths, changes neither loss nor gradient, and the
  gradient of those rows is exactly 0 on both backends, in place too (where the rows held garbage).
* The ops pass torch.library.opcheck (schemas, fake kernels, the in-place op's aliasing) and reject
  malformed direct calls with errors that name the argument.
* float16 / bfloat16 logits keep running through the generic path (the ops are float32/float64).
"""
import math

import pytest
import torch
from helpers import ctc_batch, pack_transducer, transducer_batch

import seqloss
from seqloss import _ops

pytestmark = pytest.mark.skipif(not (_ops.FUSED_TRANSDUCER and _ops.FUSED_CTC), reason="native kernels not built")
BACKENDS = ["native", "torch"]


def _ragged_transducer(dtype=torch.float64):
    logits, targets, _, _ = transducer_batch(21, 3, 7, 4, 6, dtype=dtype)
    return logits, targets.long(), torch.tensor([7, 5, 3]), torch.tensor([4, 2, 0])


def _fill_padding(logits, logit_lengths, target_lengths, value):
    """Dense logits with `value` in every row outside t < T_b, u <= U_b."""
    t = torch.arange(logits.shape[1]).view(1, -1, 1)
    u = torch.arange(logits.shape[2]).view(1, 1, -1)
    valid = (t < logit_lengths.view(-1, 1, 1)) & (u <= target_lengths.view(-1, 1, 1))
    return torch.where(valid.unsqueeze(-1), logits, value), valid


# ------------------------------------------------------------------------------------ padded cells
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e30], ids=["nan", "posinf", "neginf", "huge"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["rnnt", "modified"])
def test_transducer_padding_is_never_read_and_gets_zero_gradient(value, backend, variant):
    logits, targets, logit_lengths, target_lengths = _ragged_transducer()
    loss_fn = seqloss.rnnt_loss if variant == "rnnt" else seqloss.modified_rnnt_loss
    dirty, valid = _fill_padding(logits, logit_lengths, target_lengths, value)
    results = []
    for x in (logits, dirty):
        leaf = x.clone().requires_grad_()
        loss = loss_fn(leaf, targets, logit_lengths, target_lengths, blank=0, reduction="none", backend=backend)
        results.append((loss.detach(), torch.autograd.grad(loss.sum(), leaf)[0]))
    (clean_loss, clean_grad), (loss, grad) = results
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, clean_loss, rtol=0, atol=0)
    torch.testing.assert_close(grad, clean_grad, rtol=0, atol=0)
    assert (grad[~valid] == 0).all() and (grad[valid] != 0).any()


@pytest.mark.parametrize("fused_log_softmax", [True, False])
def test_inplace_gradient_zeroes_the_padded_rows_it_overwrites(fused_log_softmax):
    """The in-place op writes every row of the logits: padded rows that held 123 end up 0 (none is skipped)."""
    logits, targets, logit_lengths, target_lengths = _ragged_transducer(torch.float32)
    dirty, valid = _fill_padding(logits, logit_lengths, target_lengths, 123.0)
    leaf = dirty.clone().requires_grad_()
    scores = leaf * 1.0  # an intermediate, whose storage becomes the gradient
    loss = seqloss.rnnt_loss(scores, targets, logit_lengths, target_lengths, blank=0, reduction="sum",
                             fused_log_softmax=fused_log_softmax, backend="native", inplace_grad=True)
    loss.backward()
    assert (scores.detach()[~valid] == 0).all()
    reference = logits.clone().requires_grad_()
    expected = torch.autograd.grad(seqloss.rnnt_loss(reference, targets, logit_lengths, target_lengths, blank=0,
                                                     reduction="sum", fused_log_softmax=fused_log_softmax,
                                                     backend="torch"), reference)[0]
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e30], ids=["nan", "posinf", "huge"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctc_padded_frames_are_never_read_and_get_zero_gradient(value, backend):
    x, targets, _, target_lengths = ctc_batch(22, 12, 3, 6, 3)
    input_lengths = torch.tensor([12, 9, 7])
    frame = torch.arange(12).view(-1, 1)
    padded = frame >= input_lengths
    results = []
    for v in (x, torch.where(padded.unsqueeze(-1), value, x)):
        leaf = v.clone().requires_grad_()
        loss = seqloss.ctc_loss(leaf, targets, input_lengths, target_lengths, reduction="none", backend=backend)
        results.append((loss.detach(), torch.autograd.grad(loss.sum(), leaf)[0]))
    (clean_loss, clean_grad), (loss, grad) = results
    torch.testing.assert_close(loss, clean_loss, rtol=0, atol=0)
    torch.testing.assert_close(grad, clean_grad, rtol=0, atol=0)
    assert (grad[padded] == 0).all()


def test_a_nan_utterance_keeps_a_zero_gradient_on_its_padding():
    """NaN inside utterance 0's cells: its valid rows' gradient is NaN, its padded rows' 0, on both backends."""
    logits, targets, logit_lengths, target_lengths = _ragged_transducer()
    logit_lengths = torch.tensor([5, 5, 3])
    logits[0, 1, 2, 3] = math.nan
    _, valid = _fill_padding(logits, logit_lengths, target_lengths, 0.0)
    for backend in BACKENDS:
        leaf = logits.clone().requires_grad_()
        loss = seqloss.rnnt_loss(leaf, targets, logit_lengths, target_lengths, blank=0, reduction="none",
                                 backend=backend)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        assert torch.isnan(loss[0]) and torch.isfinite(loss[1:]).all()
        assert torch.isnan(grad[0][valid[0]]).all() and (grad[0][~valid[0]] == 0).all()


def test_half_precision_logits_take_the_generic_path():
    logits, targets, logit_lengths, target_lengths = _ragged_transducer(torch.float32)
    losses = [seqloss.rnnt_loss(logits.to(dtype), targets, logit_lengths, target_lengths, blank=0, reduction="none",
                                backend="native") for dtype in (torch.float32, torch.bfloat16)]
    assert losses[1].dtype == torch.float32
    torch.testing.assert_close(losses[1], losses[0], rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------------------- the ops
def _transducer_op_args(dtype, packed):
    logits, targets, logit_lengths, target_lengths = _ragged_transducer(dtype)
    if packed:
        logits = pack_transducer(logits, logit_lengths, target_lengths)
    return logits, targets, logit_lengths, target_lengths


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_opcheck_transducer_loss_ops(dtype, packed):
    logits, targets, logit_lengths, target_lengths = _transducer_op_args(dtype, packed)
    forward_args = (logits, targets, logit_lengths, target_lengths, 0, True, False, True, 7, 4)
    torch.library.opcheck(torch.ops.seqloss.transducer_loss.default, forward_args)
    _, *grids = torch.ops.seqloss.transducer_loss(*forward_args)
    scale = torch.tensor([1.0, -0.5, 2.0], dtype=dtype)
    grad_args = (targets, logit_lengths, target_lengths, *grids, scale, 0, 0.3, True)
    torch.library.opcheck(torch.ops.seqloss.transducer_loss_grad.default, (logits, *grad_args))
    torch.library.opcheck(torch.ops.seqloss.transducer_loss_grad_.default, (logits.clone(), *grad_args))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck_ctc_loss_ops(dtype):
    x, targets, input_lengths, target_lengths = ctc_batch(23, 9, 3, 5, 3, dtype=dtype)
    torch.library.opcheck(torch.ops.seqloss.ctc_loss.default, (x, targets, input_lengths, target_lengths, 0))
    _, gamma = torch.ops.seqloss.ctc_loss(x, targets, input_lengths, target_lengths, 0)
    scale = torch.tensor([1.0, -0.5, 2.0], dtype=dtype)
    torch.library.opcheck(torch.ops.seqloss.ctc_loss_grad.default,
                          (x, targets, input_lengths, target_lengths, gamma, scale, 0))


def _transducer_call(**changes):
    logits, targets, logit_lengths, target_lengths = _ragged_transducer()
    args = dict(logits=logits, targets=targets, logit_lengths=logit_lengths, target_lengths=target_lengths,
                blank=0, fused_log_softmax=True, one_symbol_per_frame=False, final_blank=True, max_frames=7,
                max_labels=4)
    args.update(changes)
    return lambda: torch.ops.seqloss.transducer_loss(*args.values())


TRANSDUCER_ERRORS = {
    "3-D logits": (dict(logits=torch.zeros(3, 7, 5)), r"logits must be dense \(B, T, U\+1, V\) or packed"),
    "int logits": (dict(logits=torch.zeros(3, 7, 5, 6, dtype=torch.int64)), "logits must be float32 or float64"),
    "frames too long": (dict(logit_lengths=torch.tensor([8, 5, 3])), r"logit_lengths\[0\] = 8"),
    "labels too long": (dict(target_lengths=torch.tensor([4, 5, 0])), r"target_lengths\[1\] = 5"),
    "grid mismatch": (dict(max_frames=6), r"dense logits must have shape \(B, max_frames, max_labels \+ 1, V\)"),
    "target out of range": (dict(targets=torch.tensor([[1, 2, 3, 6]] * 3)), r"targets\[0, 3\] = 6 must be in"),
    "blank out of range": (dict(blank=6), r"blank must be in \[0, 6\)"),
    "packed rows": (dict(logits=torch.zeros(10, 6, dtype=torch.float64)), "packed logits must have .* = 53 rows"),
}


@pytest.mark.parametrize("case", list(TRANSDUCER_ERRORS))
def test_transducer_loss_op_rejects_malformed_calls(case):
    changes, message = TRANSDUCER_ERRORS[case]
    with pytest.raises((ValueError, TypeError), match=message):
        _transducer_call(**changes)()


def test_gradient_ops_reject_grids_of_another_shape():
    logits, targets, logit_lengths, target_lengths = _ragged_transducer()
    _, lse, occ_blank, occ_emit = torch.ops.seqloss.transducer_loss(logits, targets, logit_lengths, target_lengths,
                                                                    0, True, False, True, 7, 4)
    scale = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"occ_emit must have shape \(3, 7, 5\)"):
        torch.ops.seqloss.transducer_loss_grad(logits, targets, logit_lengths, target_lengths, lse, occ_blank,
                                               occ_emit[:, :, :4], scale, 0, -1.0, True)
    with pytest.raises(ValueError, match=r"scale must have shape \(3,\)"):
        torch.ops.seqloss.transducer_loss_grad(logits, targets, logit_lengths, target_lengths, lse, occ_blank,
                                               occ_emit, scale[:2], 0, -1.0, True)
    with pytest.raises(ValueError, match="logits must be contiguous"):
        torch.ops.seqloss.transducer_loss_grad_(logits.transpose(1, 2), targets, logit_lengths, target_lengths, lse,
                                                occ_blank, occ_emit, scale, 0, -1.0, True)
    x, ctc_targets, input_lengths, ctc_target_lengths = ctc_batch(24, 9, 3, 5, 3)
    _, gamma = torch.ops.seqloss.ctc_loss(x, ctc_targets, input_lengths, ctc_target_lengths, 0)
    with pytest.raises(ValueError, match=r"gamma must have shape \(9, 3, 7\)"):
        torch.ops.seqloss.ctc_loss_grad(x, ctc_targets, input_lengths, ctc_target_lengths, gamma[:, :, :5], scale,
                                        0)


def test_ctc_loss_op_rejects_malformed_calls():
    x, targets, input_lengths, target_lengths = ctc_batch(25, 9, 3, 5, 3)
    with pytest.raises(ValueError, match=r"input_lengths\[1\] = 10"):
        torch.ops.seqloss.ctc_loss(x, targets, torch.tensor([9, 10, 2]), target_lengths, 0)
    with pytest.raises(ValueError, match=r"targets\[0, 0\] = 5 must be in \[0, 5\)"):
        torch.ops.seqloss.ctc_loss(x, torch.full_like(targets, 5), input_lengths, torch.tensor([1, 0, 0]), 0)
    with pytest.raises(ValueError, match=r"targets must have shape \(3, L\)"):
        torch.ops.seqloss.ctc_loss(x, targets[:2], input_lengths, target_lengths, 0)
    with pytest.raises(TypeError, match="targets must be int64"):
        torch.ops.seqloss.ctc_loss(x, targets.int(), input_lengths, target_lengths, 0)
