"""Eviction policies: they decide, they never move bytes or touch I/O."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar

from mmhost.cache.tiers import Tier

K = TypeVar("K", bound=Hashable)


class Policy(Protocol):
    def victims(self, tier: Tier[K, Any], need: int, pinned: Callable[[K], bool]) -> list[K] | None:
        """Entries to evict so that ``need`` more bytes fit, or None if they can't be freed."""
        ...


class LRUPolicy:
    """Least recently used first; pinned entries (in use by an in-flight batch) are skipped."""

    def victims(self, tier: Tier[K, Any], need: int, pinned: Callable[[K], bool]) -> list[K] | None:
        free = tier.budget - tier.used
        if free >= need:
            return []  # the common case costs nothing, however many entries the tier holds
        out: list[K] = []
        for key, nbytes in tier.oldest_first():
            if free >= need:
                break
            if pinned(key):
                continue
            out.append(key)
            free += nbytes
        return out if free >= need else None
