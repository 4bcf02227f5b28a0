"""The one place that imports the C++ extension ``mmhost._C``.

A missing build (no compiler, MMHOST_SKIP_BUILD=1) is not an error: the ops fall back to their
plain-torch references and this module warns once.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

_loaded: ModuleType | None = None
_tried = False
_stale: set[str] = set()  # ops already warned about (built before they existed)


def load() -> ModuleType | None:
    """The extension module, or None (after one warning) when it was not built."""
    global _loaded, _tried
    if not _tried:
        _tried = True
        try:
            _loaded = importlib.import_module("mmhost._C")
        except ImportError as exc:
            warnings.warn(
                f"mmhost._C is not built ({exc}); CPU ops run the plain-torch reference "
                "(slower). Reinstall without MMHOST_SKIP_BUILD to build it.",
                RuntimeWarning,
                stacklevel=2,
            )
    return _loaded


def available() -> bool:
    return load() is not None


def function(name: str, op: str, abi: tuple[str, int] | None = None) -> Callable[..., Any] | None:
    """``mmhost._C.<name>``, or None: not built (``load`` warned), or built before ``op``
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
            f"mmhost._C was built before the current {op} op (no {name}, or an older "
            f"argument layout); the {op} op runs the plain-torch reference (slower). Reinstall "
            "to rebuild it.",
            RuntimeWarning,
            stacklevel=3,
        )
    return None
