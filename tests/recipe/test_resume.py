"""Preemption: real `python train.py` runs stopped by SIGINT, SIGTERM, SIGUSR1 and SIGKILL at chosen
points, resumed with `ckpt_path=...`, end bitwise equal to an uninterrupted run (weights, optimizer
and scheduler state, per-step training losses in metrics.csv)."""
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_CORPUS
from recipe_cfg import REPO

# 3 epochs of 5 batches, validation every 2 batches and at each epoch end: checkpoints mid epoch
# (last.ckpt after every validation) and at epoch ends (epoch*.ckpt, last.ckpt)
RUN = ["loss=rnnt", "logger=csv", "trainer.accelerator=cpu", "num_threads=1", "trainer.max_epochs=3",
       "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "trainer.val_check_interval=2",
       "test=false", "callbacks.progress_bar.refresh_rate=0", "model.transcriber.hidden_dim=32",
       "model.transcriber.output_dim=32", "model.transcriber.num_layers=1", "model.predictor.hidden_dim=32",
       "model.predictor.output_dim=32", "model.predictor.embed_dim=16", "model.joiner.joiner_dim=32"]


def _data(corpus: Path, num_workers: int = 0) -> list[str]:
    return [f"++data.root={corpus}", *[f"++data.corpus.{k}={v}" for k, v in TINY_CORPUS.items()],
            "++data.max_duration=10", "++data.eval_max_duration=20", f"++data.num_workers={num_workers}",
            "++data.cmvn_max_utts=20", "tokenizer.vocab_size=64"]


def train_process(corpus: Path, log_dir: Path, name: str, *extra: str, num_workers: int = 0, env: dict | None = None):
    """Runs `python train.py` into `log_dir/train/runs/rnnt/<name>`; returns (process, run directory)."""
    run_dir = log_dir / "train" / "runs" / "rnnt" / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "recipe"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "train.py", *_data(corpus, num_workers), *RUN, f"paths.log_dir={log_dir}",
               f"hydra.run.dir={run_dir}", *extra]
    process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return process, run_dir


def signal_at(name: str, step: int, when: str) -> list[str]:
    return ["+callbacks.signal_at._target_=signal_at.SignalAt", f"+callbacks.signal_at.signal={name}",
            f"+callbacks.signal_at.step={step}", f"+callbacks.signal_at.when={when}"]


def step_losses(run_dir: Path) -> dict[int, str]:
    """train/loss per logged step, as written in metrics.csv (text: compared exactly)."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(row["step"]): row["train/loss"] for row in csv.DictReader(f) if row.get("train/loss")}


def assert_same(a, b, where: str = "") -> None:
    """Bitwise equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def final_state(run_dir: Path) -> dict:
    """Weights, optimizer and scheduler state and step of the run's final checkpoint (last.ckpt)."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {key: ckpt[key] for key in ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch")}


@pytest.fixture(scope="module")
def references(tiny_corpus, tmp_path_factory):
    """overrides -> the uninterrupted run's (no loader workers) final state and per-step losses."""
    cache = {}

    def get(*overrides: str):
        if overrides not in cache:
            process, run_dir = train_process(tiny_corpus, tmp_path_factory.mktemp("reference"), "full", *overrides)
            assert process.returncode == 0, process.stderr[-3000:]
            losses = step_losses(run_dir)
            assert sorted(losses) == list(range(15))
            cache[overrides] = final_state(run_dir), losses
        return cache[overrides]

    return get


@pytest.fixture
def reference(references):
    return references()


def test_two_uninterrupted_runs_are_equal(tiny_corpus, reference, tmp_path):
    """The baseline of every comparison below; also: loader workers do not change the training."""
    process, run_dir = train_process(tiny_corpus, tmp_path, "again", num_workers=1)
    assert process.returncode == 0, process.stderr[-3000:]
    assert_same(final_state(run_dir), reference[0])
    assert step_losses(run_dir) == reference[1]


# (signal, when, step, expected exit status, checkpoint to resume from, loader workers, overrides);
# with overrides (validation at epoch ends only: the default cadence, where last.ckpt is written
# by on_train_epoch_end) the reference is an uninterrupted run with the same overrides
STOPS = {
    "sigint_mid_epoch": ("SIGINT", "step", 3, 130, "last", 0),
    "sigterm_in_validation": ("SIGTERM", "validation", 4, 143, "last", 0),
    "sigusr1_mid_epoch_workers": ("SIGUSR1", "step", 7, 138, "last", 1),
    "sigkill_after_mid_epoch_checkpoint": ("SIGKILL", "after_checkpoint", 2, -signal.SIGKILL, "last", 0),
    "sigkill_after_epoch_end_checkpoint": ("SIGKILL", "after_checkpoint", 5, -signal.SIGKILL, "last", 1),
    "sigkill_after_epoch_end_default_cadence": ("SIGKILL", "after_checkpoint", 5, -signal.SIGKILL, "last", 1,
                                                "trainer.val_check_interval=null"),
    "sigkill_resume_epoch_checkpoint": ("SIGKILL", "after_checkpoint", 10, -signal.SIGKILL, "epoch001.ckpt", 0,
                                        "trainer.val_check_interval=null"),
}


