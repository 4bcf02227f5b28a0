"""Training data -> one table of rows: the entity, the label, the raw feature columns.

Two layouts, local or under ``s3://``:

- one table, a CSV with a header or a Parquet file: ``entity_column`` and ``label_column``
  name two of its columns, every other column (or ``feature_columns``) is a feature;
- a folder or prefix of per-entity CSV files, as the walkthrough writes them and Linear Learner
  reads CSV: no header, the label first, the features after. The entity is the file's first
  folder under the root (``Chicago_IL/train/part-0.csv``), or its name without ``.csv`` when it
  lies at the root. Files under a folder named ``val`` or ``validation`` are that entity's
  holdout rows.

A column is numeric when every value of it is a number (or missing), categorical when none is
or when ``categorical_columns`` names it; a column that mixes them is an error that names the
file, the row and the column, as are a missing or non-numeric label and an unknown column.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmhost.errors import ValidationError

TABLES = (".csv", ".parquet", ".pq")
HOLDOUT_FOLDERS = ("val", "validation")
MISSING = ("", "nan", "NaN", "NA", "null", "None")  # a missing cell, as serving reads one


@dataclass
class Table:
    """Every row: its entity, label, features (raw), whether it is a holdout row, and where it
    came from (for error messages)."""

    entity: Any  # (n,) str objects, or a pandas.Categorical of them (see entity_codes)
    label: np.ndarray  # (n,) float64
    features: dict[str, np.ndarray]  # column -> (n,) float64 (NaN: missing) or object (str)
    holdout: np.ndarray  # (n,) bool: the data said so (a val/ folder)
    source: list[tuple[str, int, int]]  # (file, first row index, rows) per file read


def read_table(
    data: str,
    entity_column: str | None,
    label_column: str | None,
    feature_columns: list[str] | None = None,
    categorical_columns: list[str] | None = None,
    feature_names: list[str] | None = None,
    s3_endpoint_url: str | None = None,
    labelled: bool = True,
) -> Table:
    """The rows of ``data`` (see the module docstring). Not ``labelled`` (an anomaly detector's
    data): a table's label column is optional, and per-entity files hold features only."""
    from mmhost.convert.bulk import Location

    cats = set(categorical_columns or [])
    if data.endswith(TABLES):
        root, _, name = data.rstrip("/").rpartition("/")
        loc = Location(root or ".", s3_endpoint_url)
        as_text = [c for c in cats if c != entity_column]
        frame = _frame(name, _read(loc, name), as_text, entity_column)
        return _from_frame(
            frame, name, entity_column, label_column, feature_columns, cats, labelled
        )
    loc = Location(data, s3_endpoint_url)
    files = loc.files((".csv",))
    if not files:
        raise ValidationError(f"no .csv files under {data!r}")
    return _from_entity_files(loc, files, feature_names, cats, labelled)


def _read(loc: Any, key: str) -> bytes:
    got = loc.read(key)
    return got if isinstance(got, bytes) else bytes(got)


def _frame(name: str, raw: bytes, as_text: list[str], entity_column: str | None) -> Any:
    """The table, a pandas DataFrame; ``as_text`` columns kept as text, the entity column
    dictionary-encoded as it is parsed (a ``category`` of text). A CSV is parsed by pyarrow's
    reader (on every core: ~5x pandas' on 500k rows), its empty and NA-like cells missing; a
    file it refuses is read again by pandas, whose error names the line."""
    import pandas as pd

    dtype: dict[str, Any] = {c: str for c in as_text}
    if entity_column is not None:
        dtype[entity_column] = "category"
    try:
        if name.endswith(".csv"):
            frame = _arrow_csv(raw, as_text, entity_column)
            return pd.read_csv(io.BytesIO(raw), dtype=dtype) if frame is None else frame
        return pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pandas' and pyarrow's parse errors have no common base
        raise ValidationError(f"{name}: not a readable table: {exc}") from None


