"""CUDA kernels: CPU == CUDA for every op and loss, and bitwise determinism. Runs wherever CUDA exists."""
import pytest
import torch

import seqloss
from seqloss import _ops
from seqloss._lattice import ctc as ctc_lattice
from helpers import ctc_batch, pack_transducer, ssnt_batch, transducer_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def test_cuda_extension_is_built():
    assert _ops.CUDA_AVAILABLE, _ops.CUDA_LOAD_ERROR


def _cases(dtype):
    x, tg, il, tl = ctc_batch(1, 50, 4, 7, 12, dtype=dtype, normalised=False)
    logits, rtg, ll, rtl = transducer_batch(2, 4, 30, 9, 6, dtype=dtype)
    packed = pack_transducer(logits, ll, rtl)
    lp, stg, ch, sl, stl = ssnt_batch(3, 3, 6, 20, 5, dtype=dtype)
    return {
        "ctc": (lambda v: seqloss.ctc_loss(v, tg, il, tl, reduction="none"), [x]),
        "simple_ctc": (lambda v: seqloss.simple_ctc_loss(v, tg, il, tl, reduction="none"), [x]),
        "rnnt": (lambda v: seqloss.rnnt_loss(v, rtg, ll, rtl, blank=0, reduction="none"), [logits]),
        "rnnt_packed": (lambda v: seqloss.rnnt_loss(v, rtg, ll, rtl, blank=0, clamp=0.2), [packed]),
        "modified_rnnt": (lambda v: seqloss.modified_rnnt_loss(v, rtg, ll, rtl, blank=0, final_blank=False), [logits]),
        "ssnt": (lambda a, b: seqloss.ssnt_loss(a, stg, b, sl, stl, reduction="none"), [lp, ch]),
    }


def _run(fn, inputs, device):
    xs = [x.detach().to(device).requires_grad_() for x in inputs]
    loss = fn(*xs)
    grads = torch.autograd.grad(torch.where(torch.isfinite(loss), loss, 0.0).sum(), xs)
    return loss.detach().cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["ctc", "simple_ctc", "rnnt", "rnnt_packed", "modified_rnnt", "ssnt"])
def test_cuda_equals_cpu(name, dtype):
    fn, inputs = _cases(dtype)[name]
    cpu = _run(fn, inputs, "cpu")
    cuda = _run(fn, inputs, "cuda")
    torch.testing.assert_close(cuda[0], cpu[0], **TOL[dtype])
    for a, b in zip(cuda[1], cpu[1]):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("name", ["ctc", "rnnt", "ssnt"])
def test_cuda_is_deterministic(name):
    fn, inputs = _cases(torch.float32)[name]
    first, second = _run(fn, inputs, "cuda"), _run(fn, inputs, "cuda")
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))


def test_cuda_viterbi_equals_cpu():
    gen = torch.Generator().manual_seed(4)
    blank = torch.randn(3, 12, 6, generator=gen, dtype=torch.float64)
    emit = torch.randn(3, 12, 5, generator=gen, dtype=torch.float64)
    frames, labels = torch.tensor([12, 9, 5]), torch.tensor([5, 3, 0])
    for delta in (False, True):
        cpu = _ops.transducer_viterbi(blank, emit, frames, labels, delta)
        cuda = _ops.transducer_viterbi(blank.cuda(), emit.cuda(), frames.cuda(), labels.cuda(), delta)
        torch.testing.assert_close(cuda[0].cpu(), cpu[0])
        assert torch.equal(cuda[1].cpu(), cpu[1])
    x, targets, input_lengths, target_lengths = ctc_batch(5, 30, 4, 6, 8)
    ext = ctc_lattice.extended_labels(targets, 0)
    e = ctc_lattice.emissions(x, ext, input_lengths)
    cpu = _ops.ctc_viterbi(e, ext, target_lengths, input_lengths, 0)
    cuda = _ops.ctc_viterbi(e.cuda(), ext.cuda(), target_lengths.cuda(), input_lengths.cuda(), 0)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0])
    assert torch.equal(cuda[1].cpu(), cpu[1])


def test_opcheck_on_cuda():
    gen = torch.Generator().manual_seed(6)
    blank = torch.randn(2, 4, 3, generator=gen).log_softmax(-1).cuda().requires_grad_()
    emit = torch.randn(2, 4, 2, generator=gen).log_softmax(-1).cuda().requires_grad_()
    frames, labels = torch.tensor([4, 3]).cuda(), torch.tensor([2, 1]).cuda()
    torch.library.opcheck(torch.ops.seqloss.transducer_lattice.default, (blank, emit, frames, labels, False))
    x, targets, input_lengths, target_lengths = ctc_batch(7, 8, 2, 5, 3, dtype=torch.float32)
    ext = ctc_lattice.extended_labels(targets, 0)
    e = ctc_lattice.emissions(x, ext, input_lengths).cuda().requires_grad_()
    torch.library.opcheck(torch.ops.seqloss.ctc_occupancy.default,
                          (e, ext.cuda(), target_lengths.cuda(), input_lengths.cuda(), 0))
