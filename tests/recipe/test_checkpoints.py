"""Atomic checkpoint writes (AtomicCheckpointIO) and skipping of unreadable checkpoints.

Faults are injected where they happen in practice: the serialiser fails half-way with ENOSPC
(a full disk), and a real process is killed with SIGKILL while it writes a large checkpoint.
"""
import errno
import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf

from recipes.utils.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from recipes.utils.checkpoints import checkpoint_problem, find_last_checkpoint, readable_checkpoints
from tests.recipe.recipe_cfg import REPO, compose_train

REAL_SAVE = torch.save


def _half_then_enospc(obj, f, *args, **kwargs):
    """A serialiser that writes the first half of the real bytes, then fails as a full disk does."""
    buffer = io.BytesIO()
    REAL_SAVE(obj, buffer)
    data = buffer.getvalue()
    if isinstance(f, (str, os.PathLike)):
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
    else:
        f.write(data[: len(data) // 2])
        f.flush()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_trainer_configs_use_the_atomic_plugin(tmp_path):
    import hydra

    for option in ("default", "cpu", "ddp_cpu"):
        cfg = compose_train([f"trainer={option}"], tmp_path)
        trainer = hydra.utils.instantiate(cfg.trainer)
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO), option


def test_fault_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"global_step": 1, "w": torch.arange(1000.0)}, path)
    good = path.read_bytes()
    monkeypatch.setattr(torch, "save", _half_then_enospc)
    with pytest.raises(OSError) as raised:
        io_plugin.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == good and _names(tmp_path) == ["last.ckpt"]  # no partial file left either
    monkeypatch.setattr(torch, "save", REAL_SAVE)
    assert io_plugin.load_checkpoint(path)["global_step"] == 1
    io_plugin.save_checkpoint({"global_step": 3}, path)  # and the next write succeeds
    assert io_plugin.load_checkpoint(path)["global_step"] == 3 and _names(tmp_path) == ["last.ckpt"]


def test_the_injected_fault_truncates_a_plain_write(tmp_path, monkeypatch):
    """The control: the same fault on a direct torch.save(obj, path) leaves a truncated file under the
    checkpoint's name, which checkpoint_problem reports (and torch.load cannot read)."""
    path = tmp_path / "last.ckpt"
    REAL_SAVE({"global_step": 1, "w": torch.arange(1000.0)}, path)
    monkeypatch.setattr(torch, "save", _half_then_enospc)
    with pytest.raises(OSError):
        torch.save({"global_step": 2, "w": torch.zeros(1000)}, path)
    assert 0 < path.stat().st_size and checkpoint_problem(path) is not None
    with pytest.raises(RuntimeError):
        torch.load(path, weights_only=False)


class _FailAtStep(L.Callback):
    """Makes the serialiser fail (half written, ENOSPC) for checkpoints of global step `step`."""

    def __init__(self, step, monkeypatch):
        self.step, self.monkeypatch = step, monkeypatch

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            self.monkeypatch.setattr(torch, "save", _half_then_enospc)


def test_model_checkpoint_keeps_previous_files_when_a_save_fails(tmp_path, monkeypatch):
    """Lightning's ModelCheckpoint removes the previous best (and rewrites last.ckpt) only after the
    new file is saved: a save failing on a full disk leaves the previous best and last intact."""
    folder = tmp_path / "checkpoints"
    best = ModelCheckpoint(dirpath=folder, filename="best-{step:04d}", monitor="step", mode="max", save_top_k=1,
                           every_n_train_steps=1, auto_insert_metric_name=False)
    last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1, every_n_train_steps=1,
                           enable_version_counter=False)
    # the fault callback runs first, so the step-3 saves of both checkpoint callbacks meet the full disk
    trainer = L.Trainer(accelerator="cpu", max_steps=5, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, plugins=[AtomicCheckpointIO()],
                        callbacks=[_FailAtStep(3, monkeypatch), best, last])
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(BoringModel())
    monkeypatch.setattr(torch, "save", REAL_SAVE)
    assert _names(folder) == ["best-0002.ckpt", "last.ckpt"]
    for name in ("best-0002.ckpt", "last.ckpt"):
        assert checkpoint_problem(folder / name) is None
        assert torch.load(folder / name, weights_only=False)["global_step"] == 2


CHILD = textwrap.dedent("""
    import sys, time
    import torch
    from recipes.utils.checkpoint_io import AtomicCheckpointIO

    path = sys.argv[1]
    plugin = AtomicCheckpointIO()
    plugin.save_checkpoint({"global_step": 1, "w": torch.arange(4096.0)}, path)
    real_save = torch.save

    class Throttled:
        # a file that writes at most ~100 MB/s, so that the kill lands while bytes are being written
        def __init__(self, f):
            self.f = f
        def write(self, data):
            time.sleep(len(data) / 100e6)
            return self.f.write(data)
        def flush(self):
            self.f.flush()

    torch.save = lambda obj, f: real_save(obj, Throttled(f))
    print("good", flush=True)
    # 64 tensors of 4 MiB: 256 MiB, written in many chunks
    plugin.save_checkpoint({"global_step": 2, **{f"t{i}": torch.full((1 << 20,), float(i)) for i in range(64)}}, path)
    print("finished", flush=True)
""")