@pytest.mark.parametrize("case", list(STOPS))
def test_stop_and_resume_is_exact(case, tiny_corpus, references, tmp_path):
    name, when, step, status, resume_from, workers, *overrides = STOPS[case]
    reference = references(*overrides)
    # test=true: a run stopped by a signal must not go on to the test stage
    stopped, stopped_dir = train_process(tiny_corpus, tmp_path, "stopped", *signal_at(name, step, when), "test=true",
                                         *overrides, num_workers=workers)
    assert stopped.returncode == status, stopped.stderr[-3000:]
    ckpt = stopped_dir / "checkpoints" / ("last.ckpt" if resume_from == "last" else resume_from)
    assert ckpt.exists()
    if name != "SIGKILL":
        assert f"{name}: saved {stopped_dir / 'checkpoints' / 'last.ckpt'}" in stopped.stdout + stopped.stderr
        assert "test/wer" not in (stopped_dir / "csv" / "metrics.csv").read_text()
    stopped_at = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < stopped_at < 15

    arg = "ckpt_path=last" if resume_from == "last" else f"ckpt_path={stopped_dir / 'checkpoints' / resume_from}"
    resumed, resumed_dir = train_process(tiny_corpus, tmp_path, "resumed", arg, *overrides, num_workers=workers)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {ckpt}" in resumed.stdout + resumed.stderr

    final, losses = reference
    assert_same(final_state(resumed_dir), final)
    before, after = step_losses(stopped_dir), step_losses(resumed_dir)
    assert min(after) == stopped_at  # the resumed run logs from the step it resumed at
    assert {**{s: v for s, v in before.items() if s < stopped_at}, **after} == losses



def test_resume_with_additive_noise_is_exact(tiny_corpus, reference, tmp_path):
    """With `data.noise` on, a run stopped mid epoch (loader workers) and resumed ends bitwise equal to an
    uninterrupted one, and differs from the clean reference (the noise was applied)."""
    import numpy as np
    import soundfile

    noise_dir = tmp_path / "musan" / "noise" / "free-sound"
    noise_dir.mkdir(parents=True)
    soundfile.write(noise_dir / "noise.wav", np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32), 16000)
    noise = f"data.noise={{dir:{tmp_path / 'musan'},snr_db:[0,10],prob:0.7}}"
    full, full_dir = train_process(tiny_corpus, tmp_path, "full", noise)
    assert full.returncode == 0, full.stderr[-3000:]
    assert "train: AdditiveNoise(" in full.stdout + full.stderr
    losses = step_losses(full_dir)
    assert sorted(losses) == list(range(15)) and losses != reference[1]
    stopped, stopped_dir = train_process(tiny_corpus, tmp_path, "stopped", noise, *signal_at("SIGINT", 7, "step"),
                                         num_workers=1)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    resumed, resumed_dir = train_process(tiny_corpus, tmp_path, "resumed", noise, "ckpt_path=last", num_workers=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(final_state(resumed_dir), final_state(full_dir))
    before, after = step_losses(stopped_dir), step_losses(resumed_dir)
    assert {**{s: v for s, v in before.items() if s < min(after)}, **after} == losses

def slurm_job(tmp_path: Path) -> tuple[dict, Path]:
    """Environment of a one-task SLURM batch job (as Lightning detects one) whose `scontrol` is a stub
    that records its arguments in the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "asr", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, calls


def test_slurm_requeue_signal_saves_requeues_and_resumes_exactly(tiny_corpus, reference, tmp_path):
    """Under SLURM, SIGUSR1 (the time-limit warning) saves last.ckpt at a safe point, runs `scontrol
    requeue <job>` and exits 138; the requeued job (same command, `ckpt_path=auto`) ends bitwise equal."""
    env, calls = slurm_job(tmp_path)
    stopped, stopped_dir = train_process(tiny_corpus, tmp_path, "stopped", "ckpt_path=auto",
                                         *signal_at("SIGUSR1", 3, "step"), env=env)
    assert stopped.returncode == 128 + signal.SIGUSR1, stopped.stderr[-3000:]
    assert "ckpt_path=auto: starting from scratch" in stopped.stdout + stopped.stderr
    assert calls.read_text().split("\n")[0] == "requeue 4242"
    assert "SLURM: requeued job 4242" in stopped.stdout + stopped.stderr
    assert not list(stopped_dir.rglob("hpc_ckpt_*.ckpt"))  # Lightning's own mid-step save did not run
    resumed, resumed_dir = train_process(tiny_corpus, tmp_path, "resumed", "ckpt_path=auto", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {stopped_dir / 'checkpoints' / 'last.ckpt'}" in resumed.stdout + resumed.stderr
    assert_same(final_state(resumed_dir), reference[0])
    assert calls.read_text().count("requeue") == 1


def test_slurm_sigterm_saves_without_requeue(tiny_corpus, tmp_path):
    """SIGTERM (cancel, preemption, time limit) under SLURM: checkpoint and 143, no requeue."""
    env, calls = slurm_job(tmp_path)
    stopped, stopped_dir = train_process(tiny_corpus, tmp_path, "stopped", *signal_at("SIGTERM", 3, "step"),
                                         env=env)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert (stopped_dir / "checkpoints" / "last.ckpt").exists()
    assert not calls.exists()
