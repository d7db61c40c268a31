"""Build and load the CUDA kernels of seqloss/csrc/cuda/ for the CPU, under the CUDA emulation.

``load(build_root)`` compiles seqloss/csrc/emulation/emulated_ops.cpp and emulated_kernels.cpp (which
#includes the real kernel header seqloss/csrc/cuda/lattice_kernels.cuh) with
``torch.utils.cpp_extension.load`` (ninja) and returns ``torch.ops.seqloss_emulation``: the four
lattice ops of the CUDA backend on CPU tensors, with the extra arguments ``threads_per_block``,
``order`` (REVERSED, SHUFFLED, ASCENDING) and ``seed``, plus ``threads_for`` and ``barrier_test``.
Because the build runs in the tests, an edited kernel is what the next test run checks.

``build_variant(build_root, name, replacements)`` compiles a modified copy of the kernel header (each
replacement must match exactly once) into a library whose path, passed as ``kernels=`` to the ops,
runs the modified kernels instead: the tests use it to show that the emulation catches faults.
"""
import hashlib
from pathlib import Path

import torch
import torch.utils.cpp_extension

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "seqloss" / "csrc"
EMULATION = CSRC / "emulation"
KERNEL_HEADER = CSRC / "cuda" / "lattice_kernels.cuh"

REVERSED, SHUFFLED, ASCENDING = 0, 1, 2

# -fvisibility=hidden and -Bsymbolic: every build keeps its own copy of the kernels (the variants
# define the same symbols), whatever order the libraries are loaded in.
_VISIBILITY = ["-fvisibility=hidden", "-fvisibility-inlines-hidden"]
_LDFLAGS = ["-Wl,-Bsymbolic"]
# Variants run small inputs: compile them unoptimised, twice as fast to build (same results: no
# -ffast-math either way).
_CFLAGS, _VARIANT_CFLAGS = ["-O2", *_VISIBILITY], ["-O0", *_VISIBILITY]

_loaded = {}


def load(build_root: Path):
    """Build (if its sources changed) and load the emulation extension; returns torch.ops.seqloss_emulation.

    Loads at most once per process: the op library registers the ``seqloss_emulation`` namespace.
    """
    if "ops" not in _loaded:
        build = Path(build_root) / "seqloss_emulation"
        build.mkdir(parents=True, exist_ok=True)
        torch.utils.cpp_extension.load(
            name="seqloss_emulation",
            sources=[str(EMULATION / "emulated_ops.cpp"), str(EMULATION / "emulated_kernels.cpp")],
            extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS, build_directory=str(build),
            is_python_module=False, verbose=False)
        _loaded["ops"] = torch.ops.seqloss_emulation
    return _loaded["ops"]


def variant_source(replacements) -> str:
    """The kernel header with each (old, new) replacement applied; every `old` must occur exactly once."""
    text = KERNEL_HEADER.read_text()
    for old, new in replacements:
        count = text.count(old)
        if count != 1:
            raise ValueError(f"{KERNEL_HEADER.name}: expected exactly one {old!r} to replace, found {count}")
        text = text.replace(old, new)
    # The copy lives elsewhere: include the shared recurrences by absolute path.
    return text.replace('#include "../recurrences.h"', f'#include "{CSRC / "recurrences.h"}"')


def _write_if_changed(path: Path, text: str) -> None:
    """Rewriting an unchanged file would make ninja rebuild it."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def build_variant(build_root: Path, name: str, replacements) -> str:
    """Compile the kernels of a modified kernel header; returns the library path for ``kernels=``."""
    source = variant_source(replacements)
    key = hashlib.sha256((source + (EMULATION / "emulated_kernels.cpp").read_text()).encode()).hexdigest()[:12]
    build = Path(build_root) / f"variant_{name}_{key}"
    build.mkdir(parents=True, exist_ok=True)
    header = build / "lattice_kernels.cuh"
    _write_if_changed(header, source)
    unit = build / "kernels.cpp"
    kernels = EMULATION / "emulated_kernels.cpp"
    _write_if_changed(unit, f'#define SEQLOSS_KERNELS_HEADER "{header}"\n#include "{kernels}"\n')
    return torch.utils.cpp_extension.load(
        name=f"seqloss_emulation_{name}", sources=[str(unit)], extra_cflags=_VARIANT_CFLAGS, extra_ldflags=_LDFLAGS,
        build_directory=str(build), is_python_module=False, verbose=False)
