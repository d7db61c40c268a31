"""CUDA kernels: CPU == CUDA for every op, loss, alignment and the fused joiner; bitwise determinism;
bf16; torch.compile with inductor on CUDA. Runs wherever CUDA exists (scripts/gpu_check.sh runs it)."""
import pytest
import torch
from helpers import ctc_batch, pack_transducer, ssnt_batch, transducer_batch

import seqloss
from seqloss import _ops
from seqloss.scores import ctc_emissions, ctc_extended_labels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-5, atol=1e-5)}
DEVICE = "cuda"
NAMES = ["ctc", "simple_ctc", "rnnt", "rnnt_packed", "modified_rnnt", "ssnt", "ssnt_gathered"]


def test_cuda_extension_is_built():
    assert _ops.CUDA_AVAILABLE, _ops.CUDA_LOAD_ERROR


def _cases(dtype):
    x, tg, il, tl = ctc_batch(1, 50, 4, 7, 12, dtype=dtype, normalised=False)
    logits, rtg, ll, rtl = transducer_batch(2, 4, 30, 9, 6, dtype=dtype)
    packed = pack_transducer(logits, ll, rtl)
    lp, stg, ch, sl, stl = ssnt_batch(3, 3, 6, 20, 5, dtype=dtype)
    token = lp.gather(-1, stg[:, :, None, None].expand(-1, -1, lp.shape[2], 1))[..., 0]  # (B, J, S)
    return {
        "ctc": (lambda v: seqloss.ctc_loss(v, tg, il, tl, reduction="none"), [x]),
        "simple_ctc": (lambda v: seqloss.simple_ctc_loss(v, tg, il, tl, reduction="none"), [x]),
        "rnnt": (lambda v: seqloss.rnnt_loss(v, rtg, ll, rtl, blank=0, reduction="none"), [logits]),
        "rnnt_packed": (lambda v: seqloss.rnnt_loss(v, rtg, ll, rtl, blank=0, clamp=0.2), [packed]),
        "modified_rnnt": (lambda v: seqloss.modified_rnnt_loss(v, rtg, ll, rtl, blank=0, final_blank=False), [logits]),
        "ssnt": (lambda a, b: seqloss.ssnt_loss(a, stg, b, sl, stl, reduction="none"), [lp, ch]),
        "ssnt_gathered": (lambda a, b: seqloss.ssnt_loss_gathered(a, b, sl, stl, reduction="none"), [token, ch]),
    }


def _run(fn, inputs, device):
    xs = [x.detach().to(device).requires_grad_() for x in inputs]
    loss = fn(*xs)
    grads = torch.autograd.grad(torch.where(torch.isfinite(loss), loss, 0.0).sum(), xs)
    return loss.detach().cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", NAMES)
def test_cuda_equals_cpu(name, dtype):
    fn, inputs = _cases(dtype)[name]
    cpu = _run(fn, inputs, "cpu")
    cuda = _run(fn, inputs, DEVICE)
    torch.testing.assert_close(cuda[0], cpu[0], **TOL[dtype])
    for a, b in zip(cuda[1], cpu[1]):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("name", NAMES)
def test_cuda_is_deterministic(name):
    fn, inputs = _cases(torch.float32)[name]
    first, second = _run(fn, inputs, DEVICE), _run(fn, inputs, DEVICE)
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))


