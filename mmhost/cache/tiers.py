"""Tier bookkeeping: exact bytes held against a budget, in recency order. No I/O here, except
``DiskTier``, whose entries are files."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from mmhost.store.base import Source, Store

K = TypeVar("K", bound=Hashable)


class Tier(Generic[K]):
    """Which entries a tier holds and their exact bytes; most recently used last."""

    def __init__(self, name: str, budget: int) -> None:
        self.name = name
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[K, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, key: K, nbytes: int) -> None:
        assert key not in self._entries, f"{key!r} is already in the {self.name} tier"
        self._entries[key] = nbytes
        self.used += nbytes

    def remove(self, key: K) -> int:
        nbytes = self._entries.pop(key)
        self.used -= nbytes
        return nbytes

    def touch(self, key: K) -> None:
        self._entries.move_to_end(key)

    def oldest_first(self) -> Iterator[tuple[K, int]]:
        """Entries from least to most recently used. Don't add or remove while iterating."""
        return iter(self._entries.items())


class DiskTier:
    """Artifacts copied from the store into a local folder, under a byte budget (LRU).

    Thread-safe: loads run on worker threads. Files are written to a temp name and renamed
    into place, so a reader never sees half an artifact.
    """

    def __init__(self, folder: str | os.PathLike[str], budget: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # files of an earlier run can't be matched to a key and version: start clean rather
        # than hold bytes the budget doesn't see (only our own file names are touched)
        for leftover in [*self.folder.glob("*.artifact"), *self.folder.glob("*.tmp*")]:
            leftover.unlink(missing_ok=True)
        self.tier: Tier[str] = Tier("disk", budget)
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.evictions = 0

    def _file(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode()).hexdigest() + ".artifact")

    def fetch(self, key: str, store: Store) -> tuple[Source, bool]:
        """The artifact from this tier when it holds the store's current version, else from the
        store (kept here for next time). Returns (source, was_a_disk_hit)."""
        version = store.version(key)
        with self._lock:
            if self._versions.get(key) == version:
                self.tier.touch(key)
                self.hits += 1
                return Source(version, data=self._file(key).read_bytes()), True
        src = store.fetch(key)
        if src.data is None or len(src.data) > self.tier.budget:
            return src, False  # folders are read in place; oversized artifacts aren't kept
        tmp = self._file(key).with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_bytes(src.data)
        with self._lock:
            if key in self.tier:
                self.tier.remove(key)
            while self.tier.used + len(src.data) > self.tier.budget:
                old, _ = next(self.tier.oldest_first())
                self.tier.remove(old)
                self._versions.pop(old, None)
                self._file(old).unlink(missing_ok=True)
                self.evictions += 1
            os.replace(tmp, self._file(key))
            self.tier.add(key, len(src.data))
            self._versions[key] = src.version
        return src, False

    def drop(self, key: str) -> None:
        with self._lock:
            if key in self.tier:
                self.tier.remove(key)
                self._versions.pop(key, None)
                self._file(key).unlink(missing_ok=True)
