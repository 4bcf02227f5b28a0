"""``application/x-recordio-protobuf``: SageMaker's built-in algorithms' binary format.

A body is RecordIO frames: ``u32`` magic 0xced7230a, ``u32`` whose low 29 bits are the payload's
length (the top 3 a continuation flag; only whole records, flag 0, are written by SageMaker's
SDK and read here), the payload, zero padding to 4 bytes. Each payload is a ``Record``
protobuf (SageMaker's ``record.proto``):

    Record      features = 1 (map<string, Value>), label = 2 (map<string, Value>), uid = 3, ...
    Value       float32_tensor = 2, float64_tensor = 3, int32_tensor = 7, bytes = 9
    *Tensor     values = 1 (packed: fixed-width floats, varint int32s), keys = 2 (packed
                uint64: sparse), shape = 3 (packed uint64)
    Bytes       value = 1 (repeated bytes), content_type = 2

A request's row is its record's ``features["values"]`` tensor: dense (its values), or sparse
(``keys`` are the columns of ``values`` in a row of ``shape[0]`` columns). Every record is one
row, all rows of one width. Decoded by hand with bounds checks (no protobuf runtime): every
length is checked against the bytes left, every count against the limits, before anything is
allocated. Answers are one record per row with ``label["score"]`` (float32, K values) and, for a
classifier, ``label["predicted_label"]`` (float32 for numeric labels, ``bytes`` for text).

Size: RecordIO framing and the Record protobuf read and written by hand (no protobuf
runtime), every length checked where it is read.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import ValidationError

MAGIC = 0xCED7230A
_HEAD = struct.Struct("<II")
_LENGTH_MASK = (1 << 29) - 1
_FEATURES, _LABEL = 1, 2
_FLOAT32, _FLOAT64, _INT32, _BYTES = 2, 3, 7, 9
_TENSORS: dict[int, np.dtype[Any]] = {
    _FLOAT32: np.dtype("<f4"),
    _FLOAT64: np.dtype("<f8"),
    _INT32: np.dtype("<i4"),
}
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_KEY = "values"


# --- reading protobuf's wire format ----------------------------------------------------------
class _Fields:
    """The (field number, wire type, value) of one message's bytes: a varint's int, a
    length-delimited field's memoryview, a fixed field's raw bytes."""

    def __init__(self, buf: memoryview, where: str) -> None:
        self.buf, self.pos, self.where = buf, 0, where

    def __iter__(self) -> _Fields:
        return self

    def __next__(self) -> tuple[int, int, Any]:
        if self.pos >= len(self.buf):
            raise StopIteration
        tag = self._varint("a field tag")
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValidationError(f"{self.where}: a protobuf field numbered 0")
        if wire == _VARINT:
            return number, wire, self._varint(f"field {number}")
        if wire == _LEN:
            n = self._varint(f"field {number}'s length")
            return number, wire, self._take(n, f"field {number}")
        if wire == _FIXED32:
            return number, wire, self._take(4, f"field {number}")
        if wire == _FIXED64:
            return number, wire, self._take(8, f"field {number}")
        raise ValidationError(f"{self.where}: field {number} has protobuf wire type {wire}")

    def _varint(self, what: str) -> int:
        value = shift = 0
        for _ in range(10):
            if self.pos >= len(self.buf):
                break
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value & 0xFFFFFFFFFFFFFFFF
            shift += 7
        raise ValidationError(f"{self.where}: {what} is a truncated or overlong varint")

    def _take(self, n: int, what: str) -> memoryview:
        if n > len(self.buf) - self.pos:
            raise ValidationError(
                f"{self.where}: {what} declares {n} bytes; {len(self.buf) - self.pos} are left"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def _varints(buf: memoryview, where: str, limit: int) -> list[int]:
    """A packed varint field (keys, shape): at most ``limit`` of them."""
    out: list[int] = []
    f = _Fields(buf, where)
    while f.pos < len(buf):
        if len(out) >= limit:
            raise ValidationError(f"{where}: more than {limit} entries")
        out.append(f._varint("a packed value"))
    return out


# --- requests --------------------------------------------------------------------------------
def decode(body: bytes, limits: DecodeLimits) -> np.ndarray:
    """The (N, D) rows of a RecordIO-protobuf body (float32, or float64 for float64 tensors)."""
    if not body:
        raise ValidationError("the RecordIO body has no records")
    view = memoryview(body)
    same = _uniform(body, limits)
    if same is not None:
        return same
    rows: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # width, values, keys
    values = 0
    pos = 0
    while pos < len(view):
        n = len(rows)
        where = f"record {n}"
        if len(view) - pos < _HEAD.size:
            raise ValidationError(
                f"{where}: {len(view) - pos} bytes, too few for a RecordIO header"
            )
        magic, word = _HEAD.unpack_from(view, pos)
        if magic != MAGIC:
            raise ValidationError(
                f"{where}: RecordIO magic {magic:#010x} at byte {pos}, expected {MAGIC:#010x}"
            )
        flag, length = word >> 29, word & _LENGTH_MASK
        if flag != 0:
            raise ValidationError(f"{where}: a record split in parts (flag {flag}) is not read")
        start = pos + _HEAD.size
        if length > len(view) - start:
            raise ValidationError(
                f"{where}: declares {length} bytes at byte {pos}; {len(view) - start} are left"
            )
        limits.rows(n + 1, "the RecordIO body (at least)")
        row = _record(view[start : start + length], where, limits)
        width = row[0]
        if rows and width != rows[0][0]:
            raise ValidationError(f"{where} has {width} features; record 0 has {rows[0][0]}")
        values += width
        if values > limits.max_values:
            raise ValidationError(
                f"the RecordIO body holds over {limits.max_values} values (at {where})"
            )
        rows.append(row)
        pos = start + length + (-length % 4)
        if pos > len(view):
            pos = len(view)  # the last record's padding may be left out
    dtype = np.float64 if any(v.dtype == np.float64 for _, v, _ in rows) else np.float32
    out = np.zeros((len(rows), rows[0][0]), dtype)
    for i, (_, vals, keys) in enumerate(rows):
        if keys is None:
            out[i] = vals
        else:
            out[i, keys] = vals
    return out


def _uniform(body: bytes, limits: DecodeLimits) -> np.ndarray | None:
    """The rows at memory speed when every record is laid out as the first one, as the SDK
    writes dense rows: the same header and the same bytes around the values, which end the
    payload. Equal bytes around equal-length values parse the same way, so the first record's
    parse holds for all, and the values are one strided view. None when they are not."""
    if len(body) < _HEAD.size:
        return None
    magic, word = _HEAD.unpack_from(body, 0)
    length = word & _LENGTH_MASK
    stride = _HEAD.size + length + (-length % 4)
    if magic != MAGIC or word >> 29 or len(body) % stride or stride > len(body):
        return None
    n = len(body) // stride
    if n > limits.max_rows:
        return None  # the record loop says so
    width, vals, keys = _record(
        memoryview(body)[_HEAD.size : _HEAD.size + length], "record 0", limits
    )
    end = _HEAD.size + length
    start = end - width * 4
    if keys is not None or n * width > limits.max_values or vals.dtype != np.float32:
        return None
    if body[start:end] != vals.astype("<f4").tobytes():  # int32s decode to float32 too
        return None  # the values are not the payload's last bytes
    grid = np.frombuffer(body, np.uint8).reshape(n, stride)
    if not ((grid[:, :start] == grid[0, :start]).all() and (grid[:, end:] == grid[0, end:]).all()):
        return None
    return grid[:, start:end].copy().view("<f4").astype(np.float32)  # (N, D)


def _record(buf: memoryview, where: str, limits: DecodeLimits) -> tuple[int, np.ndarray, Any]:
    tensor = None
    for number, wire, value in _Fields(buf, where):
        if number == _FEATURES and wire == _LEN:
            key, entry = _map_entry(value, where)
            if key == _KEY:
                tensor = entry
    if tensor is None:
        raise ValidationError(f'{where} has no features["values"] tensor')
    return _tensor(tensor, f'{where} features["values"]', limits)


def _map_entry(buf: memoryview, where: str) -> tuple[str, memoryview | None]:
    key, value = "", None
    for number, wire, v in _Fields(buf, where):
        if number == 1 and wire == _LEN:
            try:
                key = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError(f"{where}: a features key is not UTF-8") from None
        elif number == 2 and wire == _LEN:
            value = v
    return key, value


def _tensor(
    buf: memoryview | None, where: str, limits: DecodeLimits
) -> tuple[int, np.ndarray, Any]:
    """(width, values, keys or None) of a ``Value`` holding a numeric tensor."""
    kind, body = None, None
    for number, wire, v in _Fields(buf if buf is not None else memoryview(b""), where):
        if wire == _LEN and number in (_FLOAT32, _FLOAT64, _INT32, _BYTES):
            kind, body = number, v
    if kind is None or body is None:
        raise ValidationError(f"{where} holds no tensor")
    if kind == _BYTES:
        raise ValidationError(f"{where} holds bytes; a float32, float64 or int32 tensor is read")
    dtype = _TENSORS[kind]
    chunks: list[bytes] = []
    keys: list[int] | None = None
    shape: list[int] | None = None  # both may come in several fields: protobuf concatenates
    size = 0
    for number, wire, v in _Fields(body, where):
        if number == 1:
            if wire == _LEN and kind == _INT32:  # packed int32s are varints
                ints = [_signed32(n) for n in _varints(v, where, limits.max_values)]
                chunks.append(np.array(ints, "<i4").tobytes())
                size += len(ints)
            elif wire == _LEN:
                if len(v) % dtype.itemsize:
                    raise ValidationError(
                        f"{where}: {len(v)} bytes of values is not a whole number of "
                        f"{dtype.name} values"
                    )
                chunks.append(bytes(v))
                size += len(v) // dtype.itemsize
            elif wire == (_FIXED64 if dtype.itemsize == 8 else _FIXED32):
                chunks.append(bytes(v))
                size += 1
            elif wire == _VARINT and kind == _INT32:  # unpacked int32s are varints
                chunks.append(np.array([_signed32(v)], "<i4").tobytes())
                size += 1
            else:
                raise ValidationError(f"{where}: values with protobuf wire type {wire}")
            if size > limits.max_values:
                raise ValidationError(f"{where}: over {limits.max_values} values")
        elif number == 2:
            keys = keys if keys is not None else []
            keys.extend(_uints(v, wire, where, limits.max_values))
            if len(keys) > limits.max_values:
                raise ValidationError(f"{where}: over {limits.max_values} keys")
        elif number == 3:
            shape = shape if shape is not None else []
            shape.extend(_uints(v, wire, where, 8))
            if len(shape) > 8:
                raise ValidationError(f"{where}: a shape of over 8 dimensions")
    vals = np.frombuffer(b"".join(chunks), dtype)
    if keys is None and size == 0 and shape is not None and len(shape) == 1:
        keys = []  # a sparse row with no values: the SDK leaves its empty keys out
    if keys is None:  # dense: one row of its values
        if shape is not None and shape not in ([size], [1, size]):
            raise ValidationError(f"{where}: shape {shape} does not hold one row of {size} values")
        if size == 0:
            raise ValidationError(f"{where} has no values")
        return size, vals.astype(np.float64 if kind == _FLOAT64 else np.float32), None
    if shape is None or len(shape) != 1:
        raise ValidationError(
            f"{where}: a sparse tensor needs a 1-D shape (its width), got {shape}"
        )
    width = shape[0]
    if not 0 < width <= limits.max_values:
        raise ValidationError(
            f"{where}: a sparse row of width {width}; 1..{limits.max_values} is read"
        )
    if len(keys) != size:
        raise ValidationError(f"{where}: {len(keys)} keys for {size} values")
    idx = np.array(keys, np.uint64)
    if size and int(idx.max()) >= width:
        raise ValidationError(f"{where}: key {int(idx.max())} is past the width {width}")
    return width, vals.astype(np.float64 if kind == _FLOAT64 else np.float32), idx.astype(np.int64)


def _uints(v: Any, wire: int, where: str, limit: int) -> list[int]:
    if wire == _LEN:
        return _varints(v, where, limit)
    if wire == _VARINT:
        return [int(v)]
    raise ValidationError(f"{where}: keys or shape with protobuf wire type {wire}")


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


# --- answers ---------------------------------------------------------------------------------
def encode(scores: np.ndarray, labels: list[Any] | None) -> bytes:
    """One record per row: ``label["score"]``, and a classifier's ``label["predicted_label"]``."""
    rows = (scores if scores.ndim == 2 else scores[:, None]).astype("<f4")  # (N, K)
    out = bytearray()
    for i in range(len(rows)):
        entries = [_entry("score", _float32_value(rows[i].tobytes()))]
        if labels is not None:
            entries.append(_entry("predicted_label", _label_value(labels[i])))
        payload = b"".join(_len_field(_LABEL, e) for e in entries)
        out += _HEAD.pack(MAGIC, len(payload)) + payload + b"\x00" * (-len(payload) % 4)
    return bytes(out)


