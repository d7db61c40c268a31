"""Finding readable checkpoints: what `ckpt_path=last` means, and skipping damaged files.

A checkpoint written by ``torch.save`` is a zip archive whose central directory is written last,
and every member carries a CRC-32. A file truncated by a crash or a full disk therefore has no
valid central directory, or a member whose CRC does not match: :func:`checkpoint_problem` detects
both without unpickling anything.
"""
import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why `path` is not a readable ``torch.save`` checkpoint (missing, empty, not a zip archive,
    truncated, or a member failing its CRC check); None when it is readable."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        return f"cannot stat it ({error.strerror})"
    if size == 0:
        return "it is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"it is not a complete torch.save archive ({error})"
    if bad is not None:
        return f"its member {bad} fails the CRC check"
    return None


def readable_checkpoints(paths: Iterable[str | Path], what: str = "checkpoint") -> list[Path]:
    """The readable ones of `paths`, in order; each unreadable one is skipped with a warning naming it."""
    readable = []
    for path in map(Path, paths):
        problem = checkpoint_problem(path)
        if problem is None:
            readable.append(path)
        else:
            log.warning(f"skipping unreadable {what} {path}: {problem}")
    return readable


def find_last_checkpoint(runs_dir: str | Path, exclude: str | Path | None = None) -> Path:
    """The checkpoint to resume from: the newest readable `*/checkpoints/last.ckpt` under `runs_dir`
    (one folder per run, newest by modification time).

    When a run's last.ckpt is unreadable (truncated by a crash or a full disk), it is skipped with a
    warning naming it, and that run's other checkpoints (newest first) are tried before older runs.
    `exclude` is a run directory to ignore (the run that is starting). Raises FileNotFoundError
    when there is no last.ckpt, naming the unreadable files when there were only those.
    """
    runs_dir = Path(runs_dir)
    exclude = Path(exclude).resolve() if exclude is not None else None
    lasts = [
        path for path in runs_dir.glob("*/checkpoints/last.ckpt")
        if exclude is None or path.parent.parent.resolve() != exclude
    ]
    if not lasts:
        raise FileNotFoundError(f"ckpt_path=last: no */checkpoints/last.ckpt under {runs_dir}")
    skipped = []
    for last in sorted(lasts, key=lambda path: path.stat().st_mtime_ns, reverse=True):
        others = sorted((p for p in last.parent.glob("*.ckpt") if p != last),
                        key=lambda path: path.stat().st_mtime_ns, reverse=True)
        for path in [last, *others]:
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            log.warning(f"ckpt_path=last: skipping unreadable checkpoint {path}: {problem}")
            skipped.append(str(path))
    raise FileNotFoundError(f"ckpt_path=last: no readable checkpoint under {runs_dir}; "
                            f"unreadable: {', '.join(skipped)}")
