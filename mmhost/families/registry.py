"""The families mmhost serves, by name. A new family is one line here (or ``register`` from a
plug-in before the host starts); ``Families`` and ``compile_model`` dispatch through this."""

from __future__ import annotations

from typing import Any

from mmhost.families.base import Family
from mmhost.families.knn import KnnFamily
from mmhost.families.linear import LinearFamily
from mmhost.families.rcf import RcfFamily
from mmhost.families.trees import TreesFamily

FAMILIES: dict[str, type[Family[Any, Any]]] = {
    f.name: f for f in (LinearFamily, TreesFamily, KnnFamily, RcfFamily)
}


def register(family: type[Family[Any, Any]]) -> type[Family[Any, Any]]:
    """Add ``family`` (hosts made afterwards have it); usable as a class decorator."""
    taken = {a for f in FAMILIES.values() if f.name != family.name for a in f.algorithms}
    clash = taken.intersection(family.algorithms)
    if clash:
        raise ValueError(f"another family already compiles the algorithm {sorted(clash)[0]!r}")
    FAMILIES[family.name] = family
    return family


def family_for(algorithm: str | None) -> type[Family[Any, Any]] | None:
    """The family that compiles artifacts of ``algorithm`` (None when none does)."""
    for family in FAMILIES.values():
        if algorithm in family.algorithms:
            return family
    return None
