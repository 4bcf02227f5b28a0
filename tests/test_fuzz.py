"""Hypothesis fuzz pass over every codec entry point and the artifact reader (no HTTP).

Property: each call returns, or raises an ``MmhostError`` with a 4xx status (a request's
ValidationError / 415 / 406, an artifact's BadArtifact 424); never any other exception, and
nothing is written to the file system. Derandomized, so CI tries the same cases every run.

Cases tried per run: 7,600 (the sum of the ``max_examples`` below; about 30 s on 2 cores).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pytest
import safetensors.numpy
import torch
from conftest import house_pipeline
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.lib import format as npy_format
from sklearn.neighbors import KNeighborsClassifier

from mmhost.artifacts import Column
from mmhost.cache.loader import load_model
from mmhost.codecs import documents, encoder_for, inputs, media, outputs, table, v2
from mmhost.codecs.limits import DecodeLimits
from mmhost.convert import from_sklearn
from mmhost.errors import MmhostError
from mmhost.store.base import Source
from mmhost.tools.houses import COLUMNS, houses
from mmhost.types import Prediction

_CASES: list[int] = []  # max_examples of each fuzz test, for the docstring's total


def fuzz(n: int) -> settings:
    _CASES.append(n)
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- the property --------------------------------------------------------------------------
_WRITE_EVENTS = {
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.chmod",
    "os.chown",
    "os.utime",
    "shutil.copyfile",
    "shutil.rmtree",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_watching: set[int] = set()  # ids of threads whose file-system writes are recorded
_writes: list[tuple[str, tuple[Any, ...]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if threading.get_ident() not in _watching:
        return
    if event == "open":
        _path, mode, flags = args
        if (isinstance(mode, str) and set(mode) & set("wax+")) or (flags or 0) & _WRITE_FLAGS:
            _writes.append((event, args))
    elif event in _WRITE_EVENTS:
        _writes.append((event, args))


sys.addaudithook(_audit)  # audit hooks can't be removed: it records only inside _no_writes


@contextmanager
def _no_writes() -> Iterator[None]:
    _writes.clear()
    _watching.add(threading.get_ident())
    try:
        yield
    finally:
        _watching.discard(threading.get_ident())
    assert not _writes, f"a reader wrote to the file system: {_writes[:3]}"


def only_4xx(call: Callable[[], Any]) -> Any:
    """``call()``'s result, or None when it raised a 4xx MmhostError; anything else fails."""
    with _no_writes():
        try:
            return call()
        except MmhostError as exc:
            assert 400 <= exc.status < 500, f"{type(exc).__name__} {exc.status}: {exc.message}"
            assert exc.message and len(exc.message) < 2000, exc.message[:200]
            return None


@pytest.fixture(autouse=True)
def _in_a_temp_folder(tmp_path, monkeypatch):
    """Relative paths land in an empty folder that must stay empty."""
    monkeypatch.chdir(tmp_path)
    yield
    assert list(tmp_path.iterdir()) == []


# --- values requests hold --------------------------------------------------------------------
HUGE_INTS = st.sampled_from([2**63, 10**39, 2**1024, -(10**400)])  # past int64, float32, float64
CELLS = st.one_of(
    st.integers(),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["y", "n", "", "nan", "NA", "inf", "-inf", "1e39", "1992", " 3.0 ", "q"]),
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ROW = st.lists(CELLS, min_size=8, max_size=8) | st.lists(CELLS, max_size=10)  # 8: the houses
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
ROW_DOCS = st.one_of(
    st.lists(ROW, max_size=20),
    st.builds(
        lambda rows, key: {key: rows},
        st.lists(ROW, max_size=3),
        st.sampled_from(["instances", "inputs", "features", "data"]),
    ),
    st.builds(lambda row: {"instances": [{"features": row}]}, st.lists(CELLS, max_size=9)),
    JSON_VALUES,
)


ART = from_sklearn(house_pipeline(), COLUMNS)
HOUSE = encoder_for(tuple(ART.inputs))  # 6 numbers, then deck and front_porch: 'y' / 'n'
NUMERIC = encoder_for((Column("a"), Column("b", missing=2.5), Column("c")))


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, default=str).encode()


