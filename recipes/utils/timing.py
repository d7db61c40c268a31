"""Timing of a block of device work without a device synchronisation per step."""
import time
from typing import Any

import torch


class LossTimer:
    """Times a block (the loss forward) in milliseconds without synchronising the device.

    On the CPU it is wall time. On CUDA two events are recorded around the block on the current
    stream, and :attr:`ms` waits for the end event only when read: read one step later (as
    :class:`PerfMonitor` does), the work has long finished and reading costs nothing.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._ms = 0.0
        self._events: tuple[torch.cuda.Event, torch.cuda.Event] | None = None

    def __enter__(self) -> "LossTimer":
        if self.cuda:
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self._events[1].record()
        else:
            self._ms = (time.perf_counter() - self._start) * 1000.0

    @property
    def ms(self) -> float:
        if self._events is not None:
            start, end = self._events
            end.synchronize()
            self._ms, self._events = start.elapsed_time(end), None
        return self._ms
