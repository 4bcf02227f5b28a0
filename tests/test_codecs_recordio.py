"""``application/x-recordio-protobuf`` (``mmhost/codecs/recordio.py``), with the SageMaker
Python SDK's own RecordIO writer and reader as the client: dense and sparse rows, many
records, over a real server; malformed framing and protobuf each a clear 400."""

from __future__ import annotations

import io
import json
import struct

import httpx
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import runtime_client
from linear_learner import expected, random_model, save
from sagemaker.amazon.common import (
    RecordDeserializer,
    RecordSerializer,
    write_numpy_to_dense_tensor,
    write_spmatrix_to_sparse_tensor,
)

from mmhost.codecs import media, outputs, recordio
from mmhost.codecs.inputs import decode
from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import ValidationError
from mmhost.types import Prediction

RECORDIO = "application/x-recordio-protobuf"
LIMITS = DecodeLimits(max_rows=1000, max_values=100_000)


def dense(x: np.ndarray) -> bytes:
    return RecordSerializer().serialize(x).getvalue()


def sparse(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    write_spmatrix_to_sparse_tensor(buf, sp.csr_matrix(x))
    return buf.getvalue()


def test_dense_records_are_rows():
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_array_equal(decode(dense(x), media.RECORDIO, LIMITS), x)


def test_sparse_records_are_rows_with_zeros_elsewhere():
    x = np.zeros((4, 9), np.float32)
    x[0, 3], x[1, 8], x[3, 0] = 1.5, -2.0, 7.0  # row 2 has no values at all
    np.testing.assert_array_equal(decode(sparse(x), media.RECORDIO, LIMITS), x)


def test_float64_and_int32_tensors():
    x64 = np.random.default_rng(1).normal(size=(3, 4))
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, x64)
    got = decode(buf.getvalue(), media.RECORDIO, LIMITS)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x64)
    # the SDK writes no int32 tensors: a record of one, packed as protobuf packs int32s
    ints = [-3, 0, 2**31 - 1, -(2**31)]
    packed = b"".join(_varint(v & 0xFFFFFFFFFFFFFFFF) for v in ints)
    got = decode(_record(packed, kind=7), media.RECORDIO, LIMITS)
    np.testing.assert_array_equal(got, np.array([ints], np.float32))


def test_answers_are_read_by_the_sdk_deserializer():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], np.float32)
    body = outputs.encode(Prediction(scores, "multiclass_classifier", [0, 1, 2]), media.RECORDIO)
    records = RecordDeserializer().deserialize(io.BytesIO(body), RECORDIO)
    assert len(records) == 2
    np.testing.assert_array_equal(records[0].label["score"].float32_tensor.values, scores[0])
    assert records[0].label["predicted_label"].float32_tensor.values[0] == 1.0
    assert records[1].label["predicted_label"].float32_tensor.values[0] == 0.0
    text = outputs.encode(Prediction(scores[:, :1], "regressor", None), media.RECORDIO)
    (first, _) = RecordDeserializer().deserialize(io.BytesIO(text), RECORDIO)
    assert list(first.label) == ["score"]
    named = outputs.encode(
        Prediction(np.array([0.9], np.float32), "binary_classifier", ["no", "yes"]),
        media.RECORDIO,
    )
    (rec,) = RecordDeserializer().deserialize(io.BytesIO(named), RECORDIO)
    assert list(rec.label["predicted_label"].bytes.value) == [b"yes"]


def test_over_a_real_server_with_boto3(serve, store):
    d = 12
    w, b = random_model(d, 3, seed=4)
    save(store / "mc" / "model.tar.gz", w, b, "multiclass_classifier")
    wr, br = random_model(d, 1, seed=5)
    save(store / "reg" / "model.tar.gz", wr, br, "regressor")
    server = serve(store=str(store))
    client = runtime_client(server.url)
    x = np.random.default_rng(2).normal(size=(300, d)).astype(np.float32)
    x[x < 0.3] = 0.0
    for body in (dense(x), sparse(x)):
        r = client.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel="mc/model.tar.gz",
            Body=body,
            ContentType=RECORDIO,
            Accept=RECORDIO,
        )
        assert r["ContentType"] == RECORDIO
        records = RecordDeserializer().deserialize(r["Body"], RECORDIO)
        want = expected(x, w, b, "multiclass_classifier")
        got = np.array([list(rec.label["score"].float32_tensor.values) for rec in records])
        np.testing.assert_allclose(got, want, atol=1e-5)
        labels = [rec.label["predicted_label"].float32_tensor.values[0] for rec in records]
        assert labels == want.argmax(axis=1).tolist()
    r = client.invoke_endpoint(  # RecordIO in, JSON out
        EndpointName="mmhost",
        TargetModel="reg/model.tar.gz",
        Body=dense(x[:5]),
        ContentType=RECORDIO,
        Accept="application/json",
    )
    preds = json.loads(r["Body"].read())["predictions"]
    np.testing.assert_allclose(
        [p["score"] for p in preds], expected(x[:5], wr, br, "regressor"), atol=1e-5
    )


