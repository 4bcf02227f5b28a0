"""What the C++ extension is built from, shared by ``setup.py`` (the build at install) and
``_native`` (the build on first use): the sources, the flags and a digest of the sources that
a build records, so a build from other sources is known as stale. No imports beyond the
standard library (``setup.py`` loads this file by path, before mmhost is importable)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = (
    "bindings.cpp",
    "linear.cpp",
    "trees.cpp",
    "knn.cpp",
    "rcf.cpp",
    "csv.cpp",
    "json.cpp",
    "answers.cpp",
    "gram.cpp",
)


def flags() -> list[str]:
    """Compiler flags; ``MMHOST_CXX_FLAGS`` (space separated, e.g. "-march=native") adds some."""
    return ["-O3", "-fopenmp", "-std=c++17", *os.environ.get("MMHOST_CXX_FLAGS", "").split()]


def source_hash() -> str | None:
    """A digest of every file in ``csrc/`` (and the flags); None where the sources are absent."""
    if not CSRC.is_dir():
        return None
    h = hashlib.sha256(" ".join(flags()).encode())
    for path in sorted(CSRC.iterdir()):
        if path.suffix in (".cpp", ".h"):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
