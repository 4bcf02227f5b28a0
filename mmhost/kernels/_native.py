"""The one place that loads the C++ extension.

In order: ``mmhost._C`` as built at install (``make``, or ``pip install --no-build-isolation``)
when it was built from the sources shipped beside it; else those sources compiled once with the
torch installed here, into ``MMHOST_KERNEL_CACHE`` (default ``~/.cache/mmhost/kernels``), by
``torch.utils.cpp_extension.load``. A plain ``pip install`` takes the second way: it builds in
an isolated environment without torch, and a build must match the torch it runs with anyway.
Only without a compiler (or with ``MMHOST_JIT=0``) do the ops fall back to their plain-torch
references, after one warning naming the cause and the command that fixes it.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from mmhost.kernels import _sources

log = logging.getLogger("mmhost.kernels")
FIX = "mmhost build-kernels"  # the command that builds (or says why it can't)

_loaded: ModuleType | None = None
_tried = False
_stale: set[str] = set()  # ops already warned about (built before they existed)


def load() -> ModuleType | None:
    """The extension module, or None (after one warning) when it can't be had."""
    global _loaded, _tried
    if not _tried:
        _tried = True
        prebuilt, why = _prebuilt()
        _loaded = prebuilt or _compiled(why)
    return _loaded


def available() -> bool:
    return load() is not None


def cache_dir() -> Path:
    """Where the first-use build goes: one folder per torch, Python and source digest."""
    import torch

    root = os.environ.get("MMHOST_KERNEL_CACHE") or Path.home() / ".cache" / "mmhost" / "kernels"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(root) / f"torch{torch.__version__}-{py}-{_sources.source_hash()}"


def build(verbose: bool = False) -> ModuleType:
    """Compile the shipped sources with this torch (or reuse that build); raises on failure."""
    from torch.utils import cpp_extension

    if _sources.source_hash() is None:
        raise RuntimeError(f"the C++ sources are not installed (no {_sources.CSRC})")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(
            f"no C++ compiler: {compiler!r} is not on PATH (install one, e.g. "
            "`sudo apt-get install g++` or `xcode-select --install`, or set CXX)"
        )
    try:  # torch's builder runs ninja from PATH; the pip package puts it beside Python
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(directory)
    return cpp_extension.load(
        name="mmhost_C",
        sources=[str(_sources.CSRC / name) for name in _sources.SOURCES],
        extra_cflags=[*_sources.flags(), f"-DMMHOST_SOURCE_HASH={_sources.source_hash()}"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        verbose=verbose,
    )


STALE_LOCK_SECONDS = 900.0  # a build takes a minute or two; a lock this old outlived its builder


def clear_stale_lock(directory: Path, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove the build lock a killed build left behind (torch's builder waits for it to go,
    without end: a first ``mmhost serve`` stopped while compiling would make every later start
    hang). True if one was removed."""
    lock = directory / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < max_age:
        return False  # another process may be building now: wait for it, as torch does
    log.warning("removing a stale kernel build lock (%.0f s old): %s", age, lock)
    lock.unlink(missing_ok=True)
    return True


def _prebuilt() -> tuple[ModuleType | None, str]:
    try:
        module = importlib.import_module("mmhost._C")
    except ImportError as exc:
        return None, f"mmhost._C is not built ({exc})"
    want = _sources.source_hash()
    if want is None or getattr(module, "SOURCE_HASH", None) == want:
        return module, ""
    return None, "mmhost._C was built from other sources than the installed ones"


def _compiled(why: str) -> ModuleType | None:
    if os.environ.get("MMHOST_JIT", "1").lower() in ("0", "false", "no", "off"):
        _fallback(f"{why}, and MMHOST_JIT=0 turns off compiling it on first use")
        return None
    directory = cache_dir()
    if not (directory / "mmhost_C.so").exists():
        log.warning(
            "%s: compiling mmhost's C++ kernels with torch into %s (once; a minute or two)",
            why,
            directory,
        )
    t0 = time.perf_counter()
    try:
        module = build()
    except Exception as exc:  # a compiler error, a missing header, no ninja...
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        _fallback(f"{why}, and compiling it failed: {' / '.join(lines[-3:])[:600]}")
        return None
    log.info("C++ kernels ready (%s, %.1f s)", directory, time.perf_counter() - t0)
    return module


def _fallback(cause: str) -> None:
    warnings.warn(
        f"{cause.rstrip('.')}. CPU ops run the plain-torch reference (slower). Fix the cause, "
        f"then run `{FIX}` (it builds the kernels and says what is missing).",
        RuntimeWarning,
        stacklevel=4,
    )


def function(name: str, op: str, abi: tuple[str, int] | None = None) -> Callable[..., Any] | None:
    """``<extension>.<name>``, or None: not available (``load`` warned), or built before ``op``
    existed or, with ``abi`` (attribute, version), before its current argument layout (warned
    here, once per op)."""
    native = load()
    if native is None:
        return None
    fn = getattr(native, name, None)
    if fn is not None and (abi is None or getattr(native, abi[0], 1) == abi[1]):
        return fn
    if op not in _stale:
        _stale.add(op)
        warnings.warn(
            f"the C++ extension was built before the current {op} op (no {name}, or an older "
            f"argument layout); the {op} op runs the plain-torch reference (slower). Run "
            f"`{FIX}` to rebuild it.",
            RuntimeWarning,
            stacklevel=3,
        )
    return None