def _frame(payload: bytes, magic: int = recordio.MAGIC, flag: int = 0) -> bytes:
    pad = b"\0" * (-len(payload) % 4)
    return struct.pack("<II", magic, flag << 29 | len(payload)) + payload + pad


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _record(
    values: bytes, keys: list[int] | None = None, shape: list[int] | None = None, kind: int = 2
) -> bytes:
    """A Record whose features["values"] is a tensor (``kind`` 2: float32, 7: int32),
    written field by field."""
    tensor = _field(1, values)
    if keys is not None:
        tensor += _field(2, b"".join(map(_varint, keys)))
    if shape is not None:
        tensor += _field(3, b"".join(map(_varint, shape)))
    entry = _field(1, b"values") + _field(2, _field(kind, tensor))
    return _frame(_field(1, entry))


GOOD = dense(np.ones((1, 3), np.float32))
PAYLOAD = GOOD[8 : 8 + struct.unpack("<I", GOOD[4:8])[0]]
ONE = np.float32(1).tobytes()
MALFORMED = {
    "a wrong magic": (_frame(PAYLOAD, magic=0x12345678), "RecordIO magic 0x12345678"),
    "a header cut short": (GOOD[:6], "too few for a RecordIO header"),
    "a length past the body": (GOOD[:4] + struct.pack("<I", 1000) + GOOD[8:], "declares 1000"),
    "a split record": (_frame(PAYLOAD, flag=1), "split in parts"),
    "a truncated varint": (_frame(b"\x0a\xff\xff"), "truncated or overlong varint"),
    "a field longer than the record": (_frame(b"\x0a\x7f"), "declares 127 bytes"),
    "a group wire type": (_frame(b"\x0b"), "wire type 3"),
    "no values tensor": (_frame(b""), 'no features["values"]'),
    "values not whole floats": (_record(b"abc"), "not a whole number of float32"),
    "rows of different widths": (
        GOOD + dense(np.ones((1, 4), np.float32)),
        "record 1 has 4 features; record 0 has 3",
    ),
    "a sparse key past its width": (_record(ONE, [9], [3]), "key 9 is past the width 3"),
    "sparse keys and values disagree": (_record(ONE, [0, 1], [3]), "2 keys for 1 values"),
    "a sparse width past the limits": (
        _record(ONE, [0], [2**32 - 1]),
        "a sparse row of width 4294967295",
    ),
    "a sparse row with no shape": (_record(ONE, [0]), "needs a 1-D shape"),
    "a dense shape that is not one row": (_record(ONE * 4, None, [2, 2]), "shape [2, 2]"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_bodies_are_400s_saying_what(case):
    body, why = MALFORMED[case]
    with pytest.raises(ValidationError) as info:
        decode(body, media.RECORDIO, LIMITS)
    assert why in info.value.message, info.value.message


def test_too_many_records_stop_at_the_row_limit():
    body = dense(np.ones((1001, 2), np.float32))
    with pytest.raises(ValidationError, match="1001 rows in the RecordIO body"):
        decode(body, media.RECORDIO, LIMITS)


def test_a_malformed_body_over_http_is_a_400_and_the_server_keeps_serving(serve, store):
    w, b = random_model(3, 1, seed=0)
    save(store / "m" / "model.tar.gz", w, b, "regressor")
    server = serve(store=str(store))
    r = httpx.post(
        server.url + "/invocations",
        content=MALFORMED["a wrong magic"][0],
        headers={"Content-Type": RECORDIO, "X-Amzn-SageMaker-Target-Model": "m/model.tar.gz"},
    )
    assert r.status_code == 400 and "RecordIO magic" in r.text
    r = httpx.post(
        server.url + "/invocations",
        content=GOOD,
        headers={"Content-Type": RECORDIO, "X-Amzn-SageMaker-Target-Model": "m/model.tar.gz"},
    )
    assert r.status_code == 200, r.text
    assert httpx.get(server.url + "/ping").status_code == 200


def test_uniform_records_and_mixed_ones_decode_alike():
    """Dense SDK records all laid out alike take the strided path; one sparse record among
    them sends the body down the record-by-record path: the same rows either way."""
    x = np.random.default_rng(3).normal(size=(6, 5)).astype(np.float32)
    x[2, 1] = 0.0
    fast = decode(dense(x), media.RECORDIO, LIMITS)
    slow = decode(dense(x[:3]) + sparse(x[3:4]) + dense(x[4:]), media.RECORDIO, LIMITS)
    np.testing.assert_array_equal(fast, x)
    np.testing.assert_array_equal(slow, x)
