"""The native self-check: every op against the torch backend on first use, and the fallback when one disagrees.

Faults are injected by replacing one wrapper in ``seqloss._ops`` (which both the check and the
losses call) with one that perturbs a value or a best path; the check must name that op, warn,
and switch the device to the torch backend, whose results the losses then reproduce bitwise.
"""
import threading
import time
import warnings

import pytest
import torch
from helpers import ctc_batch, ssnt_batch, transducer_batch

import seqloss
from seqloss import _backend, _ops, _selfcheck

pytestmark = pytest.mark.skipif(not _ops.CPU_AVAILABLE, reason="native kernels not built")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_self_check(monkeypatch):
    """Each test starts with no first-use outcome and leaves none behind (later tests check afresh)."""
    monkeypatch.delenv("SEQLOSS_SELF_CHECK", raising=False)
    monkeypatch.delenv("SEQLOSS_BACKEND", raising=False)
    _selfcheck.reset()
    yield
    _selfcheck.reset()


def test_report_on_the_cpu_is_all_ok():
    report = seqloss.check_backend("cpu")
    assert report.ok and report.unavailable is None and report.unchecked == []
    names = {check.op.split(" ")[0] for check in report.checks}
    assert names == set(_ops.registered_ops("cpu"))  # every registered op, anything new would be "not checked"
    assert len(report.checks) == 13  # both schedules of both transducer ops, 2 CTC ops, SSNT, the fused transducer
    # loss in both schedules, its gradient and the in-place gradient, the fused CTC loss and its gradient
    assert all(check.max_abs_diff < 1e-12 for check in report.checks)
    text = str(report)
    assert "max abs diff" in text and text.count(" ok") >= 13 and "failed" not in text
    assert report.seconds < 1.0  # milliseconds in practice; generous for a loaded machine


