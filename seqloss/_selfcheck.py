"""Self-check of the native kernels: each op against the torch backend on a tiny random problem.

:func:`check_backend` runs every native op registered for a device (``seqloss._ops``) on a small
fixed-seed float64 problem and compares all of its outputs with the pure-PyTorch reference in
``seqloss._lattice``: the transducer lattice in both schedules, the CTC occupancy, both Viterbi
ops (score and path), the fused SSNT pass, the fused transducer loss (dense and packed logits) with
its gradient, and the fused CTC loss with its gradient. It returns a :class:`SelfCheckReport`.

:func:`native_ok` is what backend selection calls: the first time the native backend is chosen
for a device it runs the check once (a few milliseconds) and remembers the outcome. If any op
disagrees, seqloss warns, naming the op and the difference, and uses the torch backend for that
device from then on. ``SEQLOSS_SELF_CHECK=0`` skips the check. It never runs while
``torch.compile`` traces, nor inside itself (the check calls the native ops), and a lock makes
concurrent first calls run it once.
"""
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import partial

import torch

from . import _ops
from ._lattice import ctc as ctc_lattice
from ._lattice import transducer as transducer_lattice
from ._lattice import viterbi as viterbi_lattice
from .scores import ctc_emissions, ctc_extended_labels

# float64 on a problem this small: correct kernels agree to ~1e-15, so 1e-9 only rejects real faults
RTOL = ATOL = 1e-9


@dataclass(kw_only=True)
class OpCheck:
    """One row of the report: the op, the largest absolute difference over its outputs, and the verdict."""
    op: str
    max_abs_diff: float
    ok: bool
    detail: str = ""


@dataclass
class SelfCheckReport:
    """The outcome of :func:`check_backend` for one device; ``ok`` is True when every op agreed."""
    device: str
    checks: list[OpCheck] = field(default_factory=list)
    seconds: float = 0.0
    unavailable: str | None = None      # why there was nothing to check
    unchecked: list[str] = field(default_factory=list)  # registered ops this check does not know

    @property
    def ok(self) -> bool:
        return self.unavailable is None and all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[OpCheck]:
        return [check for check in self.checks if not check.ok]

    def __str__(self) -> str:
        title = f"seqloss native self-check on {self.device}"
        if self.unavailable is not None:
            return f"{title}: not run ({self.unavailable})"
        width = max([len("op")] + [len(check.op) for check in self.checks])
        lines = [f"{title}: {'ok' if self.ok else 'FAILED'} ({self.seconds * 1e3:.1f} ms)",
                 f"{'op':<{width}}  {'max abs diff':>12}  result"]
        for check in self.checks:
            verdict = "ok" if check.ok else f"failed{f' ({check.detail})' if check.detail else ''}"
            lines.append(f"{check.op:<{width}}  {check.max_abs_diff:>12.3g}  {verdict}")
        lines += [f"{name:<{width}}  {'-':>12}  not checked" for name in self.unchecked]
        return "\n".join(lines)


def _difference(got: torch.Tensor, expected: torch.Tensor) -> tuple[float, bool, str]:
    """(max |got - expected|, within tolerance, detail). Equal infinities count as equal; NaN never does."""
    if got.shape != expected.shape:
        return float("inf"), False, f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
    got, expected = got.detach().to("cpu", torch.float64), expected.detach().to("cpu", torch.float64)
    if got.numel() == 0:
        return 0.0, True, ""
    diff = torch.where(got == expected, 0.0, (got - expected).abs())
    diff = torch.nan_to_num(diff, nan=float("inf"))
    within = diff <= ATOL + RTOL * torch.nan_to_num(expected.abs(), posinf=0.0)
    return float(diff.max()), bool(within.all()), ""


def _compare(op: str, got, expected) -> OpCheck:
    worst, ok, detail = 0.0, True, ""
    for index, (g, e) in enumerate(zip(got, expected)):
        diff, within, note = _difference(g, e)
        worst = max(worst, diff)
        if not within and ok:
            ok, detail = False, note or f"output {index}"
    return OpCheck(op=op, max_abs_diff=worst, ok=ok, detail=detail)