# --- codecs ----------------------------------------------------------------------------------
@fuzz(300)
@given(body=st.binary(max_size=300), media_type=st.sampled_from(media.REQUEST_TYPES))
def test_decode_random_bytes(body, media_type):
    only_4xx(lambda: inputs.decode(body, media_type))


@fuzz(300)
@given(doc=ROW_DOCS, lines=st.booleans())
def test_decode_json_and_jsonlines_documents(doc, lines):
    if lines and isinstance(doc, list):
        body = b"\n".join(_dumps(x) for x in doc)
        only_4xx(lambda: inputs.decode(body, media.JSONLINES))
    else:
        only_4xx(lambda: inputs.decode(_dumps(doc), media.JSON))


@fuzz(200)
@given(
    rows=st.lists(
        st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=8), max_size=9),
        max_size=20,
    ),
    quote=st.booleans(),
)
def test_decode_csv_text(rows, quote):
    q = '"' if quote else ""
    body = "\n".join(",".join(f"{q}{c}{q}" for c in r) for r in rows).encode()
    only_4xx(lambda: inputs.decode(body, media.CSV))


NPY_DTYPES = ["<f8", "<f4", "|b1", "<i8", "|u1", "<U0", "|S0", "|V0", "<U3", "|S2", "|O", "<c8"]


# numpy's notice that it re-parsed a Python 2 style header: the header is then read (or refused)
@pytest.mark.filterwarnings("ignore:Reading `.npy` or `.npz` file required additional header")
@fuzz(300)
@given(
    version=st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]),
    descr=st.sampled_from(NPY_DTYPES) | st.text(max_size=6),
    shape=st.lists(st.integers(min_value=-2, max_value=10**12), max_size=4)
    | st.sampled_from(["()", "(1,", "[]", "None"]),
    fortran=st.sampled_from([False, True, "x"]),
    payload=st.binary(max_size=200),
    header_len_delta=st.integers(min_value=-4, max_value=4),
)
def test_decode_npy_with_lying_headers(version, descr, shape, fortran, payload, header_len_delta):
    shape_text = shape if isinstance(shape, str) else repr(tuple(shape))
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape_text}, }}"
    header = header.encode("latin-1", "replace") + b" " * 4 + b"\n"
    size = struct.pack("<H" if version == b"\x01\x00" else "<I", len(header) + header_len_delta)
    body = b"\x93NUMPY" + version + size + header + payload
    only_4xx(lambda: inputs.decode(body, media.NPY))


# a dimension far past anything a body could hold, or 0 (which makes every other one "free")
HUGE_DIMS = st.sampled_from([0, 1, 8, 2**31, 2**62, 2**63 - 1]) | st.integers(0, 2**64)


@fuzz(200)
@given(
    shape=st.lists(HUGE_DIMS, min_size=1, max_size=3),
    descr=st.sampled_from(["<f4", "<f8", "|b1", "<U1", "<U0", "|S1", "|u1"]),
    payload=st.binary(max_size=64),
)
def test_decode_npy_declaring_shapes_far_past_the_body(shape, descr, payload):
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    npy_format.write_array_header_1_0(buf, header)
    rows = only_4xx(lambda: inputs.decode(buf.getvalue() + payload, media.NPY))
    if rows is not None:
        assert len(rows) <= 100_000  # whatever decodes, decodes within the row limit
        only_4xx(lambda: HOUSE.encode(rows))


@fuzz(300)
@given(
    shapes=st.lists(st.lists(HUGE_DIMS, min_size=1, max_size=4), min_size=1, max_size=3),
    datatype=st.sampled_from(["BYTES", "FP32", "INT64", "BOOL", "FP16"]),
    binary=st.booleans(),
    data=st.lists(st.integers(0, 9), max_size=8),
    route=st.sampled_from(["infer", "invocations"]),
)
def test_v2_tensors_declaring_shapes_far_past_the_body(shapes, datatype, binary, data, route):
    tensors = []
    for i, shape in enumerate(shapes):
        t: dict[str, Any] = {"name": f"x{i}", "shape": shape, "datatype": datatype}
        if binary:
            t["parameters"] = {"binary_data_size": len(data)}
        else:
            t["data"] = data
        tensors.append(t)
    head = _dumps({"inputs": tensors})
    tail = bytes(data) * len(shapes) if binary else b""
    if route == "infer":
        got = only_4xx(lambda: v2.parse_request(head + tail, str(len(head)) if binary else None))
        rows = None if got is None else got[1]
    else:  # the same document through the SageMaker routes' JSON codec (no binary part)
        rows = only_4xx(lambda: inputs.decode(head, media.JSON))
    if rows is not None:
        only_4xx(lambda: HOUSE.encode(rows))


