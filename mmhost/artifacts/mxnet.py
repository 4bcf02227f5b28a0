"""MXNet's two files of a saved module, read without MXNet: the NDArray list
(``*-0000.params``) and the symbol graph (``*-symbol.json``).

The NDArray list (MXNet's ``NDArray::Save`` of a list): ``u64`` magic 0x112, ``u64`` reserved,
``u64`` count, the arrays, ``u64`` count of names, each a ``u64`` length and its bytes. One
array: a ``u32`` magic (0xF993FAC8 V1, 0xF993FAC9 V2, 0xF993FACA V3; the legacy layout has none
and starts with the shape), for V2/V3 an ``i32`` storage type (0 dense), the shape (``u32`` ndim,
then ``i64`` dims; ``u32`` dims in V1 and legacy), the context (``i32`` device type and id), an
``i32`` dtype flag, then the data, little-endian. Every count and length is checked against the
bytes actually there (and the caps) before anything is allocated: the file is untrusted.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from mmhost.artifacts.manifest import ManifestError

LIST_MAGIC = 0x112
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8", 6: "int64"}
FLOATS: dict[int, np.dtype[Any]] = {0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2")}
STORAGE = {0: "dense", 1: "row_sparse", 2: "csr"}
MAX_ARRAYS = 64
MAX_NDIM = 8
MAX_NAME = 256
MAX_NODES = 256
MAX_VALUES = 2**28  # values of one array (1 GiB of float32); the artifact's size cap bounds it too


class _Reader:
    """Little-endian fields from ``data``, each checked against the bytes left."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.left():
            raise ManifestError(
                f"{self.what} is truncated: {field} needs {n} bytes at offset {self.pos}, "
                f"{self.left()} are left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str) -> Any:
        (value,) = struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), field))
        return value


def read_ndarray_list(data: bytes, what: str = "mx-mod-0000.params") -> dict[str, np.ndarray]:
    """The named arrays of an NDArray list file, as float64 (``arg:`` / ``aux:`` prefixes
    kept). ManifestError names the field that is off."""
    r = _Reader(data, what)
    magic = r.unpack("Q", "the magic number")
    if magic != LIST_MAGIC:
        raise ManifestError(f"{what} is not an MXNet NDArray list (magic {magic:#x}, not 0x112)")
    r.unpack("Q", "the reserved field")
    n = r.unpack("Q", "the array count")
    if n > MAX_ARRAYS:
        raise ManifestError(f"{what} declares {n} arrays; at most {MAX_ARRAYS} are read")
    arrays = [_array(r, i) for i in range(n)]
    m = r.unpack("Q", "the name count")
    if m != n:
        raise ManifestError(f"{what} holds {n} arrays but {m} names")
    names = []
    for i in range(m):
        length = r.unpack("Q", f"name {i}'s length")
        if length > MAX_NAME:
            raise ManifestError(f"{what}: name {i} is {length} bytes; the limit is {MAX_NAME}")
        raw = r.take(length, f"name {i}")
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ManifestError(f"{what}: name {i} is not UTF-8") from None
    if r.left():
        raise ManifestError(f"{what} has {r.left()} bytes after its last name")
    if len(set(names)) != len(names):
        raise ManifestError(f"{what} names an array twice")
    return dict(zip(names, arrays, strict=True))