def _problem(device: torch.device):
    """Tiny ragged float64 inputs for every op, from a fixed seed (the global RNG is untouched)."""
    gen = torch.Generator().manual_seed(20240611)
    f64 = dict(dtype=torch.float64)

    # transducer lattice: 3 utterances, T = 5, U = 3, one with an empty target
    frames, labels = torch.tensor([5, 4, 3]), torch.tensor([3, 2, 0])
    t, u = torch.arange(5).view(1, -1, 1), torch.arange(4).view(1, 1, -1)
    blank = torch.randn(3, 5, 4, generator=gen, **f64).log_softmax(-1)
    emit = torch.randn(3, 5, 3, generator=gen, **f64).log_softmax(-1)
    blank = torch.where((t < frames.view(-1, 1, 1)) & (u <= labels.view(-1, 1, 1)), blank, float("-inf"))
    emit_masks = {False: t < frames.view(-1, 1, 1), True: t < frames.view(-1, 1, 1) - 1}
    transducer = {one: (blank, torch.where(mask & (u[..., :-1] < labels.view(-1, 1, 1)), emit, float("-inf")),
                        frames, labels) for one, mask in emit_masks.items()}

    # CTC: T = 6, 3 utterances, a repeated label (no skip), and an empty target
    log_probs = torch.randn(6, 3, 5, generator=gen, **f64).log_softmax(-1)
    targets = torch.tensor([[2, 2], [3, 0], [0, 0]])
    target_lengths, input_lengths = torch.tensor([2, 1, 0]), torch.tensor([6, 4, 3])
    ext = ctc_extended_labels(targets, 0)
    ctc = (ctc_emissions(log_probs, ext, input_lengths), ext, target_lengths, input_lengths, 0)
    ctc_fused = (log_probs, targets, input_lengths, target_lengths)

    # SSNT: 2 utterances, J = 3, S = 5
    token = torch.randn(2, 3, 5, generator=gen, **f64).log_softmax(1)
    choose = torch.nn.functional.logsigmoid(torch.randn(2, 3, 5, generator=gen, **f64))
    ssnt = (token, choose, torch.tensor([5, 3]), torch.tensor([3, 2]))

    # fused transducer loss: dense logits (B=3, T=5, U=3, V=4) and the same valid rows packed, blank 1
    logits = torch.randn(3, 5, 4, 4, generator=gen, **f64)
    fused = (logits, torch.tensor([[2, 3, 0], [3, 3, 0], [0, 0, 0]]), frames, labels)

    def move(args):
        return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    return ({one: move(args) for one, args in transducer.items()}, move(ctc), move(ssnt), move(fused),
            move(ctc_fused))


CTC_SCALE = (0.5, -1.0, 2.0)


def _ctc_fused_reference(log_probs, targets, input_lengths, target_lengths):
    """ctc_loss's outputs by the torch lattice on the gathered emissions: log P and gamma (T, B, S)."""
    ext = ctc_extended_labels(targets, 0)
    return ctc_lattice.ctc_occupancy(ctc_emissions(log_probs, ext, input_lengths), ext, target_lengths,
                                     input_lengths, 0)


def _ctc_grad_native(log_probs, targets, input_lengths, target_lengths):
    _, gamma = _ctc_fused_reference(*(a.cpu() for a in (log_probs, targets, input_lengths, target_lengths)))
    scale = torch.tensor(CTC_SCALE, dtype=log_probs.dtype, device=log_probs.device)
    return (_ops.ctc_loss_grad(log_probs, targets, input_lengths, target_lengths, gamma.to(log_probs.device), scale,
                               0),)


def _ctc_grad_reference(log_probs, targets, input_lengths, target_lengths):
    """scale[b] gamma scattered onto the classes of the extended labels, (T, B, V)."""
    _, gamma = _ctc_fused_reference(log_probs, targets, input_lengths, target_lengths)
    ext = ctc_extended_labels(targets, 0)
    mass = gamma * torch.tensor(CTC_SCALE, dtype=gamma.dtype).view(1, -1, 1)
    return (torch.zeros_like(log_probs).scatter_add_(2, ext.unsqueeze(0).expand_as(mass), mass),)


FUSED_BLANK, FUSED_CLAMP = 1, 0.4


def _packed(logits, frames, labels):
    return torch.cat([logits[b, : frames[b], : labels[b] + 1].reshape(-1, logits.shape[-1])
                      for b in range(logits.shape[0])])


def _fused_reference(logits, targets, frames, labels, one_symbol_per_frame):
    """transducer_loss's outputs from dense logits by the torch lattice: log P, the lse, occ_blank, occ_emit grids."""
    lse = torch.logsumexp(logits, dim=-1)
    t, u = torch.arange(logits.shape[1]).view(1, -1, 1), torch.arange(logits.shape[2]).view(1, 1, -1)
    valid = (t < frames.view(-1, 1, 1)) & (u <= labels.view(-1, 1, 1))
    y = targets.gather(1, u.flatten().clamp(max=targets.shape[1] - 1).expand(targets.shape[0], -1))
    blank = torch.where(valid, logits[..., FUSED_BLANK] - lse, float("-inf"))
    emit = logits.gather(3, y.view(-1, 1, logits.shape[2], 1).expand(-1, logits.shape[1], -1, -1))[..., 0] - lse
    emit_frames = frames.view(-1, 1, 1) - (1 if one_symbol_per_frame else 0)
    emit = torch.where((t < emit_frames) & (u < labels.view(-1, 1, 1)), emit, float("-inf"))[..., :-1]
    log_p, occ_blank, occ_emit = transducer_lattice.transducer_occupancy(
        blank, emit, frames, labels, one_symbol_per_frame=one_symbol_per_frame)
    return log_p, torch.where(valid, lse, 0.0), occ_blank, torch.nn.functional.pad(occ_emit, (0, 1))


