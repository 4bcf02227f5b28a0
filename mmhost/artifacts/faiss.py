"""A faiss flat index (``faiss.write_index`` / ``serialize_index``), read without faiss.

The layout (faiss's ``index_write.cpp``), little-endian: a fourcc naming the index type
(``IxF2`` IndexFlatL2, ``IxFI`` IndexFlatIP, ``IxFl`` IndexFlat of another metric), the index
header — ``i32`` d, ``i64`` ntotal, two ``i64`` unused fields, a ``u8`` is_trained, an ``i32``
metric type (0 inner product, 1 L2, others with an ``f32`` metric argument after) — then the
stored vectors as a ``u64`` count of floats and the floats, ntotal x d of them. Every field is
checked against the bytes actually there (and the caps) before anything is allocated: the file
is untrusted. Approximate indexes (IVF, PQ, HNSW) are refused by name: their answers are not an
exact search, which is what mmhost serves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from mmhost.artifacts.manifest import ManifestError

METRIC_INNER_PRODUCT, METRIC_L2 = 0, 1
FLAT = {b"IxF2": "IndexFlatL2", b"IxFI": "IndexFlatIP", b"IxFl": "IndexFlat"}
# what other indexes are called, to say which one was found
OTHERS = {
    b"IwFl": "IndexIVFFlat",
    b"IwPQ": "IndexIVFPQ",
    b"IwSq": "IndexIVFScalarQuantizer",
    b"IxPq": "IndexPQ",
    b"IxSQ": "IndexScalarQuantizer",
    b"IHNf": "IndexHNSWFlat",
    b"IxMp": "IndexIDMap",
    b"IxM2": "IndexIDMap2",
    b"IxLS": "IndexLSH",
}
MAX_DIM = 65_536
_HEADER = struct.Struct("<iqqqBi")


@dataclass(frozen=True)
class FlatIndex:
    """The exact search a flat index holds: ``vectors`` (n, d) float32 under ``metric``."""

    metric: str  # "l2" or "inner_product"
    vectors: np.ndarray  # (n, d) float32

    @property
    def d(self) -> int:
        return int(self.vectors.shape[1])


def read_flat_index(data: bytes, max_values: int, what: str = "the faiss index") -> FlatIndex:
    """The vectors and metric of a serialized flat index (ManifestError names what is off)."""
    fourcc = bytes(data[:4])
    if fourcc not in FLAT:
        name = OTHERS.get(fourcc)
        if name is not None:
            raise ManifestError(
                f"{what} is an {name}; only flat (exact) indexes are served, since an "
                "approximate index's answers cannot be reproduced exactly"
            )
        raise ManifestError(f"{what} is not a faiss index mmhost reads (it starts {fourcc!r})")
    if len(data) < 4 + _HEADER.size:
        raise ManifestError(f"{what} is truncated inside its header ({len(data)} bytes)")
    d, ntotal, _, _, _trained, metric = _HEADER.unpack_from(data, 4)
    pos = 4 + _HEADER.size
    if metric > 1:
        pos += 4  # the metric's argument
    if metric not in (METRIC_INNER_PRODUCT, METRIC_L2):
        raise ManifestError(
            f"{what} uses faiss metric type {metric}; L2 (1) and inner product (0) are served"
        )
    if not 0 < d <= MAX_DIM:
        raise ManifestError(f"{what} declares dimension {d} (1..{MAX_DIM} are read)")
    if ntotal < 0 or ntotal * d > max_values:
        raise ManifestError(
            f"{what} declares {ntotal} vectors of dimension {d}; at most {max_values} values "
            "are read"
        )
    if len(data) < pos + 8:
        raise ManifestError(f"{what} is truncated before its vectors")
    (count,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    if count != ntotal * d:
        raise ManifestError(
            f"{what} stores {count} floats; {ntotal} vectors of dimension {d} are {ntotal * d}"
        )
    need = count * 4
    if len(data) - pos != need:
        have = len(data) - pos
        cut = "is truncated" if have < need else f"has {have - need} bytes after its vectors"
        raise ManifestError(f"{what} {cut}: {need} bytes of vectors, {have} there")
    vectors = np.frombuffer(data, "<f4", count, pos).reshape(ntotal, d).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise ManifestError(f"{what} holds NaN or infinite coordinates")
    return FlatIndex("l2" if metric == METRIC_L2 else "inner_product", vectors)
