"""The wrapper around a task: failure reporting, logger shutdown, run-directory message."""
import functools
import logging
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _close_wandb() -> None:
    import wandb

    if wandb.run is not None:
        wandb.finish()


def task_wrapper(task: Callable[[DictConfig], tuple[dict, dict]]) -> Callable[[DictConfig], tuple[dict, dict]]:
    """Runs `task(cfg)`; whatever happens, closes an open wandb run and prints the run directory."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            return task(cfg)
        except Exception:
            log.exception("task failed")
            raise
        finally:
            _close_wandb()
            log.info(f"output dir: {cfg.paths.output_dir}")

    return wrapped