@fuzz(150)
@given(
    arr=st.sampled_from(
        [
            np.zeros((2, 8)),
            np.array([["1992", "1531", "6", "3.0", "0.68", "1", "y", "n"]]),
            np.array([[b"1", b"\xff"]]),
            np.zeros((1, 8), np.float16),
            np.zeros(8, np.int8),
        ]
    ),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
)
def test_decode_mutated_npy(arr, cut, flips):
    buf = io.BytesIO()
    np.save(buf, arr)
    body = bytearray(buf.getvalue()[: max(cut, 8)])
    for at, byte in flips:
        if at < len(body):
            body[at] = byte
    rows = only_4xx(lambda: inputs.decode(bytes(body), media.NPY))
    if rows is not None:
        only_4xx(lambda: HOUSE.encode(rows))


def _sdk_recordio(dense: bool) -> bytes:
    import scipy.sparse as sp
    from sagemaker.amazon.common import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

    x = np.array([[0.0, 1.5, 0.0, 2.0], [3.0, 0.0, 0.0, 0.0], [0.0] * 4], np.float32)
    buf = io.BytesIO()
    if dense:
        write_numpy_to_dense_tensor(buf, x)
    else:
        write_spmatrix_to_sparse_tensor(buf, sp.csr_matrix(x))
    return buf.getvalue()


RECORDIO_BODIES = {"dense": _sdk_recordio(True), "sparse": _sdk_recordio(False)}
SMALL = DecodeLimits(max_rows=50, max_values=2_000)


@fuzz(400)
@given(
    kind=st.sampled_from(sorted(RECORDIO_BODIES)),
    cut=st.none() | st.integers(min_value=0, max_value=200),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    insert=st.binary(max_size=12),
    repeat=st.integers(min_value=1, max_value=30),
)
def test_decode_mutated_recordio(kind, cut, flips, insert, repeat):
    """The SDK's RecordIO bodies, repeated, cut, flipped and grown: lengths, varints, keys and
    shapes that lie all end in a 400, and what decodes stays within the limits."""
    body = _mutate(RECORDIO_BODIES[kind] * repeat, cut, flips, insert)
    rows = only_4xx(lambda: inputs.decode(body, media.RECORDIO, SMALL))
    if rows is not None:
        assert rows.shape[0] <= SMALL.max_rows and rows.size <= SMALL.max_values


@fuzz(300)
@given(
    content_type=st.none() | st.text(max_size=40) | st.sampled_from(["text/csv; x", ";;", "*/*"]),
    accept=st.none()
    | st.text(max_size=60)
    | st.lists(
        st.tuples(
            st.sampled_from(["text/csv", "*/*", "a/b", "application/json", "text/*", ""]),
            st.text(alphabet="q=0.19e-abc ;", max_size=8),
        ),
        max_size=4,
    ).map(lambda parts: ", ".join(f"{t};{p}" for t, p in parts)),
    body=st.binary(max_size=8),
)
def test_media_types(content_type, accept, body):
    only_4xx(lambda: media.request_type(content_type, body))
    only_4xx(lambda: media.response_type(accept))


def test_an_endless_accept_header_is_refused_without_parsing():
    with pytest.raises(MmhostError) as info:
        media.response_type("a/b;q=0.5," * 10_000)
    assert info.value.status == 400 and "the limit is 4096" in info.value.message


@fuzz(300)
@given(
    data=st.binary(max_size=200)
    | st.text(max_size=200)
    | st.sampled_from(
        [
            b"[" + b"9" * 5000 + b"]",  # past Python's int parsing limit
            b'["\\ud800"]',  # half a UTF-16 pair
            '{"\\uDFFF": 1}',
            b'["\\ud83d\\ude00"]',  # a whole pair: fine
            b"[" * 100_000,
        ]
    )
)
def test_parse_json_random_input(data):
    doc = only_4xx(lambda: documents.parse_json(data, "the body"))
    json.dumps(doc, ensure_ascii=False).encode()  # whatever it holds can be sent back as UTF-8