def _array(r: _Reader, i: int) -> np.ndarray:
    where = f"array {i}"
    first = r.unpack("I", f"{where}'s header")
    if first in (V2, V3):
        stype = r.unpack("i", f"{where}'s storage type")
        if stype != 0:
            kind = STORAGE.get(stype, f"unknown ({stype})")
            raise ManifestError(
                f"{r.what}: {where} has {kind} storage; only dense arrays are supported"
            )
        ndim = r.unpack("i" if first == V3 else "I", f"{where}'s ndim")
        dim_fmt = "q"
    elif first == V1:
        ndim, dim_fmt = r.unpack("I", f"{where}'s ndim"), "I"
    else:  # legacy: no magic, the first field is the ndim
        ndim, dim_fmt = first, "I"
    if not 1 <= ndim <= MAX_NDIM:
        raise ManifestError(f"{r.what}: {where} has {ndim} dimensions (1..{MAX_NDIM} are read)")
    dims = [r.unpack(dim_fmt, f"{where}'s dimension {d}") for d in range(ndim)]
    if any(d < 0 for d in dims):
        raise ManifestError(f"{r.what}: {where} has a negative dimension {tuple(dims)}")
    count = math.prod(dims)
    if count > MAX_VALUES:
        raise ManifestError(f"{r.what}: {where} has shape {tuple(dims)}, over {MAX_VALUES} values")
    r.unpack("i", f"{where}'s device type")
    r.unpack("i", f"{where}'s device id")
    flag = r.unpack("i", f"{where}'s dtype")
    dtype = FLOATS.get(flag)
    if dtype is None:
        name = DTYPES.get(flag, "unknown")
        raise ManifestError(
            f"{r.what}: {where} has dtype flag {flag} ({name}); weights must be float16/32/64"
        )
    raw = r.take(count * dtype.itemsize, f"{where}'s {count} values")
    return np.frombuffer(raw, dtype).astype(np.float64).reshape(dims)


def read_symbol(data: bytes, what: str = "mx-mod-symbol.json") -> dict[str, Any]:
    """The symbol graph as ``{"nodes": [...], "heads": [...]}``, each node a dict with ``op``,
    ``name``, ``inputs`` (indices of earlier nodes) and ``attrs``: checked to be a DAG in
    topological order, as MXNet writes it."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise ManifestError(f"{what} has no list of nodes")
    raw_nodes = doc["nodes"]
    if not 0 < len(raw_nodes) <= MAX_NODES:
        raise ManifestError(f"{what} has {len(raw_nodes)} nodes (1..{MAX_NODES} are read)")
    nodes = []
    for i, node in enumerate(raw_nodes):
        if not isinstance(node, dict):
            raise ManifestError(f"{what}: node {i} is not an object")
        op, name = node.get("op"), node.get("name")
        if not isinstance(op, str) or not isinstance(name, str):
            raise ManifestError(f"{what}: node {i} needs a string op and name")
        attrs = node.get("attrs", node.get("attr", node.get("param", {})))
        if not isinstance(attrs, dict):
            raise ManifestError(f"{what}: node {i} ({name}) has attributes that are not an object")
        inputs = [_entry(e, i, what, f"node {i}'s input") for e in node.get("inputs", [])]
        nodes.append({"op": op, "name": name, "inputs": inputs, "attrs": attrs})
    heads_raw = doc.get("heads")
    if not isinstance(heads_raw, list) or not heads_raw:
        raise ManifestError(f"{what} has no heads (outputs)")
    heads = [_entry(e, len(nodes), what, "a head") for e in heads_raw]
    return {"nodes": nodes, "heads": heads}


def _entry(e: Any, before: int, what: str, field: str) -> int:
    """A node entry ``[node, output, version]``: the node's index, which must be earlier."""
    if (
        not isinstance(e, list)
        or not e
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in e)
    ):
        raise ManifestError(f"{what}: {field} {e!r} is not a node entry")
    if not 0 <= e[0] < before:
        raise ManifestError(f"{what}: {field} points at node {e[0]}, not an earlier node")
    if len(e) > 1 and e[1] != 0:
        raise ManifestError(f"{what}: {field} takes output {e[1]}; every op here has one")
    return int(e[0])


def shape_attr(attrs: dict[str, Any]) -> tuple[int, ...] | None:
    """A variable's declared ``__shape__`` ("(10, 1)"), or None when it declares none."""
    raw = attrs.get("__shape__")
    if raw is None:
        return None
    text = str(raw).strip()
    if not (text.startswith("(") and text.endswith(")")) or len(text) > 128:
        raise ManifestError(f"a __shape__ of {text[:64]!r} is not a shape")
    try:
        return tuple(int(p) for p in text[1:-1].split(",") if p.strip())
    except ValueError:
        raise ManifestError(f"a __shape__ of {text[:64]!r} is not a shape") from None
