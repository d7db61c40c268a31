"""The CUDA kernels (seqloss/csrc/cuda/lattice_kernels.cuh), run on the CPU under the CUDA emulation.

Every kernel of the CUDA backend is compiled for the host (tests/seqloss/cuda_emulation.py builds it
with torch.utils.cpp_extension.load once per test session) and compared with the CPU ops
``torch.ops.seqloss.*``: float32 and float64, ragged batches, blocks narrower than the lattice (the
striding loops run), blocks wider than it (idle threads), empty targets, infeasible utterances, a
2,000-frame utterance, the reversed and shuffled thread orders. Then deliberately broken copies of
the kernel source show that the emulation catches a missing barrier, an off-by-one loop bound and a
wrong block offset, and barrier divergence raises an error instead of hanging. Last, the argument
checks shared by the CPU and CUDA ops (seqloss/csrc/checks.h) give the same errors on both.
"""
import concurrent.futures

import cuda_emulation
import pytest
import torch
from cuda_emulation import ASCENDING, REVERSED, SHUFFLED
from helpers import ctc_batch

import seqloss  # noqa: F401  (loads torch.ops.seqloss)
from seqloss import _ops
from seqloss.scores import ctc_emissions, ctc_extended_labels

pytestmark = pytest.mark.skipif(not _ops.CPU_AVAILABLE, reason="native CPU kernels not built")

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [torch.float64, torch.float32]
ORDERS = [pytest.param((REVERSED, 0), id="reversed"), pytest.param((SHUFFLED, 7), id="shuffled")]


@pytest.fixture(scope="module")
def build_root(request, tmp_path_factory):
    """Build directory: the pytest cache (ninja then rebuilds only what changed), else a fresh tmp dir."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return cache.mkdir(f"seqloss_cuda_emulation_torch{torch.__version__.replace('+', '_')}")
    return tmp_path_factory.mktemp("seqloss_cuda_emulation")


@pytest.fixture(scope="module")
def emu(build_root):
    return cuda_emulation.load(build_root)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def transducer_inputs(seed, dtype, batch=4, rows=9, labels=6, frames=None, label_lengths=None):
    """blank (B,T,U+1), emit (B,T,U) log-probabilities and ragged (frames, labels) with an empty target
    and an utterance of more labels than frames (infeasible where each label takes a frame)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, rows, labels + 1, 2, generator=gen, dtype=dtype).log_softmax(-1)
    blank, emit = scores[..., 0].contiguous(), scores[:, :, :-1, 1].contiguous()
    if frames is None:
        frames = torch.randint(1, rows + 1, (batch,), generator=gen)
        frames[0] = rows
    if label_lengths is None:
        label_lengths = torch.randint(0, labels + 1, (batch,), generator=gen)
        label_lengths[0], label_lengths[-1] = labels, 0  # the widest lattice and an empty target
        if batch >= 3 and rows >= 2 and labels >= 3:  # more labels than frames
            frames[1], label_lengths[1] = 2, 3
    return blank, emit, torch.as_tensor(frames), torch.as_tensor(label_lengths)


def ctc_inputs(seed, dtype, frames=12, batch=5, classes=6, labels=5):
    """e (T,B,S), ext (B,S), target and input lengths with an empty target, an infeasible utterance
    (more labels than frames allow) and an utterance of zero frames."""
    x, targets, input_lengths, target_lengths = ctc_batch(seed, frames, batch, classes, labels, dtype=dtype)
    targets[1, :3] = torch.tensor([2, 2, 3])  # a repeat: the skip is forbidden there
    target_lengths[2] = 0
    input_lengths[3], target_lengths[3] = 3, 4  # needs at least 4 frames: infeasible
    input_lengths[4], target_lengths[4] = 0, 1
    ext = ctc_extended_labels(targets, 0)
    return ctc_emissions(x, ext, input_lengths), ext, target_lengths, input_lengths, 0