V2_TYPES = [*v2.DTYPES, "BYTES", "FP8", "", 3]
TENSORS = st.fixed_dictionaries(
    {
        "name": st.text(min_size=0, max_size=6) | st.sampled_from(COLUMNS) | st.integers(),
        "shape": st.lists(st.integers(min_value=-1, max_value=10**15), max_size=5)
        | st.sampled_from([[1, 8], [2, 8], [1], "x"]),
        "datatype": st.sampled_from(V2_TYPES),
    },
    optional={
        "data": st.lists(CELLS, max_size=17) | st.lists(st.lists(CELLS, max_size=8), max_size=3),
        "parameters": st.fixed_dictionaries(
            {"binary_data_size": st.integers(min_value=-1, max_value=40) | st.text(max_size=2)}
        )
        | JSON_VALUES,
    },
)


@fuzz(400)
@example(  # an int past float64 in FP64 data
    tensors=[{"name": "x", "shape": [1], "datatype": "FP64", "data": [2**1024]}],
    binary=b"",
    header_length=None,
    extra={},
)
@given(
    tensors=st.lists(TENSORS, max_size=4) | JSON_VALUES,
    binary=st.binary(max_size=64),
    header_length=st.none()
    | st.integers(min_value=-5, max_value=600).map(str)
    | st.text(max_size=4),
    extra=st.dictionaries(st.sampled_from(["id", "outputs", "parameters"]), JSON_VALUES),
)
def test_v2_requests(tensors, binary, header_length, extra):
    head = _dumps({"inputs": tensors, **extra})
    if header_length is None:
        binary = b""
    body = head + binary
    got = only_4xx(lambda: v2.parse_request(body, header_length))
    if got is not None:
        only_4xx(lambda: HOUSE.encode(got[1]))


@fuzz(200)
@given(
    scores=st.integers(min_value=0, max_value=5).flatmap(
        lambda n: st.one_of(
            arrays(np.float32, (n,), elements=st.floats(width=32)),
            arrays(np.float32, (n, 3), elements=st.floats(width=32)),
        )
    ),
    media_type=st.sampled_from(media.RESPONSE_TYPES),
)
def test_response_encoders_never_write_what_json_cannot_hold(scores, media_type):
    task, classes = (
        ("multiclass_classifier", ["a", "b", "c"]) if scores.ndim == 2 else ("regressor", None)
    )
    body = only_4xx(lambda: outputs.encode(Prediction(scores, task, classes), media_type))
    if body is not None and media_type not in (media.CSV, media.RECORDIO):
        for line in body.decode().splitlines():
            json.loads(line, parse_constant=_no_constants)
    tensors = only_4xx(lambda: v2.outputs(scores, task, classes))
    if tensors is not None:
        json.dumps(tensors, allow_nan=False)


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


