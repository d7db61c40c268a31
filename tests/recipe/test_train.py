"""train(cfg) end to end on the tiny corpus: every loss × joiner mode, learning, resume, loggers,
experiments, the command line, and DDP (in test_train_ddp.py)."""
import csv
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from recipe_cfg import REPO, RecordBatches, RecordLosses, compose_train, force_add
from wandb_records import history_keys, wait_for_exit_record

from train import train

LOSS_MODES = [("ctc", None)] + [(loss, mode) for loss in ("rnnt", "modified_rnnt", "ssnt")
                                 for mode in ("dense", "packed", "fused")]
PERF = ["perf/step_time_s", "perf/utts_per_s", "perf/audio_s_per_s", "perf/loss_ms", "perf/peak_mem_gb"]


def _loss_overrides(loss, mode):
    return [f"loss={loss}"] + ([f"loss.joiner_mode={mode}"] if mode else [])


def _csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("loss,mode", LOSS_MODES)
def test_fast_dev_run(loss, mode, tiny_data_overrides, tmp_path):
    cfg = compose_train(_loss_overrides(loss, mode) + ["debug=fast_dev_run"], tmp_path, tiny_data_overrides)
    metrics, objects = train(cfg)
    assert objects["trainer"].state.finished
    assert objects["model"].objective.name == loss
    assert loss in cfg.tags
    assert math.isfinite(metrics["train/loss"]) and metrics["train/loss"] > 0
    assert 0.0 <= metrics["test/wer"] and math.isfinite(metrics["val/loss"])


@pytest.mark.parametrize("loss,overrides", [
    ("rnnt", ["model.aux_ctc_weight=0.3", "loss.objective.inplace_grad=true"]),
    ("modified_rnnt", ["model.aux_ctc_weight=0.5", "loss.joiner_mode=packed", "loss.objective.inplace_grad=true"]),
    ("ssnt", ["model.aux_ctc_weight=0.3"]),
])
def test_auxiliary_ctc_and_inplace_gradient(loss, overrides, tiny_data_overrides, tmp_path):
    cfg = compose_train([f"loss={loss}", "debug=fast_dev_run", *overrides], tmp_path, tiny_data_overrides)
    metrics, objects = train(cfg)
    model = objects["model"]
    assert model.ctc_head is not None and model.aux_ctc_weight > 0
    assert math.isfinite(metrics["train/aux_ctc_loss"]) and metrics["train/aux_ctc_loss"] > 0
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])


def test_auxiliary_ctc_weight_checks(tmp_path):
    import hydra
    cfg = compose_train(["loss=rnnt", "model.aux_ctc_weight=0"], tmp_path)
    assert hydra.utils.instantiate(cfg.model).ctc_head is None  # weight 0: the head is not kept
    with open_dict(cfg):
        cfg.model.aux_ctc_weight = -0.1
    with pytest.raises(Exception, match="aux_ctc_weight must be >= 0"):  # Hydra wraps the ValueError
        hydra.utils.instantiate(cfg.model)
    with open_dict(cfg):
        cfg.model.aux_ctc_weight = 0.3
        cfg.model.ctc_head = None
    with pytest.raises(Exception, match="needs model.ctc_head"):
        hydra.utils.instantiate(cfg.model)


# the LibriSpeech experiments choose their own corpus; they train in test_librispeech_experiments.py
@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")
                                              if not p.stem.startswith("librispeech_")))
def test_experiment_runs(experiment, tiny_data_overrides, tmp_path):
    if "override /tokenizer" in (REPO / "conf" / "experiment" / f"{experiment}.yaml").read_text():
        tiny_data_overrides = [o for o in tiny_data_overrides if not o.startswith("tokenizer.")]
    cfg = compose_train([f"experiment={experiment}", "debug=fast_dev_run"], tmp_path, tiny_data_overrides)
    metrics, _ = train(cfg)
    assert math.isfinite(metrics["train/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ctc", "rnnt", "modified_rnnt", "ssnt"])
