"""Large CSV bodies at native speed. ``inputs`` keeps a large body whole as a ``CsvBody``
(no Python object per row); its model's ``RowEncoder`` hands the bytes and its schema to the
C++ encoder (``mmhost/csrc/csv.cpp``: one pass, numbers by ``std::from_chars``, categories by a
hash map), which writes the encoded float32 rows directly.

Only what the per-row path would encode plainly takes this path; for anything else (quotes,
a lone CR, a blank line inside, a wrong field count, a bad number, an unknown category, a
missing value with no fill, no C++ kernels) the C++ encoder says so and the body goes the way
every body went before (``inputs``' csv reader, then ``RowEncoder``), which names the row and
the column: every error keeps its exact message, and every answer its exact value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mmhost.artifacts import Column
from mmhost.kernels import _native

MIN_ROWS = 64  # below this the per-row path is as fast, and one-row requests stay as they were
CSV_ABI = 1  # mmhost/csrc/bindings.cpp's csv_encode arguments


class CsvBody:
    """A CSV body of at least ``MIN_ROWS`` lines, decoded when its model is known."""

    def __init__(self, data: bytes, lines: int, rows: Callable[[], list[list[str]]]) -> None:
        self.data = data
        self.shape = (lines,)  # the line count: rows, or more where blank lines are skipped
        self._rows = rows

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self) -> list[list[str]]:
        """The rows as the csv reader reads them (the per-row path)."""
        return self._rows()


def wrap(body: bytes, max_rows: int, rows: Callable[[], list[list[str]]]) -> CsvBody | None:
    """``body`` as a ``CsvBody`` when it is large and may be plain; None: read it row by row."""
    if len(body) < 2 * MIN_ROWS:  # (a one-row request pays this test alone)
        return None
    lines = body.count(b"\n", 0, len(body.rstrip())) + 1  # a final line end ends no row
    if lines < MIN_ROWS or lines > max_rows or b'"' in body:
        return None
    return CsvBody(body, lines, rows)


def schema(columns: tuple[Column, ...], offsets: list[int]) -> tuple[Any, ...] | None:
    """The C++ encoder's arguments for an input schema; None where it can't take it (a
    categorical column of non-string categories: the per-row path matches those as numbers)."""
    from mmhost.codecs.rows import passes_nan

    kinds, fills, nan_ok, cats, missing, ignore = [], [], [], [], [], []
    for col in columns:
        if col.type == "category":
            if not all(isinstance(c, str) for c in col.categories):
                return None
            kinds.append(1)
            fills.append(math.nan)
            nan_ok.append(0)
            cats.append(list(col.categories))
            index = -1
            if col.missing is not None and col.missing in col.categories:
                index = list(col.categories).index(col.missing)
            missing.append(index)
            ignore.append(int(col.unknown != "error"))
        else:
            kinds.append(0)
            fills.append(math.nan if col.missing is None else float(col.missing))
            nan_ok.append(int(passes_nan(col)))
            cats.append([])
            missing.append(-1)
            ignore.append(0)
    return kinds, list(offsets), fills, nan_ok, cats, missing, ignore


def encode(
    body: CsvBody, spec: tuple[Any, ...], width: int, dtype: type, max_rows: int = 1 << 62
) -> np.ndarray | None:
    """The body's encoded rows, or None: the per-row path must decide."""
    fn = _native.function("csv_encode", "csv")
    if fn is None:
        return None
    ok, out = fn(body.data, *spec, width, dtype == np.float64, max_rows)
    return out.numpy() if ok else None