# --- large bodies: the C++ encoders against the Python path ----------------------------------
BASE_ROWS = houses(80, 5)[0].tolist()  # past table.MIN_ROWS: a body the C++ encoders take


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What ``call()`` gives: its encoded rows' bytes, or a 4xx error's status and message."""
    with _no_writes():
        try:
            out = call()
        except MmhostError as exc:
            assert 400 <= exc.status < 500, f"{type(exc).__name__} {exc.status}: {exc.message}"
            return ("error", exc.status, exc.message)
    return ("rows", out.shape, out.tobytes())


def _python_path(body: bytes, media_type: str) -> Any:
    with (
        mock.patch.object(table, "wrap_json", _no_body),
        mock.patch.object(table, "wrap", _no_body),
    ):
        return HOUSE.encode(inputs.decode(body, media_type))


def _no_body(*_: Any, **__: Any) -> None:
    return None


MUTATIONS = st.lists(st.tuples(st.integers(0, 79), st.integers(0, 7), CELLS), max_size=3)


@fuzz(300)
@given(
    mutations=MUTATIONS,
    shape=st.sampled_from(["instances", "features", "inputs", "list", "lines", "crlf"]),
    indent=st.sampled_from([None, 1]),
)
def test_large_json_bodies_decode_as_the_python_path(mutations, shape, indent):
    rows = [list(r) for r in BASE_ROWS]
    for i, j, v in mutations:
        rows[i][j] = v
    if shape in ("lines", "crlf"):
        end = "\n" if shape == "lines" else "\r\n"
        body, media_type = (
            end.join(json.dumps(r, default=str) for r in rows).encode(),
            media.JSONLINES,
        )
    else:
        doc: Any = rows
        if shape == "features":
            doc = {"instances": [{"features": r} for r in rows]}
        elif shape != "list":
            doc = {shape: rows}
        body, media_type = json.dumps(doc, default=str, indent=indent).encode(), media.JSON
    fast = _outcome(lambda: HOUSE.encode(inputs.decode(body, media_type)))
    assert fast == _outcome(lambda: _python_path(body, media_type))


@fuzz(200)
@given(
    mutations=st.lists(
        st.tuples(
            st.integers(0, 79),
            st.integers(0, 7),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=6) | CELLS.map(str),
        ),
        max_size=3,
    ),
    end=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
def test_large_csv_bodies_decode_as_the_python_path(mutations, end, bom):
    rows = [[str(v) for v in r] for r in BASE_ROWS]
    for i, j, v in mutations:
        rows[i][j] = v
    body = (b"\xef\xbb\xbf" if bom else b"") + end.join(",".join(r) for r in rows).encode()
    fast = _outcome(lambda: HOUSE.encode(inputs.decode(body, media.CSV)))
    assert fast == _outcome(lambda: _python_path(body, media.CSV))


# --- rows -> the encoded matrix --------------------------------------------------------------
@fuzz(400)
@given(
    rows=st.lists(ROW, min_size=1, max_size=40)
    | st.dictionaries(
        st.sampled_from([*COLUMNS, "zzz"]), st.lists(CELLS, max_size=3) | CELLS, max_size=9
    )
    | CELLS,
    width=st.sampled_from([None, 16, 64]),
)
def test_house_encoder_on_random_rows(rows, width):
    out = only_4xx(lambda: HOUSE.encode(rows, width))
    if out is not None:
        assert out.dtype == np.float32 and bool(np.isfinite(out).all())


@fuzz(200)
@given(
    values=st.lists(
        st.lists(st.floats() | st.integers(-(10**40), 10**40), min_size=3, max_size=3),
        max_size=20,
    ),
    dtype=st.sampled_from([np.float64, np.float32, np.float16, np.int64, object]),
)
def test_numeric_encoder_on_random_arrays(values, dtype):
    try:
        with np.errstate(over="ignore"):  # a float32 array may hold inf: the encoder refuses it
            x = np.array(values, dtype=dtype).reshape(len(values), 3)
    except (OverflowError, ValueError):  # numpy can't hold that value in that dtype
        assume(False)
    out = only_4xx(lambda: NUMERIC.encode(x))
    if out is not None:
        assert out.shape == (len(values), 3) and bool(np.isfinite(out).all())


# --- artifacts: the loader's read side -------------------------------------------------------
class _OneArtifact:
    """A store holding one artifact's bytes under any key."""

    local = True

    def __init__(self, data: bytes) -> None:
        self.data = data

    def version(self, key: str) -> str:
        return "1"

    def fetch(self, key: str) -> Source:
        return Source("1", data=self.data)


def load(data: bytes, max_bytes: int = 1024**2) -> Any:
    """Read ``data`` as the cache's loader does: a composed model, or BadArtifact (424)."""
    return only_4xx(lambda: load_model("fuzz.tar.gz", _OneArtifact(data), None, None, max_bytes))


MANIFEST = ART.manifest()
PARAMS = safetensors.numpy.save(ART.tensors())


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, blob in entries:
            tar.addfile(info, io.BytesIO(blob) if info.isreg() else None)
    return buf.getvalue()