def test_training_loss_falls(loss, tiny_data_overrides, tmp_path):
    """About 50 steps; the mean per-utterance training loss of the last epoch against the first's (batches
    are re-formed every epoch, so the comparison is per utterance over the utterances both epochs saw)."""
    cfg = compose_train([f"loss={loss}", "logger=none", "callbacks=none", "test=false", "trainer.max_epochs=8",
                         "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
                         "model.scheduler.warmup_steps=10", "model.optimizer.lr=0.003"], tmp_path, tiny_data_overrides)
    with open_dict(cfg):
        cfg.callbacks = {"record": {"_target_": "recipe_cfg.RecordLosses", "key": loss}}
    _, objects = train(cfg)
    steps = RecordLosses.SEEN[loss]
    per_epoch = objects["trainer"].num_training_batches
    assert 40 <= len(steps) == 8 * per_epoch

    def per_utterance(epoch_steps):  # each utterance gets its batch's loss (the batch mean)
        return {utt: value for ids, value in epoch_steps for utt in ids}

    first, last = per_utterance(steps[:per_epoch]), per_utterance(steps[-per_epoch:])
    common = first.keys() & last.keys()
    assert len(common) >= 0.8 * len(first)
    before, after = sum(first[utt] for utt in common), sum(last[utt] for utt in common)
    assert after < 0.9 * before, f"{loss}: training loss over the same utterances went from {before:.1f} to {after:.1f}"


def test_resume_is_exact(tiny_data_overrides, tmp_path):
    """N steps in one go == k steps, a real SIGINT, `ckpt_path=last`, N steps: same batches, same weights
    (in process; tests/recipe/test_resume.py stops `python train.py` subprocesses with every signal)."""
    n_steps, stop_at = 7, 3
    common = ["loss=rnnt", "logger=none", "test=false", f"trainer.max_steps={n_steps}", "trainer.max_epochs=-1",
              "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"]

    def run(name, extra=(), callbacks=()):
        cfg = compose_train(common + list(extra), tmp_path, tiny_data_overrides, run=name)
        with open_dict(cfg):
            cfg.callbacks.record = {"_target_": "recipe_cfg.RecordBatches", "key": name}
            for i, callback in enumerate(callbacks):
                cfg.callbacks[f"extra{i}"] = callback
        return train(cfg)

    _, full = run("full")
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:  # the interrupt checkpoint exits with 128 + SIGINT
            run("interrupted", callbacks=[{"_target_": "recipe_cfg.InterruptAt", "step": stop_at}])
        assert stopped.value.code == 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert (tmp_path / "logs/train/runs/rnnt/interrupted/checkpoints/last.ckpt").exists()
    _, resumed = run("resumed", extra=["ckpt_path=last"])

    seen = RecordBatches.SEEN
    assert len(seen["full"]) == n_steps
    assert seen["interrupted"][:stop_at] + seen["resumed"] == seen["full"]
    assert resumed["trainer"].global_step == n_steps
    full_state, resumed_state = full["model"].state_dict(), resumed["model"].state_dict()
    assert full_state.keys() == resumed_state.keys()
    for name in full_state:
        assert torch.equal(full_state[name], resumed_state[name]), name


def test_validation_does_not_change_training(tiny_data_overrides, tmp_path):
    """Validating every 2 batches or only at epoch ends (with a loader worker): bitwise-equal weights.
    Validation must draw nothing from the streams training uses (dropout, augmentation, order)."""
    common = ["loss=rnnt", "logger=none", "test=false", "trainer.max_epochs=2", "trainer.limit_train_batches=5",
              "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "data.num_workers=1",
              "model.transcriber.dropout=0.2"]
    states = []
    for name, cadence in (("often", "2"), ("epoch_end", "null")):
        cfg = compose_train(common + [f"trainer.val_check_interval={cadence}"], tmp_path, tiny_data_overrides,
                            run=name)
        _, objects = train(cfg)
        states.append(objects["model"].state_dict())
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_wandb_and_csv_hold_perf_metrics(tiny_data_overrides, tmp_path):
    cfg = compose_train(["loss=ctc", "trainer.max_steps=4", "trainer.max_epochs=-1", "trainer.limit_val_batches=1",
                         "trainer.limit_test_batches=1", "trainer.val_check_interval=2"],
                        tmp_path, tiny_data_overrides)
    metrics, objects = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    wait_for_exit_record(run_files[0])
    counts = history_keys(run_files[0])
    for key in PERF + ["train/loss"]:
        assert counts.get(key, 0) == 4, key
    for key in ("val/wer", "val/loss", "test/wer"):
        assert counts.get(key, 0) >= 1, key
    rows = _csv_rows(run_dir)
    step_rows = [row for row in rows if row.get("perf/step_time_s")]
    assert len(step_rows) == 4
    for row in step_rows:
        assert float(row["perf/step_time_s"]) > 0 and float(row["perf/peak_mem_gb"]) > 0
        assert float(row["perf/utts_per_s"]) > 0 and float(row["perf/audio_s_per_s"]) > 0
        assert float(row["perf/loss_ms"]) > 0
    checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(name.startswith("best-") for name in checkpoints)
    assert 0.0 <= metrics["test/wer"]


