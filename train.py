"""Trains an ASR model: `python train.py [loss=ctc|rnnt|modified_rnnt|ssnt] [overrides...]`.

Instantiates the data and prepares it (a missing embedded corpus is generated first, with a
progress bar), seeds, instantiates model, callbacks, loggers and trainer from the Hydra config
(conf/), fits, tests the best checkpoint, and returns the metrics.
"""
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from recipes.callbacks.interrupt import InterruptCheckpoint, Preempted  # noqa: E402
from recipes.utils import find_last_checkpoint, instantiate_callbacks, instantiate_loggers, task_wrapper  # noqa: E402

log = logging.getLogger(__name__)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path`: a file; `last`, the newest readable last.ckpt of this task and loss (other than this run);
    `auto`, the same when there is one and a fresh start otherwise (for job scripts that are requeued)."""
    choice = cfg.get("ckpt_path")
    if choice not in ("last", "auto"):
        return choice
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs" / cfg.loss.name
    try:
        return str(find_last_checkpoint(runs, exclude=cfg.paths.output_dir))
    except FileNotFoundError as error:
        if choice == "last":
            raise
        log.info(f"ckpt_path=auto: starting from scratch ({error})")
        return None


@rank_zero_only
def save_resolved_config(resolved: dict, output_dir: Path) -> None:
    """Writes `output_dir/config.yaml`: the run's config with every interpolation resolved."""
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), output_dir / "config.yaml")


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fits (and tests) the configured model; returns (metrics, objects).

    A signal handled by `InterruptCheckpoint` (SIGINT, SIGTERM, SIGUSR1 by default) ends the fit
    with a checkpoint and raises `Preempted` (a SystemExit with status 128 + signal number): the
    test stage does not run.
    """
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", False)))

    log.info(f"data <{cfg.data._target_}>")
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    # Makes what is missing (the embedded corpus on a fresh clone, manifests, tokenizer, CMVN)
    # before the model is built, because the model's vocabulary is the tokenizer's.
    datamodule.prepare_data()
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.vocab_size = datamodule.tokenizer.vocab_size
    # `hydra` is present only when a test composes with return_hydra_config
    resolved = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                for key, value in cfg.items() if key != "hydra"}
    save_resolved_config(resolved, Path(cfg.paths.output_dir))

    # Seeded after data preparation (which may or may not have had work to do), so that the
    # initial weights depend on the seed alone, and are the same encoder weights for every loss.
    L.seed_everything(cfg.seed, workers=True)
    log.info(f"model <{cfg.model._target_}>, loss {cfg.loss.name}")
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "callbacks": callbacks,
               "logger": loggers, "trainer": trainer}

    for logger in loggers:
        logger.log_hyperparams(resolved)

    if cfg.get("train"):
        ckpt_path = resolve_ckpt_path(cfg)
        if ckpt_path:
            log.info(f"resuming from {ckpt_path}")
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
        for callback in callbacks:
            # a signal that came during the last step, after the last stopping point
            if isinstance(callback, InterruptCheckpoint) and callback.received is not None:
                trainer.save_checkpoint(callback.ckpt_path)
                log.warning("signal %d after the last step: saved %s", callback.received, callback.ckpt_path)
                raise Preempted(callback.received, callback.ckpt_path)
    metrics = dict(trainer.callback_metrics)

    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint: testing the current weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(trainer.callback_metrics)

    return {name: float(value) for name, value in metrics.items()}, objects


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns val/wer (for sweeps)."""
    metrics, _ = train(cfg)
    return metrics.get("val/wer")


if __name__ == "__main__":
    main()