def member(name: str, blob: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    return info, blob


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


GOOD_TAR = tar_bytes(
    [member("mmhost.json", json.dumps(MANIFEST).encode()), member("params.safetensors", PARAMS)],
    tarfile.PAX_FORMAT,
)


def test_the_unmutated_artifact_loads():
    assert load(gz(GOOD_TAR)).model.task == "regressor"


def _mutate(data: bytes, cut: int | None, flips: list[tuple[int, int]], insert: bytes) -> bytes:
    out = bytearray(data if cut is None else data[:cut])
    for at, byte in flips:
        if out:
            out[at % len(out)] = byte
    if insert and out:
        at = flips[0][0] % len(out) if flips else len(out) // 2
        out[at:at] = insert
    return bytes(out)


MUTATIONS = {
    "cut": st.none() | st.integers(min_value=0, max_value=len(GOOD_TAR)),
    "flips": st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    "insert": st.binary(max_size=16),
}


@fuzz(400)
@given(**MUTATIONS, layer=st.sampled_from(["tar.gz", "tar then gzip", "plain tar"]))
def test_mutated_archives(cut, flips, insert, layer):
    """Byte flips, cuts and insertions of a real artifact: in the .tar.gz itself (gzip's CRC
    catches most), or in the tar (gzipped after, or not), so the damage reaches the tar,
    manifest and safetensors parsers."""
    if layer == "tar.gz":
        data = _mutate(gz(GOOD_TAR), cut, flips, insert)
    else:
        data = _mutate(GOOD_TAR, cut, flips, insert)
        data = gz(data) if layer == "tar then gzip" else data
    load(data)


def _linear_learner() -> bytes:
    from linear_learner import model_tar, module_zip, random_model

    w, b = random_model(3, 2, seed=0)
    return model_tar(module_zip(w, b, "multiclass_classifier"))


LL_TAR = _linear_learner()
LL_ZIP = tarfile.open(fileobj=io.BytesIO(LL_TAR)).extractfile("model_algo-1").read()  # type: ignore[union-attr]


def test_the_unmutated_linear_learner_loads():
    assert load(LL_TAR).model.task == "multiclass_classifier"


@fuzz(400)
@given(**MUTATIONS)
def test_mutated_linear_learner_modules(cut, flips, insert):
    """Byte flips, cuts and insertions inside ``model_algo-1`` (the zip, its JSON files and the
    MXNet NDArray list it stores uncompressed), tarred and gzipped again: each load is a
    model or a 424."""
    data = _mutate(LL_ZIP, cut, flips, insert)
    load(gz(tar_bytes([member("model_algo-1", data)], tarfile.PAX_FORMAT)))


def _knn_files() -> dict[str, bytes]:
    """SageMaker's k-NN layout, written with faiss as its training jobs write it."""
    import faiss

    rng = np.random.default_rng(0)
    index = faiss.IndexFlatL2(3)
    index.add(rng.normal(size=(20, 3)).astype(np.float32))
    params = {"k": 3, "predictor_type": "classifier", "dimension_reduction": None}
    return {
        "model_algo-1": faiss.serialize_index(index).tobytes(),
        "model_algo-1.labels": rng.integers(0, 3, 20).astype("<f4").tobytes(),
        "model_algo-1.json": json.dumps(params).encode(),
    }


KNN = _knn_files()
_KNN_ART = from_sklearn(
    KNeighborsClassifier(3, weights="distance").fit(
        np.random.default_rng(1).normal(size=(12, 3)), np.arange(12) % 3
    )
)
KNN_MMHOST = {
    "mmhost.json": json.dumps(_KNN_ART.manifest()).encode(),
    "params.safetensors": safetensors.numpy.save(_KNN_ART.tensors()),
}


def _rcf_files() -> dict[str, bytes]:
    """A small forest trained with AWS's library, as an mmhost/1 rcf artifact."""
    import krcf

    from mmhost.convert import from_rcf

    forest = krcf.RandomCutForest(
        {"dimensions": 2, "shingle_size": 1, "num_trees": 3, "sample_size": 8, "output_after": 1}
    )
    for row in np.random.default_rng(2).normal(size=(30, 2)).tolist():
        forest.update(row)
    art = from_rcf(forest)
    return {
        "mmhost.json": json.dumps(art.manifest()).encode(),
        "params.safetensors": safetensors.numpy.save(art.tensors()),
    }


RCF = _rcf_files()


def _knn_tar(files: dict[str, bytes]) -> bytes:
    return gz(tar_bytes([member(n, b) for n, b in files.items()], tarfile.PAX_FORMAT))


def test_the_unmutated_rcf_forest_loads():
    assert load(_knn_tar(RCF)).model.family == "rcf"


@fuzz(300)
@given(which=st.sampled_from(sorted(RCF)), **MUTATIONS)
def test_mutated_rcf_artifacts(which, cut, flips, insert):
    """Byte flips, cuts and insertions in a forest's manifest or its node arrays: each load is
    a forest (checked: a tree, masses adding up, finite cuts) or a 424."""
    files = dict(RCF)
    files[which] = _mutate(files[which], cut, flips, insert)
    load(_knn_tar(files))


def test_the_unmutated_knn_models_load():
    assert load(_knn_tar(KNN)).model.task == "classifier"
    assert load(_knn_tar(KNN_MMHOST)).model.k == 3


@fuzz(400)
@given(which=st.sampled_from(sorted(KNN)), **MUTATIONS)
def test_mutated_sagemaker_knn_files(which, cut, flips, insert):
    """Byte flips, cuts and insertions in one of the three k-NN files (the faiss index, the
    float32 labels, the params JSON): each load is a model or a 424."""
    files = dict(KNN)
    files[which] = _mutate(files[which], cut, flips, insert)
    load(_knn_tar(files))


@fuzz(200)
@given(which=st.sampled_from(sorted(KNN_MMHOST)), **MUTATIONS)
def test_mutated_mmhost_knn_artifacts(which, cut, flips, insert):
    files = dict(KNN_MMHOST)
    files[which] = _mutate(files[which], cut, flips, insert)
    load(_knn_tar(files))


NAMES = st.sampled_from(
    [
        "mmhost.json",
        "params.safetensors",
        "model/mmhost.json",
        "./params.safetensors",
        "../escape",
        "a/../../escape",
        "/tmp/mmhost-fuzz-abs",
        "model.pkl",
        "model.joblib",
        "a/b/c/d",
        "C:/x",
        "x" * 300,
        "",
    ]
) | st.text(min_size=1, max_size=12)
TYPES = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
        b"Z",
    ]
)
BLOBS = st.sampled_from(
    [json.dumps(MANIFEST).encode(), PARAMS, b"\x80\x04K\x01.", b""]
) | st.binary(max_size=64)


