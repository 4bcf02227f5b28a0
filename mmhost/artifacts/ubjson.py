"""A UBJSON decoder for what XGBoost writes (``save_model("m.ubj")``): objects, arrays (also
the ``$`` type and ``#`` count forms), strings, ints, floats, T, F and Z, big-endian. Input is
untrusted: every length is checked against the bytes left before anything is allocated, and
nesting is bounded."""

from __future__ import annotations

import struct
from typing import Any, NoReturn

import numpy as np


class UBJSONError(ValueError):
    """The bytes are not a well-formed UBJSON document; the message says where."""


def read(data: bytes) -> Any:
    return Reader(data).document()


_SCALARS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q", b"d": ">f", b"D": ">d"}
_TYPED = {k: np.dtype(v) for k, v in _SCALARS.items()}  # typed arrays: [$d#L<n> then n floats
_MAX_NESTING = 32  # XGBoost nests about 8 deep; bounds the recursion on hostile input


class Reader:
    """A UBJSON decoder for what XGBoost writes: objects, arrays (also the ``$`` type and
    ``#`` count forms, typed only with numbers), strings, ints, floats, T, F and Z. Big-endian.
    Every length is checked against the bytes left before anything is allocated."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def document(self) -> Any:
        value = self.value(self.take(1, "a value marker"), 0)
        if self.pos != len(self.data):
            self.fail(f"{len(self.data) - self.pos} bytes follow the end of the model")
        return value

    def fail(self, why: str) -> NoReturn:
        raise UBJSONError(f"corrupt at byte {self.pos}: {why}")

    def take(self, n: int, what: str) -> bytes:
        left = len(self.data) - self.pos
        if n > left:
            self.fail(f"{what} needs {n} bytes, {left} are left (truncated?)")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def scalar(self, marker: bytes) -> int | float:
        fmt = _SCALARS[marker]
        value: int | float = struct.unpack(fmt, self.take(struct.calcsize(fmt), "a number"))[0]
        return value

    def length(self, what: str) -> int:
        marker = self.take(1, f"the marker of {what}")
        if marker not in (b"i", b"U", b"I", b"l", b"L"):
            self.fail(f"{what} has marker {marker!r}, not an integer")
        n = int(self.scalar(marker))
        if n < 0:
            self.fail(f"{what} is negative ({n})")
        return n

    def string(self, what: str) -> str:
        n = self.length(f"the length of {what}")
        try:
            return self.take(n, what).decode()
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8")

    def value(self, marker: bytes, depth: int) -> Any:
        if marker in _SCALARS:
            return self.scalar(marker)
        if marker == b"S":
            return self.string("a string")
        if marker in (b"T", b"F", b"Z"):
            return {b"T": True, b"F": False, b"Z": None}[marker]
        if marker in (b"[", b"{"):
            if depth >= _MAX_NESTING:
                self.fail(f"containers nest deeper than {_MAX_NESTING}")
            return self.array(depth + 1) if marker == b"[" else self.object(depth + 1)
        self.fail(f"unknown marker {marker!r}")

    def header(self, what: str) -> tuple[bytes | None, int | None]:
        """The optional ``$type`` and ``#count`` after ``[`` or ``{``."""
        kind = count = None
        if self.data[self.pos : self.pos + 1] == b"$":
            self.pos += 1
            kind = self.take(1, f"the type of {what}")
            if kind not in _TYPED:
                self.fail(f"{what} is typed {kind!r}; XGBoost types containers with numbers only")
            if self.data[self.pos : self.pos + 1] != b"#":
                self.fail(f"typed {what} has no count")
        if self.data[self.pos : self.pos + 1] == b"#":
            self.pos += 1
            count = self.length(f"the count of {what}")
        return kind, count

    def array(self, depth: int) -> Any:
        kind, count = self.header("an array")
        if kind is not None and count is not None:
            dtype = _TYPED[kind]
            if count > (len(self.data) - self.pos) // dtype.itemsize:
                self.fail(f"an array of {count} {kind.decode()} runs past the end of the file")
            raw = self.take(count * dtype.itemsize, "an array")
            return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        items: list[Any] = []
        if count is not None:
            if count > len(self.data) - self.pos:  # every element takes at least a byte
                self.fail(f"an array of {count} values runs past the end of the file")
            for _ in range(count):
                items.append(self.value(self.take(1, "a value marker"), depth))
            return items
        while (marker := self.take(1, "a value marker or ']'")) != b"]":
            items.append(self.value(marker, depth))
        return items

    def object(self, depth: int) -> dict[str, Any]:
        kind, count = self.header("an object")
        out: dict[str, Any] = {}
        if count is not None:
            if count > (len(self.data) - self.pos) // 2:  # a key takes 2 bytes at least
                self.fail(f"an object of {count} fields runs past the end of the file")
            for _ in range(count):
                key = self.string("a key")
                out[key] = (
                    self.scalar(kind) if kind else self.value(self.take(1, "a marker"), depth)
                )
            return out
        while self.data[self.pos : self.pos + 1] != b"}":
            if self.pos >= len(self.data):
                self.fail("the file ends inside an object (truncated?)")
            key = self.string("a key")
            out[key] = self.value(self.take(1, f"the value of {key!r}"), depth)
        self.pos += 1
        return out