def test_cuda_viterbi_equals_cpu():
    gen = torch.Generator().manual_seed(4)
    blank = torch.randn(3, 12, 6, generator=gen, dtype=torch.float64)
    emit = torch.randn(3, 12, 5, generator=gen, dtype=torch.float64)
    frames, labels = torch.tensor([12, 9, 5]), torch.tensor([5, 3, 0])
    for delta in (False, True):
        cpu = _ops.transducer_viterbi(blank, emit, frames, labels, one_symbol_per_frame=delta)
        cuda = _ops.transducer_viterbi(blank.to(DEVICE), emit.to(DEVICE), frames.to(DEVICE), labels.to(DEVICE),
                                       one_symbol_per_frame=delta)
        assert torch.equal(cuda[0].cpu(), cpu[0])
        torch.testing.assert_close(cuda[1].cpu(), cpu[1])
    x, targets, input_lengths, target_lengths = ctc_batch(5, 30, 4, 6, 8)
    ext = ctc_extended_labels(targets, 0)
    e = ctc_emissions(x, ext, input_lengths)
    cpu = _ops.ctc_viterbi(e, ext, target_lengths, input_lengths, 0)
    cuda = _ops.ctc_viterbi(e.to(DEVICE), ext.to(DEVICE), target_lengths.to(DEVICE), input_lengths.to(DEVICE), 0)
    assert torch.equal(cuda[0].cpu(), cpu[0])
    torch.testing.assert_close(cuda[1].cpu(), cpu[1])


def test_opcheck_on_cuda():
    gen = torch.Generator().manual_seed(6)
    blank = torch.randn(2, 4, 3, generator=gen).log_softmax(-1).to(DEVICE).requires_grad_()
    emit = torch.randn(2, 4, 2, generator=gen).log_softmax(-1).to(DEVICE).requires_grad_()
    frames, labels = torch.tensor([4, 3]).to(DEVICE), torch.tensor([2, 1]).to(DEVICE)
    torch.library.opcheck(torch.ops.seqloss.transducer_lattice.default, (blank, emit, frames, labels, False))
    x, targets, input_lengths, target_lengths = ctc_batch(7, 8, 2, 5, 3, dtype=torch.float32)
    ext = ctc_extended_labels(targets, 0)
    e = ctc_emissions(x, ext, input_lengths).to(DEVICE).requires_grad_()
    torch.library.opcheck(torch.ops.seqloss.ctc_occupancy.default,
                          (e, ext.to(DEVICE), target_lengths.to(DEVICE), input_lengths.to(DEVICE), 0))


def _align_cases():
    """name -> (function of the scores returning an Alignment or posteriors, scores, other arguments)."""
    x, tg, il, tl = ctc_batch(8, 30, 4, 6, 8)
    x32 = x.float()
    logits, rtg, ll, rtl = transducer_batch(9, 3, 12, 5, 7, dtype=torch.float32)
    lp, stg, ch, sl, stl = ssnt_batch(10, 3, 5, 14, 6, dtype=torch.float32)
    return {
        "ctc_align": (lambda v: seqloss.ctc_align(v, tg, il, tl), [x32]),
        "simple_ctc_align": (lambda v: seqloss.simple_ctc_align(v, tg, il, tl), [x32]),
        "ctc_posteriors": (lambda v: seqloss.ctc_posteriors(v, tg, il, tl), [x32]),
        "simple_ctc_posteriors": (lambda v: seqloss.simple_ctc_posteriors(v, tg, il, tl), [x32]),
        "rnnt_align": (lambda v: seqloss.rnnt_align(v, rtg, ll, rtl, blank=0), [logits]),
        "rnnt_posteriors": (lambda v: seqloss.rnnt_posteriors(v, rtg, ll, rtl, blank=0), [logits]),
        "modified_rnnt_align": (lambda v: seqloss.modified_rnnt_align(v, rtg, ll, rtl, blank=0), [logits]),
        "modified_rnnt_posteriors": (lambda v: seqloss.modified_rnnt_posteriors(v, rtg, ll, rtl, blank=0), [logits]),
        "ssnt_align": (lambda a, b: seqloss.ssnt_align(a, stg, b, sl, stl), [lp, ch]),
        "ssnt_posteriors": (lambda a, b: seqloss.ssnt_posteriors(a, stg, b, sl, stl), [lp, ch]),
    }


