"""The native backend (C++ CPU kernels as torch custom ops) against the torch reference backend.

Every loss, both layouts, every reduction: losses and gradients agree to 1e-9 in float64 and 1e-5
in float32. The ops pass torch.library.opcheck (schema, fake kernels, autograd registration), trace
into torch.compile(fullgraph=True) graphs, and the Viterbi ops return the best path.
"""
import itertools
import math
import warnings

import pytest
import torch
from helpers import ctc_batch, pack_rows, pack_transducer, ssnt_batch, transducer_batch

import seqloss
from seqloss import _backend, _ops
from seqloss.scores import ctc_emissions, ctc_extended_labels

TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["none", "mean", "sum"]


def test_cpu_extension_is_built():
    assert _ops.CPU_AVAILABLE, _ops.LOAD_ERROR
    assert _backend.resolve_backend(None, torch.device("cpu")) == "native"


def _both_backends(fn, inputs, dtype):
    results = []
    for backend in ("torch", "native"):
        xs = [x.detach().clone().requires_grad_() for x in inputs]
        loss = fn(*xs, backend=backend)
        weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view(loss.shape)
        grads = torch.autograd.grad((torch.where(torch.isfinite(loss), loss, 0.0) * weights).sum(), xs)
        results.append((loss.detach(), grads))
    (loss_t, grads_t), (loss_n, grads_n) = results
    torch.testing.assert_close(loss_n, loss_t, **TOL[dtype])
    for g_n, g_t in zip(grads_n, grads_t):
        torch.testing.assert_close(g_n, g_t, **TOL[dtype])
    return loss_n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("simple", [False, True])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_ctc_native_equals_torch(dtype, reduction, simple, layout):
    x, targets, input_lengths, target_lengths = ctc_batch(3, 40, 5, 7, 9, dtype=dtype, normalised=False)
    targets[1, :4] = torch.tensor([2, 2, 3, 3])  # repeats: skips forbidden
    if layout == "concatenated":
        targets = torch.cat([targets[b, : target_lengths[b]] for b in range(targets.shape[0])])
    loss_fn = seqloss.simple_ctc_loss if simple else seqloss.ctc_loss

    def fn(v, backend):
        return loss_fn(v, targets, input_lengths, target_lengths, reduction=reduction, zero_infinity=True,
                       backend=backend)
    _both_backends(fn, [x], dtype)


@pytest.mark.parametrize("simple", [False, True])
def test_ctc_native_infeasible_gives_inf_on_both_backends(simple):
    x, targets, _, _ = ctc_batch(0, 6, 2, 5, 4)
    input_lengths, target_lengths = torch.tensor([6, 2]), torch.tensor([4, 4])
    loss_fn = seqloss.simple_ctc_loss if simple else seqloss.ctc_loss
    losses = [loss_fn(x, targets, input_lengths, target_lengths, reduction="none", backend=b)
              for b in ("torch", "native")]
    assert torch.isinf(losses[1][1]) and torch.isfinite(losses[1][0])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("variant", ["rnnt", "modified_final_blank", "modified_no_final_blank"])
@pytest.mark.parametrize("layout", ["dense", "packed"])
def test_transducer_native_equals_torch(dtype, reduction, variant, layout):
    logits, targets, logit_lengths, target_lengths = transducer_batch(5, 4, 9, 5, 6, dtype=dtype, blank=2)
    if layout == "packed":
        logits = pack_transducer(logits, logit_lengths, target_lengths)
    loss_fn = seqloss.rnnt_loss if variant == "rnnt" else seqloss.modified_rnnt_loss
    extra = {} if variant == "rnnt" else {"final_blank": variant == "modified_final_blank"}

    def fn(v, backend):
        return loss_fn(v, targets, logit_lengths, target_lengths, blank=2, reduction=reduction, backend=backend,
                       **extra)
    _both_backends(fn, [logits], dtype)


