"""Installing seqloss: a plain ``pip install`` (build isolation on) gives the native kernels, and a
seqloss without its compiled ``_C`` warns once on import with the command that builds it.

The install test builds into a fresh virtual environment that sees this interpreter's packages
(torch included) through a ``.pth`` file, so nothing large is downloaded; pip's isolated build
environment fetches only the build requirements (setuptools, wheel) from the package index.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.pyc", "build", "*.egg-info")


def _copy_source(destination: Path) -> Path:
    """The files a source checkout gives pip (package, build script, metadata), without built kernels."""
    destination.mkdir()
    shutil.copytree(ROOT / "seqloss", destination / "seqloss", ignore=IGNORED)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    return destination


def _visible_packages(folder: Path) -> Path:
    """A folder of links to this interpreter's site-packages entries, minus any installed seqloss.

    The new environment sees torch and the rest through it; leaving seqloss out keeps pip from
    finding (and trying to replace) the seqloss installed here.
    """
    folder.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        if "seqloss" in entry.name.lower() or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


PROBE = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import seqloss, seqloss._ops, torch
x = torch.randn(8, 2, 5, dtype=torch.float64).log_softmax(-1)
args = (x, torch.tensor([[1, 2], [3, 3]]), torch.tensor([8, 7]), torch.tensor([2, 2]))
losses = [seqloss.ctc_loss(*args, backend=b, reduction="none").tolist() for b in ("native", "torch")]
print(json.dumps({"file": seqloss.__file__, "native": seqloss._ops.available("cpu"), "losses": losses,
                  "warnings": [str(w.message) for w in caught if "seqloss" in str(w.message)]}))
"""


@pytest.mark.slow
def test_pip_install_with_build_isolation_builds_the_native_kernels(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "outer_packages.pth").write_text(f"{_visible_packages(tmp_path / 'outer')}\n")
    source = _copy_source(tmp_path / "source")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PIP_"))}
    # CPU kernels only: the CUDA build (auto-detected where nvcc exists) would add minutes
    env.update(SEQLOSS_BUILD_CUDA="0", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    install = subprocess.run([python, "-m", "pip", "install", str(source)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    probe = subprocess.run([python, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).is_relative_to(venv), result["file"]  # the installed copy, not this checkout
    assert result["native"] is True
    assert result["warnings"] == []
    native, reference = result["losses"]
    assert native == pytest.approx(reference, rel=1e-9)


MISSING_KERNELS_PROBE = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import seqloss, torch
    import importlib; importlib.import_module("seqloss.ctc")
    x = torch.randn(6, 1, 4).log_softmax(-1)
    seqloss.ctc_loss(x, torch.tensor([[1, 2]]), torch.tensor([6]), torch.tensor([2]))
for w in caught:
    if "seqloss" in str(w.message):
        print("WARNING", w.category.__name__, str(w.message).replace("\\n", " "))
"""


def test_missing_native_kernels_warn_once_on_import_with_the_build_command(tmp_path):
    source = _copy_source(tmp_path / "source")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SEQLOSS_BACKEND")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, "-c", MISSING_KERNELS_PROBE], cwd=source, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("WARNING")]
    assert len(lines) == 1, result.stdout
    assert "RuntimeWarning" in lines[0] and "torch backend" in lines[0]
    # run from a source checkout, the command rebuilds that checkout in place
    assert f"pip install --no-build-isolation -e {source}" in lines[0], lines[0]

    # choosing the torch backend explicitly silences it
    env["SEQLOSS_BACKEND"] = "torch"
    quiet = subprocess.run([sys.executable, "-c", MISSING_KERNELS_PROBE], cwd=source, env=env,
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "WARNING" not in quiet.stdout, quiet.stdout + quiet.stderr[-2000:]
