"""Atomic file writes that several processes may race on (e.g. two runs preparing one corpus)."""
import errno
import hashlib
import os
from pathlib import Path


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name to write ``path`` under before ``os.replace(partial, path)``.

    It is hidden and unique to this process, so that processes preparing the same deterministic
    file never rename each other's half-written copy; the last rename wins, with the same bytes.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def write_text_atomic(path: str | os.PathLike, content: str) -> None:
    """Write ``content`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    partial = partial_path(path)
    partial.write_text(content)
    os.replace(partial, path)


def create_exclusive(path: str | os.PathLike, content: str) -> bool:
    """Create ``path`` holding ``content`` unless it exists; return whether this call created it.

    Of several processes racing to create ``path``, exactly one succeeds, and the file never holds
    less than all of ``content``: it is written under a private name and hard-linked into place
    (``link`` fails when the target exists, unlike ``rename``). On a file system without hard
    links, ``O_CREAT | O_EXCL`` decides the winner instead; the content is then written after
    the file appears, so a reader may briefly find it incomplete and must read it again.
    """
    path = Path(path)
    partial = partial_path(path)
    partial.write_text(content)
    try:
        os.link(partial, path)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    finally:
        partial.unlink(missing_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    return True


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Return the hexadecimal SHA-256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
