"""Build of seqloss's native kernels (the package metadata lives in pyproject.toml).

* ``seqloss._C``: the op schemas and the C++/OpenMP CPU kernels, built whenever torch is found.
* ``seqloss._C_cuda``: the CUDA kernels. ``SEQLOSS_BUILD_CUDA``: ``auto`` (default) builds them
  when torch is a CUDA build and nvcc is found (``CUDA_HOME``, else on the PATH), and installs
  without them if that build fails; ``1`` requires them (a failure stops the install); ``0``
  never builds them. ``TORCH_CUDA_ARCH_LIST`` defaults to the visible GPUs, or to
  ``8.0;9.0;12.0+PTX`` where none is visible (a build machine without a GPU).

The kernels are compiled against the torch that the installing interpreter itself imports, so
that their C++ ABI is the one seqloss runs with. pip's build isolation (the default) runs this
file with that interpreter but hides its site-packages, and the isolated environment has no
torch; this file then adds the interpreter's own site-packages (``sysconfig`` purelib/platlib,
with their ``.pth`` files) after the isolated build requirements and imports torch from there.
torch is deliberately not a build requirement: pip would install a second, possibly different
torch into the isolated environment and build the kernels against that one.

Without torch, or if the CPU kernels fail to compile, seqloss installs as pure Python; its first
import then warns that it runs on the slower torch backend and prints the command that builds
the kernels (docs/install.md).
"""
import os
import shutil
import site
import sys
import sysconfig

from setuptools import setup

CSRC = "seqloss/csrc"
DEFAULT_CUDA_ARCHS = "8.0;9.0;12.0+PTX"


def log(message: str) -> None:
    print(f"[seqloss] {message}", file=sys.stderr)


def import_target_torch():
    """torch as the installing interpreter imports it, or None (see the module docstring)."""
    try:
        import torch
        return torch
    except ImportError:
        pass
    paths = sysconfig.get_paths()
    candidates = [paths["purelib"], paths["platlib"]]
    if sys.prefix == sys.base_prefix:  # outside a virtual environment, `pip install --user` is seen too
        candidates.append(site.getusersitepackages())
    for directory in dict.fromkeys(candidates):
        if os.path.isdir(directory) and directory not in sys.path:
            site.addsitedir(directory)  # appended: the isolated build requirements keep precedence
    try:
        import torch
    except ImportError as error:
        log(f"torch is not importable by {sys.executable} ({error})")
        return None
    log(f"building against torch {torch.__version__} from {os.path.dirname(torch.__file__)}")
    return torch


def find_ninja() -> None:
    """Put a ninja binary on the PATH if the installing environment has one (parallel compiles)."""
    if shutil.which("ninja"):
        return
    directories = [sysconfig.get_paths()["scripts"]]
    try:
        import ninja
        directories.append(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    for directory in directories:
        if os.path.exists(os.path.join(directory, "ninja")):
            os.environ["PATH"] = directory + os.pathsep + os.environ.get("PATH", "")
            return


def cuda_home() -> str | None:
    """The CUDA toolkit folder: CUDA_HOME, else derived from nvcc on the PATH (None if neither)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    root = os.path.dirname(os.path.dirname(nvcc))
    # nvcc may be a wrapper script whose toolkit is the `cuda` folder next to its bin folder
    return os.path.join(root, "cuda") if os.path.isdir(os.path.join(root, "cuda", "lib64")) else root


def cuda_plan(torch) -> tuple[bool, bool]:
    """(build the CUDA kernels, a failure stops the install) from SEQLOSS_BUILD_CUDA."""
    mode = os.environ.get("SEQLOSS_BUILD_CUDA", "auto") or "auto"
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"SEQLOSS_BUILD_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False, False
    home = cuda_home()
    if mode == "auto" and (torch.version.cuda is None or home is None):
        reason = "torch is not a CUDA build" if torch.version.cuda is None else "nvcc was not found"
        log(f"not building the CUDA kernels ({reason}; SEQLOSS_BUILD_CUDA=1 requires them)")
        return False, False
    if home is not None:
        os.environ["CUDA_HOME"] = home  # read when torch.utils.cpp_extension is imported
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    return True, mode == "1"


def native_extensions():
    torch = import_target_torch()
    if torch is None:
        if os.environ.get("SEQLOSS_BUILD_CUDA") == "1":
            raise SystemExit("SEQLOSS_BUILD_CUDA=1 but torch is not importable: install torch first")
        log("installing without native kernels; seqloss will run on its (slower) torch backend")
        return {}
    build_cuda, cuda_required = cuda_plan(torch)
    find_ninja()
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    extensions = [CppExtension(
        "seqloss._C", [f"{CSRC}/ops.cpp", f"{CSRC}/cpu/lattice_cpu.cpp", f"{CSRC}/cpu/ctc_avx2.cpp",
                       f"{CSRC}/cpu/ssnt_avx2.cpp",
                       f"{CSRC}/cpu/transducer_cpu.cpp", f"{CSRC}/cpu/transducer_avx2.cpp"],
        extra_compile_args={"cxx": ["-O3", "-fopenmp"]}, extra_link_args=["-fopenmp"])]
    if build_cuda:
        extensions.append(CUDAExtension(
            "seqloss._C_cuda", [f"{CSRC}/cuda/lattice_cuda.cu"],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--expt-relaxed-constexpr"]}))
    required = {"seqloss._C_cuda"} if cuda_required else set()

    class build_ext(BuildExtension.with_options(use_ninja=True)):
        """Builds every extension; an optional one that fails to compile is left out with a message."""

        failed: set = set()

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as error:  # noqa: BLE001 - any compiler or linker failure
                if ext.name in required:
                    raise
                self.failed.add(ext.name)
                log(f"building {ext.name} failed ({type(error).__name__}: {error}); installing without it")

        def get_outputs(self):
            missing = {os.path.abspath(self.get_ext_fullpath(name)) for name in self.failed}
            return [path for path in super().get_outputs() if os.path.abspath(path) not in missing]

        def copy_extensions_to_source(self):
            kept = self.extensions
            self.extensions = [ext for ext in kept if ext.name not in self.failed]
            try:
                super().copy_extensions_to_source()
            finally:
                self.extensions = kept

    return {"ext_modules": extensions, "cmdclass": {"build_ext": build_ext}}


setup(**native_extensions())