@pytest.mark.parametrize("name", list(_align_cases()))
def test_cuda_alignments_and_posteriors_equal_cpu(name):
    fn, inputs = _align_cases()[name]
    cpu = fn(*inputs)
    cuda = fn(*[x.to(DEVICE) for x in inputs])
    cpu = cpu if isinstance(cpu, tuple) else (cpu,)
    cuda = cuda if isinstance(cuda, tuple) else (cuda,)
    for a, b in zip(cuda, cpu):
        if b.is_floating_point():
            torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)
        else:  # best paths: the same frames and labels exactly
            assert torch.equal(a.cpu(), b)


class _ChooseHead(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1)

    def forward(self, hidden):
        return torch.nn.functional.logsigmoid(self.linear(hidden)[..., 0])


def _fused(loss, device, dtype=torch.float32):
    """(per-utterance losses, gradients of enc, pred and every parameter) of the fused joiner + loss."""
    torch.manual_seed(11)
    joiner = seqloss.Joiner(6, 5, 8, 9).to(device, dtype)
    choose = _ChooseHead(8).to(device, dtype)
    gen = torch.Generator().manual_seed(12)
    enc = torch.randn(3, 10, 6, generator=gen).to(device, dtype).requires_grad_()
    pred = torch.randn(3, 5, 5, generator=gen).to(device, dtype).requires_grad_()
    targets = torch.randint(1, 9, (3, 4), generator=gen).to(device)
    frames, labels = torch.tensor([10, 7, 5]).to(device), torch.tensor([4, 2, 1]).to(device)
    losses = seqloss.fused_transducer_loss(joiner, enc, pred, targets, frames, labels, loss=loss, blank=0,
                                           reduction="none", choose_head=choose if loss == "ssnt" else None,
                                           chunk_size=3)
    leaves = [enc, pred, *joiner.parameters(), *(choose.parameters() if loss == "ssnt" else [])]
    grads = torch.autograd.grad(losses.sum(), leaves)
    return losses.detach().cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("loss", ["rnnt", "modified_rnnt", "ssnt"])
def test_cuda_fused_joiner_equals_cpu(loss):
    cpu, cuda = _fused(loss, "cpu"), _fused(loss, DEVICE)
    torch.testing.assert_close(cuda[0], cpu[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(cuda[1], cpu[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    again = _fused(loss, DEVICE)
    assert torch.equal(again[0], cuda[0]) and all(torch.equal(a, b) for a, b in zip(again[1], cuda[1]))


@pytest.mark.parametrize("name", NAMES)
def test_cuda_bf16_is_close_to_float32(name):
    """bf16 inputs on CUDA: the loss comes out in float32 (the package's dtype for half inputs), the
    gradients in bf16, and both match float32 on the same (bf16-rounded) inputs on the CPU to bf16
    precision."""
    fn, inputs = _cases(torch.float32)[name]
    rounded = [x.to(torch.bfloat16) for x in inputs]
    reference = _run(fn, [x.float() for x in rounded], "cpu")
    loss, grads = _run(fn, rounded, DEVICE)
    assert loss.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    finite = torch.isfinite(reference[0])
    assert torch.equal(torch.isfinite(loss), finite)
    torch.testing.assert_close(loss.float()[finite], reference[0][finite], rtol=1e-2, atol=1e-2)
    for g, r in zip(grads, reference[1]):
        torch.testing.assert_close(g.float(), r, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", ["ctc", "rnnt", "ssnt"])
def test_cuda_inductor_compile_matches_eager(name):
    """torch.compile(fullgraph=True) with inductor (Triton kernels on CUDA) equals eager on CUDA (one
    loss per lattice kernel: cold inductor compiles cost seconds each; tests/seqloss/test_compile.py
    traces every loss whole on the CPU)."""
    torch._dynamo.reset()
    fn, inputs = _cases(torch.float32)[name]
    eager = _run(lambda *v: fn(*v).sum(), inputs, DEVICE)
    compiled = _run(torch.compile(lambda *v: fn(*v).sum(), fullgraph=True), inputs, DEVICE)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