def assert_same(emulated, native, dtype):
    for a, b in zip(emulated, native):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, **TOL[dtype])
        else:
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Every kernel against the CPU op
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("threads", [-1, 3], ids=["cuda_block", "narrow_block"])
@pytest.mark.parametrize("delta", [False, True], ids=["antidiagonal", "per_frame"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_transducer_kernels_equal_cpu(emu, dtype, delta, threads, order):
    blank, emit, frames, labels = transducer_inputs(1, dtype)
    native = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, delta)
    emulated = emu.transducer_lattice(blank, emit, frames, labels, delta, threads, *order)
    assert_same(emulated, native, dtype)
    # One label per frame at most when emitting advances time: more labels than frames is infeasible.
    feasible = labels <= frames if delta else torch.ones_like(labels, dtype=torch.bool)
    assert torch.equal(torch.isfinite(emulated[0]), feasible) and not feasible.all() == delta
    native = torch.ops.seqloss.transducer_viterbi(blank, emit, frames, labels, delta)
    emulated = emu.transducer_viterbi(blank, emit, frames, labels, delta, threads, *order)
    assert_same(emulated, native, dtype)
    assert (emulated[1][-1] == -1).all()  # the empty target emits nothing


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("threads", [-1, 4], ids=["cuda_block", "narrow_block"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ctc_kernels_equal_cpu(emu, dtype, threads, order):
    e, ext, target_lengths, input_lengths, blank = ctc_inputs(2, dtype)
    native = torch.ops.seqloss.ctc_occupancy(e, ext, target_lengths, input_lengths, blank)
    emulated = emu.ctc_occupancy(e, ext, target_lengths, input_lengths, blank, threads, *order)
    assert_same(emulated, native, dtype)
    assert emulated[0][3] == float("-inf") and emulated[0][4] == float("-inf")  # infeasible, no frames
    assert torch.isfinite(emulated[0][:3]).all()
    native = torch.ops.seqloss.ctc_viterbi(e, ext, target_lengths, input_lengths, blank)
    emulated = emu.ctc_viterbi(e, ext, target_lengths, input_lengths, blank, threads, *order)
    assert_same(emulated, native, dtype)
    assert (emulated[1][3] == -1).all() and (emulated[1][4] == -1).all()


def test_default_block_is_the_cuda_block(emu):
    """threads_per_block=-1 launches threads_for(width) threads, as the CUDA host wrappers do."""
    assert [emu.threads_for(w) for w in (1, 32, 33, 500, 512, 513, 5000)] == [32, 32, 64, 512, 512, 512, 512]


def test_wide_lattice_strides_over_the_largest_block(emu):
    """U + 1 = 700 > 512 threads of the CUDA block: each thread handles up to two columns."""
    blank, emit, frames, labels = transducer_inputs(3, torch.float64, batch=2, rows=4, labels=699)
    for delta in (False, True):
        native = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, delta)
        assert_same(emu.transducer_lattice(blank, emit, frames, labels, delta), native, torch.float64)


def test_long_utterances(emu):
    """T = 2,000 frames: CTC with a block narrower than the states, the per-frame transducer schedule."""
    x, targets, input_lengths, target_lengths = ctc_batch(4, 2000, 2, 8, 12, dtype=torch.float64)
    input_lengths[0], target_lengths[1] = 2000, 0
    ext = ctc_extended_labels(targets, 0)
    e = ctc_emissions(x, ext, input_lengths)
    for op in ("ctc_occupancy", "ctc_viterbi"):
        native = getattr(torch.ops.seqloss, op)(e, ext, target_lengths, input_lengths, 0)
        emulated = getattr(emu, op)(e, ext, target_lengths, input_lengths, 0, 8, SHUFFLED, 3)
        assert_same(emulated, native, torch.float64)
        assert torch.isfinite(emulated[0]).all()
    blank_, emit, frames, labels = transducer_inputs(5, torch.float32, batch=2, rows=2000, labels=6)
    native = torch.ops.seqloss.transducer_lattice(blank_, emit, frames, labels, True)
    assert_same(emu.transducer_lattice(blank_, emit, frames, labels, True, 4), native, torch.float32)


def test_empty_batch(emu):
    blank, emit, frames, labels = transducer_inputs(6, torch.float32, batch=1)
    out = emu.transducer_lattice(blank[:0], emit[:0], frames[:0], labels[:0], False)
    assert [tuple(t.shape) for t in out] == [(0,), (0, 10, 7), (0, 10, 7)]


def test_non_contiguous_inputs(emu):
    """The wrappers make inputs contiguous, as the CUDA ones do: a transposed view gives the same result."""
    blank, emit, frames, labels = transducer_inputs(7, torch.float64)
    blank_t = blank.transpose(1, 2).contiguous().transpose(1, 2)
    emit_t = emit.transpose(1, 2).contiguous().transpose(1, 2)
    assert not blank_t.is_contiguous() and not emit_t.is_contiguous()
    native = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, False)
    assert_same(emu.transducer_lattice(blank_t, emit_t, frames, labels, False), native, torch.float64)
    assert_same(torch.ops.seqloss.transducer_lattice(blank_t, emit_t, frames, labels, False), native, torch.float64)


def test_kernels_guard_their_lengths(emu):
    """Lengths beyond the tensor (which the CPU op rejects): the block writes NaN and touches nothing else."""
    blank, emit, frames, labels = transducer_inputs(8, torch.float64)
    bad = frames.clone()
    bad[1] = blank.shape[1] + 5
    log_p, alpha, beta = emu.transducer_lattice(blank, emit, bad, labels, False)
    native = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, False)
    assert torch.isnan(log_p[1]) and torch.isnan(alpha[1]).all() and torch.isnan(beta[1]).all()
    keep = torch.tensor([0, 2, 3])
    assert_same((log_p[keep], alpha[keep], beta[keep]), [t[keep] for t in native], torch.float64)
    score, _ = emu.transducer_viterbi(blank, emit, frames, -labels - 1, False)
    assert torch.isnan(score).all()
    e, ext, target_lengths, input_lengths, blank_id = ctc_inputs(9, torch.float64)
    target_lengths[0] = ext.shape[1]  # 2 L + 1 > S
    log_p, gamma = emu.ctc_occupancy(e, ext, target_lengths, input_lengths, blank_id)
    assert torch.isnan(log_p[0]) and (gamma[:, 0] == 0).all() and not torch.isnan(log_p[1:]).any()
    score, path = emu.ctc_viterbi(e, ext, target_lengths, input_lengths.neg() - 1, blank_id)
    assert torch.isnan(score).all() and (path == -1).all()


