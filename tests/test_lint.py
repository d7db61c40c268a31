"""The sources stay lint-clean: ruff over every Python file, clang-format over seqloss/csrc.

Both tools are pinned in requirements.txt (installed by scripts/setup_env.sh). To fix what these
tests report: `.venv/bin/ruff check --fix .` and `.venv/bin/clang-format -i --style=file <files>`.
"""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CSRC_SUFFIXES = {".h", ".cpp", ".cu", ".cuh"}


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run `bash scripts/setup_env.sh` (it is pinned in requirements.txt)"
    return found


def test_ruff_is_clean():
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", "--output-format=concise", str(REPO)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_clang_format_is_clean():
    files = sorted(str(p) for p in (REPO / "seqloss" / "csrc").rglob("*") if p.suffix in CSRC_SUFFIXES)
    assert len(files) >= 10
    result = subprocess.run([_tool("clang-format"), "--dry-run", "--Werror", "--style=file", *files],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-6000:]
