"""Saves a resumable checkpoint when training is interrupted with Ctrl-C."""
import os
from typing import Any

import lightning as L


class InterruptCheckpoint(L.Callback):
    """On KeyboardInterrupt, writes `dirpath/filename.ckpt` (by default `last.ckpt`, so that
    `ckpt_path=last` resumes exactly where the run stopped). Other exceptions leave the
    checkpoints alone: the state after a crash is not trusted."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.ckpt_path)
            print(f"[interrupt] saved {self.ckpt_path}; resume with ckpt_path=last")