def _fused_grad_reference(logits, targets, frames, labels, scale):
    """transducer_loss_grad from the reference grids (schedule of RNN-T, clamp FUSED_CLAMP): dense (B, T, U+1, V)."""
    _, lse, occ_blank, occ_emit = _fused_reference(logits, targets, frames, labels, False)
    y = targets.gather(1, torch.arange(logits.shape[2]).clamp(max=targets.shape[1] - 1).expand(targets.shape[0], -1))
    classes = torch.arange(logits.shape[3])
    grad = torch.exp(logits - lse.unsqueeze(-1)) * (occ_blank + occ_emit).unsqueeze(-1)
    grad = grad - torch.where(classes == FUSED_BLANK, occ_blank.unsqueeze(-1), 0.0)
    grad = grad - torch.where(classes == y.view(y.shape[0], 1, -1, 1), occ_emit.unsqueeze(-1), 0.0)
    grad = grad.clamp(-FUSED_CLAMP, FUSED_CLAMP) * scale.view(-1, 1, 1, 1)
    t, u = torch.arange(logits.shape[1]).view(1, -1, 1), torch.arange(logits.shape[2]).view(1, 1, -1)
    valid = (t < frames.view(-1, 1, 1)) & (u <= labels.view(-1, 1, 1))
    return torch.where(valid.unsqueeze(-1), grad, 0.0)


def _fused_native(logits, targets, frames, labels, one_symbol_per_frame):
    """The op on packed logits for the one-symbol-per-frame schedule, dense ones otherwise (both layouts checked)."""
    x = _packed(logits, frames, labels) if one_symbol_per_frame else logits
    return _ops.transducer_loss(x, targets, frames, labels, FUSED_BLANK, fused_log_softmax=True,
                                one_symbol_per_frame=one_symbol_per_frame, final_blank=True,
                                max_frames=logits.shape[1], max_labels=logits.shape[2] - 1)


def _fused_grad_native(logits, targets, frames, labels, scale, inplace):
    """The gradient op on dense logits (in place on a copy: on packed ones), from the reference grids."""
    x = _packed(logits, frames, labels) if inplace else logits
    cpu = (a.cpu() for a in (logits, targets, frames, labels))
    grids = [grid.to(logits.device) for grid in _fused_reference(*cpu, False)[1:]]
    grad = _ops.transducer_loss_grad(x.clone(), targets, frames, labels, *grids, scale, FUSED_BLANK, FUSED_CLAMP,
                                     fused_log_softmax=True, inplace=inplace)
    return (grad,)


def _fused_grad_expected(logits, targets, frames, labels, scale, inplace):
    grad = _fused_grad_reference(logits, targets, frames, labels, scale)
    return (_packed(grad, frames, labels) if inplace else grad,)


def _ssnt_reference(token, choose, source_lengths, target_lengths):
    from .ssnt import ssnt_gradients  # imported here: seqloss.ssnt imports the backend selection
    return ssnt_gradients(token, choose, source_lengths, target_lengths, backend="torch")


SCHEDULE = {False: "emit stays on the frame", True: "emit advances the frame"}  # by one_symbol_per_frame


