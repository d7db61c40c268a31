"""Finding the checkpoint that `ckpt_path=last` means."""
from pathlib import Path


def find_last_checkpoint(runs_dir: str | Path, exclude: str | Path | None = None) -> Path:
    """The most recently written `*/checkpoints/last.ckpt` under `runs_dir` (one folder per run).

    `exclude` is a run directory to ignore (the run that is starting). Raises FileNotFoundError
    when there is none.
    """
    runs_dir = Path(runs_dir)
    exclude = Path(exclude).resolve() if exclude is not None else None
    candidates = [
        path for path in runs_dir.glob("*/checkpoints/last.ckpt")
        if exclude is None or path.parent.parent.resolve() != exclude
    ]
    if not candidates:
        raise FileNotFoundError(f"ckpt_path=last: no */checkpoints/last.ckpt under {runs_dir}")
    return max(candidates, key=lambda path: path.stat().st_mtime_ns)
