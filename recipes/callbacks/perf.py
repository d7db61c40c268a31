"""Per-step speed and memory metrics (`perf/*`), without a device synchronisation per step."""
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from recipes.utils.timing import LossTimer

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_rss_peak() -> None:
    """Resets the process's peak resident set size (Linux: writing 5 to clear_refs), if allowed."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def _rss_peak_gb() -> float:
    """Peak resident set size since the last reset (VmHWM), in GB; current RSS where VmHWM is absent."""
    fields = {}
    for line in _STATUS.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    kib = int((fields.get("VmHWM") or fields["VmRSS"]).split()[0])
    return kib * 1024 / 1e9


class PerfMonitor(L.Callback):
    """Logs, for every training step (optimizer step):

    * `perf/step_time_s`: wall time from the end of the previous training batch to the end of this
      one, so the wait for data is included (the first batch after a validation or an epoch start
      counts from its own start). No device synchronisation: on a GPU the host runs at most a queue
      of kernels ahead, so the times add up to the true rate over a few steps;
    * `perf/data_wait_s`: the part of it spent waiting for the batch (loader, transfer);
    * `perf/utts_per_s`, `perf/audio_s_per_s`: utterances and seconds of audio per second of this
      process (batch `durations`), and `perf/utts_per_s_all_ranks`, `perf/audio_s_per_s_all_ranks`:
      summed over the ranks of a distributed run (one small all-reduce per step; equal to the
      per-process values on one process);
    * `perf/loss_ms`: the forward time of the loss alone (the objective's timer). On CUDA it is
      measured with CUDA events and logged one step late, so that reading it never waits;
    * `perf/peak_mem_gb`: CUDA max allocated memory during the step (the peak is reset at every
      step) and `perf/peak_reserved_gb` beside it (what the caching allocator holds from the
      driver: what decides an out-of-memory error); on the CPU the process's peak RSS.
    """

    def __init__(self) -> None:
        self._start = 0.0
        self._previous_end: float | None = None
        self._pending_loss_timer: LossTimer | None = None

    def _cuda(self, pl_module: L.LightningModule) -> bool:
        return pl_module.device.type == "cuda"

    def _restart_clock(self, *args: Any) -> None:
        self._previous_end = None

    on_train_epoch_start = _restart_clock
    on_validation_end = _restart_clock

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._cuda(pl_module):
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        else:
            _reset_rss_peak()
        self._start = time.perf_counter()

    def _loss_ms(self, pl_module: L.LightningModule) -> float | None:
        objective = pl_module.objective
        timer = getattr(objective, "loss_timer", None)
        if timer is None:
            return float(objective.last_loss_ms)
        if not timer.cuda:
            return timer.ms
        previous, self._pending_loss_timer = self._pending_loss_timer, timer
        return previous.ms if previous is not None else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        end = time.perf_counter()
        began = self._previous_end if self._previous_end is not None else self._start
        self._previous_end = end
        step_time = end - began
        if self._cuda(pl_module):
            peak = {"perf/peak_mem_gb": torch.cuda.max_memory_allocated(pl_module.device) / 1e9,
                    "perf/peak_reserved_gb": torch.cuda.max_memory_reserved(pl_module.device) / 1e9}
        else:
            peak = {"perf/peak_mem_gb": _rss_peak_gb()}
        utts = float(batch["features"].shape[0])
        audio_s = float(batch["durations"].sum())
        rates = torch.tensor([utts / step_time, audio_s / step_time], dtype=torch.float64)
        if trainer.world_size > 1:
            rates = trainer.strategy.reduce(rates.to(pl_module.device), reduce_op="sum").cpu()
        metrics = {
            "perf/step_time_s": step_time,
            "perf/data_wait_s": self._start - began,
            "perf/utts_per_s": utts / step_time,
            "perf/audio_s_per_s": audio_s / step_time,
            "perf/utts_per_s_all_ranks": float(rates[0]),
            "perf/audio_s_per_s_all_ranks": float(rates[1]),
            **peak,
        }
        loss_ms = self._loss_ms(pl_module)
        if loss_ms is not None:
            metrics["perf/loss_ms"] = loss_ms
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=int(utts))
