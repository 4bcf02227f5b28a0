"""The store interface and model-key validation (a key is never a raw file-system path)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mmhost.errors import InvalidModelName

MAX_KEY = 1024
_VALID: dict[str, None] = {}  # names already checked (the hot path sees the same ones again)
_VALID_MAX = 100_000
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(name: object) -> str:
    """A TargetModel name as the runtime allows it, and safe under a store prefix."""
    if type(name) is str and name in _VALID:
        return name
    if not isinstance(name, str):
        raise InvalidModelName(name, "it must be a string")
    try:
        size = len(name.encode())  # S3 keys are limited in UTF-8 bytes, not characters
    except UnicodeEncodeError:
        raise InvalidModelName(name[:64], "it must be valid Unicode (no lone surrogates)") from None
    if not 0 < size <= MAX_KEY:
        raise InvalidModelName(name[:64], f"length must be 1..{MAX_KEY} bytes (UTF-8)")
    if CONTROL_CHARS.search(name):
        raise InvalidModelName(name, "control characters are not allowed")
    if name.startswith(("/", "\\", " ")) or (len(name) > 1 and name[1] == ":"):
        raise InvalidModelName(name, "it must be relative to the store prefix")
    parts = name.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts) or "" in parts:
        raise InvalidModelName(name, "'.', '..' and empty path segments are not allowed")
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID[name] = None
    return name


@dataclass(frozen=True)
class Source:
    """What a store hands over for one key: archive bytes or a local artifact folder."""

    version: str
    data: bytes | None = None
    folder: Path | None = None


class Store(Protocol):
    """A source of truth for artifacts. Implementations must be thread-safe."""

    local: bool
    """True when ``version`` is a local stat (microseconds): the cache then calls it inline on
    the request path instead of on a worker thread."""

    def version(self, key: str) -> str:
        """A string that changes when the artifact changes (ModelNotFound if absent)."""
        ...

    def fetch(self, key: str) -> Source:
        """The artifact and the version it was read at (ModelNotFound if absent)."""
        ...

    def list(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[str]:
        """Model keys under ``prefix`` in sorted order: those after ``start_after``, at most
        ``limit`` of them (a page)."""
        ...

    def key_of(self, location: str) -> str:
        """The key of a model given by a location inside the store (a key, a path, a URL)."""
        ...

    def lexical_key(self, location: str) -> str:
        """The key ``location`` names by its text alone, without I/O (``key_of`` may then
        resolve it further, e.g. a folder to the one archive in it)."""
        ...