def test_sigkill_while_writing_leaves_the_previous_checkpoint_bitwise(tmp_path):
    path = tmp_path / "last.ckpt"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env,
                             cwd=REPO)
    try:
        assert child.stdout.readline().strip() == "good"
        good = path.read_bytes()
        deadline = time.monotonic() + 60
        partial_size = 0
        while time.monotonic() < deadline and partial_size < (32 << 20):  # kill once 32 MiB are written
            partials = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
            partial_size = partials[0].stat().st_size if partials else 0
            time.sleep(0.005)
        assert partial_size >= (32 << 20), "the child never got to write the large checkpoint"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert path.read_bytes() == good  # bitwise the previous good checkpoint
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.ckpt.") and leftovers[0].suffix == ".tmp"
    assert checkpoint_problem(leftovers[0]) is not None  # the killed write really was incomplete
    assert sorted(tmp_path.glob("*.ckpt")) == [path]  # and no checkpoint pattern picks it up
    assert torch.load(path, weights_only=False)["global_step"] == 1
    # the next save of that checkpoint removes the dead writer's partial file
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert _names(tmp_path) == ["last.ckpt"]


def test_partial_files_of_live_writers_and_other_hosts_are_kept(tmp_path):
    import socket

    from recipes.utils.checkpoint_io import remove_stale_partials

    path = tmp_path / "best-[1].ckpt"  # a glob metacharacter in the name
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".{path.name}.{host}.{dead.pid}.abc.tmp"
    live = tmp_path / f".{path.name}.{host}.{os.getppid()}.abc.tmp"
    other_host = tmp_path / f".{path.name}.{host}-elsewhere.{dead.pid}.abc.tmp"
    for partial in (stale, live, other_host):
        partial.write_bytes(b"partial")
    assert remove_stale_partials(path) == [stale]
    assert not stale.exists() and live.exists() and other_host.exists()


def _save(path: Path, step: int, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"global_step": step, "state_dict": {}}, path)
    os.utime(path, (mtime, mtime))
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_checkpoint_problem_names_each_kind_of_damage(tmp_path):
    good = _save(tmp_path / "good.ckpt", 1, time.time())
    assert checkpoint_problem(good) is None
    assert "cannot stat" in checkpoint_problem(tmp_path / "missing.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert "empty" in checkpoint_problem(tmp_path / "empty.ckpt")
    truncated = _save(tmp_path / "t.ckpt", 1, time.time())
    _truncate(truncated)
    assert "not a complete" in checkpoint_problem(truncated)
    corrupt = _save(tmp_path / "c.ckpt", 1, time.time())
    data = bytearray(corrupt.read_bytes())
    offset = data.index(b"global_step") + 2  # inside the pickled data: a byte flip fails its CRC only
    data[offset] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    assert "CRC" in checkpoint_problem(corrupt)


def test_ckpt_path_last_skips_a_truncated_last_ckpt(tmp_path, caplog):
    runs = tmp_path / "runs"
    now = time.time()
    older_last = _save(runs / "r1" / "checkpoints" / "last.ckpt", 10, now - 100)
    epoch = _save(runs / "r2" / "checkpoints" / "epoch001.ckpt", 20, now - 50)
    newest_last = _save(runs / "r2" / "checkpoints" / "last.ckpt", 30, now)
    assert find_last_checkpoint(runs) == newest_last
    _truncate(newest_last)
    os.utime(newest_last, (now, now))
    with caplog.at_level(logging.WARNING):
        assert find_last_checkpoint(runs) == epoch  # the same run's newest readable checkpoint
    assert str(newest_last) in caplog.text and "unreadable" in caplog.text
    _truncate(epoch)
    assert find_last_checkpoint(runs) == older_last
    # train.py's resolution of ckpt_path=last goes through it
    from train import resolve_ckpt_path

    cfg = OmegaConf.create({"ckpt_path": "last", "task_name": "train", "loss": {"name": "rnnt"},
                            "paths": {"log_dir": str(tmp_path / "logs"), "output_dir": str(tmp_path / "new")}})
    (tmp_path / "logs" / "train" / "runs").mkdir(parents=True)
    (tmp_path / "logs" / "train" / "runs" / "rnnt").symlink_to(runs)
    assert Path(resolve_ckpt_path(cfg)).resolve() == older_last.resolve()
    _truncate(older_last)
    with pytest.raises(FileNotFoundError, match="no readable checkpoint") as raised:
        find_last_checkpoint(runs)
    assert str(newest_last) in str(raised.value) and str(older_last) in str(raised.value)


def test_readable_checkpoints_warns_naming_each_skipped_file(tmp_path, caplog):
    now = time.time()
    a, b = _save(tmp_path / "a.ckpt", 1, now), _save(tmp_path / "b.ckpt", 2, now)
    _truncate(a)
    with caplog.at_level(logging.WARNING):
        assert readable_checkpoints([a, b]) == [b]
    assert f"skipping unreadable checkpoint {a}" in caplog.text and str(b) not in caplog.text


def test_the_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import recipes.utils.checkpoint_io as checkpoint_io

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_io.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint_io.os, "replace", replace)
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "x.ckpt")
    assert events == [("fsync", "file"), ("replace", "x.ckpt"), ("fsync", "dir")]
