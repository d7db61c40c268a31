"""seqloss against torch's ctc_loss and torchaudio's rnnt_loss on realistic shapes (T up to 2000)."""
import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as TAF
from brute_force import ctc_logp
from helpers import ctc_batch, pack_transducer, transducer_batch

import seqloss


def _value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(2000, 3, 30, 200), (500, 16, 40, 100), (128, 64, 32, 30)])
def test_ctc_matches_torch(shape, reduction):
    """float64 to 1e-9; float32 within the float32 rounding that torch itself shows against float64."""
    frames, batch, classes, labels = shape
    x, targets, il, tl = ctc_batch(sum(shape), frames, batch, classes, labels, dtype=torch.float64)
    results = {}
    for name, fn in (("ours", seqloss.ctc_loss), ("torch", F.ctc_loss)):
        for dtype in (torch.float64, torch.float32):
            results[name, dtype] = _value_and_grad(
                lambda v: fn(v.log_softmax(-1), targets, il, tl, reduction=reduction), x.to(dtype))
    for i in range(2):
        torch.testing.assert_close(results["ours", torch.float64][i], results["torch", torch.float64][i],
                                   rtol=1e-9, atol=1e-9)
        ref = results["torch", torch.float64][i]
        torch_error = (results["torch", torch.float32][i].double() - ref).abs().max()
        our_error = (results["ours", torch.float32][i].double() - ref).abs().max()
        # float32 rounding grows with T and the loss magnitude; allow a small multiple of torch's own
        assert our_error <= 4 * torch_error + 1e-6 * ref.abs().max(), (our_error, torch_error)


def test_ctc_concatenated_targets_zero_infinity_and_unbatched():
    x, targets, il, tl = ctc_batch(3, 30, 4, 6, 10, dtype=torch.float64)
    tl = tl.clone()
    il = il.clone()
    il[1], tl[1] = 3, 8  # infeasible: 8 labels in 3 frames
    flat = torch.cat([targets[b, : tl[b]] for b in range(4)])
    for zero_infinity in (False, True):
        ours = seqloss.ctc_loss(x, flat, il, tl, reduction="none", zero_infinity=zero_infinity)
        ref = F.ctc_loss(x, flat, il, tl, reduction="none", zero_infinity=zero_infinity)
        torch.testing.assert_close(ours, ref)
        assert torch.equal(seqloss.ctc_loss(x, targets, il, tl, reduction="none", zero_infinity=zero_infinity), ours)
    xg = x.clone().requires_grad_()
    loss = seqloss.ctc_loss(xg, targets, il, tl, reduction="sum", zero_infinity=True)
    (grad,) = torch.autograd.grad(loss, xg)
    assert torch.isfinite(grad).all() and grad[:, 1].abs().sum() == 0  # the infeasible utterance adds nothing
    single = seqloss.ctc_loss(x[:, 0], targets[0, : tl[0]], il[0], tl[0], reduction="none")
    torch.testing.assert_close(single, F.ctc_loss(x[:, 0], targets[0, : tl[0]], il[0:1], tl[0:1], reduction="none"))
    # tensors longer than the longest length are accepted (as torch does)
    longer = torch.cat([x, x[:5]])
    torch.testing.assert_close(seqloss.ctc_loss(longer, targets, il, tl), F.ctc_loss(x, targets, il, tl))


