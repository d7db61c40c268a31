"""A test-only callback that makes a training process send itself a signal at a chosen point.

Used as `+callbacks.signal_at._target_=signal_at.SignalAt` with `tests/recipe` on PYTHONPATH, so
that the tests stop real `python train.py` runs at deterministic points instead of sleeping.
"""
import os

import lightning as L


class SignalAt(L.Callback):
    """Sends `signal` (a name: SIGINT, SIGTERM, SIGUSR1, SIGKILL) to this process, once.

    `when`:
    * `step`: at the end of the training batch that makes optimizer step `step` (mid epoch);
    * `validation`: at the first batch of the first validation after optimizer step `step`
      (the signal arrives while validating);
    * `after_checkpoint`: at the start of the first training batch after a checkpoint was saved
      at optimizer step >= `step` (the checkpoint is complete on disk).
    """

    def __init__(self, signal: str, step: int, when: str = "step") -> None:
        if when not in ("step", "validation", "after_checkpoint"):
            raise ValueError(f"when must be step, validation or after_checkpoint, got {when!r}")
        self.signum = getattr(__import__("signal"), signal)
        self.step, self.when = step, when
        self.sent = False
        self.saved = False

    def _send(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.when == "step" and trainer.global_step == self.step:
            self._send()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.when == "validation" and not trainer.sanity_checking and trainer.global_step >= self.step:
            self._send()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step >= self.step:
            self.saved = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.when == "after_checkpoint" and self.saved:
            self._send()
