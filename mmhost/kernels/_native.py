"""The one place that imports the C++ extension ``mmhost._C``.

A missing build (no compiler, MMHOST_SKIP_BUILD=1) is not an error: the ops fall back to their
plain-torch references and this module warns once.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

_loaded: ModuleType | None = None
_tried = False


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
