"""Composing the real training config for tests: CPU, tiny model, outputs under a temporary folder."""
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"

# a model small enough for many short CPU runs; the default architecture, narrower
TINY_MODEL = {
    "model.transcriber.hidden_dim": 48,
    "model.transcriber.output_dim": 48,
    "model.predictor.embed_dim": 16,
    "model.predictor.hidden_dim": 48,
    "model.predictor.output_dim": 48,
    "model.joiner.joiner_dim": 48,
}


def compose_train(overrides: Sequence[str], out_dir: Path, data: Sequence[str] = (), run: str = "run",
                  tiny_model: bool = True) -> DictConfig:
    """The composed `train.yaml` with `data` and `overrides`, runs under `out_dir`/logs.

    `data` are the overrides pointing the data config at a corpus (the `tiny_data_overrides`
    fixture); `vocab_size` is set to 64 for tests that build a model without a datamodule
    (train() replaces it with the tokenizer's).
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train.yaml", overrides=[*force_add(data), *overrides], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.log_dir = str(out_dir / "logs")
        cfg.paths.output_dir = str(out_dir / "logs" / cfg.task_name / "runs" / cfg.loss.name / run)
        cfg.trainer.accelerator = "cpu"
        cfg.num_threads = 1
        cfg.vocab_size = 64
        if tiny_model:
            for key, value in TINY_MODEL.items():
                _set(cfg, key, value)
    return cfg


def force_add(overrides: Sequence[str]) -> list[str]:
    """`data.*` overrides as `++key=value` (set whether or not the key exists in the data config)."""
    return ["++" + item.lstrip("+") if item.lstrip("+").startswith("data.") else item for item in overrides]


def _set(cfg: DictConfig, key: str, value) -> None:
    """cfg[key] = value, unless a node on the way is null."""
    node_key, _, leaf = key.rpartition(".")
    node = cfg
    for part in node_key.split("."):
        node = node.get(part)
        if node is None:  # a head this loss does not use
            return
    node[leaf] = value


class InterruptAt(L.Callback):
    """Sends this process a real SIGINT (as Ctrl-C would) once `step` optimizer steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class RecordBatches(L.Callback):
    """Appends the utterance ids of every training batch to `SEEN[key]`."""

    SEEN: dict[str, list[list[str]]] = {}

    def __init__(self, key: str) -> None:
        self.seen = self.SEEN.setdefault(key, [])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(list(batch["ids"]))


class RecordLosses(L.Callback):
    """Appends (batch utterance ids, training loss) of every optimizer step to `SEEN[key]`."""

    SEEN: dict[str, list[tuple[tuple[str, ...], float]]] = {}

    def __init__(self, key: str) -> None:
        self.seen = self.SEEN.setdefault(key, [])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((tuple(batch["ids"]), float(outputs["loss"])))