def _arrow_csv(raw: bytes, as_text: list[str], entity_column: str | None) -> Any:
    """The CSV as a DataFrame by pyarrow, or None where pyarrow refuses it. Dates and times
    stay text, as pandas leaves them."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    types: dict[str, Any] = {c: pa.string() for c in as_text}
    if entity_column is not None:
        types[entity_column] = pa.dictionary(pa.int32(), pa.string())
    options = pcsv.ConvertOptions(column_types=types, timestamp_parsers=[])
    try:
        table = pcsv.read_csv(pa.py_buffer(raw), convert_options=options)
    except pa.ArrowInvalid:
        return None
    for i, field in enumerate(table.schema):
        if pa.types.is_temporal(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table.to_pandas()


def _from_frame(
    frame: Any,
    name: str,
    entity_column: str | None,
    label_column: str | None,
    feature_columns: list[str] | None,
    cats: set[str],
    labelled: bool = True,
) -> Table:
    columns = [str(c) for c in frame.columns]
    for what, col in (("entity column", entity_column), ("label column", label_column)):
        if col is None and what == "label column" and not labelled:
            continue
        if col is None:
            raise ValidationError(f"a table needs its {what} named (--{what.replace(' ', '-')})")
        if col not in columns:
            raise ValidationError(f"{name}: no {what} {col!r}; its columns are {columns}")
    features = feature_columns or [c for c in columns if c not in (entity_column, label_column)]
    for c in features:
        if c not in columns:
            raise ValidationError(f"{name}: no feature column {c!r}; its columns are {columns}")
    if not features:
        raise ValidationError(f"{name}: no feature columns beside the entity and the label")
    n = len(frame)
    src = [(name, 0, n)]
    entity = _entities(frame[entity_column], src)
    if label_column is None:
        label = np.zeros(n)
    else:
        label = _label(frame[label_column], src, str(label_column))
    feats = {c: _column(frame[c], c, c in cats, src) for c in features}
    return Table(entity, label, feats, np.zeros(n, bool), src)


def _from_entity_files(
    loc: Any, files: list[str], feature_names: list[str] | None, cats: set[str], labelled: bool
) -> Table:
    import pandas as pd

    entities: dict[str, int] = {}
    owner, holdout, parts, src = [], [], [], []
    start = 0
    width = None
    for key in files:
        parts_of_key = key.split("/")
        entity = parts_of_key[0] if len(parts_of_key) > 1 else key.removesuffix(".csv")
        try:
            frame = pd.read_csv(io.BytesIO(_read(loc, key)), header=None)
        except pd.errors.EmptyDataError:
            continue
        except Exception as exc:
            raise ValidationError(f"{key}: not a readable CSV file: {exc}") from None
        if width is None:
            width = frame.shape[1]
        if frame.shape[1] != width:
            raise ValidationError(
                f"{key}: {frame.shape[1]} columns, but {files[0]} has {width} "
                "(the label first, then the same features in every file)"
            )
        n = len(frame)
        owner.append(np.full(n, entities.setdefault(entity, len(entities)), np.int64))
        holdout.append(np.full(n, any(p in HOLDOUT_FOLDERS for p in parts_of_key[1:-1])))
        parts.append(frame)
        src.append((key, start, n))
        start += n
    if width is None or width < (2 if labelled else 1):
        what = "a label column and at least one feature" if labelled else "a feature"
        raise ValidationError(f"the CSV files need {what}")
    frame = pd.concat(parts, ignore_index=True)
    first = 1 if labelled else 0  # the label's column
    names = feature_names or [f"x{i}" for i in range(width - first)]
    if len(names) != width - first:
        raise ValidationError(f"{len(names)} feature names for {width - first} feature columns")
    label = _label(frame[0], src, "the label (column 0)") if labelled else np.zeros(len(frame))
    feats = {n: _column(frame[i + first], n, n in cats, src) for i, n in enumerate(names)}
    entity = pd.Categorical.from_codes(np.concatenate(owner), categories=list(entities))
    return Table(entity, label, feats, np.concatenate(holdout), src)


def _entities(values: Any, src: list[tuple[str, int, int]]) -> Any:
    """The entity column as a ``pandas.Categorical`` of text; a missing entity is an error."""
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):
        got = values.array
        got = got.rename_categories(got.categories.astype(str))
    else:
        got = pd.Categorical(values.astype(str).where(values.notna()))
    empty = got.codes < 0
    blank = [k for k, c in enumerate(got.categories) if not str(c).strip()]
    if blank:  # an empty cell, as pyarrow reads text: "" (pandas: missing)
        empty |= np.isin(got.codes, blank)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise ValidationError(f"{_where(src, i)}: the entity column has no value")
    return got


def _where(src: list[tuple[str, int, int]], i: int) -> str:
    for name, start, n in src:
        if start <= i < start + n:
            return f"{name}, row {i - start + 1}"
    return f"row {i + 1}"


def _label(values: Any, src: list[tuple[str, int, int]], column: str) -> np.ndarray:
    x, missing = _numbers(values)
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        i = int(bad[0])
        what = "is missing" if missing[i] else f"{str(values.iloc[i])[:40]!r} is not a number"
        raise ValidationError(f"{_where(src, i)}: the label {column} {what}")
    return x


def _column(
    values: Any, name: str, categorical: bool, src: list[tuple[str, int, int]]
) -> np.ndarray:
    """A column (a pandas Series) as float64 (NaN: missing) or, categorical, as str objects."""
    x, missing = _numbers(values)
    given = ~missing
    if categorical or not np.isfinite(x[given]).any():
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ValidationError(f"{_where(src, i)}: column {name!r} (categorical) has no value")
        return values.astype(str).str.strip().to_numpy(object)
    bad = np.flatnonzero(given & ~np.isfinite(x))
    if bad.size:
        i = int(bad[0])
        raise ValidationError(
            f"{_where(src, i)}: column {name!r} is numeric, but {str(values.iloc[i])[:40]!r} is "
            "not a number (name it a categorical column if it is one)"
        )
    return x


def _numbers(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, NaN where not a number; which are missing) of a pandas Series."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype(object)
    if pd.api.types.is_numeric_dtype(values.dtype):
        x = values.to_numpy(np.float64, na_value=np.nan)
        return x, np.isnan(x)
    text = values.astype(str).str.strip()
    missing = values.isna().to_numpy() | text.isin(MISSING).to_numpy()
    x = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(np.float64)
    return x, missing


def entity_path(entity: str) -> str:
    """The store key of an entity's model: ``{entity}/{entity}.tar.gz`` (the walkthrough's)."""
    if not entity or "/" in entity or entity in (".", "..") or os.sep in entity:
        raise ValidationError(f"entity {entity[:80]!r} cannot name a folder in the store")
    return f"{entity}/{entity}.tar.gz"
