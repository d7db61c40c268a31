"""seqloss.ssnt_loss_gathered (SSNT on gathered token scores) and the fused native SSNT op.

References: seqloss.ssnt_loss on the dense log-probs the scores were gathered from (values and the
gradient w.r.t. the gathered scores, which ssnt_loss's dense gradient carries at the target ids),
the seed vector of docs/design.md §3.5, and gradcheck.
"""
import pytest
import torch
from helpers import pack_rows, ssnt_batch

import seqloss
from seqloss import _ops

BACKENDS = ["torch", "native"] if _ops.CPU_AVAILABLE else ["torch"]


def _gathered(log_probs, targets):
    index = targets.unsqueeze(-1).unsqueeze(-1).expand(*targets.shape, log_probs.shape[-2], 1)
    return log_probs.gather(-1, index)[..., 0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("packed", [False, True])
def test_equals_ssnt_loss_values_and_gradients(backend, reduction, packed):
    log_probs, targets, choose, source_lengths, target_lengths = ssnt_batch(3, 4, 5, 7, 6)
    log_probs.requires_grad_()
    choose.requires_grad_()
    if packed:
        dense_in, choose_in = pack_rows(log_probs, target_lengths), pack_rows(choose, target_lengths)
        targets_in = pack_rows(targets, target_lengths)
    else:
        dense_in, choose_in, targets_in = log_probs, choose, targets
    expected = seqloss.ssnt_loss(dense_in, targets_in, choose_in, source_lengths, target_lengths, reduction,
                                 backend="torch")
    grad_lp, grad_choose = torch.autograd.grad(expected.sum(), (log_probs, choose))

    token = _gathered(log_probs, targets).detach().requires_grad_()
    choose2 = choose.detach().clone().requires_grad_()
    token_in = pack_rows(token, target_lengths) if packed else token
    choose2_in = pack_rows(choose2, target_lengths) if packed else choose2
    got = seqloss.ssnt_loss_gathered(token_in, choose2_in, source_lengths, target_lengths, reduction, backend=backend)
    got.sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(token.grad, _gathered(grad_lp, targets), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(choose2.grad, grad_choose, rtol=1e-9, atol=1e-9)
    # everything the dense gradient holds sits at the target ids
    torch.testing.assert_close(grad_lp.sum(-1), _gathered(grad_lp, targets), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_vector(backend):
    log_probs = torch.sin(torch.arange(36, dtype=torch.float64)).reshape(2, 2, 3, 3).log_softmax(-1)
    choose = torch.nn.functional.logsigmoid(torch.cos(torch.arange(12, dtype=torch.float64)).reshape(2, 2, 3))
    targets = torch.tensor([[1, 2], [2, 0]])
    losses = seqloss.ssnt_loss_gathered(_gathered(log_probs, targets), choose, torch.tensor([3, 2]),
                                        torch.tensor([2, 1]), reduction="none", backend=backend)
    torch.testing.assert_close(losses, torch.tensor([4.3494873, 3.8322430], dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.skipif(not _ops.CPU_AVAILABLE, reason="native kernels not built")
def test_native_equals_torch_backend(dtype, tol):
    log_probs, targets, choose, source_lengths, target_lengths = ssnt_batch(8, 6, 9, 40, 5, dtype=dtype)
    token = _gathered(log_probs, targets)
    results = []
    for backend in ("torch", "native"):
        t, c = token.clone().requires_grad_(), choose.clone().requires_grad_()
        loss = seqloss.ssnt_loss_gathered(t, c, source_lengths, target_lengths, "sum", backend=backend)
        results.append((loss, *torch.autograd.grad(loss, (t, c))))
    for got, expected in zip(results[1], results[0]):
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_gradcheck_and_gradgradcheck():
    log_probs, targets, choose, source_lengths, target_lengths = ssnt_batch(5, 3, 3, 5, 4)
    token = _gathered(log_probs, targets).requires_grad_()
    choose.requires_grad_()
    fn = lambda t, c: seqloss.ssnt_loss_gathered(t, c, source_lengths, target_lengths, "none")  # noqa: E731
    torch.autograd.gradcheck(fn, (token, choose))
    torch.autograd.gradgradcheck(fn, (token, choose))


def test_empty_target_and_extreme_choose():
    # J_b = 0: loss 0 for S_b = 1, +inf otherwise; choose log-probs at 0 (always emit: shift -inf) stay finite
    token = torch.full((3, 2, 4), -0.5, dtype=torch.float64)
    choose = torch.zeros(3, 2, 4, dtype=torch.float64)
    # utterance 2 must emit both tokens on its single frame: loss = 2 * 0.5
    losses = seqloss.ssnt_loss_gathered(token, choose.requires_grad_(), torch.tensor([1, 3, 1]),
                                        torch.tensor([0, 0, 2]), "none")
    assert losses[0].item() == 0 and torch.isinf(losses[1]) and losses[2].item() == pytest.approx(1.0)
    (grad,) = torch.autograd.grad(losses[[0, 2]].sum(), choose)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("call,message", [
    (lambda t, c, s, j: seqloss.ssnt_loss_gathered(t, c[..., :-1], s, j), "log_p_choose must have the shape"),
    (lambda t, c, s, j: seqloss.ssnt_loss_gathered(t[..., None], c, s, j), "token_log_probs must have 2 or 3"),
    (lambda t, c, s, j: seqloss.ssnt_loss_gathered(t, c, s + 10, j), "source_lengths must be <="),
    (lambda t, c, s, j: seqloss.ssnt_loss_gathered(t, c, s, j + 10), "target_lengths must be <="),
    (lambda t, c, s, j: seqloss.ssnt_loss_gathered(t[0, :1], c[0, :1], s, j), "packed token_log_probs must have"),
    (lambda t, c, s, j: seqloss.ssnt_loss_gathered(t, c, s, j, reduction="avg"), "reduction must be one of"),
    (lambda t, c, s, j: seqloss.ssnt_loss_gathered(t.long(), c, s, j), "token_log_probs must be a floating"),
])
def test_errors_name_the_argument(call, message):
    log_probs, targets, choose, source_lengths, target_lengths = ssnt_batch(1, 2, 3, 4, 3)
    with pytest.raises((ValueError, TypeError), match=message):
        call(_gathered(log_probs, targets), choose, source_lengths, target_lengths)
