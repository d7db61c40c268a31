"""Per-step speed and memory metrics (`perf/*`)."""
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

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
    """Logs, for every training step (forward, backward and optimizer update):

    * `perf/step_time_s` — wall time, device-synchronised (loading the batch is not included);
    * `perf/utts_per_s`, `perf/audio_s_per_s` — utterances and seconds of audio per second of this
      process (batch `durations`);
    * `perf/loss_ms` — the forward time of the loss function alone (the objective's `last_loss_ms`);
    * `perf/peak_mem_gb` — CUDA max allocated memory during the step (the peak is reset at every
      step), or the process's peak RSS on CPU.
    """

    def __init__(self) -> None:
        self._start = 0.0

    def _cuda(self, pl_module: L.LightningModule) -> bool:
        return pl_module.device.type == "cuda"

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        else:
            _reset_rss_peak()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)
            peak_gb = torch.cuda.max_memory_allocated(pl_module.device) / 1e9
        else:
            peak_gb = _rss_peak_gb()
        step_time = time.perf_counter() - self._start
        utts = float(batch["features"].shape[0])
        audio_s = float(batch["durations"].sum())
        metrics = {
            "perf/step_time_s": step_time,
            "perf/utts_per_s": utts / step_time,
            "perf/audio_s_per_s": audio_s / step_time,
            "perf/loss_ms": float(pl_module.objective.last_loss_ms),
            "perf/peak_mem_gb": peak_gb,
        }
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=int(utts))
