"""Saves a resumable checkpoint when training is stopped by a signal (Ctrl-C, SIGTERM, SIGUSR1)."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """Training stopped on a signal after saving `ckpt_path`; the exit status is 128 + the signal number."""

    def __init__(self, signum: int, ckpt_path: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.ckpt_path = signum, ckpt_path


def _signal_number(name: str | int) -> int:
    """`SIGTERM`, `TERM`, `15` → 15; a ValueError naming the entry otherwise."""
    if isinstance(name, int) or str(name).isdigit():
        return int(name)
    key = str(name).upper()
    key = key if key.startswith("SIG") else "SIG" + key
    if not hasattr(signal, key):
        raise ValueError(f"signals: unknown signal {name!r}")
    return int(getattr(signal, key))


class InterruptCheckpoint(L.Callback):
    """Stops training at the next safe point after one of `signals`, writing `dirpath/filename.ckpt`.

    The handler only records the signal; the checkpoint is written in `on_train_batch_start`, i.e.
    between two optimizer steps, after the previous batch's update, logging and validation and
    before anything of the next batch has run. The progress counters are saved as they were at the
    end of the previous batch (the fetched batch is not counted), so `ckpt_path=last` resumes with
    that batch, with the same logger steps and without repeating the validation. The first batch
    of an epoch is not a stopping point (the epoch-start bookkeeping has run, the batch has not):
    the stop happens one batch later. Then the process exits with status 128 + signal number
    (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1) through :class:`Preempted`, a
    `SystemExit`, so that the test stage does not run and a scheduler sees a failure.

    A second SIGINT stops at once (KeyboardInterrupt, no checkpoint).

    Under SLURM (Lightning's `SLURMEnvironment`, detected from `SLURM_NTASKS` outside an
    interactive job) with auto-requeue on (its default), a signal in `requeue_signals` (SIGUSR1,
    what `#SBATCH --signal=SIGUSR1@90` sends before the time limit) also requeues the job: after
    the checkpoint is written, rank 0 runs `scontrol requeue <job id>` (`<array job>_<task>` for
    array jobs). The requeued job passes `ckpt_path=auto` to resume from it. This replaces
    Lightning's own requeue handler, which saves `hpc_ckpt_<n>.ckpt` from inside the signal
    handler, mid step, into a run directory that the requeued job (a new run directory) does not
    look in. SIGTERM, which SLURM sends when a job is cancelled, preempted or out of time, saves
    and exits without requeueing. Other exceptions leave the checkpoints alone: the state after a
    crash is not trusted.
    """

    def __init__(self, dirpath: str, filename: str = "last",
                 signals: Sequence[str | int] = ("SIGINT", "SIGTERM", "SIGUSR1"),
                 requeue_signals: Sequence[str | int] = ("SIGUSR1",)) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.signals = [_signal_number(name) for name in signals]
        self.requeue_signals = [_signal_number(name) for name in requeue_signals]
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._slurm_requeue = False
        self._logger_step: int | None = None  # written into the checkpoint this callback saves
        self._restore_logger_step: int | None = None  # read from the checkpoint resumed from

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    # ------------------------------------------------------------------ handlers
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.received is None:
            self.received = signum
            # logging from a handler could deadlock on the handler's lock; a plain write cannot
            os.write(2, f"[signal] received {signal.Signals(signum).name}: checkpoint at the next step\n".encode())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning installs its own handlers just before training starts; ours replace them for
        # the signals we handle and are restored at the end of fit.
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return
        environment = trainer._accelerator_connector.cluster_environment
        self._slurm_requeue = isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    # ------------------------------------------------------------------ the safe point
    def _stop_requested(self, trainer: L.Trainer) -> bool:
        stop = self.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop and self.received is None:
                self.received = signal.SIGTERM
        return stop

    def state_dict(self) -> dict[str, Any]:
        return {} if self._logger_step is None else {"logger_step": self._logger_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore_logger_step = state_dict.get("logger_step")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._restore_logger_step is not None:
            # Lightning adds one to the loggers' step count on restart unless it recognises the
            # checkpoint as written after a finished batch; after a validation it does not, and
            # every logged step would move by one. This checkpoint's count is exact: keep it.
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._restore_logger_step
            self._restore_logger_step = None
        if batch_idx == 0 or not self._stop_requested(trainer):
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress
        saved = (progress.current.ready, progress.total.ready, progress.is_last_batch)
        # the batch just fetched has not started: save the state of the end of the previous one
        progress.current.ready -= 1
        progress.total.ready -= 1
        progress.is_last_batch = False
        self._logger_step = trainer.fit_loop.epoch_loop._batches_that_stepped
        try:
            trainer.save_checkpoint(self.ckpt_path)
        finally:
            progress.current.ready, progress.total.ready, progress.is_last_batch = saved
            self._logger_step = None
        name = signal.Signals(self.received).name
        log.warning("%s: saved %s at step %d; resume with ckpt_path=last (or ckpt_path=%s)",
                    name, self.ckpt_path, trainer.global_step, self.ckpt_path)
        if self._slurm_requeue and self.received in self.requeue_signals and trainer.is_global_zero:
            requeue_slurm_job()
        self._restore_handlers()
        raise Preempted(self.received, self.ckpt_path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()


def slurm_job_id() -> str:
    """This job's id as `scontrol` wants it: `<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>` for an array task,
    else `SLURM_JOB_ID`."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID", "")
    if not re.fullmatch(r"[0-9]+(_[0-9]+)?", job):
        raise RuntimeError(f"cannot requeue: SLURM job id {job!r} (SLURM_JOB_ID / SLURM_ARRAY_JOB_ID) is not a job id")
    return job


def requeue_slurm_job() -> bool:
    """Runs `scontrol requeue <job id>`; logs and returns whether it succeeded (a failure is logged, not
    raised: the checkpoint is saved either way and the job can be resubmitted by hand)."""
    job = slurm_job_id()
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("SLURM: `scontrol requeue %s` could not run (%s); resubmit the job with ckpt_path=auto", job, error)
        return False
    if result.returncode != 0:
        log.error("SLURM: `scontrol requeue %s` failed with status %d: %s; resubmit the job with ckpt_path=auto",
                  job, result.returncode, (result.stderr or result.stdout).strip())
        return False
    log.warning("SLURM: requeued job %s; it resumes from the checkpoint with ckpt_path=auto", job)
    return True
