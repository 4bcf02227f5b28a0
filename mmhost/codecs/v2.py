"""KServe V2 / Open Inference Protocol tensors, in and out (JSON, and Triton's binary
tensor extension that ``tritonclient`` uses by default).

Inputs -> rows, by one rule:
    one input of shape [N, C]          -> N rows of C values (any datatype; BYTES for strings)
    otherwise, each input is a column  -> {input name: N values} (shape [N] or [N, 1])

Outputs: ``score`` (FP32, [N] or [N, k] for multiclass probabilities) and, for classifiers,
``predicted_label`` (INT64, FP64, BOOL or BYTES, following the class labels). A k-NN model:
``predicted_label`` ([N]; FP32 for a regressor), ``labels`` ([N, k], its neighbours') and
``distances`` ([N, k] FP32, nearest first).

Size: the V2 tensor wire format both ways (JSON and Triton's binary extension), every
datatype's checks side by side.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from mmhost.artifacts.manifest import MAX_NAME
from mmhost.codecs import text
from mmhost.codecs.documents import parse_json
from mmhost.codecs.limits import DEFAULT, DecodeLimits
from mmhost.errors import ValidationError
from mmhost.types import Neighbors

# V2 datatype -> numpy dtype (BYTES is handled apart)
DTYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
HEADER_LENGTH = "Inference-Header-Content-Length"
_MAX_DIMS = 4
_UNKNOWN = 2**63  # bytes of a document whose size the caller did not say


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request that may use the binary tensor extension."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        why = f"{HEADER_LENGTH} must be an integer, not {header_length!r}"
        raise ValidationError(why) from None
    if not 0 <= n <= len(body):
        raise ValidationError(f"{HEADER_LENGTH} {n} is outside the body of {len(body)} bytes")
    return body[:n], body[n:]


def parse_request(
    body: bytes, header_length: str | None = None, limits: DecodeLimits = DEFAULT
) -> tuple[dict[str, Any], Any]:
    """(the request document, its rows) from an infer request body."""
    head, binary = split_binary(body, header_length)
    doc = parse_json(head, "the infer request")
    if not isinstance(doc, dict):
        raise ValidationError('an infer request is an object with "inputs"')
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ValidationError('"inputs" must be a non-empty list of tensors')
    return doc, decode_tensors(inputs, binary, limits, len(head))


def decode_tensors(
    inputs: list[Any],
    binary: bytes = b"",
    limits: DecodeLimits = DEFAULT,
    json_bytes: int | None = None,
) -> Any:
    """V2 input tensors -> a list of rows, or {column name: values} (see the module rule).
    Each declared shape is checked against ``limits`` and against the bytes that could hold
    its values (``json_bytes``: the JSON document's size) before any value is read."""
    tensors: dict[str, np.ndarray | list[Any]] = {}
    shapes = {}
    offset = 0
    for i, t in enumerate(inputs):
        name, shape, datatype = _header(t, i)
        size = _binary_size(t, name)
        what = f"input {name!r}"
        if size is not None:
            limits.shape(shape, what, _UNKNOWN, 1)  # _from_bytes checks the exact size
            if offset + size > len(binary):
                raise ValidationError(
                    f"input {name!r}: binary_data_size {size} runs past the body's binary part"
                )
            values = _from_bytes(binary[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            # a JSON value takes at least one byte of the document
            limits.shape(shape, what, _UNKNOWN if json_bytes is None else json_bytes, 1)
            values = _from_json(t.get("data"), datatype, shape, name)
        if name in tensors:
            raise ValidationError(f"input {name!r} appears twice")
        tensors[name], shapes[name] = values, shape
    if offset != len(binary):
        raise ValidationError(f"{len(binary) - offset} bytes of binary data belong to no input")
    if len(tensors) == 1:
        ((name, values),) = tensors.items()
        if len(shapes[name]) == 2 and shapes[name][1] != 1:
            return _rows(values, shapes[name])
    columns = {}
    n = None
    for name, values in tensors.items():
        shape = shapes[name]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise ValidationError(
                f"input {name!r}: expected rows [N, C] (one input) or one column per input "
                f"([N] or [N, 1]); got shape {shape}"
            )
        if n is not None and shape[0] != n:
            raise ValidationError(f"input {name!r} has {shape[0]} rows; the others have {n}")
        n = shape[0]
        columns[name] = values.tolist() if isinstance(values, np.ndarray) else values
    return columns


def _header(t: Any, i: int) -> tuple[str, list[int], str]:
    if not isinstance(t, dict):
        raise ValidationError(f"input {i} must be an object with name, shape, datatype, data")
    name, shape, datatype = t.get("name"), t.get("shape"), t.get("datatype")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise ValidationError(
            f"input {i}: name must be a non-empty string of up to {MAX_NAME} characters"
        )
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ValidationError(f"input {name!r}: shape must be 1-{_MAX_DIMS} sizes >= 0")
    if datatype not in DTYPES and datatype != "BYTES":
        raise ValidationError(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join([*DTYPES, 'BYTES'])}"
        )
    return name, shape, datatype


def _binary_size(t: dict[str, Any], name: str) -> int | None:
    params = t.get("parameters") or {}
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValidationError(f"input {name!r}: binary_data_size must be an integer >= 0")
    return size


def _from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray | list[Any]:
    if not isinstance(data, list):
        raise ValidationError(f"input {name!r}: data must be a list")
    flat = _flatten(data, name)
    if len(flat) != math.prod(shape):
        raise ValidationError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, got {len(flat)}"
        )
    if datatype == "BYTES":
        return [v if isinstance(v, str) else _scalar(v, name) for v in flat]
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise ValidationError(f"input {name!r}: BOOL data must be true or false")
        return np.array(flat, dtype=np.bool_)
    if not all(isinstance(v, (int, float)) or v is None for v in flat):
        raise ValidationError(f"input {name!r}: {datatype} data must be numbers")
    try:
        return np.array([np.nan if v is None else v for v in flat], dtype=np.float64)
    except OverflowError:  # an int past float64's range
        raise ValidationError(f"input {name!r}: {datatype} data holds a number past FP64") from None


def _scalar(v: Any, name: str) -> Any:
    if isinstance(v, (int, float)) or v is None:
        return v
    raise ValidationError(f"input {name!r}: BYTES data must be strings or numbers")


def _flatten(data: list[Any], name: str) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                if len(stack) > _MAX_DIMS:
                    raise ValidationError(f"input {name!r}: data is nested too deeply")
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _from_bytes(raw: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray | list[Any]:
    n = math.prod(shape)
    if datatype == "BYTES":
        out, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise ValidationError(f"input {name!r}: truncated BYTES element")
            (k,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + k > len(raw):
                raise ValidationError(f"input {name!r}: truncated BYTES element")
            out.append(raw[pos : pos + k].decode("utf-8", errors="replace"))
            pos += k
        if len(out) != n:
            raise ValidationError(f"input {name!r}: shape {shape} needs {n} values, got {len(out)}")
        return out
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    if len(raw) != n * dtype.itemsize:
        raise ValidationError(
            f"input {name!r}: shape {shape} of {datatype} needs {n * dtype.itemsize} bytes, "
            f"got {len(raw)}"
        )
    return np.frombuffer(raw, dtype).astype(np.float64)


def _rows(values: np.ndarray | list[Any], shape: list[int]) -> Any:
    if isinstance(values, np.ndarray):
        return values.reshape(shape)  # (N, C)
    c = shape[1]
    return [values[i * c : (i + 1) * c] for i in range(shape[0])]


# --- responses -------------------------------------------------------------------------------
_FEW = 64


def check_scores(scores: np.ndarray) -> None:
    """Refuse a prediction whose scores overflowed float32: JSON has no inf or NaN, and a
    client must not read one as a price. Valid inputs far outside the training range do it."""
    if scores.size <= _FEW:  # a request's few scores: Python's isfinite beats a numpy call
        if all(map(math.isfinite, scores.ravel().tolist())):
            return
    elif np.isfinite(scores).all():
        return
    i = int(np.argwhere(~np.isfinite(scores))[0][0])
    raise ValidationError(
        f"row {i}: the model's score is not finite in float32; the row's values are "
        "too far outside the range the model can score"
    )


def outputs(
    scores: np.ndarray, task: str, classes: list[Any] | None, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """The response tensors of one prediction (see the module docstring)."""
    check_scores(scores)
    out = [
        {
            "name": "score",
            "shape": list(scores.shape),
            "datatype": "FP32",
            "data": _values(scores.reshape(-1)),
        }
    ]
    if classes is not None:
        labels = predicted_labels(scores, task, classes, threshold)
        out.append(
            {
                "name": "predicted_label",
                "shape": [len(labels)],
                "datatype": label_type(classes),
                "data": labels,
            }
        )
    return out


def neighbor_outputs(
    predicted: np.ndarray,
    neighbors: Neighbors,
    classes: list[Any] | None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The response tensors of a k-NN prediction (see the module docstring); refused
    (ResponseTooLarge) before they are built when their values can't fit ``limit`` bytes."""
    from mmhost.codecs.outputs import check_values  # outputs imports this module

    n, k = neighbors.distances.shape
    check_values(n, 1 + 2 * k, limit)
    if classes is None:
        check_scores(predicted)
    check_scores(neighbors.distances)
    kind = "FP32" if classes is None else label_type(classes)
    return [
        {"name": "predicted_label", "shape": [n], "datatype": kind, "data": predicted.tolist()},
        {
            "name": "labels",
            "shape": [n, k],
            "datatype": kind,
            "data": neighbors.labels.reshape(-1).tolist(),
        },
        {
            "name": "distances",
            "shape": [n, k],
            "datatype": "FP32",
            "data": neighbors.distances.reshape(-1).tolist(),
        },
    ]


def predicted_labels(
    scores: np.ndarray, task: str, classes: list[Any], threshold: float = 0.5
) -> list[Any]:
    """Binary: the positive class where P > threshold (0.5 as scikit-learn decides, or the
    model's own, as Linear Learner stores it); multiclass: argmax."""
    return [classes[int(i)] for i in label_index(scores, task, threshold)]


def label_index(scores: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """(n,) int64: each row's predicted class, as an index into the model's classes."""
    if task == "multiclass_classifier":
        return scores.argmax(axis=1)
    return (scores > threshold).astype(np.int64)


def label_type(classes: list[Any]) -> str:
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return "BYTES"


def select(tensors: list[dict[str, Any]], requested: Any) -> list[dict[str, Any]]:
    """Only the outputs a request names (all when it names none)."""
    if requested is None:
        return tensors
    if not isinstance(requested, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) for r in requested
    ):
        raise ValidationError('"outputs" must be a list of {"name": ...}')
    by_name = {t["name"]: t for t in tensors}
    unknown = [r["name"][:MAX_NAME] for r in requested if r["name"] not in by_name]
    if unknown:
        raise ValidationError(
            f"unknown output(s) {', '.join(unknown[:8])}; this model has {', '.join(by_name)}"
        )
    return [by_name[r["name"]] for r in requested]


def wants_binary(doc: dict[str, Any], requested: Any) -> set[str]:
    """Names of the outputs to send as binary (Triton's binary_data parameters)."""
    params = doc.get("parameters") or {}
    default = bool(isinstance(params, dict) and params.get("binary_data_output"))
    names = set()
    for r in requested or []:
        p = r.get("parameters") or {}
        if (p.get("binary_data", default) if isinstance(p, dict) else default) is True:
            names.add(r["name"])
    return names if requested else ({"score", "predicted_label"} if default else set())


_FLAT = text.Layout(head="[", row_sep=",", tail="]")


def _values(flat: np.ndarray) -> np.ndarray | list[Any]:
    """A tensor's data: a large one stays an array (``render`` writes it by C++), a small
    one is a list, as a V2 client's JSON holds it."""
    return flat if flat.size >= text.MIN_ROWS else flat.tolist()


def render(head: dict[str, Any], tensors: list[dict[str, Any]], ascii_only: bool = False) -> bytes:
    """The JSON text of ``{**head, "outputs": tensors}``, compact (``ascii_only``: non-ASCII
    escaped), each tensor's ``data`` last; an array's data written as Python's ``repr`` writes
    each value (by C++ when large: ``codecs.text``)."""
    base = _dumps({**head, "outputs": []}, ascii_only)
    return base[:-3] + b"[" + b",".join(_tensor(t, ascii_only) for t in tensors) + b"]}"


def _tensor(t: dict[str, Any], ascii_only: bool) -> bytes:
    data = t.get("data")
    if not isinstance(data, np.ndarray):
        return _dumps(t, ascii_only)
    rest = _dumps({k: v for k, v in t.items() if k != "data"}, ascii_only)
    values = text.write(data.reshape(-1), _FLAT) if data.dtype.kind == "f" else None
    if values is None:
        values = _dumps(data.reshape(-1).tolist(), ascii_only)
    return rest[:-1] + b',"data":' + values + b"}"


def _dumps(doc: Any, ascii_only: bool) -> bytes:
    # as Starlette's JSONResponse writes a body (and, ascii_only, json.dumps' default)
    return json.dumps(doc, ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":")).encode()


def encode_binary(tensors: list[dict[str, Any]], binary: set[str]) -> tuple[list[Any], bytes]:
    """Move the data of the ``binary`` outputs out of the JSON into a binary tail."""
    moved, parts = [], []
    for t in tensors:
        if t["name"] not in binary:
            moved.append(t)
            continue
        if t["datatype"] == "BYTES":
            raw = b"".join(
                struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in t["data"])
            )
        else:
            dtype = np.dtype(DTYPES[t["datatype"]]).newbyteorder("<")
            raw = np.asarray(t["data"], dtype).tobytes()
        head = {k: v for k, v in t.items() if k != "data"}
        head["parameters"] = {"binary_data_size": len(raw)}
        moved.append(head)
        parts.append(raw)
    return moved, b"".join(parts)
