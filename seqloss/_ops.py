"""The native lattice kernels as torch custom ops (``torch.ops.seqloss.*``).

The schemas and the CPU kernels live in ``seqloss._C`` (seqloss/csrc/ops.cpp, cpu/lattice_cpu.cpp),
the CUDA kernels in ``seqloss._C_cuda`` (csrc/cuda/lattice_cuda.cu); both are plain shared libraries
loaded with ``torch.ops.load_library``. This module registers their fake kernels (so that
``torch.compile`` traces them without running them) and the autograd formula of each log-likelihood
op, and wraps them with the exact signatures of the torch reference in ``seqloss._lattice``.

If the libraries were not built, ``CPU_AVAILABLE`` is False and ``LOAD_ERROR`` says why; seqloss
then runs on its torch backend, and importing it warns once (unless ``SEQLOSS_BACKEND=torch``
chose that backend) with the command that builds the kernels (:func:`build_command`).
"""
import importlib.machinery
import importlib.metadata
import json
import os
import sys
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import torch

from ._deprecation import renamed_keyword
from ._lattice.semiring import occupancy

_HERE = Path(__file__).parent


def _library_path(name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def build_command(*, cuda: bool = False) -> str:
    """The shell command that builds the native kernels for this copy of seqloss.

    A source checkout (setup.py next to the package) is rebuilt in place; an installed copy is
    reinstalled from where pip took it (its PEP 610 ``direct_url.json``), with the torch of this
    interpreter. ``cuda=True`` adds ``SEQLOSS_BUILD_CUDA=1``.
    """
    prefix = "SEQLOSS_BUILD_CUDA=1 " if cuda else ""
    pip = f"{prefix}{sys.executable} -m pip install --no-build-isolation"
    root = _HERE.parent
    if (root / "setup.py").exists():
        return f"{pip} -e {root}"
    return f"{pip} --no-deps --force-reinstall {_install_source()}"


def _install_source() -> str:
    """Where pip installed seqloss from (a path or a VCS URL), or a placeholder saying what to put there."""
    try:
        info = json.loads(importlib.metadata.distribution("seqloss").read_text("direct_url.json") or "null")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        info = None
    if not info or "url" not in info:
        return "<seqloss source directory or git URL>"
    url = info["url"]
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        return f"{vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', vcs.get('requested_revision', ''))}".rstrip("@")
    if url.startswith("file:"):
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    return url


def _load(name: str) -> str | None:
    """Load seqloss/<name>*.so; returns None on success, else the reason it is unavailable."""
    path = _library_path(name)
    if path is None:
        return f"seqloss/{name}*.so was not built"
    try:
        torch.ops.load_library(str(path))
    except OSError as error:
        return f"loading {path.name} failed: {error}"
    return None


LOAD_ERROR = _load("_C")
CPU_AVAILABLE = LOAD_ERROR is None
CUDA_LOAD_ERROR = _load("_C_cuda") if CPU_AVAILABLE else LOAD_ERROR
CUDA_AVAILABLE = CUDA_LOAD_ERROR is None


# the fused CPU losses (ops transducer_loss, transducer_loss_grad, ctc_loss, ctc_loss_grad); absent from
# libraries built before them
FUSED_TRANSDUCER = CPU_AVAILABLE and hasattr(torch.ops.seqloss, "transducer_loss")
FUSED_CTC = CPU_AVAILABLE and hasattr(torch.ops.seqloss, "ctc_loss")


def available(device_type: str) -> bool:
    """Whether native kernels exist for tensors on `device_type` ("cpu", "cuda")."""
    return {"cpu": CPU_AVAILABLE, "cuda": CUDA_AVAILABLE}.get(device_type, False)


def unavailable_message(device_type: str) -> str:
    """Why `device_type` runs on the torch backend, and the command that builds its kernels."""
    reason = CUDA_LOAD_ERROR if device_type == "cuda" else LOAD_ERROR
    return (f"seqloss: native {device_type.upper()} kernels unavailable ({reason}); using the slower torch backend "
            f"(pure PyTorch). Build them with:\n    {build_command(cuda=device_type == 'cuda')}")


def registered_ops(device_type: str) -> list[str]:
    """Names of the seqloss ops (``torch.ops.seqloss.<name>``) with a kernel for `device_type`."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None or not available(device_type):
        return []
    names = sorted(name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
                   if name.startswith("seqloss::"))
    return [name for name in names if torch._C._dispatch_has_kernel_for_dispatch_key(f"seqloss::{name}", key)]


if not CPU_AVAILABLE and os.environ.get("SEQLOSS_BACKEND") != "torch":
    warnings.warn(unavailable_message("cpu"), RuntimeWarning, stacklevel=2)


if CPU_AVAILABLE:
    @torch.library.register_fake("seqloss::transducer_lattice")
    def _transducer_lattice_fake(blank, emit, frames, labels, one_symbol_per_frame):
        batch, rows, width = blank.shape
        return blank.new_empty(batch), blank.new_empty(batch, rows + 1, width), blank.new_empty(batch, rows + 1, width)

    @torch.library.register_fake("seqloss::ctc_occupancy")
    def _ctc_occupancy_fake(e, ext, target_lengths, input_lengths, blank):
        return e.new_empty(e.shape[1]), torch.empty_like(e, memory_format=torch.contiguous_format)

    @torch.library.register_fake("seqloss::transducer_viterbi")
    def _transducer_viterbi_fake(blank, emit, frames, labels, one_symbol_per_frame):
        return blank.new_empty(blank.shape[0]), frames.new_empty(emit.shape[0], emit.shape[2])

    @torch.library.register_fake("seqloss::ctc_viterbi")
    def _ctc_viterbi_fake(e, ext, target_lengths, input_lengths, blank):
        return e.new_empty(e.shape[1]), ext.new_empty(e.shape[1], e.shape[0])

    @torch.library.register_fake("seqloss::ssnt_lattice")
    def _ssnt_lattice_fake(token, choose, source_lengths, target_lengths):
        contiguous = torch.contiguous_format
        return (token.new_empty(token.shape[0]), torch.empty_like(token, memory_format=contiguous),
                torch.empty_like(token, memory_format=contiguous))

    @torch.library.register_fake("seqloss::ctc_loss")
    def _ctc_loss_fake(log_probs, targets, input_lengths, target_lengths, blank):
        num_frames, batch, _ = log_probs.shape
        return log_probs.new_empty(batch), log_probs.new_empty(num_frames, batch, 2 * targets.shape[1] + 1)

    @torch.library.register_fake("seqloss::ctc_loss_grad")
    def _ctc_loss_grad_fake(log_probs, *args):
        return torch.empty_like(log_probs, memory_format=torch.contiguous_format)

    @torch.library.register_fake("seqloss::transducer_loss")
    def _transducer_loss_fake(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                              one_symbol_per_frame, final_blank, max_frames, max_labels):
        grid = (targets.shape[0], max_frames, max_labels + 1)
        return (logits.new_empty(targets.shape[0]), logits.new_empty(grid), logits.new_empty(grid),
                logits.new_empty(grid))

    @torch.library.register_fake("seqloss::transducer_loss_grad")
    def _transducer_loss_grad_fake(logits, *args):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    @torch.library.register_fake("seqloss::transducer_loss_grad_")
    def _transducer_loss_grad_inplace_fake(logits, *args):
        return None

    def _lattice_setup(ctx, inputs, output):
        blank, emit, _, _, one_symbol_per_frame = inputs
        log_p, alpha, beta = output
        ctx.mark_non_differentiable(alpha, beta)
        ctx.save_for_backward(blank, emit, log_p, alpha, beta)
        ctx.one_symbol_per_frame = one_symbol_per_frame

    def _lattice_backward(ctx, grad_log_p, _grad_alpha, _grad_beta):
        """d log P / d blank and d emit are the edge occupancies."""
        blank, emit, log_p, alpha, beta = ctx.saved_tensors
        occ_blank, occ_emit = _occupancies(blank, emit, log_p, alpha, beta, ctx.one_symbol_per_frame)
        scale = grad_log_p.view(-1, 1, 1)
        return occ_blank * scale, occ_emit * scale, None, None, None

    torch.library.register_autograd("seqloss::transducer_lattice", _lattice_backward, setup_context=_lattice_setup)

    def _ctc_setup(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    def _ctc_backward(ctx, grad_log_p, _grad_gamma):
        """d log P / d e is the state occupancy gamma."""
        (gamma,) = ctx.saved_tensors
        return gamma * grad_log_p.view(1, -1, 1), None, None, None, None

    torch.library.register_autograd("seqloss::ctc_occupancy", _ctc_backward, setup_context=_ctc_setup)


def _marginals_from_grid(blank, emit, log_p, alpha, beta, one_symbol_per_frame):
    """Full-grid alpha/beta (B, T+1, U+1) -> the (log_p, alpha, beta_blank, beta_emit) of the reference."""
    num_frames, num_labels = blank.shape[1], emit.shape[2]
    beta_emit = beta[:, 1:] if one_symbol_per_frame else beta[:, :-1]
    return log_p, alpha[:, :num_frames], beta[:, 1:], beta_emit[:, :, 1: num_labels + 1]


def _occupancies(blank, emit, log_p, alpha, beta, one_symbol_per_frame):
    _, alpha, beta_blank, beta_emit = _marginals_from_grid(blank, emit, log_p, alpha, beta, one_symbol_per_frame)
    total = log_p.view(-1, 1, 1)
    return occupancy(alpha + blank + beta_blank, total), occupancy(alpha[..., :-1] + emit + beta_emit, total)


@renamed_keyword("emit_advances_time", "one_symbol_per_frame")
def transducer_marginals(blank, emit, frames, labels, *, one_symbol_per_frame: bool):
    """Native :func:`seqloss._lattice.transducer.transducer_marginals` (same arguments and results)."""
    log_p, alpha, beta = torch.ops.seqloss.transducer_lattice(blank, emit, frames, labels, one_symbol_per_frame)
    return _marginals_from_grid(blank, emit, log_p, alpha, beta, one_symbol_per_frame)


def ctc_occupancy(e, ext, target_lengths, input_lengths, blank: int):
    """Native :func:`seqloss._lattice.ctc.ctc_occupancy`: log P (B,) and gamma (T, B, S)."""
    return torch.ops.seqloss.ctc_occupancy(e, ext, target_lengths, input_lengths, blank)


@renamed_keyword("emit_advances_time", "one_symbol_per_frame")
def transducer_viterbi(blank, emit, frames, labels, *, one_symbol_per_frame: bool):
    """Best path through the transducer lattice (same score conventions as transducer_marginals).

    Returns (emit_frames (B, U) int64, score (B,)), the order of
    :func:`seqloss._lattice.viterbi.transducer_viterbi` (the op itself returns the score first):
    emit_frames[b, u] is the frame t of the cell (t, u) whose emit edge (label u+1) the best path
    takes; -1 for u >= U_b or an infeasible utterance. On a tie the blank edge wins.
    """
    score, emit_frames = torch.ops.seqloss.transducer_viterbi(blank, emit, frames, labels, one_symbol_per_frame)
    return emit_frames, score


def ctc_viterbi(e, ext, target_lengths, input_lengths, blank: int):
    """Best CTC path: (states (B, T) int64, score (B,)), states[b, t] = extended-label state at frame t.

    The order of :func:`seqloss._lattice.viterbi.ctc_viterbi` (the op itself returns the score
    first). -1 for t >= T_b or an infeasible utterance; ``ext.gather(1, states.clamp(min=0))``
    gives the frame-level label path. Ties prefer staying in a state, then advancing by one, and
    the path ends in the final blank rather than the last label.
    """
    score, states = torch.ops.seqloss.ctc_viterbi(e, ext, target_lengths, input_lengths, blank)
    return states, score


def ssnt_lattice(token, choose, source_lengths, target_lengths):
    """Native fused SSNT pass (CPU): log P (B,), d log P / d token and d log P / d choose (B, J, S)."""
    return torch.ops.seqloss.ssnt_lattice(token, choose, source_lengths, target_lengths)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank: int):
    """The fused CPU CTC loss: log P (B,) and gamma (T, B, 2L+1), :func:`ctc_occupancy` of ``ctc_emissions``.

    Takes the (T, B, V) log-probs and padded (B, L) targets themselves: each utterance gathers its
    own emissions. An utterance with a NaN or +inf among the scores it reads gets log P NaN and
    gamma NaN on its frames.
    """
    return torch.ops.seqloss.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank)


def ctc_loss_grad(log_probs, targets, input_lengths, target_lengths, gamma, scale, blank: int):
    """(T, B, V): scale[b] times gamma scattered onto the classes of the extended labels; 0 on frames t >= T_b."""
    return torch.ops.seqloss.ctc_loss_grad(log_probs, targets, input_lengths, target_lengths, gamma, scale, blank)


def transducer_loss(logits, targets, logit_lengths, target_lengths, blank: int, *, fused_log_softmax: bool,
                    one_symbol_per_frame: bool, final_blank: bool, max_frames: int, max_labels: int):
    """The fused CPU transducer loss: log P (B,) and the (B, max_frames, max_labels + 1) grids lse, occ_blank, occ_emit.

    Stage 1 (log-sum-exp, blank and target log-probs of every valid row), the lattice and the edge
    occupancies in one op that reads only the rows of valid cells (t < T_b, u <= U_b) of dense
    (B, max_frames, max_labels + 1, V) or packed (sum_b T_b (U_b + 1), V) logits. An utterance with
    a NaN or +inf score or log-sum-exp in a valid cell gets log P and occupancies NaN.
    """
    return torch.ops.seqloss.transducer_loss(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                                             one_symbol_per_frame, final_blank, max_frames, max_labels)


def transducer_loss_grad(logits, targets, logit_lengths, target_lengths, lse, occ_blank, occ_emit, scale, blank: int,
                         clamp: float, *, fused_log_softmax: bool, inplace: bool = False):
    """d sum_b scale[b] (-log P_b) / d logits from the grids of :func:`transducer_loss` (padded rows: 0).

    ``inplace=True`` writes it over ``logits`` (contiguous) and returns them.
    """
    args = (targets, logit_lengths, target_lengths, lse, occ_blank, occ_emit, scale, blank, clamp, fused_log_softmax)
    if inplace:
        torch.ops.seqloss.transducer_loss_grad_(logits, *args)
        return logits
    return torch.ops.seqloss.transducer_loss_grad(logits, *args)