def test_ctc_gradient_is_right_for_unnormalised_scores():
    """torch treats log_probs as normalised (pytorch#52241); seqloss differentiates the scores as given."""
    x, targets, il, tl = ctc_batch(5, 6, 3, 4, 3, dtype=torch.float64, normalised=False)
    _, g_ours = _value_and_grad(lambda v: seqloss.ctc_loss(v, targets, il, tl, reduction="sum"), x)
    _, g_paths = _value_and_grad(lambda v: -torch.stack(
        [ctc_logp(v[: il[b], b], targets[b, : tl[b]].tolist(), 0) for b in range(3)]).sum(), x)
    torch.testing.assert_close(g_ours, g_paths)
    _, g_torch = _value_and_grad(lambda v: F.ctc_loss(v, targets, il, tl, reduction="sum"), x)
    assert (g_torch - g_paths).abs().max() > 0.1  # torch's gradient is wrong here


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("blank", [0, -1])
@pytest.mark.parametrize("shape", [(4, 2000, 12, 8), (6, 200, 40, 50), (3, 50, 60, 30)])
def test_rnnt_matches_torchaudio(shape, blank, fused, reduction):
    batch, frames, labels, classes = shape
    logits, targets, ll, tl = transducer_batch(sum(shape), batch, frames, labels, classes, dtype=torch.float32,
                                               blank=blank)

    def inputs(v):
        return v if fused else v.log_softmax(-1)

    def ours(v):
        return seqloss.rnnt_loss(inputs(v), targets, ll, tl, blank=blank, reduction=reduction, fused_log_softmax=fused)

    peer = _value_and_grad(lambda v: TAF.rnnt_loss(inputs(v), targets, ll, tl, blank=blank, reduction=reduction,
                                                   fused_log_softmax=fused), logits)  # float32 only
    ours32, ours64 = _value_and_grad(ours, logits), _value_and_grad(ours, logits.double())
    for i, (atol, rtol) in enumerate([(1e-3, 1e-5), (2e-2 if frames > 1000 else 1e-4, 1e-3)]):
        torch.testing.assert_close(peer[i].double(), ours64[i], atol=atol, rtol=rtol)
        # our float32 result is no less accurate than torchaudio's (both against float64)
        peer_error = (peer[i].double() - ours64[i]).abs().max()
        assert (ours32[i].double() - ours64[i]).abs().max() <= 4 * peer_error + 1e-6 * ours64[i].abs().max()


@pytest.mark.parametrize("clamp", [0.01, 0.1])
def test_rnnt_clamp_matches_torchaudio_cpu(clamp):
    logits, targets, ll, tl = transducer_batch(11, 4, 60, 10, 20, dtype=torch.float32)
    for reduction in ("mean", "sum"):
        _, g_ours = _value_and_grad(lambda v: seqloss.rnnt_loss(v, targets, ll, tl, blank=0, clamp=clamp,
                                                                reduction=reduction), logits)
        _, g_ref = _value_and_grad(lambda v: TAF.rnnt_loss(v, targets, ll, tl, blank=0, clamp=clamp,
                                                           reduction=reduction), logits)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-6)
        scale = 1 / 4 if reduction == "mean" else 1
        assert g_ours.abs().max() <= clamp * scale + 1e-7


@pytest.mark.parametrize("loss", ["rnnt", "modified_true", "modified_false"])
def test_packed_equals_padded(loss):
    logits, targets, ll, tl = transducer_batch(5, 5, 40, 12, 16, dtype=torch.float64)
    kwargs = {} if loss == "rnnt" else {"final_blank": loss == "modified_true"}
    fn = seqloss.rnnt_loss if loss == "rnnt" else seqloss.modified_rnnt_loss
    dense, g_dense = _value_and_grad(lambda v: fn(v, targets, ll, tl, blank=0, reduction="none", **kwargs), logits)
    packed, g_packed = _value_and_grad(lambda v: fn(pack_transducer(v, ll, tl), targets, ll, tl, blank=0,
                                                    reduction="none", **kwargs), logits)
    torch.testing.assert_close(packed, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_packed, g_dense, rtol=1e-12, atol=1e-12)


def test_simple_ctc_against_one_symbol_per_frame_transducer():
    """Simplified CTC is the k2-style modified transducer with u-independent scores."""
    x, targets, il, tl = ctc_batch(9, 40, 4, 7, 12, dtype=torch.float64)
    ours = seqloss.simple_ctc_loss(x, targets, il, tl, reduction="none")
    lattice = x.transpose(0, 1).unsqueeze(2).expand(-1, -1, targets.shape[1] + 1, -1)
    ref = seqloss.modified_rnnt_loss(lattice, targets, il, tl, blank=0, reduction="none", fused_log_softmax=False,
                                     final_blank=False)
    torch.testing.assert_close(ours, ref)