@fuzz(300)
@given(
    entries=st.lists(
        st.tuples(NAMES, TYPES, BLOBS, st.sampled_from(["", "/etc/passwd", "mmhost.json"])),
        max_size=6,
    ),
    keep_good=st.booleans(),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
    compress=st.booleans(),
)
def test_random_tar_members(entries, keep_good, fmt, compress):
    infos = []
    if keep_good:
        infos += [member("mmhost.json", json.dumps(MANIFEST).encode())]
        infos += [member("params.safetensors", PARAMS)]
    for name, kind, blob, link in entries:
        info, blob = member(name, blob)
        info.type = kind
        info.linkname = link
        if not info.isreg():
            info.size = 0
        infos.append((info, blob))
    try:
        raw = tar_bytes(infos, fmt)
    except (ValueError, UnicodeError):  # the format can't hold that name: tarfile's refusal
        assume(False)
    load(gz(raw) if compress else raw)
    assert not os.path.exists("/tmp/mmhost-fuzz-abs")


ST_DTYPES = st.sampled_from(["F64", "F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X"])
ST_ENTRY = st.fixed_dictionaries(
    {
        "dtype": ST_DTYPES | st.integers(),
        "shape": st.lists(st.integers(min_value=-1, max_value=2**62), max_size=3),
        "data_offsets": st.lists(st.integers(min_value=-1, max_value=2**64), max_size=3),
    }
)


@fuzz(300)
@given(
    header=st.dictionaries(
        st.sampled_from(["coef", "intercept", "preprocessing.scale", "preprocessing.shift", "x"]),
        ST_ENTRY | JSON_VALUES,
    ),
    metadata=st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4)) | JSON_VALUES,
    length=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    body=st.binary(max_size=256),
)
def test_safetensors_header_mutations(header, metadata, length, body):
    if metadata is not None:
        header = {**header, "__metadata__": metadata}
    head = json.dumps(header).encode()
    params = struct.pack("<Q", len(head) if length is None else length) + head + body
    raw = tar_bytes(
        [
            member("mmhost.json", json.dumps(MANIFEST).encode()),
            member("params.safetensors", params),
        ],
        tarfile.GNU_FORMAT,
    )
    load(gz(raw))


