"""LSTMs under bfloat16 autocast on CPUs that have no bfloat16 LSTM.

oneDNN runs a bfloat16 LSTM only with AVX-512; on an AVX2-only CPU ``torch.lstm`` under CPU bf16
autocast fails with "could not create a primitive descriptor for the LSTM forward propagation
primitive". :func:`run_lstm` runs the LSTM in float32 there (autocast off for that call, a warning
once per process) and leaves every other case untouched, so ``trainer.precision=bf16-mixed`` trains
on any CPU: the other layers still run under bf16 autocast.
"""
from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


@functools.cache
def cpu_bf16_lstm_supported() -> bool:
    """Whether oneDNN can run a bfloat16 LSTM on this CPU."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else True


@functools.cache
def _warn_float32_fallback() -> None:
    log.warning("this CPU has no bfloat16 LSTM (oneDNN needs AVX-512): the LSTMs run in float32, the other "
                "layers under bf16 autocast")


def needs_float32(x: torch.Tensor) -> bool:
    """True for a CPU tensor in (or autocast to) bfloat16 on a CPU without a bfloat16 LSTM."""
    if x.device.type != "cpu" or cpu_bf16_lstm_supported():
        return False
    return x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                         and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float32(v) for v in value)
    return value


def run_lstm(fn, x: torch.Tensor, *args):
    """``fn(x, *args)`` (an LSTM call), in float32 with CPU autocast off where :func:`needs_float32`."""
    if not needs_float32(x):
        return fn(x, *args)
    _warn_float32_fallback()
    with torch.autocast("cpu", enabled=False):
        return fn(x.float(), *_to_float32(args))
