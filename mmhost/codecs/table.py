"""Large bodies at native speed. ``inputs`` keeps a large CSV, JSON or JSON Lines body whole
as a ``Body`` (no Python object per row); its model's ``RowEncoder`` hands the bytes and its
schema to the C++ encoder (``mmhost/csrc/csv.cpp``, ``json.cpp``: numbers exactly as
``std::from_chars`` reads them, categories by a scan of a few or a hash map of many), which
writes the encoded float32 rows directly.

Only what the per-row path would encode plainly takes this path; for anything else (CSV:
quotes, a lone CR, a blank line inside; JSON: another shape, an escape in a string, a value of
another type; both: a wrong field count, a bad number, an unknown category, a missing value
with no fill, no C++ kernels) the C++ encoder says so and the body goes the way every body went
before (``inputs``' Python decoders, then ``RowEncoder``), which names the row and the column:
every error keeps its exact message, and every answer its exact value.

A JSON body is walked once, at decode (``json_rows``): its shape checked, its row count exact
and checked against the limits before the model is known, its values kept as cells that
``json_encode`` writes with the model's schema; a CSV body's lines are counted (``csv_lines``,
which also spots a quote).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mmhost.artifacts import Column
from mmhost.kernels import _native

MIN_ROWS = 64  # below this the per-row path is as fast, and one-row requests stay as they were
CSV, JSON, JSONLINES = "csv", "json", "jsonlines"
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.rstrip() strips


class Body:
    """A body of at least ``MIN_ROWS`` rows (a CSV body's lines), decoded when its model is
    known."""

    def __init__(
        self, data: bytes, kind: str, rows: int, python: Callable[[], Any], cells: Any = None
    ) -> None:
        self.data = data
        self.kind = kind
        self.cells = cells  # JSON: its values as json_rows kept them (a tensor)
        self.shape = (rows,)  # CSV: the line count (rows, or more where blank lines are skipped)
        self._python = python

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self) -> Any:
        """The rows as the Python decoder reads them (the per-row path)."""
        return self._python()


def wrap(body: bytes, max_rows: int, rows: Callable[[], list[list[str]]]) -> Body | None:
    """A CSV ``body`` as a ``Body`` when it is large and may be plain; None: read it row by
    row."""
    if len(body) < 2 * MIN_ROWS:  # (a one-row request pays this test alone)
        return None
    count = _native.function("csv_lines", "csv")
    if count is not None:
        lines = count(body)  # -1: a quote
    elif b'"' in body:
        return None
    else:
        end = len(body)  # as len(body.rstrip()), without copying the body
        while end and body[end - 1] in _ASCII_SPACE:
            end -= 1
        lines = body.count(b"\n", 0, end) + 1  # a final line end ends no row
    if lines < MIN_ROWS or lines > max_rows:
        return None
    return Body(body, CSV, lines, rows)


def wrap_json(body: bytes, lines: bool, max_rows: int, rows: Callable[[], Any]) -> Body | None:
    """A JSON (``lines``: JSON Lines) body of rows as a ``Body`` when it is large and in a shape
    the C++ encoder takes (``mmhost/csrc/json.cpp``); None: decode it in Python."""
    if len(body) < 8 * MIN_ROWS:
        return None
    walk = _native.function("json_rows", "json")
    if walk is None:
        return None
    n, cells = walk(body, lines, max_rows)
    if n < MIN_ROWS:  # -1: not a shape it takes
        return None
    return Body(body, JSONLINES if lines else JSON, n, rows, cells)


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
    body: Body, spec: tuple[Any, ...], width: int, dtype: type, max_rows: int = 1 << 62
) -> np.ndarray | None:
    """The body's encoded rows, or None: the per-row path must decide."""
    f64 = dtype == np.float64
    if body.kind == CSV:
        fn = _native.function("csv_encode", "csv")
        if fn is None:
            return None
        ok, out = fn(body.data, *spec, width, f64, max_rows)
    else:
        fn = _native.function("json_encode", "json")
        if fn is None:
            return None
        ok, out = fn(body.data, body.cells, *spec, width, f64)
    return out.numpy() if ok else None