# ---------------------------------------------------------------------------------------------
# The emulation catches faults: deliberately broken copies of the kernel source
# ---------------------------------------------------------------------------------------------
FAULTS = {
    # The barrier between two anti-diagonals / frames of the transducer lattice.
    "missing_wavefront_barrier": [("      if (t >= 0 && t <= rows) cell(t, u);\n    }\n    __syncthreads();\n",
                                   "      if (t >= 0 && t <= rows) cell(t, u);\n    }\n")],
    # The barrier between two frames of the CTC forward pass.
    "missing_ctc_barrier": [("G(t)[s] = ctc_alpha(E(t)[s], G(t - 1), s, lab, blank);\n    __syncthreads();",
                             "G(t)[s] = ctc_alpha(E(t)[s], G(t - 1), s, lab, blank);")],
    # The barrier between reading log P from the last alpha row and the first beta step overwriting
    # that row (a race the emulation found in the CUDA kernel).
    "missing_ctc_total_barrier": [("if (threadIdx.x == 0) log_p[b] = total;\n"
                                   "  // Every thread must have read the last alpha row "
                                   "before the first beta step overwrites it with gamma.\n  __syncthreads();\n",
                                   "if (threadIdx.x == 0) log_p[b] = total;\n")],
    # Off by one: the CTC forward pass skips the last state of each frame.
    "ctc_loop_bound": [("for (int64_t s = threadIdx.x; s < states; s += blockDim.x) G(t)[s] = ctc_alpha",
                        "for (int64_t s = threadIdx.x; s < states - 1; s += blockDim.x) G(t)[s] = ctc_alpha")],
    # Wrong block offset: utterance b reads the emit scores at b * rows instead of b * rows * U.
    "emit_block_offset": [("  const TransducerGrid<T> g{blank + b * rows * width, "
                           "emit + b * rows * (width - 1), rows, width};\n"
                           "  T* a = alpha + b * (rows + 1) * width;\n  T* be",
                           "  const TransducerGrid<T> g{blank + b * rows * width, emit + b * rows, rows, width};\n"
                           "  T* a = alpha + b * (rows + 1) * width;\n  T* be")],
}


@pytest.fixture(scope="module")
def faulty(build_root, emu):
    """Library path of each broken kernel source (a few seconds each: the kernel unit has no torch headers)."""
    return {name: cuda_emulation.build_variant(build_root, name, edits) for name, edits in FAULTS.items()}