@pytest.mark.parametrize("fused_log_softmax, clamp", [(False, -1), (True, 0.05), (False, 0.05)])
def test_rnnt_native_equals_torch_options(fused_log_softmax, clamp):
    logits, targets, logit_lengths, target_lengths = transducer_batch(6, 3, 7, 4, 5)

    def fn(v, backend):
        return seqloss.rnnt_loss(v, targets, logit_lengths, target_lengths, blank=0, clamp=clamp,
                                 fused_log_softmax=fused_log_softmax, reduction="none", backend=backend)
    _both_backends(fn, [logits], torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_ssnt_native_equals_torch(dtype, reduction, layout):
    log_probs, targets, log_p_choose, source_lengths, target_lengths = ssnt_batch(7, 4, 5, 8, 6, dtype=dtype)
    if layout == "packed":
        log_probs, log_p_choose = pack_rows(log_probs, target_lengths), pack_rows(log_p_choose, target_lengths)
        targets = pack_rows(targets, target_lengths)

    def fn(lp, ch, backend):
        return seqloss.ssnt_loss(lp, targets, ch, source_lengths, target_lengths, reduction=reduction,
                                 backend=backend)
    _both_backends(fn, [log_probs, log_p_choose], dtype)


def test_native_long_sequences_match_torch():
    """Long lattices exercise the vectorised CTC loop (several SIMD blocks and tails) and deep recursions."""
    x, targets, input_lengths, target_lengths = ctc_batch(8, 300, 3, 20, 61, dtype=torch.float64)
    _both_backends(lambda v, backend: seqloss.ctc_loss(v, targets, input_lengths, target_lengths, reduction="sum",
                                                       backend=backend), [x], torch.float64)
    logits, rtargets, logit_lengths, rtarget_lengths = transducer_batch(9, 2, 120, 40, 4)
    _both_backends(lambda v, backend: seqloss.rnnt_loss(v, rtargets, logit_lengths, rtarget_lengths, blank=0,
                                                        backend=backend), [logits], torch.float64)


def test_extreme_scores_match_torch():
    x, targets, input_lengths, target_lengths = ctc_batch(10, 12, 3, 5, 3, dtype=torch.float32, normalised=False)
    x = x * 1e10
    x[:, :, 4] = float("-inf")  # a class no path needs
    targets = targets.clamp(max=3)
    for backend in ("torch", "native"):
        v = x.clone().requires_grad_()
        loss = seqloss.ctc_loss(v, targets, input_lengths, target_lengths, reduction="sum", backend=backend)
        (grad,) = torch.autograd.grad(loss, v)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        if backend == "torch":
            reference = (loss, grad)
    torch.testing.assert_close(loss, reference[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, reference[1], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The ops themselves
# ---------------------------------------------------------------------------------------------
def _lattice_inputs(dtype, one_symbol_per_frame):
    gen = torch.Generator().manual_seed(11)
    blank = torch.randn(3, 5, 4, generator=gen, dtype=dtype).log_softmax(-1)
    emit = torch.randn(3, 5, 3, generator=gen, dtype=dtype).log_softmax(-1)
    frames, labels = torch.tensor([5, 4, 3]), torch.tensor([3, 2, 0])
    return blank, emit, frames, labels, one_symbol_per_frame


def _ctc_inputs(dtype):
    x, targets, input_lengths, target_lengths = ctc_batch(12, 9, 3, 5, 3, dtype=dtype)
    ext = ctc_extended_labels(targets, 0)
    return ctc_emissions(x, ext, input_lengths), ext, target_lengths, input_lengths, 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("one_symbol_per_frame", [False, True])
def test_opcheck_transducer_ops(dtype, one_symbol_per_frame):
    blank, emit, frames, labels, delta = _lattice_inputs(dtype, one_symbol_per_frame)
    torch.library.opcheck(torch.ops.seqloss.transducer_lattice.default,
                          (blank.requires_grad_(), emit.requires_grad_(), frames, labels, delta))
    torch.library.opcheck(torch.ops.seqloss.transducer_viterbi.default,
                          (blank.detach(), emit.detach(), frames, labels, delta))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_ctc_ops(dtype):
    e, ext, target_lengths, input_lengths, blank = _ctc_inputs(dtype)
    torch.library.opcheck(torch.ops.seqloss.ctc_occupancy.default,
                          (e.requires_grad_(), ext, target_lengths, input_lengths, blank))
    torch.library.opcheck(torch.ops.seqloss.ctc_viterbi.default,
                          (e.detach(), ext, target_lengths, input_lengths, blank))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_ssnt_op(dtype):
    log_probs, targets, choose, source_lengths, target_lengths = ssnt_batch(4, 3, 4, 6, 3, dtype=dtype)
    token = log_probs.gather(-1, targets[..., None, None].expand(*targets.shape, log_probs.shape[-2], 1))[..., 0]
    torch.library.opcheck(torch.ops.seqloss.ssnt_lattice.default, (token, choose, source_lengths, target_lengths))


def test_op_autograd_is_the_occupancy():
    blank, emit, frames, labels, _ = _lattice_inputs(torch.float64, False)
    torch.autograd.gradcheck(lambda b, e: torch.ops.seqloss.transducer_lattice(b, e, frames, labels, False)[0],
                             (blank.requires_grad_(), emit.requires_grad_()))
    e, ext, target_lengths, input_lengths, blank_id = _ctc_inputs(torch.float64)
    e = torch.where(torch.isfinite(e), e, -1e3).requires_grad_()  # gradcheck perturbs every entry
    torch.autograd.gradcheck(lambda v: torch.ops.seqloss.ctc_occupancy(v, ext, target_lengths, input_lengths,
                                                                       blank_id)[0], (e,))


@pytest.mark.parametrize("name", ["ctc", "rnnt", "ssnt"])
def test_fullgraph_compile_traces_the_native_op(name):
    torch._dynamo.reset()
    seen = []

    def capture(graph_module, example_inputs):
        seen.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    x, tg, il, tl = ctc_batch(0, 6, 2, 5, 2, dtype=torch.float32)
    logits, rtg, ll, rtl = transducer_batch(0, 2, 4, 2, 5, dtype=torch.float32)
    lp, stg, ch, sl, stl = ssnt_batch(0, 2, 2, 4, 3, dtype=torch.float32)
    fn, inputs, op = {
        "ctc": (lambda v: seqloss.ctc_loss(v, tg, il, tl, backend="native"), (x,), "seqloss.ctc_loss"),
        "rnnt": (lambda v: seqloss.rnnt_loss(v, rtg, ll, rtl, blank=0, backend="native"), (logits,),
                 "seqloss.transducer_loss"),
        "ssnt": (lambda a, b: seqloss.ssnt_loss(a, stg, b, sl, stl, backend="native"), (lp, ch),
                 "seqloss.ssnt_lattice"),
    }[name]
    eager = fn(*inputs)
    compiled = torch.compile(fn, fullgraph=True, backend=capture)(*inputs)
    torch.testing.assert_close(compiled, eager)
    assert any(op in target for target in seen), seen


# ---------------------------------------------------------------------------------------------
# Viterbi
# ---------------------------------------------------------------------------------------------
def _transducer_best_path(blank, emit, frames, labels, delta):
    """Max over all monotone paths by plain Python dynamic programming (float64)."""
    best = {(0, 0): 0.0}
    rows, width = blank.shape[0], blank.shape[1]
    for t in range(rows + 1):
        for u in range(width):
            if (t, u) == (0, 0):
                continue
            options = []
            if t > 0 and (t - 1, u) in best:
                options.append(best[(t - 1, u)] + blank[t - 1, u].item())
            if u > 0 and t - delta >= 0 and (t - delta, u - 1) in best and t - delta < rows:
                options.append(best[(t - delta, u - 1)] + emit[t - delta, u - 1].item())
            if options:
                best[(t, u)] = max(options)
    return best.get((frames, labels), -math.inf)


@pytest.mark.parametrize("one_symbol_per_frame", [False, True])
def test_transducer_viterbi_is_the_best_path(one_symbol_per_frame):
    blank, emit, frames, labels, delta = _lattice_inputs(torch.float64, one_symbol_per_frame)
    emit_frames, score = _ops.transducer_viterbi(blank, emit, frames, labels, one_symbol_per_frame=delta)
    for b in range(3):
        expected = _transducer_best_path(blank[b], emit[b], int(frames[b]), int(labels[b]), int(delta))
        assert score[b].item() == pytest.approx(expected, abs=1e-12)
        if not math.isfinite(expected):
            assert (emit_frames[b] == -1).all()
            continue
        # the returned path has that score: emits at the given frames, blanks everywhere else
        path_frames = emit_frames[b, : labels[b]].tolist()
        assert (emit_frames[b, labels[b]:] == -1).all() and path_frames == sorted(path_frames)
        total, t = 0.0, 0
        for u in range(int(labels[b]) + 1):
            stop = path_frames[u] if u < labels[b] else int(frames[b])
            total += sum(blank[b, s, u].item() for s in range(t, stop))
            if u < labels[b]:
                total += emit[b, stop, u].item()
                t = stop + delta
        assert total == pytest.approx(expected, abs=1e-12)


def test_ctc_viterbi_is_the_best_path():
    e, ext, target_lengths, input_lengths, blank = _ctc_inputs(torch.float64)
    states, score = _ops.ctc_viterbi(e, ext, target_lengths, input_lengths, blank)
    for b in range(e.shape[1]):
        frames, num_states = int(input_lengths[b]), 2 * int(target_lengths[b]) + 1
        labels = ext[b, :num_states].tolist()
        best = -math.inf
        for path in itertools.product(range(num_states), repeat=frames):  # all state sequences (tiny)
            ok = path[0] < 2 and path[-1] >= num_states - 2 and all(
                0 <= s1 - s0 <= 1 or (s1 - s0 == 2 and labels[s1] != blank and labels[s1] != labels[s0])
                for s0, s1 in zip(path, path[1:]))
            if ok:
                best = max(best, sum(e[t, b, s].item() for t, s in enumerate(path)))
        assert score[b].item() == pytest.approx(best, abs=1e-12)
        got = states[b, :frames].tolist()
        assert sum(e[t, b, s].item() for t, s in enumerate(got)) == pytest.approx(best, abs=1e-12)
        assert (states[b, frames:] == -1).all()


# ---------------------------------------------------------------------------------------------
# Backend selection and the compiled V-wide stages
# ---------------------------------------------------------------------------------------------
def test_backend_keyword_and_environment(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("SEQLOSS_BACKEND", "torch")
    assert _backend.resolve_backend(None, cpu) == "torch"
    assert _backend.resolve_backend("native", cpu) == "native"
    monkeypatch.setenv("SEQLOSS_BACKEND", "fast")
    with pytest.raises(ValueError, match="SEQLOSS_BACKEND"):
        _backend.resolve_backend(None, cpu)
    with pytest.raises(ValueError, match="backend"):
        seqloss.ctc_loss(*ctc_batch(0, 6, 2, 5, 2)[:4], backend="cuda")


def test_native_unavailable_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(_ops, "CPU_AVAILABLE", False)
    monkeypatch.setattr(_ops, "LOAD_ERROR", "not built here")
    assert _backend.resolve_backend(None, torch.device("cpu")) == "torch"
    with pytest.warns(RuntimeWarning, match="not built here"):
        assert _backend.resolve_backend("native", torch.device("cpu")) == "torch"


def test_compiled_v_wide_stages_equal_eager(monkeypatch):
    """SEQLOSS_COMPILE=1 runs stages 1 and 3 through torch.compile: same loss and gradient as eager."""
    logits, targets, logit_lengths, target_lengths = transducer_batch(13, 3, 6, 4, 7, dtype=torch.float32)
    results = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("SEQLOSS_COMPILE", mode)
        v = logits.clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a failed compile would warn and fall back
            loss = seqloss.rnnt_loss(v, targets, logit_lengths, target_lengths, blank=0, clamp=0.3, backend="native")
            results[mode] = (loss.detach(), torch.autograd.grad(loss, v)[0])
    torch.testing.assert_close(results["1"][0], results["0"][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results["1"][1], results["0"][1], rtol=1e-6, atol=1e-6)


SCALAR_CHECK = """
import torch, seqloss
from helpers import ctc_batch, pack_transducer, ssnt_batch, transducer_batch
for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
    x, tg, il, tl = ctc_batch(3, 30, 4, 12, 9, dtype=dtype)
    lp, stg, ch, sl, stl = ssnt_batch(4, 3, 11, 21, 5, dtype=dtype)
    logits, rtg, ll, rtl = transducer_batch(5, 4, 13, 6, 11, dtype=dtype)
    packed = pack_transducer(logits, ll, rtl)
    for fn, inputs in ((lambda v: seqloss.ctc_loss(v, tg, il, tl, reduction="sum", backend=BACKEND), (x,)),
                       (lambda a, c: seqloss.ssnt_loss(a, stg, c, sl, stl, reduction="sum", backend=BACKEND),
                        (lp, ch)),
                       (lambda v: seqloss.rnnt_loss(v, rtg, ll, rtl, blank=0, clamp=0.2, reduction="sum",
                                                    backend=BACKEND), (logits,)),
                       (lambda v: seqloss.modified_rnnt_loss(v, rtg, ll, rtl, blank=0, reduction="sum",
                                                             backend=BACKEND), (packed,))):
        results = []
        for BACKEND in ("torch", "native"):
            leaves = [t.clone().requires_grad_() for t in inputs]
            loss = fn(*leaves)
            results.append([loss, *torch.autograd.grad(loss, leaves)])
        for got, expected in zip(results[1], results[0]):
            torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.skipif(not _ops.CPU_AVAILABLE, reason="native kernels not built")
def test_scalar_kernels_without_avx2():
    """SEQLOSS_DISABLE_AVX2=1 runs the scalar CTC, SSNT and fused transducer kernels (the AVX2 ones are the
    default here)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = dict(os.environ, SEQLOSS_DISABLE_AVX2="1", OMP_NUM_THREADS="1")
    here = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", SCALAR_CHECK], cwd=here, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
