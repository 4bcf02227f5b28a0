"""Request bodies -> raw rows for a model's input schema (``RowEncoder`` does the rest).

    text/csv               1992,1531,6,3.0,0.68,1,y,n        one row per line, no header
    application/json       {"instances": [{"features": [...]}, ...]}
                           {"instances": [{"data": {"features": {"values": [...]}}}]}
                           {"instances": [[...], ...]}   [[...], ...]   {"features": [...]}
                           {"instances": [{"year_built": 1992, ...}, ...]}  (named columns)
                           {"inputs": [[...], ...]}  or V2 tensors {"inputs": [{"name", ...}]}
    application/jsonlines  one instance per line, in any of the JSON instance shapes
    application/x-npy      a 1-D (one row) or 2-D numeric or string array; never unpickled
    application/x-recordio-protobuf  SageMaker's RecordIO-wrapped Record protobufs, a row
                           each, dense or sparse (``codecs.recordio``)

Rows come back as a list of rows (strings allowed), a 2-D numpy array, or {column: values}.
Every failure is a ValidationError that says what was wrong and where.
"""

from __future__ import annotations

import csv
import io
import math
import tokenize
from typing import Any

import numpy as np

from mmhost.codecs import media, recordio, table
from mmhost.codecs.documents import parse_json
from mmhost.codecs.limits import DEFAULT, DecodeLimits
from mmhost.codecs.v2 import decode_tensors
from mmhost.errors import ValidationError

_NPY_MAGIC = b"\x93NUMPY"
# what numpy raises for a bad header: it parses the header as a Python literal
_NPY_ERRORS = (ValueError, TypeError, SyntaxError, tokenize.TokenError, OSError, EOFError)
_ZIP_MAGIC = b"PK\x03\x04"
_SHAPES = 'expected {"instances": [...]}, {"inputs": [...]}, {"features": [...]} or a list of rows'


def decode(body: bytes, media_type: str, limits: DecodeLimits = DEFAULT) -> Any:
    """The rows of a request body of ``media_type`` (one of ``media.REQUEST_TYPES``). What the
    body declares (an array's shape, a tensor's) is checked against ``limits`` before it is
    allocated or iterated; rows past the row limit are refused as they are read."""
    if media_type == media.CSV:
        return _csv(body, limits)
    if media_type == media.JSON:
        whole = table.wrap_json(body, False, limits.max_rows, lambda: _json_body(body, limits))
        return whole if whole is not None else _json_body(body, limits)
    if media_type == media.JSONLINES:
        whole = table.wrap_json(body, True, limits.max_rows, lambda: _jsonlines(body, limits))
        return whole if whole is not None else _jsonlines(body, limits)
    if media_type == media.NPY:
        return _npy(body, limits)
    if media_type == media.RECORDIO:
        return recordio.decode(body, limits)
    raise AssertionError(f"no decoder for {media_type!r}")


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"the body is not UTF-8 text (byte {exc.start})") from None


def _csv(body: bytes, limits: DecodeLimits) -> Any:
    whole = table.wrap(body, limits.max_rows, lambda: _csv_rows(body, limits))
    return whole if whole is not None else _csv_rows(body, limits)


def _csv_rows(body: bytes, limits: DecodeLimits) -> list[list[str]]:
    line = body.strip()
    if line and b'"' not in line and b"\n" not in line and b"\r" not in line:
        return [[cell.strip() for cell in _text(line).split(",")]]  # one plain row: no parser
    rows = []
    try:
        for row in csv.reader(io.StringIO(_text(body))):
            if row and not (len(row) == 1 and not row[0].strip()):  # blank lines; ",," is a row
                rows.append([cell.strip() for cell in row])
                if len(rows) > limits.max_rows:
                    limits.rows(len(rows), "the CSV body (at least)")
    except csv.Error as exc:
        raise ValidationError(f"malformed CSV: {exc}") from None
    if not rows:
        raise ValidationError("the CSV body has no rows")
    return rows


def _json_body(body: bytes, limits: DecodeLimits) -> Any:
    return _json(parse_json(body, "the body"), limits, len(body))


def _json(doc: Any, limits: DecodeLimits, size: int) -> Any:
    if isinstance(doc, dict):
        if "instances" in doc:
            instances = doc["instances"]
            if not isinstance(instances, list):
                raise ValidationError('"instances" must be a list')
            return _by_name([_instance(x, i) for i, x in enumerate(instances)])
        if "inputs" in doc:
            inputs = doc["inputs"]
            if isinstance(inputs, list) and inputs and all(isinstance(t, dict) for t in inputs):
                return decode_tensors(inputs, b"", limits, size)
            if not isinstance(inputs, list):
                raise ValidationError('"inputs" must be a list of rows or of V2 tensors')
            return _by_name([_instance(x, i) for i, x in enumerate(inputs)])
        if "features" in doc or "data" in doc:
            return [_instance(doc, 0)]
        raise ValidationError(_SHAPES)
    if isinstance(doc, list):
        if doc and all(not isinstance(v, (list, dict)) for v in doc):
            return [doc]  # one flat row
        return _by_name([_instance(x, i) for i, x in enumerate(doc)])
    raise ValidationError(_SHAPES)


