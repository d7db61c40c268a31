"""DDP over gloo on CPU processes, run as a script (Lightning's DDP launcher re-runs the command line for
every other rank, so every rank composes the same config).

Training, 2 processes::

    python ddp_train.py train OUT_DIR [DATA_OVERRIDES...]

Each rank writes OUT_DIR/rank<r>.json with its world size, step count, a checksum of its weights (equal
on every rank when gradients were all-reduced), its metrics, and the utterance ids of every training
batch (with its epoch) and of every validation run.

Evaluation of fixed weights, N processes (N = 1: one process without DDP)::

    python ddp_train.py evaluate N OUT_DIR WEIGHTS [DATA_OVERRIDES...]

validates on dev and tests on test with the CTC model whose state dict is WEIGHTS (written there first,
from the seeded initialisation, when the file does not exist). Each rank writes OUT_DIR/rank<r>.json with
the `val/*` and `test/*` metrics and the utterance ids it evaluated.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
from omegaconf import open_dict  # noqa: E402
from recipe_cfg import RecordBatches, compose_train  # noqa: E402

from train import train  # noqa: E402

HEAD_SCALE = 5.0


class RecordEvaluated(L.Callback):
    """Utterance ids of every validation run (a list per run) and of the test run."""

    def __init__(self) -> None:
        self.val: list[list[str]] = []
        self.test: list[str] = []

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val.append([])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val[-1].extend(batch["ids"])

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.test.extend(batch["ids"])


class RecordEpochBatches(RecordBatches):
    """`RecordBatches` with the epoch of each batch: `SEEN[key]` holds (epoch, ids)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.current_epoch, list(batch["ids"])))


def run_training(out_dir: Path, data: list[str]) -> None:
    cfg = compose_train(["loss=rnnt", "trainer=ddp_cpu", "logger=csv", "trainer.max_steps=4", "trainer.max_epochs=-1",
                         "trainer.val_check_interval=2", "trainer.limit_test_batches=1",
                         "trainer.num_sanity_val_steps=0"], out_dir, data=data)
    with open_dict(cfg):
        cfg.data.max_duration, cfg.data.num_buckets = 30.0, 2  # ~5 batches an epoch: four steps span two epochs
        cfg.callbacks.record_evaluated = {"_target_": "ddp_train.RecordEvaluated"}
        cfg.callbacks.record_trained = {"_target_": "ddp_train.RecordEpochBatches", "key": "train"}
    metrics, objects = train(cfg)
    trainer, model = objects["trainer"], objects["model"]
    # built by Hydra from the module `ddp_train`, a copy of this `__main__`: found by class name
    evaluated = next(c for c in objects["callbacks"] if type(c).__name__ == "RecordEvaluated")
    trained = next(c for c in objects["callbacks"] if type(c).__name__ == "RecordEpochBatches")
    weights = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    result = {
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "checksum": [float(weights.sum()), float((weights * torch.arange(len(weights))).sum())],
        "val_wer": metrics.get("val/wer"),
        "train_loss": metrics.get("train/loss"),
        "train_batches": trained.seen,
        "val_ids": evaluated.val,
    }
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def run_evaluation(devices: int, out_dir: Path, weights: Path, data: list[str]) -> None:
    trainer_cfg = ["trainer=cpu"] if devices == 1 else ["trainer=ddp_cpu", f"trainer.devices={devices}"]
    cfg = compose_train(["loss=ctc", *trainer_cfg, "logger=none", "callbacks=none"], out_dir, data=data)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.vocab_size = datamodule.tokenizer.vocab_size
    L.seed_everything(cfg.seed)
    model = hydra.utils.instantiate(cfg.model)
    recorder = RecordEvaluated()
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[recorder], logger=False)
    if weights.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        # An initialised model emits one token per utterance, whose WER is 1.0 however often each utterance
        # is counted: a sharper output layer makes greedy decoding emit several words, so that the WER mixes
        # substitutions, deletions and insertions differently for each utterance.
        with torch.no_grad():
            model.ctc_head.output.weight *= HEAD_SCALE
        if trainer.global_rank == 0:
            torch.save(model.state_dict(), weights)
    val = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    result = {"world_size": trainer.world_size, "val": val, "test": test,
              "val_ids": recorder.val[0], "test_ids": recorder.test,
              "num_val_batches": len(datamodule.val_dataloader())}
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def main() -> None:
    mode = sys.argv[1]
    if mode == "train":
        run_training(Path(sys.argv[2]), sys.argv[3:])
    elif mode == "evaluate":
        run_evaluation(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
    else:
        raise SystemExit(f"usage: ddp_train.py train|evaluate ...; got mode {mode!r}")


if __name__ == "__main__":
    main()