def _run_checks(device: torch.device, ops: list[str]) -> list[OpCheck]:
    transducer, ctc, ssnt, fused, ctc_fused = _problem(device)
    checks = []

    def attempt(op, native, reference):
        try:
            checks.append(_compare(op, native(), reference()))
        except Exception as error:  # noqa: BLE001 - a kernel that raises has failed the check
            checks.append(OpCheck(op=op, max_abs_diff=float("inf"), ok=False,
                                  detail=f"{type(error).__name__}: {error}"))

    for one in (False, True):
        args, schedule = transducer[one], {"one_symbol_per_frame": one}
        if "transducer_lattice" in ops:
            attempt(f"transducer_lattice ({SCHEDULE[one]})", partial(_ops.transducer_marginals, *args, **schedule),
                    partial(transducer_lattice.transducer_marginals, *args, **schedule))
        if "transducer_viterbi" in ops:
            attempt(f"transducer_viterbi ({SCHEDULE[one]})", partial(_ops.transducer_viterbi, *args, **schedule),
                    partial(viterbi_lattice.transducer_viterbi, *args, **schedule))
    if "ctc_occupancy" in ops:
        attempt("ctc_occupancy", lambda: _ops.ctc_occupancy(*ctc), lambda: ctc_lattice.ctc_occupancy(*ctc))
    if "ctc_viterbi" in ops:
        attempt("ctc_viterbi", lambda: _ops.ctc_viterbi(*ctc), lambda: viterbi_lattice.ctc_viterbi(*ctc))
    if "ctc_loss" in ops:
        attempt("ctc_loss", lambda: _ops.ctc_loss(*ctc_fused, 0),
                lambda: _ctc_fused_reference(*(a.cpu() for a in ctc_fused)))
    if "ctc_loss_grad" in ops:
        attempt("ctc_loss_grad", lambda: _ctc_grad_native(*ctc_fused),
                lambda: _ctc_grad_reference(*(a.cpu() for a in ctc_fused)))
    if "ssnt_lattice" in ops:
        attempt("ssnt_lattice", lambda: _ops.ssnt_lattice(*ssnt), lambda: _ssnt_reference(*ssnt))
    for one in (False, True):
        if "transducer_loss" in ops:
            layout = "packed" if one else "dense"
            attempt(f"transducer_loss ({SCHEDULE[one]}, {layout})", partial(_fused_native, *fused, one),
                    partial(_fused_reference, *(a.cpu() for a in fused), one))
    scale = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, device=device)
    for name, inplace in (("transducer_loss_grad", False), ("transducer_loss_grad_", True)):
        if name in ops:
            attempt(f"{name} (clamp {FUSED_CLAMP}, {'packed' if inplace else 'dense'})",
                    partial(_fused_grad_native, *fused, scale, inplace),
                    partial(_fused_grad_expected, *(a.cpu() for a in fused), scale.cpu(), inplace))
    return checks


CHECKED_OPS = ("transducer_lattice", "transducer_viterbi", "ctc_occupancy", "ctc_viterbi", "ssnt_lattice",
               "transducer_loss", "transducer_loss_grad", "transducer_loss_grad_", "ctc_loss", "ctc_loss_grad")


def _device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def check_backend(device="cpu") -> SelfCheckReport:
    """Run every native op registered for `device` on a tiny random problem against the torch backend.

    Returns a :class:`SelfCheckReport`: ``print(report)`` shows a table (op, max abs difference,
    ok/failed), ``report.ok`` is True when all agree to 1e-9 (float64). Where no native kernels
    exist for the device, ``report.ok`` is False and ``report.unavailable`` says why.
    """
    device = _device(device)
    report = SelfCheckReport(str(device))
    if not _ops.available(device.type):
        report.unavailable = _ops.unavailable_message(device.type).split("\n")[0]
        return report
    registered = _ops.registered_ops(device.type)
    report.unchecked = [name for name in registered if name not in CHECKED_OPS]
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        report.checks = _run_checks(device, registered)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    report.seconds = time.perf_counter() - start
    return report


_lock = threading.Lock()
_state = threading.local()
_reports: dict[str, SelfCheckReport] = {}


def first_use_report(device) -> SelfCheckReport | None:
    """The report of the check run on first use of `device` (None if it has not run)."""
    return _reports.get(str(_device(device)))


def reset() -> None:
    """Forget every first-use outcome (the next native call on each device checks again)."""
    with _lock:
        _reports.clear()


def _enabled() -> bool:
    mode = os.environ.get("SEQLOSS_SELF_CHECK", "1")
    if mode not in ("0", "1"):
        raise ValueError(f"SEQLOSS_SELF_CHECK must be 0 or 1, got {mode!r}")
    return mode == "1"


def native_ok(device: torch.device) -> bool:
    """Whether the native kernels may be used for `device`: the first call runs :func:`check_backend`.

    True without checking while ``torch.compile`` traces (the outcome of an earlier check still
    applies), inside the check itself, and when ``SEQLOSS_SELF_CHECK=0``.
    """
    key = str(device) if device.type != "cuda" or device.index is not None else str(_device(device))
    report = _reports.get(key)
    if report is not None:
        return report.ok
    if torch.compiler.is_compiling() or getattr(_state, "running", False) or not _enabled():
        return True
    with _lock:
        report = _reports.get(key)
        if report is None:
            _state.running = True
            try:
                report = check_backend(device)
            finally:
                _state.running = False
            _reports[key] = report
            if not report.ok:
                failures = "; ".join(f"{check.op}: max abs difference {check.max_abs_diff:.3g}"
                                     + (f" ({check.detail})" if check.detail else "") for check in report.failures)
                warnings.warn(f"seqloss: the native kernels for {key} disagree with the torch backend on the "
                              f"self-check ({failures}); using the torch backend for {key} tensors from now on. "
                              f"seqloss.check_backend({key!r}) prints the full report; SEQLOSS_SELF_CHECK=0 "
                              f"skips the check.", RuntimeWarning, stacklevel=4)
    return report.ok
