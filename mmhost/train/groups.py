"""A table's rows by entity: each entity's training and holdout rows as runs of two orders.

The entity column comes as str objects or, as ``read_table`` reads it, dictionary-encoded (a
``pandas.Categorical``, taken as it is); entities are sorted by name. Rows already grouped by
entity (the common layout) are taken in place; others are grouped by one stable sort (a radix
sort where the entities fit 16 bits). Holdout rows are the data's own (a val/ folder) or each
entity's ``holdout_fraction`` of its rows with the smallest draws of ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmhost.errors import ValidationError
from mmhost.train.data import Table


@dataclass
class Group:
    """An entity's rows: how many, and which train and which are held out."""

    rows: int
    train: np.ndarray  # row indices
    holdout: np.ndarray


@dataclass
class Groups:
    """Every entity's rows, split into training and holdout rows, as runs of two orders: entity
    e (of ``names``, sorted) trains on ``train_order[train_starts[e] : train_starts[e + 1]]``
    and holds out ``holdout_order[holdout_starts[e] : holdout_starts[e + 1]]`` (row indices,
    each run in the table's order)."""

    names: list[str]
    train_order: np.ndarray
    train_starts: np.ndarray  # (E + 1,)
    holdout_order: np.ndarray
    holdout_starts: np.ndarray
    in_place: bool = False  # train_order is every row, in the table's order (no holdout rows)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def train_counts(self) -> np.ndarray:
        return np.diff(self.train_starts)

    @property
    def holdout_counts(self) -> np.ndarray:
        return np.diff(self.holdout_starts)

    def group(self, e: int) -> Group:
        t0, t1 = self.train_starts[e], self.train_starts[e + 1]
        h0, h1 = self.holdout_starts[e], self.holdout_starts[e + 1]
        return Group(int(t1 - t0 + h1 - h0), self.train_order[t0:t1], self.holdout_order[h0:h1])

    def items(self) -> Iterator[tuple[str, Group]]:
        for e, name in enumerate(self.names):
            yield name, self.group(e)


def entity_codes(entity: Any) -> tuple[np.ndarray, list[str]]:
    """(each row's entity index, the entity names sorted) of a table's entity column: str
    objects, or a ``pandas.Categorical`` of them (a table reader's dictionary encoding, taken as
    it is: no string is hashed again)."""
    import pandas as pd

    if isinstance(entity, pd.Categorical):
        names = np.asarray(entity.categories.astype(str), dtype=object)
        codes = np.asarray(entity.codes)  # int8 .. int64, as few bytes as the names need
        if (codes < 0).any():
            i = int(np.flatnonzero(codes < 0)[0])
            raise ValidationError(f"row {i + 1}: the entity is missing")
        by = np.argsort(names, kind="stable")
        if (by != np.arange(len(by))).any():  # categories in another order: sort them
            rank = np.empty_like(by)
            rank[by] = np.arange(len(by))
            codes, names = rank[codes], names[by]
        return codes, [str(n) for n in names]
    codes, uniques = pd.factorize(np.asarray(entity, dtype=object), sort=True)
    return codes, [str(n) for n in uniques]


def entity_groups(table: Table, holdout_fraction: float, seed: int) -> Groups:
    """Each entity's rows, split into training and holdout rows: the data's own holdout rows
    (a val/ folder) where it has some, else ``holdout_fraction`` of them drawn by ``seed``."""
    codes, names = entity_codes(table.entity)
    grouped = len(codes) < 2 or bool((codes[1:] >= codes[:-1]).all())
    if grouped:  # each entity's rows already together, in order: its run's bounds
        counts = np.diff(np.searchsorted(codes, np.arange(len(names) + 1)))
    else:
        counts = np.bincount(codes, minlength=len(names))
    if len(counts) and not counts.all():  # a category no row has (a filtered table's): no entity
        keep = counts > 0
        codes = (np.cumsum(keep) - 1)[codes]
        names = [n for n, k in zip(names, keep.tolist(), strict=True) if k]
        counts = counts[keep]
    if grouped:
        order = np.arange(len(codes))
    elif len(names) <= 1 << 16:  # numpy's stable sort of 16-bit keys is a radix sort: O(n)
        order = np.argsort(codes.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(codes, kind="stable")
    starts = _starts(counts)
    hold = table.holdout
    given = np.zeros(len(names), bool)
    if hold.any():
        given = np.bincount(codes[hold], minlength=len(names)) > 0
    k = np.minimum(np.rint(holdout_fraction * counts).astype(np.int64), counts - 1)
    k[given] = 0
    if k.any():  # the k rows of each entity with the smallest draws
        hold = hold.copy()
        u = np.random.default_rng(seed).random(len(codes))
        # by entity, then by draw: one sort of entity + draw / 2 (below entity + 1, as the
        # rounding to nearest never reaches it), ~8x a lexsort of the two
        by = np.argsort(codes + 0.5 * u)
        rank = np.arange(len(codes)) - starts[codes[by]]
        hold[by] |= rank < k[codes[by]]
    elif not hold.any():  # no holdout rows: every row trains
        return Groups(names, order, starts, order[:0], np.zeros_like(starts), in_place=grouped)
    h = hold[order]
    train, held = order[~h], order[h]
    return Groups(
        names,
        train,
        _starts(np.bincount(codes[train], minlength=len(names))),
        held,
        _starts(np.bincount(codes[held], minlength=len(names))),
    )


def _starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