def test_non_finite_batches_are_skipped(tiny_data_overrides, tmp_path, monkeypatch, caplog):
    """A batch with an infinite utterance loss: no update, no scheduler step, one log line naming the
    utterance; its metrics.csv row holds its own (infinite) loss, not the previous step's values."""
    from recipes.lit.module import ASRLitModule

    original = ASRLitModule.losses
    calls = {"train": 0}
    poisoned_ids = []

    def poisoned(self, batch):
        loss, aux = original(self, batch)
        if self.training:
            calls["train"] += 1
            if calls["train"] == 2:  # as an utterance with too few frames for its tokens would be
                poisoned_ids.extend(batch["ids"])
                loss = loss.clone()
                loss[0] = float("inf")
        return loss, aux

    monkeypatch.setattr(ASRLitModule, "losses", poisoned)
    cfg = compose_train(["loss=rnnt", "logger=csv", "test=false", "trainer.max_steps=4", "trainer.max_epochs=-1",
                         "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"],
                        tmp_path, tiny_data_overrides)
    with caplog.at_level("WARNING", logger="recipes.lit.module"):
        metrics, objects = train(cfg)
    model, trainer = objects["model"], objects["trainer"]
    assert model.skipped_batches == 1
    assert metrics["train/skipped_batches"] == 1.0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.global_step == 4  # Lightning counts the skipped batch's (empty) optimizer step
    # the scheduler stepped with the real updates only: 3 for 4 batches, one of them skipped
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3
    lines = [r.getMessage() for r in caplog.records if "skipped batch" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"non-finite loss for {poisoned_ids[0]};" in lines[0]
    assert all(utt in lines[0] for utt in poisoned_ids)
    rows = [row for row in _csv_rows(Path(cfg.paths.output_dir)) if row.get("train/loss")]
    assert [int(row["step"]) for row in rows] == [0, 1, 2, 3]
    assert len({row["train/loss"] for row in rows}) == 4  # no step repeats another's loss
    assert float(rows[1]["train/loss"]) == float("inf")  # the skipped step shows its own loss
    assert [float(row["train/skipped_batches"]) for row in rows] == [0.0, 1.0, 1.0, 1.0]


def test_training_has_no_alignment_decoder(tmp_path):
    """Forced alignment is decode.py's `alignment` group, not a `decoding` option training could pick for val/wer."""
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"decoding/viterbi"):
        compose_train(["decoding=viterbi"], tmp_path)
    with pytest.raises(Exception, match=r"alignment"):
        compose_train(["alignment=viterbi"], tmp_path)


def test_command_line_run_directory_and_resume(tiny_data_overrides, tmp_path):
    """`python train.py` writes logs/<task>/runs/<loss>/<time>/ and `ckpt_path=last` resumes from it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    base = [sys.executable, "train.py", *force_add(tiny_data_overrides), "loss=modified_rnnt", "logger=csv",
            f"paths.log_dir={tmp_path}", "trainer.accelerator=cpu", "num_threads=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "model.transcriber.hidden_dim=32", "model.predictor.hidden_dim=32"]
    first = subprocess.run(base + ["trainer.max_epochs=1"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = list((tmp_path / "train" / "runs" / "modified_rnnt").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert (run / ".hydra" / "config.yaml").exists() and (run / "csv" / "metrics.csv").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    resolved = OmegaConf.load(run / "config.yaml")
    assert resolved.loss.name == "modified_rnnt" and resolved.tags == ["modified_rnnt"]
    assert resolved.vocab_size > 2 and resolved.model.joiner.vocab_size == resolved.vocab_size

    second = subprocess.run(base + ["trainer.max_epochs=2", "ckpt_path=last"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in second.stdout + second.stderr
    newest = max((tmp_path / "train" / "runs" / "modified_rnnt").iterdir(), key=lambda p: p.stat().st_mtime)
    epochs = {row["epoch"] for row in _csv_rows(newest) if row.get("train/loss")}
    assert epochs == {"1"}  # the resumed run trains only the second epoch