def test_fault_variants_still_match_cpu_where_the_fault_is_not_exercised(emu, faulty):
    """Control: a variant differs only through its fault (a one-thread block cannot race)."""
    blank, emit, frames, labels = transducer_inputs(10, torch.float64)
    native = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, False)
    emulated = emu.transducer_lattice(blank, emit, frames, labels, False, 1, REVERSED, 0,
                                      faulty["missing_wavefront_barrier"])
    assert_same(emulated, native, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_missing_barrier_is_caught_by_the_adversarial_order(emu, faulty, dtype):
    blank, emit, frames, labels = transducer_inputs(11, dtype)
    width = blank.shape[2]
    native = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, False)
    kernels = faulty["missing_wavefront_barrier"]
    for order in [(REVERSED, 0), (SHUFFLED, 1), (SHUFFLED, 2)]:
        _, alpha, _ = emu.transducer_lattice(blank, emit, frames, labels, False, width, *order, kernels)
        assert not torch.allclose(alpha, native[1], equal_nan=True), f"missing barrier not caught under {order}"
    # The naive schedule runs thread u - 1 (column u - 1) to completion before thread u: the forward
    # pass comes out right without the barrier. Only the adversarial order exposes it.
    _, alpha, _ = emu.transducer_lattice(blank, emit, frames, labels, False, width, ASCENDING, 0, kernels)
    torch.testing.assert_close(alpha, native[1], **TOL[dtype])
    # The correct kernel under the same adversarial orders: no difference.
    _, alpha, _ = emu.transducer_lattice(blank, emit, frames, labels, False, width, REVERSED, 0)
    torch.testing.assert_close(alpha, native[1], **TOL[dtype])


def test_missing_ctc_barrier_is_caught(emu, faulty):
    e, ext, target_lengths, input_lengths, blank = ctc_inputs(12, torch.float64)
    native = torch.ops.seqloss.ctc_occupancy(e, ext, target_lengths, input_lengths, blank)
    for order in [(REVERSED, 0), (SHUFFLED, 5)]:
        log_p, gamma = emu.ctc_occupancy(e, ext, target_lengths, input_lengths, blank, 4, *order,
                                         faulty["missing_ctc_barrier"])
        assert not torch.allclose(log_p, native[0], equal_nan=True)


def test_race_between_log_p_and_the_backward_pass_is_caught(emu, faulty):
    """Without the barrier after log P, the first thread to start the beta pass overwrites alpha cells that
    the others still need for log P: thread 0 (which writes log P) reads them last under the reversed
    order; under the ascending order log P comes out right but the other threads' gamma does not."""
    e, ext, target_lengths, input_lengths, blank = ctc_inputs(19, torch.float64)
    native = torch.ops.seqloss.ctc_occupancy(e, ext, target_lengths, input_lengths, blank)
    kernels = faulty["missing_ctc_total_barrier"]
    log_p, gamma = emu.ctc_occupancy(e, ext, target_lengths, input_lengths, blank, 4, REVERSED, 0, kernels)
    assert not torch.allclose(log_p, native[0], equal_nan=True)
    log_p, gamma = emu.ctc_occupancy(e, ext, target_lengths, input_lengths, blank, 4, ASCENDING, 0, kernels)
    torch.testing.assert_close(log_p, native[0], **TOL[torch.float64])
    assert not torch.allclose(gamma, native[1], equal_nan=True)


def test_off_by_one_loop_bound_is_caught(emu, faulty):
    e, ext, target_lengths, input_lengths, blank = ctc_inputs(13, torch.float64)
    native = torch.ops.seqloss.ctc_occupancy(e, ext, target_lengths, input_lengths, blank)
    log_p, gamma = emu.ctc_occupancy(e, ext, target_lengths, input_lengths, blank, -1, REVERSED, 0,
                                     faulty["ctc_loop_bound"])
    assert not torch.allclose(log_p, native[0], equal_nan=True)
    assert not torch.allclose(gamma, native[1], equal_nan=True)


def test_wrong_block_offset_is_caught(emu, faulty):
    blank, emit, frames, labels = transducer_inputs(14, torch.float64)
    native = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, True)
    log_p, alpha, _ = emu.transducer_lattice(blank, emit, frames, labels, True, -1, REVERSED, 0,
                                             faulty["emit_block_offset"])
    torch.testing.assert_close(alpha[0], native[1][0])  # block 0: the offset is 0 either way
    assert not torch.allclose(alpha[1:], native[1][1:], equal_nan=True)


