"""Large dense gradients of the native CPU ops are fresh zero pages: padded cells are never written.

A ragged batch's (B, T, U+1, V) RNN-T gradient (or (T, B, V) CTC gradient) is zero on every padded
cell. At 32 MiB and above the ops take the gradient straight from mmap, whose pages are already zero,
and skip those cells; their pages are then never faulted in. Checked here with mincore(2), which
says which pages of the gradient are resident, before anything reads it (at most those holding a
valid row; where transparent huge pages are "always", those in a 2 MiB page holding one); then the values: padded cells
exactly zero, valid cells bit for bit those of the packed input (RNN-T) or equal to the torch backend's
in float64 (CTC)."""
import ctypes
import mmap
import sys
from pathlib import Path

import pytest
import torch

import seqloss
from seqloss import _ops

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore and the zero-page path are Linux-only"),
    pytest.mark.skipif(not _ops.available("cpu"), reason="native CPU ops not built"),
]

PAGE = mmap.PAGESIZE
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# with transparent huge pages "always", a first write maps a whole 2 MiB page
GRANULE = 2 << 20 if _THP.exists() and "[always]" in _THP.read_text() else PAGE


def resident_fraction(tensor):
    """Fraction of the pages spanned by `tensor`'s storage that are resident (mincore), without reading them."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    start = tensor.data_ptr() // PAGE * PAGE
    length = tensor.data_ptr() + tensor.nbytes - start
    pages = (length + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vec) != 0:
        pytest.fail(f"mincore failed: errno {ctypes.get_errno()}")
    return sum(v & 1 for v in vec) / pages


def written_fraction(tensor, row_valid):
    """Upper bound on resident_fraction(tensor) if only the rows where `row_valid` is set (rows of equal size,
    in memory order) are written: the fraction of its pages inside a GRANULE that holds part of such a row."""
    row_bytes = tensor.nbytes // row_valid.numel()
    start = tensor.data_ptr()
    rows = row_valid.flatten().nonzero()[:, 0]
    first, last = (start + rows * row_bytes) // GRANULE, (start + (rows + 1) * row_bytes - 1) // GRANULE
    touched = {g for a, b in zip(first.tolist(), last.tolist()) for g in range(a, b + 1)}
    pages = range(start // PAGE, (start + tensor.nbytes - 1) // PAGE + 1)
    return sum(page * PAGE // GRANULE in touched for page in pages) / len(pages)


def test_rnnt_dense_gradient_leaves_padded_cells_untouched():
    torch.manual_seed(0)
    B, T, U, V = 2, 200, 100, 500  # 80 MB gradient; utterance 1 covers 60 x 21 of the 200 x 101 cells
    frames, labels = torch.tensor([T, 60], dtype=torch.int32), torch.tensor([U, 20], dtype=torch.int32)
    logits = torch.randn(B, T, U + 1, V, requires_grad=True)
    targets = torch.randint(1, V, (B, U), dtype=torch.int32)
    loss = seqloss.rnnt_loss(logits, targets, frames, labels, blank=0, reduction="sum", backend="native")
    (grad,) = torch.autograd.grad(loss, logits)

    cell_valid = (torch.arange(T)[None, :, None] < frames[:, None, None].long()) & (
        torch.arange(U + 1)[None, None, :] <= labels[:, None, None].long())
    resident, written = resident_fraction(grad), written_fraction(grad, cell_valid)
    assert written < 0.6 or GRANULE != PAGE  # on 4 KiB pages the padding is a large share of them
    assert resident < written + 0.02, f"{resident:.3f} of the gradient's pages resident, valid cells {written:.3f}"

    assert torch.count_nonzero(grad[~cell_valid]) == 0
    rows = logits.detach()[cell_valid].requires_grad_()  # packed (sum_b T_b (U_b+1), V), b, t, u order
    packed_loss = seqloss.rnnt_loss(rows, targets, frames, labels, blank=0, reduction="sum", backend="native")
    (packed_grad,) = torch.autograd.grad(packed_loss, rows)
    assert torch.equal(grad[cell_valid], packed_grad)
    assert torch.equal(loss, packed_loss)


def test_ctc_gradient_leaves_padded_frames_untouched():
    torch.manual_seed(0)
    # float64, so that the torch backend is an exact reference: 64 MB gradient, 32 KiB rows;
    # utterance 1 has 100 of the 1000 frames
    T, B, V, S = 1000, 2, 4096, 50
    log_probs = torch.randn(T, B, V, dtype=torch.float64).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, V, (B, S))
    input_lengths, target_lengths = torch.tensor([T, 100]), torch.tensor([S, 20])
    loss = seqloss.ctc_loss(log_probs, targets, input_lengths, target_lengths, reduction="sum", backend="native")
    (grad,) = torch.autograd.grad(loss, log_probs)

    row_valid = torch.arange(T)[:, None] < input_lengths[None, :]  # rows (t, b); each row is 8 pages
    resident, written = resident_fraction(grad), written_fraction(grad, row_valid)
    assert written < 0.6 or GRANULE != PAGE
    assert resident < written + 0.02, f"{resident:.3f} of the gradient's pages resident, valid rows {written:.3f}"

    assert torch.count_nonzero(grad[100:, 1]) == 0
    reference = seqloss.ctc_loss(log_probs, targets, input_lengths, target_lengths, reduction="sum", backend="torch")
    (expected,) = torch.autograd.grad(reference, log_probs)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


def test_ssnt_dense_gradient_leaves_padded_rows_untouched():
    """SSNT's V-wide gradient comes from the token gather's backward: above 32 MiB it is written into
    fresh zero pages, one entry per valid row, so the pages of padded target rows and frames stay
    unmapped; the values are those of the packed input's gradient."""
    torch.manual_seed(0)
    B, J, S, V = 2, 20, 200, 1100  # 35 MB gradient, 4.4 KB rows; utterance 1 has 5 of 20 targets, 50 frames
    source_lengths, target_lengths = torch.tensor([S, 50]), torch.tensor([J, 5])
    log_probs = torch.randn(B, J, S, V).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, V, (B, J))
    log_p_choose = torch.nn.functional.logsigmoid(torch.randn(B, J, S))
    loss = seqloss.ssnt_loss(log_probs, targets, log_p_choose, source_lengths, target_lengths, reduction="sum")
    (grad,) = torch.autograd.grad(loss, log_probs)

    row_valid = (torch.arange(J)[None, :, None] < target_lengths[:, None, None]) & (
        torch.arange(S)[None, None, :] < source_lengths[:, None, None])  # rows (b, j, i)
    resident, written = resident_fraction(grad), written_fraction(grad, row_valid)
    assert written < 0.6 or GRANULE != PAGE
    assert resident < written + 0.02, f"{resident:.3f} of the gradient's pages resident, valid rows {written:.3f}"
    assert torch.count_nonzero(grad[~row_valid]) == 0
    b, j = (torch.arange(J)[None, :] < target_lengths[:, None]).nonzero(as_tuple=True)
    rows = log_probs.detach()[b, j].requires_grad_()  # packed (sum_b J_b, S, V)
    packed_loss = seqloss.ssnt_loss(rows, targets[b, j], log_p_choose[b, j], source_lengths, target_lengths,
                                    reduction="sum")
    (packed_grad,) = torch.autograd.grad(packed_loss, rows)
    torch.testing.assert_close(grad[b, j], packed_grad, rtol=0, atol=0)

    # create_graph keeps the gather's backward differentiable (a plain scatter; the lattice's gradient is
    # then recomputed through autograd, so equal to float32 rounding)
    (again,) = torch.autograd.grad(
        seqloss.ssnt_loss(log_probs, targets, log_p_choose, source_lengths, target_lengths, reduction="sum"),
        log_probs, create_graph=True)
    assert again.requires_grad
    torch.testing.assert_close(again.detach(), grad, rtol=1e-4, atol=1e-4)
