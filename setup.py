"""Builds the C++ CPU kernels as ``mmhost._C``.

Environment:
  MMHOST_SKIP_BUILD=1   skip the extension; mmhost then runs the plain-torch reference ops
                        (with one warning at import).
  MMHOST_CXX_FLAGS      extra compiler flags (space separated), e.g. "-march=native".
"""

import os
import sys

from setuptools import setup

ext_modules = []
cmdclass = {}
if os.environ.get("MMHOST_SKIP_BUILD", "") not in ("1", "true", "yes"):
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # no torch at build time: the package still installs, the ops fall back
        print("mmhost: torch not importable at build time; skipping mmhost._C", file=sys.stderr)
    else:
        flags = ["-O3", "-fopenmp", "-std=c++17"] + os.environ.get("MMHOST_CXX_FLAGS", "").split()
        ext_modules.append(
            CppExtension(
                "mmhost._C",
                sources=[
                    "csrc/bindings.cpp",
                    "csrc/linear.cpp",
                    "csrc/trees.cpp",
                    "csrc/knn.cpp",
                    "csrc/rcf.cpp",
                ],
                extra_compile_args=flags,
                extra_link_args=["-fopenmp"],
            )
        )
        cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=False)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
