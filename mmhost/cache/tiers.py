"""A tier: which entries it holds, each value with its exact bytes, against a budget, in
recency order. Bookkeeping only: no I/O, no decisions (``policy.py`` decides, ``model_cache.py``
moves; the disk tier's files are ``disk.py``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Tier(Generic[K, V]):
    """Entries ``key -> value`` with their bytes; most recently used last."""

    def __init__(self, name: str, budget: int) -> None:
        self.name = name
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, key: K, value: V, nbytes: int) -> None:
        assert key not in self._entries, f"{key!r} is already in the {self.name} tier"
        self._entries[key] = (value, nbytes)
        self.used += nbytes

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def remove(self, key: K) -> V:
        value, nbytes = self._entries.pop(key)
        self.used -= nbytes
        return value

    def discard(self, key: K) -> V | None:
        """``remove``, or None when ``key`` is not there."""
        return self.remove(key) if key in self._entries else None

    def touch(self, key: K) -> None:
        self._entries.move_to_end(key)

    def keys(self) -> Iterator[K]:
        return iter(self._entries)

    def oldest_first(self) -> Iterator[tuple[K, int]]:
        """(key, bytes) from least to most recently used. Don't add or remove while iterating."""
        return ((k, n) for k, (_, n) in self._entries.items())