def _replace_somewhere(doc: Any, path: list[int], value: Any) -> Any:
    """``doc`` with one node (picked by ``path``) replaced by ``value`` (None in a dict: the
    key is dropped)."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    k = keys[path[0] % len(keys)]
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    new = _replace_somewhere(doc[k], path[1:], value)
    if isinstance(out, dict) and new is None:
        del out[k]
    else:
        out[k] = new
    return out


def _load_parts(manifest: Any, tensors: dict[str, np.ndarray]) -> Any:
    params = safetensors.numpy.save({**ART.tensors(), **tensors})
    raw = tar_bytes(
        [
            member("mmhost.json", json.dumps(manifest).encode()),
            member("params.safetensors", params),
        ],
        tarfile.GNU_FORMAT,
    )
    loaded = load(gz(raw))
    if loaded is not None:
        assert bool(np.isfinite(loaded.model.weight).all() and np.isfinite(loaded.model.bias).all())
    return loaded


@fuzz(400)
@given(
    edits=st.lists(
        st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=5), JSON_VALUES),
        min_size=1,
        max_size=3,
    )
)
def test_manifest_mutations(edits):
    """A manifest that lies: shapes, counts, indices and types replaced at random."""
    manifest = MANIFEST
    for path, value in edits:
        manifest = _replace_somewhere(manifest, path, value)
    _load_parts(manifest, {})


@fuzz(150)
@given(
    tensors=st.dictionaries(
        st.sampled_from(["coef", "intercept", "preprocessing.scale", "preprocessing.shift"]),
        st.sampled_from(
            [
                np.zeros((1, 9)),
                np.zeros((2, 10)),
                np.zeros(10),
                np.zeros(1),
                np.full(1, np.inf),
                np.zeros((0, 10)),
                np.zeros((1, 10), np.float32),
                np.zeros((1, 1, 10)),
                np.full((1, 10), 1e300),  # finite in float64, inf once composed in float32
                np.full(10, 1e300),
                np.full(1, -1e300),
            ]
        ),
        min_size=1,
        max_size=2,
    )
)
def test_tensor_mutations(tensors):
    """Parameters whose shapes or values disagree with the manifest."""
    _load_parts(MANIFEST, tensors)


def test_a_manifest_that_would_allocate_gigabytes_is_refused():
    """Categories and classes come from a few kB of JSON; the weight matrix is their product."""
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["inputs"][6]["categories"] = list(range(100_000))
    manifest["inputs"][7]["categories"] = list(range(100_000))
    manifest["task"] = "multiclass_classifier"
    manifest["outputs"] = {"classes": list(range(1000)), "n_outputs": 1000}
    params = {**ART.tensors(), "coef": np.zeros((1000, 10)), "intercept": np.zeros(1000)}
    raw = tar_bytes(
        [
            member("mmhost.json", json.dumps(manifest).encode()),
            member("params.safetensors", safetensors.numpy.save(params)),
        ],
        tarfile.GNU_FORMAT,
    )
    with pytest.raises(MmhostError, match="1000 outputs x 200006 encoded inputs") as info:
        load_model("big.tar.gz", _OneArtifact(gz(raw)), None, None, 64 * 1024**2)
    assert info.value.status == 424


def _small_booster_files() -> dict[str, bytes]:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    bst = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, rng.integers(0, 3, 64)),
        2,
    )
    return {fmt: bytes(bst.save_raw(raw_format=fmt)) for fmt in ("json", "ubj")}


XGB_FILES = _small_booster_files()


def xgb_tar(blob: bytes) -> bytes:
    return gz(tar_bytes([member("xgboost-model", blob)], tarfile.PAX_FORMAT))


@fuzz(300)
@given(fmt=st.sampled_from(sorted(XGB_FILES)), **MUTATIONS)
def test_mutated_xgboost_model_files(fmt, cut, flips, insert):
    """A SageMaker-style model.tar.gz whose xgboost-model is damaged: it loads (then the fused
    op scores rows with it without error: what pack() accepts, the kernels can walk) or fails
    its own load with a 424."""
    loaded = load(xgb_tar(_mutate(XGB_FILES[fmt], cut, flips, insert)))
    if loaded is None:
        return
    from mmhost.families import Families

    fam = Families(torch.device("cpu"))
    slab, slot = fam.place(loaded.model)
    width = loaded.model.num_features
    x = torch.tensor([[0.5, float("nan"), -1.0] * (width // 3 + 1)])[:, :width].contiguous()
    out = fam.forward(slab, x, torch.tensor([slot]))
    assert out.shape == (1, loaded.model.k)


def test_the_docstring_states_the_case_count():
    assert f"Cases tried per run: {sum(_CASES):,}" in (__doc__ or "")
