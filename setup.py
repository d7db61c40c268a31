"""Build of seqloss's native kernels (the package metadata lives in pyproject.toml).

* ``seqloss._C``: the op schemas and the C++/OpenMP CPU kernels, built whenever torch is importable
  at build time (``pip install --no-build-isolation -e .``).
* ``seqloss._C_cuda``: the CUDA kernels, built only when ``SEQLOSS_BUILD_CUDA=1`` (needs nvcc,
  ``CUDA_HOME`` and ``TORCH_CUDA_ARCH_LIST``; scripts/setup_env.sh sets them when nvcc is found).
  The switch is explicit: a build machine without a GPU still compiles the CUDA code.

Without torch at build time, or if compilation fails, seqloss installs as pure Python and runs on
its torch backend.
"""
import os
import sys

from setuptools import setup

CSRC = "seqloss/csrc"


def native_extensions():
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("[seqloss] torch is not importable at build time: installing without native kernels", file=sys.stderr)
        return {}
    extensions = [CppExtension(
        "seqloss._C", [f"{CSRC}/ops.cpp", f"{CSRC}/cpu/lattice_cpu.cpp", f"{CSRC}/cpu/ctc_avx2.cpp",
                       f"{CSRC}/cpu/ssnt_avx2.cpp"],
        extra_compile_args={"cxx": ["-O3", "-fopenmp"]}, extra_link_args=["-fopenmp"])]
    if os.environ.get("SEQLOSS_BUILD_CUDA") == "1":
        extensions.append(CUDAExtension(
            "seqloss._C_cuda", [f"{CSRC}/cuda/lattice_cuda.cu"],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--expt-relaxed-constexpr"]}))
    return {"ext_modules": extensions, "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}


setup(**native_extensions())