# ---------------------------------------------------------------------------------------------
# The barrier itself
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [REVERSED, SHUFFLED, ASCENDING])
def test_barrier_orders_a_neighbour_exchange(emu, order):
    n = 9
    expected = torch.tensor([x + 1 + (x + 1) % n for x in range(n)])
    assert torch.equal(emu.barrier_test(0, n, order, 11), expected)


def _raises_without_hanging(call, match):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        with pytest.raises(RuntimeError, match=match):
            future.result(timeout=60)


@pytest.mark.parametrize("order", [REVERSED, SHUFFLED, ASCENDING])
def test_barrier_divergence_is_an_error(emu, order):
    _raises_without_hanging(lambda: emu.barrier_test(1, 6, order, 0),
                            r"barrier divergence in kernel barrier_test_kernel, block 0: threads \[.*\] wait at "
                            r"__syncthreads\(\) \(.*barrier_test_kernels.cuh:\d+, barrier 1\) while threads "
                            r"\[1, 3, 5\] have returned")
    _raises_without_hanging(lambda: emu.barrier_test(2, 6, order, 0),
                            r"barrier divergence in kernel barrier_test_kernel, block 0: thread \d waits at "
                            r"__syncthreads\(\) \(.*:\d+, barrier 1\) but thread \d at")
    # The emulation is usable again after an aborted block.
    assert emu.barrier_test(0, 4, order, 0).tolist() == [2, 4, 6, 4]


def test_launch_configuration_is_checked(emu):
    blank, emit, frames, labels = transducer_inputs(15, torch.float32)
    with pytest.raises(RuntimeError, match="cannot load kernels from /nonexistent/kernels.so"):
        emu.transducer_lattice(blank, emit, frames, labels, False, -1, 0, 0, "/nonexistent/kernels.so")
    with pytest.raises(ValueError, match="threads_per_block"):
        emu.transducer_lattice(blank, emit, frames, labels, False, 1025)
    with pytest.raises(ValueError, match="order"):
        emu.transducer_lattice(blank, emit, frames, labels, False, -1, 3)


# ---------------------------------------------------------------------------------------------
# Argument checks shared by the CPU and CUDA ops (seqloss/csrc/checks.h)
# ---------------------------------------------------------------------------------------------
def _transducer_args():
    blank, emit, frames, labels = transducer_inputs(16, torch.float32, batch=3, rows=5, labels=3)
    return dict(blank=blank, emit=emit, frames=frames, labels=labels)


def _ctc_args():
    e, ext, target_lengths, input_lengths, _ = ctc_inputs(17, torch.float32)
    return dict(e=e, ext=ext, target_lengths=target_lengths, input_lengths=input_lengths)


TRANSDUCER_BAD = [
    ("blank", TypeError, lambda a: a.update(blank=a["blank"].half(), emit=a["emit"].half())),
    ("blank", ValueError, lambda a: a.update(blank=a["blank"][0])),
    ("emit", ValueError, lambda a: a.update(emit=a["emit"][:, :, :-1])),
    ("emit", ValueError, lambda a: a.update(emit=a["emit"][:2])),
    ("emit", TypeError, lambda a: a.update(emit=a["emit"].double())),
    ("frames", TypeError, lambda a: a.update(frames=a["frames"].int())),
    ("frames", ValueError, lambda a: a.update(frames=a["frames"][:2])),
    ("labels", ValueError, lambda a: a.update(labels=a["labels"][:, None])),
    ("labels", TypeError, lambda a: a.update(labels=a["labels"].float())),
]
CTC_BAD = [
    ("e", TypeError, lambda a: a.update(e=a["e"].long())),
    ("e", ValueError, lambda a: a.update(e=a["e"][0])),
    ("ext", ValueError, lambda a: a.update(ext=a["ext"][:, :-1])),
    ("ext", TypeError, lambda a: a.update(ext=a["ext"].int())),
    ("target_lengths", ValueError, lambda a: a.update(target_lengths=a["target_lengths"][1:])),
    ("input_lengths", TypeError, lambda a: a.update(input_lengths=a["input_lengths"].int())),
]


