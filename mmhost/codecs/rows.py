"""Raw rows (numbers, numeric strings, category strings) -> the encoded float32 matrix.

The encoded layout of a model's inputs: a numeric column takes one slot; a categorical column
takes one slot per category (its one-hot block starts at ``offsets[col]``). A composed linear
model's weights are laid out the same way, so one-hot encoding is just "write 1.0 at
offset + category index" and scaling lives in the weights.

Errors name the row and the column (``ValidationError``); nothing here can crash the process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmhost.artifacts import Column
from mmhost.codecs import table
from mmhost.errors import ValidationError

_MISSING_STRINGS = ("", "nan", "NaN", "NA", "null", "None")
_SMALL = 16  # rows up to which encoding goes cell by cell (numpy's per-column cost dominates)
_F32_MAX = float(np.finfo(np.float32).max)  # larger numbers would become inf in the model
_SHOWN = 80  # characters of a bad value that an error message quotes


class RowEncoder:
    """Encodes rows for one input schema. Shared by every model with the same columns."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = columns
        self.offsets: list[int] = []
        width = 0
        for c in columns:
            self.offsets.append(width)
            width += len(c.categories) if c.type == "category" else 1
        self.width = width
        self.numeric_only = all(c.type == "float" for c in columns)
        self._fill = (
            np.array([np.nan if c.missing is None else c.missing for c in columns], np.float64)
            if self.numeric_only
            else None
        )
        self._lookup = [_category_lookup(c) if c.type == "category" else None for c in columns]
        # numeric columns whose missing value is NaN itself: passed through (trees decide)
        self._nan_ok = np.array([passes_nan(c) for c in columns], bool)
        self._csv = table.schema(columns, self.offsets)  # the C++ row encoders' arguments

    @property
    def encoded_width(self) -> int:
        """Columns of the encoding (one per number, one per category)."""
        return self.width

    def __reduce__(self) -> tuple[Any, ...]:
        # unpickled (a model decoded in a worker process) as this process's shared encoder
        return (encoder_for, (self.columns,))

    # --- numpy / list rows -------------------------------------------------------------
    def encode(self, rows: Any, width: int | None = None, dtype: type = np.float32) -> np.ndarray:
        """Rows -> (N, width) float32, zero beyond the encoded columns. ``rows`` is a 2-D
        array-like (list of rows; strings allowed for categorical columns). ``dtype=float64``
        keeps the values as given, for preprocessing that must round as scikit-learn does."""
        width = self.width if width is None else width
        assert width >= self.width, f"cannot encode {self.width} slots into width {width}"
        if isinstance(rows, np.ndarray) and rows.dtype.kind in "fiub" and self.numeric_only:
            return self._encode_numeric(rows, width, dtype)
        if isinstance(rows, table.Body):  # a large body: C++ encodes it when plain
            fast = None if self._csv is None else table.encode(rows, self._csv, width, dtype)
            if fast is not None:
                return fast
            rows = rows.rows()  # the per-row path: what it refuses, it names
        if isinstance(rows, np.ndarray):
            rows = rows.tolist()
        if isinstance(rows, Mapping):
            rows = self._rows_of_columns(rows)
        if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
            raise ValidationError("rows must be a 2-D array or a list of rows")
        n = len(rows)
        ncol = len(self.columns)
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) or len(row) != ncol:
                got = len(row) if isinstance(row, (list, tuple)) else type(row).__name__
                raise ValidationError(
                    f"row {i}: expected {ncol} values "
                    f"({', '.join(c.name for c in self.columns)}), got {got}"
                )
        out: np.ndarray = np.zeros((n, width), dtype)
        if n == 0:
            return out
        try:
            if n <= _SMALL:
                self._encode_small(rows, out)
                return out
            for j, (col, values) in enumerate(
                zip(self.columns, zip(*rows, strict=True), strict=True)
            ):
                if col.type == "float":
                    out[:, self.offsets[j]] = self._numeric_column(j, col, values)
                else:
                    self._category_column(j, col, values, out)
        except ValidationError as exc:
            hint = self._header_hint(rows[0]) if exc.message.startswith("row 0,") else None
            if hint is None:
                raise
            raise ValidationError(hint) from None
        return out

    def _header_hint(self, first: Sequence[Any]) -> str | None:
        """Where a first row that failed names the model's columns: it is a CSV header."""
        names = {c.name.strip().lower() for c in self.columns}
        named = [v for v in first if isinstance(v, str) and v.strip().lower() in names]
        if not named:
            return None
        return (
            f"row 0 names columns ({_clipped(', '.join(named[:4]))}): a header row is not "
            f"accepted; send the values only, in the order "
            f"{_clipped(', '.join(c.name for c in self.columns))}"
        )

    def _encode_small(self, rows: Sequence[Sequence[Any]], out: np.ndarray) -> None:
        """Cell by cell, for a few rows (the usual 1-row request): the same rules as the
        column path, without its fixed numpy cost per column."""
        for i, row in enumerate(rows):
            for j, (col, v) in enumerate(zip(self.columns, row, strict=True)):
                if col.type == "float":
                    try:
                        x = float(v) if type(v) in (float, int) else _parse_number(i, col, v)
                    except OverflowError:  # an int past float64's range: refused below
                        x = math.inf
                    if not math.isfinite(x) or abs(x) > _F32_MAX:
                        if math.isnan(x) and col.missing is not None:
                            x = float(col.missing)
                        else:
                            raise ValidationError(_bad_number(i, col, v))
                    out[i, self.offsets[j]] = x
                else:
                    self._category_cell(i, j, col, v, out)

    def _category_cell(self, i: int, j: int, col: Column, v: Any, out: np.ndarray) -> None:
        lookup = self._lookup[j]
        assert lookup is not None
        k = _find_category(lookup, v)
        if k is None and _is_missing(v) and col.missing is not None:
            k = _find_category(lookup, col.missing)
        if k is not None:
            out[i, self.offsets[j] + k] = 1.0
        elif col.unknown == "error":
            known = ", ".join(map(str, col.categories[:20]))
            raise ValidationError(
                f"row {i}, column {col.name!r}: unknown category {_shown(v)} (known: {known})"
            )

    def _rows_of_columns(self, by_name: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """{column name: values} (one sequence per column) -> rows in the schema's order."""
        names = [c.name for c in self.columns]
        missing = [n for n in names if n not in by_name]
        unknown = [str(n) for n in by_name if n not in names]
        if missing or unknown:
            why = []
            if missing:
                why.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                why.append(f"unknown column(s) {_clipped(', '.join(unknown))}")
            raise ValidationError(f"{'; '.join(why)}; the model takes {', '.join(names)}")
        cols = []
        for n in names:
            v = by_name[n]
            if isinstance(v, np.ndarray):
                v = v.tolist()
            if not isinstance(v, Sequence) or isinstance(v, (str, bytes)):
                raise ValidationError(f"column {n!r}: expected a list of values")
            cols.append(v)
        lengths = {len(v) for v in cols}
        if len(lengths) > 1:
            raise ValidationError(
                "columns have different lengths: "
                + ", ".join(f"{n}={len(v)}" for n, v in zip(names, cols, strict=True))
            )
        return list(zip(*cols, strict=True))

    def _encode_numeric(self, x: np.ndarray, width: int, dtype: type) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise ValidationError(
                f"expected rows of {len(self.columns)} values, got an array of shape {x.shape}"
            )
        out: np.ndarray = np.zeros((x.shape[0], width), dtype)
        vals = x.astype(np.float64, copy=False)
        bad = ~(np.abs(vals) <= _F32_MAX)  # NaN, inf, or inf once in float32
        if bad.any():
            assert self._fill is not None
            vals = np.where(np.isnan(vals), self._fill, vals)
            bad = ~(np.abs(vals) <= _F32_MAX) & ~(np.isnan(vals) & self._nan_ok)
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0])
                raise ValidationError(_bad_number(i, self.columns[j], x[i, j]))
        out[:, : vals.shape[1]] = vals
        return out

    def _numeric_column(self, j: int, col: Column, values: tuple[Any, ...]) -> np.ndarray:
        try:
            arr = np.array(values, np.float64)
        except (ValueError, TypeError, OverflowError):
            arr = None
        if arr is None or arr.shape != (len(values),):  # a string, or a list in a cell
            arr = np.array([_parse_number(i, col, v) for i, v in enumerate(values)], np.float64)
        if not (np.abs(arr) <= _F32_MAX).all():  # NaN, inf, or inf once in float32
            if col.missing is not None:
                arr = np.where(np.isnan(arr), col.missing, arr)
            bad = np.flatnonzero(~(np.abs(arr) <= _F32_MAX) & ~(np.isnan(arr) & passes_nan(col)))
            if bad.size:
                i = int(bad[0])
                raise ValidationError(_bad_number(i, col, values[i]))
        return arr

    def _category_column(
        self, j: int, col: Column, values: tuple[Any, ...], out: np.ndarray
    ) -> None:
        for i, v in enumerate(values):
            self._category_cell(i, j, col, v, out)

    # --- tensors (torch, or anything with __dlpack__, e.g. CuPy) ----------------------------
    def encode_tensor(
        self, x: Any, device: torch.device, width: int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """A numeric tensor -> (N, width) float32 on ``device``, without a host round trip when
        it already lives there."""
        if not self.numeric_only:
            raise ValidationError(
                "tensor input needs an all-numeric input schema; this model has "
                "categorical columns: pass a list of rows"
            )
        t = x if isinstance(x, torch.Tensor) else torch.from_dlpack(x)
        if t.dim() != 2 or t.shape[1] != len(self.columns):
            raise ValidationError(
                f"expected rows of {len(self.columns)} values, got a tensor of "
                f"shape {tuple(t.shape)}"
            )
        t = t.to(device=device, dtype=dtype)
        if not bool(torch.isfinite(t).all()):
            assert self._fill is not None
            fill = torch.as_tensor(self._fill, dtype=dtype, device=device)
            t = torch.where(torch.isnan(t), fill, t)
            nan_ok = torch.as_tensor(self._nan_ok, device=device)
            bad = (~torch.isfinite(t) & ~(torch.isnan(t) & nan_ok)).nonzero()
            if bad.numel():
                i, j = (int(v) for v in bad[0])
                raise ValidationError(_bad_number(i, self.columns[j], float(x[i, j])))
        if width > t.shape[1]:
            t = torch.nn.functional.pad(t, (0, width - t.shape[1]))
        return t.contiguous()


def passes_nan(col: Column) -> bool:
    """A numeric column whose missing value is NaN: NaN and empty cells reach the model as NaN
    (a tree ensemble's splits send them their default way)."""
    return col.type == "float" and isinstance(col.missing, float) and math.isnan(col.missing)


@functools.lru_cache(maxsize=4096)
def encoder_for(columns: tuple[Column, ...]) -> RowEncoder:
    """One shared encoder per distinct schema: a million per-city models with the same
    columns hold one encoder between them."""
    return RowEncoder(columns)


def _category_lookup(col: Column) -> dict[Any, int]:
    lookup: dict[Any, int] = {}
    for k, c in enumerate(col.categories):
        lookup[c if isinstance(c, str) else float(c)] = k
    return lookup


def _find_category(lookup: dict[Any, int], v: Any) -> int | None:
    try:
        k = lookup.get(v)
    except TypeError:  # unhashable (a list inside a row)
        return None
    if k is None and isinstance(v, str):
        try:
            k = lookup.get(float(v))
        except ValueError:
            return None
    return k


def _is_missing(v: Any) -> bool:
    return (
        v is None
        or (isinstance(v, float) and math.isnan(v))
        or (isinstance(v, str) and v.strip() in _MISSING_STRINGS)
    )


def _parse_number(i: int, col: Column, v: Any) -> float:
    if _is_missing(v):
        return math.nan
    if not isinstance(v, (int, float, str, np.number)):
        raise ValidationError(
            f"row {i}, column {col.name!r}: expected a number, got {type(v).__name__}"
        )
    try:
        return float(v)
    except OverflowError:  # an int past float64's range: the caller refuses it as not finite
        return math.inf
    except ValueError:
        why = f"row {i}, column {col.name!r}: {_shown(v)} is not a number"
        raise ValidationError(why) from None


def _bad_number(i: int, col: Column, v: Any) -> str:
    if _is_missing(v) or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return f"row {i}, column {col.name!r}: value is missing and the model has no imputer"
    return f"row {i}, column {col.name!r}: {_shown(v)} is not a finite number in float32's range"


def _shown(v: Any) -> str:
    """``v`` as an error message shows it: a 6 MB cell must not come back as a 6 MB message."""
    if isinstance(v, int) and v.bit_length() > 256:  # repr refuses past 4,300 digits
        return f"an integer of about {int(v.bit_length() * math.log10(2))} digits"
    if isinstance(v, (list, tuple, dict)):  # repr of a cell nested 1,000 deep recurses past
        return f"a {type(v).__name__} of {len(v)} item(s)"  # the limit; a 6 MB one is 6 MB
    return _clipped(repr(v))


def _clipped(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
