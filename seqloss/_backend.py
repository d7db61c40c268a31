"""Backend selection for stage 2 (the lattice): ``native`` custom ops or the ``torch`` reference.

``resolve_backend(backend, device)`` picks, in order: the ``backend=`` keyword of a loss, the
environment variable ``SEQLOSS_BACKEND``, then ``native`` wherever its kernels were built for the
device and ``torch`` elsewhere. Requesting ``native`` where it is not built falls back to ``torch``
with a warning that says why. Both backends give the same numbers (tests/seqloss/test_native.py).
The first time ``native`` is chosen for a device, the kernels are checked against the torch
backend on a tiny problem (``seqloss._selfcheck``); if they disagree, that device uses ``torch``
from then on.

The double-backward path always runs the differentiable torch recursion.

Stages 1 and 3 (the V-wide log-softmax + gather, and the gradient w.r.t. the logits) are plain
torch functions run by :func:`v_wide`: compiled by ``torch.compile`` into one fused pass each for
large inputs, eagerly otherwise. ``SEQLOSS_COMPILE``: ``auto`` (default: compile from
``COMPILE_MIN_ELEMENTS`` logits on), ``1`` (always), ``0`` (never). Inside an enclosing
``torch.compile`` the stages are traced into its graph instead.
"""
import os
import warnings

import torch

from . import _ops, _selfcheck
from ._lattice import ctc as ctc_lattice
from ._lattice import transducer as transducer_lattice
from ._lattice import viterbi as viterbi_lattice

BACKENDS = ("native", "torch")
COMPILE_MIN_ELEMENTS = 1 << 22
_compiled = {}


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """'native' or 'torch' for tensors on `device` (see the module docstring)."""
    requested = backend if backend is not None else os.environ.get("SEQLOSS_BACKEND") or None
    if requested is not None and requested not in BACKENDS:
        source = "backend" if backend is not None else "SEQLOSS_BACKEND"
        raise ValueError(f"{source} must be one of {BACKENDS}, got {requested!r}")
    native = _ops.available(device.type)
    if requested == "native" and not native:
        reason = _ops.CUDA_LOAD_ERROR if device.type == "cuda" else _ops.LOAD_ERROR
        warnings.warn(f"seqloss: native backend unavailable for {device.type} tensors ({reason}); "
                      f"using the torch backend", RuntimeWarning, stacklevel=3)
        return "torch"
    if requested is None and not native and device.type == "cuda" and _ops.CPU_AVAILABLE:
        _warn_once_without_cuda_kernels()
    choice = requested or ("native" if native else "torch")
    if choice == "native" and not _selfcheck.native_ok(device):
        return "torch"
    return choice


_cuda_warned = []


def _warn_once_without_cuda_kernels():
    """CUDA tensors on the torch backend because the CUDA kernels were not built: say so once."""
    if not _cuda_warned and not torch.compiler.is_compiling():
        _cuda_warned.append(True)
        warnings.warn(_ops.unavailable_message("cuda"), RuntimeWarning, stacklevel=4)


def transducer_marginals(backend: str):
    """The transducer_marginals function of `backend`."""
    return _ops.transducer_marginals if backend == "native" else transducer_lattice.transducer_marginals


def ctc_occupancy(backend: str):
    """The ctc_occupancy function of `backend`."""
    return _ops.ctc_occupancy if backend == "native" else ctc_lattice.ctc_occupancy


def transducer_viterbi(backend: str):
    """The best-path function of `backend`: (emit_frames (B, U), score (B,)) as in _lattice.viterbi."""
    return _ops.transducer_viterbi if backend == "native" else viterbi_lattice.transducer_viterbi


def ctc_viterbi(backend: str):
    """The best-path function of `backend`: (states (B, T), score (B,)) as in _lattice.viterbi."""
    return _ops.ctc_viterbi if backend == "native" else viterbi_lattice.ctc_viterbi


def _compile_wanted(x: torch.Tensor) -> bool:
    mode = os.environ.get("SEQLOSS_COMPILE", "auto")
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"SEQLOSS_COMPILE must be one of auto, 0, 1, got {mode!r}")
    return mode == "1" or (mode == "auto" and x.numel() >= COMPILE_MIN_ELEMENTS)


def v_wide(fn, *args, eager=None):
    """fn(*args), compiled (one fused pass) where wanted; `eager` (default fn) runs it otherwise.

    The first argument is the (N, V) logits view that decides whether compiling pays. If compiling
    fails (no C++ compiler for inductor, say), a warning is given once and the eager path is used.
    """
    if torch.compiler.is_compiling():
        return fn(*args)
    if _compile_wanted(args[0]) and _compiled.get(fn) is not False:
        if fn not in _compiled:
            _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
        try:
            return _compiled[fn](*args)
        except Exception as error:  # noqa: BLE001 - any inductor failure falls back to eager
            _compiled[fn] = False
            warnings.warn(f"seqloss: torch.compile of {fn.__name__} failed ({type(error).__name__}: {error}); "
                          f"running it eagerly", RuntimeWarning, stacklevel=2)
    return (eager or fn)(*args)