def _error(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001  (the test compares whatever was raised)
        return type(error), str(error).splitlines()[0]
    return None


@pytest.mark.parametrize("name,error,mutate", TRANSDUCER_BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(TRANSDUCER_BAD)])
@pytest.mark.parametrize("op", ["transducer_lattice", "transducer_viterbi"])
def test_transducer_ops_reject_the_same_way_on_cpu_and_cuda(emu, op, name, error, mutate):
    args = _transducer_args()
    mutate(args)
    values = [args["blank"], args["emit"], args["frames"], args["labels"], False]
    native = _error(lambda: getattr(torch.ops.seqloss, op)(*values))
    emulated = _error(lambda: getattr(emu, op)(*values))
    assert native is not None and native[0] is error and f"seqloss::{op}: {name} " in native[1], native
    assert emulated == native


@pytest.mark.parametrize("name,error,mutate", CTC_BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(CTC_BAD)])
@pytest.mark.parametrize("op", ["ctc_occupancy", "ctc_viterbi"])
def test_ctc_ops_reject_the_same_way_on_cpu_and_cuda(emu, op, name, error, mutate):
    args = _ctc_args()
    mutate(args)
    values = [args["e"], args["ext"], args["target_lengths"], args["input_lengths"], 0]
    native = _error(lambda: getattr(torch.ops.seqloss, op)(*values))
    emulated = _error(lambda: getattr(emu, op)(*values))
    assert native is not None and native[0] is error and f"seqloss::{op}: {name} " in native[1], native
    assert emulated == native


LENGTH_BAD = [
    ("transducer_lattice", "frames", lambda a: a["frames"].__setitem__(1, 6), r"frames\[1\] = 6 must be in \[0, 5\]"),
    ("transducer_lattice", "frames", lambda a: a["frames"].__setitem__(0, -1), r"frames\[0\] = -1 must be in"),
    ("transducer_viterbi", "labels", lambda a: a["labels"].__setitem__(2, 4), r"labels\[2\] = 4 must be in \[0, 3\]"),
    ("ctc_occupancy", "input_lengths", lambda a: a["input_lengths"].__setitem__(0, 13),
     r"input_lengths\[0\] = 13 must be in \[0, 12\]"),
    ("ctc_viterbi", "target_lengths", lambda a: a["target_lengths"].__setitem__(1, 6),
     r"target_lengths\[1\] = 6 must be in \[0, 5\]"),
]


@pytest.mark.parametrize("op,name,mutate,match", LENGTH_BAD,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(LENGTH_BAD)])
def test_cpu_ops_check_length_values(op, name, mutate, match):
    """On the CPU the lengths are read and checked; out-of-range values raise instead of reading past the tensor."""
    args = _transducer_args() if op.startswith("transducer") else _ctc_args()
    mutate(args)
    values = list(args.values()) + [False if op.startswith("transducer") else 0]
    with pytest.raises(ValueError, match=rf"seqloss::{op}: {match}"):
        getattr(torch.ops.seqloss, op)(*values)


def test_ssnt_op_checks():
    gen = torch.Generator().manual_seed(18)
    token = torch.randn(2, 3, 4, generator=gen).log_softmax(-1)
    choose = torch.randn(2, 3, 4, generator=gen).sigmoid().log()
    good = torch.tensor([4, 2]), torch.tensor([3, 1])
    torch.ops.seqloss.ssnt_lattice(token, choose, *good)
    with pytest.raises(ValueError, match=r"seqloss::ssnt_lattice: source_lengths\[0\] = 5 must be in \[0, 4\]"):
        torch.ops.seqloss.ssnt_lattice(token, choose, torch.tensor([5, 2]), good[1])
    with pytest.raises(ValueError, match=r"seqloss::ssnt_lattice: target_lengths\[1\] = -1"):
        torch.ops.seqloss.ssnt_lattice(token, choose, good[0], torch.tensor([3, -1]))
    with pytest.raises(TypeError, match="seqloss::ssnt_lattice: choose must have the dtype of token"):
        torch.ops.seqloss.ssnt_lattice(token, choose.double(), *good)
    with pytest.raises(ValueError, match=r"seqloss::ssnt_lattice: source_lengths must have shape \(2,\)"):
        torch.ops.seqloss.ssnt_lattice(token, choose, good[0][:1], good[1])


def test_emulation_rejects_non_cpu_tensors(emu):
    args = _transducer_args()
    with pytest.raises(ValueError, match="seqloss::transducer_lattice: frames must be on the device of blank"):
        emu.transducer_lattice(args["blank"], args["emit"], args["frames"].to("meta"), args["labels"], False)
