"""faiss flat indexes read without faiss (``mmhost/artifacts/faiss.py``), against faiss itself
(a dev dependency): the vectors and metric come back exactly; approximate and damaged indexes
are refused saying what they are."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from mmhost.artifacts.faiss import read_flat_index
from mmhost.artifacts.manifest import ManifestError

faiss = pytest.importorskip("faiss")
CAP = 10_000_000


def serialized(index) -> bytes:
    return faiss.serialize_index(index).tobytes()


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
@pytest.mark.parametrize(("n", "d"), [(0, 1), (1, 1), (100, 16), (1000, 512)])
def test_flat_indexes_read_back_exactly(metric, n, d):
    x = np.random.default_rng(n + d).normal(size=(n, d)).astype(np.float32)
    index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    index.add(x)
    got = read_flat_index(serialized(index), CAP)
    assert got.metric == metric and got.d == d
    np.testing.assert_array_equal(got.vectors, x)


def test_an_index_from_write_index_reads_the_same(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    index = faiss.IndexFlatL2(3)
    index.add(x)
    faiss.write_index(index, str(tmp_path / "model_algo-1"))
    got = read_flat_index((tmp_path / "model_algo-1").read_bytes(), CAP)
    np.testing.assert_array_equal(got.vectors, x)


def _approximate() -> dict[str, bytes]:
    x = np.random.default_rng(0).random((700, 4)).astype(np.float32)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(4), 4, 2)
    ivf.train(x)
    pq = faiss.IndexIVFPQ(faiss.IndexFlatL2(4), 4, 2, 2, 4)
    pq.train(x)
    return {
        "IndexIVFFlat": serialized(ivf),
        "IndexIVFPQ": serialized(pq),
        "IndexHNSWFlat": serialized(faiss.IndexHNSWFlat(4, 8)),
    }


@pytest.mark.parametrize("name", ["IndexIVFFlat", "IndexIVFPQ", "IndexHNSWFlat"])
def test_approximate_indexes_are_refused_by_name(name):
    with pytest.raises(ManifestError, match=f"is an {name}; only flat"):
        read_flat_index(_approximate()[name], CAP)


GOOD = faiss.IndexFlatL2(3)
GOOD.add(np.ones((5, 3), np.float32))
RAW = serialized(GOOD)


def _with(offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(RAW)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


DAMAGED = {
    "truncated vectors": (RAW[:-4], "is truncated: 60 bytes of vectors, 56 there"),
    "truncated header": (RAW[:20], "truncated inside its header"),
    "a vector count that lies": (_with(8, "<q", 2**40), "declares 1099511627776 vectors"),
    "a dimension that lies": (_with(4, "<i", -3), "declares dimension -3"),
    "a float count that disagrees": (_with(37, "<Q", 14), "stores 14 floats"),
    "an unknown metric": (_with(33, "<i", 7), "metric type 7"),
    "an unknown index type": (b"XXXX" + RAW[4:], "not a faiss index mmhost reads"),
    "bytes after the vectors": (RAW + b"\0\0\0\0", "has 4 bytes after its vectors"),
}


@pytest.mark.parametrize("case", list(DAMAGED), ids=list(DAMAGED))
def test_damaged_indexes_say_what_is_off(case):
    data, why = DAMAGED[case]
    with pytest.raises(ManifestError) as info:
        read_flat_index(data, CAP)
    assert why in str(info.value), str(info.value)


def test_nan_coordinates_are_refused():
    index = faiss.IndexFlatL2(2)
    index.add(np.array([[np.nan, 0.0]], np.float32))
    with pytest.raises(ManifestError, match="NaN or infinite"):
        read_flat_index(serialized(index), CAP)
