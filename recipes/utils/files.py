"""Atomic file writes that several processes may race on (e.g. two runs preparing one corpus)."""
import os
from pathlib import Path


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name to write ``path`` under before ``os.replace(partial, path)``.

    It is hidden and unique to this process, so that processes preparing the same deterministic
    file never rename each other's half-written copy; the last rename wins, with the same bytes.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.partial")