def encode_neighbors(
    predicted: list[Any], labels: list[list[Any]] | None, distances: np.ndarray | None
) -> bytes:
    """A k-NN answer, one record per row: ``label["predicted_label"]``, and with ``verbose``
    the neighbours' ``label["labels"]`` and ``label["distances"]`` (float32 tensors; string
    labels as bytes)."""
    out = bytearray()
    for i, value in enumerate(predicted):
        entries = [_entry("predicted_label", _label_value(value))]
        if labels is not None and distances is not None:
            entries.append(_entry("labels", _label_values(labels[i])))
            entries.append(
                _entry("distances", _float32_value(distances[i].astype("<f4").tobytes()))
            )
        payload = b"".join(_len_field(_LABEL, e) for e in entries)
        out += _HEAD.pack(MAGIC, len(payload)) + payload + b"\x00" * (-len(payload) % 4)
    return bytes(out)


def _label_values(labels: list[Any]) -> bytes:
    numeric = all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in labels
    )
    if numeric:
        return _float32_value(np.array(labels, "<f4").tobytes())
    return _len_field(_BYTES, b"".join(_len_field(1, str(v).encode("utf-8")) for v in labels))


def _label_value(label: Any) -> bytes:
    if isinstance(label, (int, float, np.integer, np.floating)) and not isinstance(label, bool):
        return _float32_value(np.array([label], "<f4").tobytes())
    text = str(label).encode("utf-8")
    return _len_field(_BYTES, _len_field(1, text))


def _float32_value(raw: bytes) -> bytes:
    return _len_field(_FLOAT32, _len_field(1, raw))


def _entry(key: str, value: bytes) -> bytes:
    return _len_field(1, key.encode()) + _len_field(2, value)


def _len_field(number: int, payload: bytes) -> bytes:
    return _uvarint(number << 3 | _LEN) + _uvarint(len(payload)) + payload


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