def test_first_native_call_runs_the_check_once():
    assert _selfcheck.first_use_report(CPU) is None
    x, targets, input_lengths, target_lengths = ctc_batch(0, 8, 2, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seqloss.ctc_loss(x, targets, input_lengths, target_lengths)
    report = _selfcheck.first_use_report(CPU)
    assert report is not None and report.ok
    seqloss.ctc_loss(x, targets, input_lengths, target_lengths)
    assert _selfcheck.first_use_report(CPU) is report  # not run again


def test_the_torch_backend_does_not_run_it():
    x, targets, input_lengths, target_lengths = ctc_batch(0, 8, 2, 5, 3)
    seqloss.ctc_loss(x, targets, input_lengths, target_lengths, backend="torch")
    assert _selfcheck.first_use_report(CPU) is None


def _perturb_output(name, index, delta):
    original = getattr(_ops, name)

    def faulty(*args, **kwargs):
        out = list(original(*args, **kwargs))
        out[index] = out[index] + delta
        return tuple(out)
    return faulty


def _wrong_transducer_path(blank, emit, frames, labels, *, one_symbol_per_frame):
    """The best score with a different path: the first emitted label moved one frame later."""
    score, emit_frames = torch.ops.seqloss.transducer_viterbi(blank, emit, frames, labels, one_symbol_per_frame)
    emit_frames = emit_frames.clone()
    emit_frames[:, 0] = torch.where(emit_frames[:, 0] >= 0, emit_frames[:, 0] + 1, -1)
    return emit_frames, score


def _wrong_ctc_path(*args):
    score, states = torch.ops.seqloss.ctc_viterbi(*args)
    return states.flip(1), score


def _faulty_grad(inplace, padding=False):
    """transducer_loss_grad off by 1e-6 where `inplace` matches, or (``padding``) with padded dense rows left at 1."""
    original = _ops.transducer_loss_grad

    def faulty(logits, *args, inplace=False, **kwargs):
        grad = original(logits, *args, inplace=inplace, **kwargs)
        if inplace != faulty.inplace:
            return grad
        if padding:
            frames = args[1]
            return torch.stack([torch.where(torch.arange(grad.shape[1]).view(-1, 1, 1) < frames[b], grad[b], 1.0)
                                for b in range(grad.shape[0])])
        return grad + 1e-6
    faulty.inplace = inplace
    return faulty


def _faulty_ctc_grad(log_probs, targets, input_lengths, target_lengths, gamma, scale, blank):
    """The CTC gradient with the padded frames of utterance 2 (3 of 6 frames in the check) not zeroed."""
    grad = torch.ops.seqloss.ctc_loss_grad(log_probs, targets, input_lengths, target_lengths, gamma, scale, blank)
    grad[int(input_lengths[2]):, 2] = 1.0
    return grad


FAULTS = {
    "ctc_occupancy": ("ctc_occupancy", lambda: _perturb_output("ctc_occupancy", 0, 1e-3)),
    "ctc_occupancy gamma": ("ctc_occupancy", lambda: _perturb_output("ctc_occupancy", 1, 1e-6)),
    "transducer_lattice": ("transducer_lattice", lambda: _perturb_output("transducer_marginals", 2, 1e-4)),
    "transducer_viterbi": ("transducer_viterbi", lambda: _wrong_transducer_path),
    "ctc_viterbi": ("ctc_viterbi", lambda: _wrong_ctc_path),
    "ssnt_lattice": ("ssnt_lattice", lambda: _perturb_output("ssnt_lattice", 2, 1e-5)),
    "transducer_loss lse": ("transducer_loss", lambda: _perturb_output("transducer_loss", 1, 1e-6)),
    "transducer_loss occ_emit": ("transducer_loss", lambda: _perturb_output("transducer_loss", 3, 1e-6)),
    "transducer_loss_grad": ("transducer_loss_grad", lambda: _faulty_grad(False)),
    "transducer_loss_grad padding": ("transducer_loss_grad", lambda: _faulty_grad(False, padding=True)),
    "transducer_loss_grad_": ("transducer_loss_grad_", lambda: _faulty_grad(True)),
    "ctc_loss": ("ctc_loss", lambda: _perturb_output("ctc_loss", 0, 1e-6)),
    "ctc_loss gamma": ("ctc_loss", lambda: _perturb_output("ctc_loss", 1, 1e-6)),
    "ctc_loss_grad": ("ctc_loss_grad", lambda: _faulty_ctc_grad),
}
WRAPPER = {"transducer_lattice": "transducer_marginals", "transducer_loss_grad_": "transducer_loss_grad"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_injected_fault_is_caught_and_named(monkeypatch, fault):
    op, make = FAULTS[fault]
    monkeypatch.setattr(_ops, WRAPPER.get(op, op), make())
    report = seqloss.check_backend("cpu")
    assert not report.ok
    assert {check.op.split(" ")[0] for check in report.failures} == {op}
    assert op in str(report) and "failed" in str(report)


def test_faulty_ctc_kernel_warns_and_falls_back_to_the_torch_backend(monkeypatch):
    monkeypatch.setattr(_ops, "ctc_occupancy", _perturb_output("ctc_occupancy", 0, 1e-3))
    x, targets, input_lengths, target_lengths = ctc_batch(3, 12, 3, 6, 4, dtype=torch.float32)

    def loss_and_grad(**kwargs):
        v = x.clone().requires_grad_()
        loss = seqloss.ctc_loss(v, targets, input_lengths, target_lengths, reduction="sum", **kwargs)
        return loss.detach(), torch.autograd.grad(loss, v)[0]

    with pytest.warns(RuntimeWarning, match=r"ctc_occupancy: max abs difference 0\.001") as caught:
        loss, grad = loss_and_grad()
    assert "using the torch backend for cpu" in str(caught[0].message)
    reference_loss, reference_grad = loss_and_grad(backend="torch")
    assert torch.equal(loss, reference_loss) and torch.equal(grad, reference_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        again = loss_and_grad(backend="native")  # an explicit request gets the checked backend too
    assert torch.equal(again[0], reference_loss)
    assert _backend.resolve_backend(None, CPU) == "torch"


def test_wrong_viterbi_path_falls_back_for_alignments(monkeypatch):
    monkeypatch.setattr(_ops, "transducer_viterbi", _wrong_transducer_path)
    logits, targets, logit_lengths, target_lengths = transducer_batch(5, 3, 7, 3, 6)
    with pytest.warns(RuntimeWarning, match="transducer_viterbi"):
        got = seqloss.rnnt_align(logits, targets, logit_lengths, target_lengths, blank=0)
    expected = seqloss.rnnt_align(logits, targets, logit_lengths, target_lengths, blank=0, backend="torch")
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


def test_faulty_ssnt_kernel_falls_back(monkeypatch):
    monkeypatch.setattr(_ops, "ssnt_lattice", _perturb_output("ssnt_lattice", 1, 1e-5))
    log_probs, targets, choose, source_lengths, target_lengths = ssnt_batch(2, 2, 3, 6, 5)
    with pytest.warns(RuntimeWarning, match="ssnt_lattice"):
        loss = seqloss.ssnt_loss(log_probs, targets, choose, source_lengths, target_lengths)
    assert torch.equal(loss, seqloss.ssnt_loss(log_probs, targets, choose, source_lengths, target_lengths,
                                               backend="torch"))


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setattr(_ops, "ctc_loss", _perturb_output("ctc_loss", 0, 1e-3))
    monkeypatch.setenv("SEQLOSS_SELF_CHECK", "0")
    x, targets, input_lengths, target_lengths = ctc_batch(3, 12, 3, 6, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = seqloss.ctc_loss(x, targets, input_lengths, target_lengths, reduction="sum")
    assert _selfcheck.first_use_report(CPU) is None
    reference = seqloss.ctc_loss(x, targets, input_lengths, target_lengths, reduction="sum", backend="torch")
    assert loss.item() == pytest.approx(reference.item() - 3e-3, abs=1e-9)  # the faulty kernel was used
    monkeypatch.setenv("SEQLOSS_SELF_CHECK", "yes")
    with pytest.raises(ValueError, match="SEQLOSS_SELF_CHECK"):
        seqloss.ctc_loss(x, targets, input_lengths, target_lengths)


def test_not_run_while_torch_compile_traces():
    torch._dynamo.reset()
    seen = []

    def capture(graph_module, example_inputs):
        seen.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    x, targets, input_lengths, target_lengths = ctc_batch(0, 6, 2, 5, 2, dtype=torch.float32)
    compiled = torch.compile(lambda v: seqloss.ctc_loss(v, targets, input_lengths, target_lengths),
                             fullgraph=True, backend=capture)
    compiled(x)  # fullgraph: running the check inside the trace would break the graph and raise
    assert _selfcheck.first_use_report(CPU) is None
    assert any("seqloss.ctc_loss" in target for target in seen)


def test_concurrent_first_calls_run_it_once(monkeypatch):
    calls = []
    real = _selfcheck.check_backend

    def slow_check(device):
        calls.append(device)
        time.sleep(0.2)  # keep the other threads waiting on the first
        return real(device)
    monkeypatch.setattr(_selfcheck, "check_backend", slow_check)
    results = []
    threads = [threading.Thread(target=lambda: results.append(_selfcheck.native_ok(CPU))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [True] * 4 and len(calls) == 1


def test_the_check_does_not_recurse(monkeypatch):
    """A native op that itself calls a loss (re-entering backend selection) during the check must not deadlock."""
    inner = []
    original = _ops.ctc_occupancy

    def reentrant(*args):
        if not inner:  # the loss below calls this op again: re-enter once
            inner.append(None)
            x, targets, input_lengths, target_lengths = ctc_batch(0, 6, 2, 5, 2)
            inner.append(seqloss.ctc_loss(x, targets, input_lengths, target_lengths))
        return original(*args)
    monkeypatch.setattr(_ops, "ctc_occupancy", reentrant)
    done = []
    thread = threading.Thread(target=lambda: done.append(_selfcheck.native_ok(CPU)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert done == [True] and len(inner) == 2
