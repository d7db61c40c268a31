"""Atomic checkpoint writes: a Lightning ``CheckpointIO`` that never leaves a partial file under a
checkpoint's name.

``AtomicCheckpointIO.save_checkpoint`` serialises the checkpoint into a hidden temporary file in
the target's directory, flushes and fsyncs it, renames it over the target (``os.replace``, atomic
on POSIX file systems) and fsyncs the directory so that the rename itself survives a power cut.
A crash, a kill or a full disk at any point leaves either the previous file or the complete new
one under the checkpoint's name, never a truncated one; the temporary file is removed when the
write fails with an exception. A killed process leaves it behind under its hidden
``.<name>.<host>.<pid>.<random>.tmp`` name, which no ``*.ckpt`` pattern matches; the next save of
that checkpoint on the same host removes it once no process with that id is alive.

Wired in through ``conf/trainer/default.yaml`` (``plugins:``), so ``trainer.save_checkpoint``
— used by every ``ModelCheckpoint`` and by the interrupt callback — goes through it.
Remote paths (``s3://`` etc.) go through Lightning's own ``TorchCheckpointIO`` unchanged.
"""
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _fsync_directory(directory: Path) -> None:
    """Makes a rename or unlink in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Removes the temporary files of earlier writes of `path` on this host whose process is gone
    (left by a kill or a power cut); returns them. Files of live processes and of other hosts
    (a shared file system) are left alone."""
    prefix = f".{path.name}.{socket.gethostname()}."
    removed = []
    for partial in path.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid_text = partial.name[len(prefix):].split(".", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def glob_escape(text: str) -> str:
    """`text` with glob metacharacters escaped (a checkpoint name may contain brackets)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def atomic_torch_save(obj: Any, path: str | os.PathLike, save: Callable[[Any, Any], None] | None = None) -> None:
    """``save(obj, file)`` (default ``torch.save``) into a temporary file next to `path`, fsync, then
    rename it over `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{socket.gethostname()}.{os.getpid()}.",
                                    suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            (save or torch.save)(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` replaces the target atomically (see the module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Writes `checkpoint` to `path` with :func:`atomic_torch_save` (local paths)."""
        if not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"storage_options is not supported by {type(self).__name__}, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)