def _instance(x: Any, i: int) -> list[Any] | dict[str, Any]:
    """One row from a list, {"features": [...]}, {"data": {"features": {"values": [...]}}},
    or an object of named columns ({"year_built": 1992, ...}, returned as it is)."""
    if isinstance(x, list):
        return x
    if isinstance(x, dict):
        if "features" in x:
            return _row_list(x["features"], i)
        data = x.get("data")
        if isinstance(data, dict) and isinstance(data.get("features"), dict):
            return _row_list(data["features"].get("values"), i)
        if x and "data" not in x:
            return x
    raise ValidationError(
        f'instance {i}: expected a list of values, {{"features": [...]}}, '
        '{"data": {"features": {"values": [...]}}} or an object of named columns'
    )


def _by_name(rows: list[Any]) -> Any:
    """Rows that are objects of named columns -> {column: values} (the encoder puts the columns
    in the model's order and names any missing or unknown one); lists stay as they are."""
    named = [i for i, r in enumerate(rows) if isinstance(r, dict)]
    if not named:
        return rows
    if len(named) != len(rows):
        i = next(i for i, r in enumerate(rows) if not isinstance(r, dict))
        raise ValidationError(
            f"instance {i} is a list, but instance {named[0]} an object of named columns: "
            "send one kind"
        )
    names = list(rows[0])
    for i, r in enumerate(rows):
        if r.keys() != rows[0].keys():
            odd = sorted(set(r) ^ set(rows[0]), key=str)[:5]
            raise ValidationError(
                f"instance {i} names other columns than instance 0 ({', '.join(map(str, odd))})"
            )
    return {n: [r[n] for r in rows] for n in names}


def _row_list(v: Any, i: int) -> list[Any]:
    if not isinstance(v, list):
        raise ValidationError(f"instance {i}: features must be a list of values")
    return v


def _jsonlines(body: bytes, limits: DecodeLimits) -> Any:
    rows: list[Any] = []
    # only "\n" ends a line: JSON strings may hold U+2028 and friends unescaped
    for n, line in enumerate(_text(body).split("\n")):
        if line.strip():
            doc = parse_json(line, f"line {n + 1}")
            try:
                rows.append(_instance(doc, len(rows)))
            except ValidationError as exc:
                raise ValidationError(f"line {n + 1}: {exc.message}") from None
            if len(rows) > limits.max_rows:
                limits.rows(len(rows), "the JSON Lines body (at least)")
    if not rows:
        raise ValidationError("the JSON Lines body has no rows")
    return _by_name(rows)


def _npy(body: bytes, limits: DecodeLimits) -> Any:
    if body.startswith(_ZIP_MAGIC):
        raise ValidationError("expected one .npy array, not an .npz archive")
    if not body.startswith(_NPY_MAGIC):  # np.load would try it as a pickle (and refuse)
        raise ValidationError("not a readable .npy array: it does not start with \\x93NUMPY")
    _check_npy_header(body, limits)
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except _NPY_ERRORS as exc:
        raise ValidationError(f"not a readable .npy array: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValidationError(f"expected a 1-D or 2-D array, got shape {arr.shape}")
    if arr.dtype.kind in "fiub":
        return arr
    if arr.dtype.kind == "U":
        _check_code_points(arr)
        return arr.tolist()
    if arr.dtype.kind == "S":
        try:
            return np.char.decode(arr, "utf-8").tolist()
        except UnicodeDecodeError:
            raise ValidationError("a bytes .npy array must hold UTF-8 text") from None
    raise ValidationError(f"unsupported .npy dtype {arr.dtype}")


def _check_code_points(arr: np.ndarray) -> None:
    """A UCS-4 array's cells are only code points: numpy reads any 32-bit value, and past
    U+10FFFF ``tolist`` fails inside CPython (SystemError); a surrogate can't be UTF-8."""
    order = arr.dtype.byteorder if arr.dtype.byteorder in "<>" else "="
    codes = np.ascontiguousarray(arr).view(np.dtype(np.uint32).newbyteorder(order))
    if ((codes > 0x10FFFF) | ((codes >= 0xD800) & (codes <= 0xDFFF))).any():
        raise ValidationError("a string .npy array holds a value that is not a Unicode character")


def _check_npy_header(body: bytes, limits: DecodeLimits) -> None:
    """Refuse a header that claims more data than the body holds, or than the limits allow,
    before numpy allocates it (numpy sizes its buffer from the header alone; a zero-sized
    ``(2**62, 0)`` needs no bytes, yet listing its rows never ends)."""
    from numpy.lib import format as npy

    stream = io.BytesIO(body)
    try:
        version = npy.read_magic(stream)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _fortran, dtype = read(stream)
    except _NPY_ERRORS:
        return  # not a plain .npy header: np.load says why
    if dtype.itemsize == 0:  # any shape fits in no bytes, and tolist() would build it all
        raise ValidationError(f"unsupported .npy dtype {dtype} (its items have no size)")
    if len(shape) > 2:
        raise ValidationError(f"expected a 1-D or 2-D array, got shape {shape}")
    have = len(body) - stream.tell()
    need = math.prod(shape) * dtype.itemsize
    if need > have:
        raise ValidationError(
            f"the .npy header claims shape {shape} ({need} bytes) but the body holds {have}"
        )
    limits.shape((1, *shape) if len(shape) == 1 else shape, "the .npy array", have, 1)
