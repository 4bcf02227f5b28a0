"""Builds the C++ CPU kernels as ``mmhost._C`` when torch is importable at build time (``pip
install --no-build-isolation``, as ``make`` does). A plain ``pip install`` builds in an
isolated environment without torch: the wheel then ships the sources only, and mmhost compiles
them with the installed torch on first use (``mmhost/kernels/_native.py``).

Environment:
  MMHOST_SKIP_BUILD=1   skip the extension here (it is still compiled on first use).
  MMHOST_CXX_FLAGS      extra compiler flags (space separated), e.g. "-march=native".
"""

import importlib.util
import os
import sys

from setuptools import setup

spec = importlib.util.spec_from_file_location("_sources", "mmhost/kernels/_sources.py")
assert spec is not None and spec.loader is not None
sources = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sources)

ext_modules = []
cmdclass = {}
if os.environ.get("MMHOST_SKIP_BUILD", "") not in ("1", "true", "yes"):
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # an isolated build: the kernels are compiled on first use instead
        print("mmhost: no torch at build time; mmhost._C is compiled on first use", file=sys.stderr)
    else:
        digest = sources.source_hash()
        ext_modules.append(
            CppExtension(
                "mmhost._C",
                sources=[f"mmhost/csrc/{name}" for name in sources.SOURCES],
                extra_compile_args=[*sources.flags(), f"-DMMHOST_SOURCE_HASH={digest}"],
                extra_link_args=["-fopenmp"],
            )
        )
        cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=False)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
