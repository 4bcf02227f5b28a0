"""Large JSON and JSON Lines bodies through the C++ encoder (``codecs/table.py``,
``csrc/json.cpp``): the same encoded rows as the Python path for every body in a shape it
takes, and for every other body (or a bad cell in one) the Python path itself, with its exact
message."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import RTOL_PRICE, house_pipeline, runtime_client

from mmhost.artifacts import Column
from mmhost.codecs import encoder_for, inputs, media, table
from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import ValidationError
from mmhost.tools.houses import houses

LIMITS = DecodeLimits(max_rows=10_000)
SCHEMA = (
    Column("a", "float"),
    Column("b", "float", missing=-1.5),  # an imputer's fill
    Column("c", "float", missing=math.nan),  # passed through as NaN (trees)
    Column("d", "category", ("y", "n", "Zürich", "São Paulo"), missing="n"),
    Column("e", "category", ("red", "blue"), unknown="ignore"),
)


def _rows(n: int, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = [float(rng.normal() * 10.0 ** int(rng.integers(-3, 6))), int(rng.integers(-99, 99))]
        b = None if i % 7 == 0 else float(rng.normal())
        c = None if i % 5 == 0 else [-0.0, 0, 2.5e-3, 1e-300][i % 4]
        d = ["y", "n", "Zürich", "", "None", None, "São Paulo", " NA "][i % 8]
        e = ["red", "blue", "green", None][i % 4]
        out.append([a[i % 2], b, c, d, e])
    return out


def _json(rows: list[list], shape: str = "instances", indent: int | None = None) -> bytes:
    if shape == "instances":
        doc: object = {"instances": rows}
    elif shape == "features":
        doc = {"instances": [{"features": r} for r in rows]}
    elif shape == "inputs":
        doc = {"inputs": rows}
    else:
        doc = rows
    return json.dumps(doc, indent=indent, ensure_ascii=False).encode()


def _lines(rows: list[list], end: str = "\n") -> bytes:
    return end.join(json.dumps(r, ensure_ascii=False) for r in rows).encode() + end.encode()


def _python(enc, body: bytes, media_type: str, dtype=np.float32):
    decoded = inputs.decode(body, media_type, LIMITS)
    rows = decoded.rows() if isinstance(decoded, table.Body) else decoded
    return enc.encode(rows, dtype=dtype)


def _fast(enc, body: bytes, media_type: str, monkeypatch, dtype=np.float32):
    """Encoded by the C++ path, which must take it whole."""
    decoded = inputs.decode(body, media_type, LIMITS)
    assert isinstance(decoded, table.Body)
    monkeypatch.setattr(decoded, "_python", lambda: pytest.fail("took the Python path"))
    return enc.encode(decoded, dtype=dtype)


BODIES = {
    "instances": (_json(_rows(500)), media.JSON),
    "features": (_json(_rows(500), "features"), media.JSON),
    "inputs": (_json(_rows(500), "inputs"), media.JSON),
    "a list of rows": (_json(_rows(500), "list"), media.JSON),
    "pretty-printed": (_json(_rows(300), indent=2), media.JSON),
    "json lines": (_lines(_rows(500)), media.JSONLINES),
    "json lines, CRLF and blank lines": (
        _lines(_rows(200), "\r\n") + b"\n\n" + _lines(_rows(200, 1)),
        media.JSONLINES,
    ),
}


@pytest.mark.parametrize("case", BODIES, ids=list(BODIES))
def test_bodies_in_its_shapes_encode_as_the_python_path(case, monkeypatch):
    body, media_type = BODIES[case]
    enc = encoder_for(SCHEMA)
    for dtype in (np.float32, np.float64):
        want = _python(enc, body, media_type, dtype)
        got = _fast(enc, body, media_type, monkeypatch, dtype)
        np.testing.assert_array_equal(got, want)  # NaN where NaN
        assert np.signbit(got).tolist() == np.signbit(want).tolist()  # JSON's -0 is the int 0


# numbers read as they are walked (at most 15 digits, no exponent) and those left to the
# general parser (16 digits and more, exponents), as JSON spells them
NUMBERS = [
    "0", "-0", "-0.0", "0.5", "-0.001", "123456789012345", "-12345678901234.5",
    "1234567890123456", "0.000000000000001", "0.0000000000000001", "99999999999999.99",
    "4503599627370497", "0.1", "0.30000000000000004", "1e5", "-2.5E-3", "1E+30", "7",
]  # fmt: skip


def test_numbers_walked_are_exactly_the_parsers(monkeypatch):
    enc = encoder_for(SCHEMA[:2] + SCHEMA[4:])  # a, b (filled), e
    rng = np.random.default_rng(3)
    values = NUMBERS * 4 + [
        f"{m}.{f}" if f else str(m)
        for m, f in zip(
            rng.integers(-(10**9), 10**9, 2_000), rng.integers(0, 10**6, 2_000), strict=True
        )
    ]
    body = ("[" + ",".join(f'[{v}, {v}, "red"]' for v in values) + "]").encode()
    got = _fast(enc, body, media.JSON, monkeypatch, np.float64)
    np.testing.assert_array_equal(got, _python(enc, body, media.JSON, np.float64))
    want = [float(json.loads(v)) for v in values]  # as Python reads them (JSON's -0 is 0)
    np.testing.assert_array_equal(got[:, 0], want)
    assert np.signbit(got[:, 0]).tolist() == np.signbit(want).tolist()


def test_compact_rows_of_one_digit_values_encode_as_the_python_path(monkeypatch):
    """Two bytes a value (the fewest JSON allows): the cells outgrow their first room."""
    enc = encoder_for(SCHEMA[:3])
    rows = np.random.default_rng(5).integers(0, 10, (3_000, 3)).tolist()
    body = json.dumps(rows, separators=(",", ":")).encode()
    got = _fast(enc, body, media.JSON, monkeypatch)
    np.testing.assert_array_equal(got, _python(enc, body, media.JSON))
    np.testing.assert_array_equal(got, np.array(rows, np.float32))


def _error(enc, body: bytes, media_type: str = media.JSON) -> str:
    with pytest.raises(ValidationError) as info:
        enc.encode(inputs.decode(body, media_type, LIMITS))
    return info.value.message


def _python_error(enc, body: bytes, media_type: str = media.JSON) -> str:
    with pytest.raises(ValidationError) as info:
        _python(enc, body, media_type)
    return info.value.message


def _with(i: int, j: int, value: object, n: int = 200) -> list[list]:
    rows = _rows(n)
    rows[i][j] = value
    return rows


BAD = {
    "a word in a number": _with(150, 0, "big"),
    "a numeric string that is not a number": _with(150, 1, "1,5"),
    "past float32": _with(150, 0, 1e39),
    "a huge integer": _with(150, 0, 10**400),
    "missing, no fill": _with(150, 0, None),
    "an unknown category": _with(150, 3, "maybe"),
    "a number as a category": _with(150, 3, 7),
    "a list in a cell": _with(150, 0, [1, 2]),
    "a short row": [*_rows(150), [1.0, 2.0], *_rows(50)],
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
@pytest.mark.parametrize("media_type", [media.JSON, media.JSONLINES])
def test_a_bad_cell_is_named_as_the_python_path_names_it(case, media_type):
    enc = encoder_for(SCHEMA)
    rows = BAD[case]
    body = _json(rows) if media_type == media.JSON else _lines(rows)
    message = _error(enc, body, media_type)
    assert message == _python_error(enc, body, media_type)
    assert message.startswith("row 150")


NOT_TAKEN = {
    "an escaped string": _json(_rows(100)).replace(b'"y"', b'"\\u0079"', 1),
    "a byte order mark": b"\xef\xbb\xbf" + _json(_rows(100)),
    "another key": _json(_rows(100))[:-1] + b', "id": 7}',
    "named columns": json.dumps(
        {"instances": [dict(zip("abcde", r, strict=True)) for r in _rows(100)]}
    ).encode(),
    "a leading zero": _json(_with(60, 0, 1.0, 100)).replace(b"[1.0,", b"[01.0,", 1),
    "NaN": _json(_with(60, 0, math.nan, 100)),
    "a trailing comma": _json(_rows(100))[:-2] + b",]}",
    "not UTF-8": _json(_rows(100)).replace("Zürich".encode(), b"Z\xfcrich", 1),
    "a no-break space Python strips": _json(_with(60, 3, "\u00a0NA", 100)),
    "1e-400 (0.0 to Python)": _json(_with(60, 0, 1.0, 100)).replace(b"[1.0,", b"[1e-400,", 1),
    "V2 tensors": json.dumps(
        {"inputs": [{"name": "x", "shape": [100, 5], "datatype": "BYTES", "data": [1] * 500}]}
    ).encode(),
    "true in a number (1.0 to Python)": _json(_with(60, 0, True, 100)),
    "two rows on a line": _lines(_rows(100)).replace(b"\n", b" ", 1),
}


@pytest.mark.parametrize("case", NOT_TAKEN, ids=list(NOT_TAKEN))
def test_bodies_it_does_not_take_go_the_python_way(case):
    body = NOT_TAKEN[case]
    media_type = media.JSONLINES if "line" in case else media.JSON
    enc = encoder_for(SCHEMA)
    try:
        want = _python(enc, body, media_type)
    except ValidationError as exc:
        assert _error(enc, body, media_type) == exc.message
    else:
        np.testing.assert_array_equal(enc.encode(inputs.decode(body, media_type, LIMITS)), want)


def test_a_small_body_and_a_body_past_the_row_limit_take_the_python_path():
    assert isinstance(inputs.decode(_json(_rows(10)), media.JSON, LIMITS), list)
    few = DecodeLimits(max_rows=100)
    assert isinstance(inputs.decode(_json(_rows(101)), media.JSON, few), list)
    assert isinstance(inputs.decode(_json(_rows(100)), media.JSON, few), table.Body)


def test_the_row_count_is_exact_before_the_model_is_known():
    body = _lines(_rows(300)) + b"\n\n\n"
    decoded = inputs.decode(body, media.JSONLINES, LIMITS)
    assert isinstance(decoded, table.Body) and len(decoded) == 300


@pytest.mark.parametrize("content_type", ["application/json", "application/jsonlines"])
def test_large_json_requests_over_boto3_get_scikit_learns_prices(serve, city_store, content_type):
    server = serve(store=str(city_store))
    X, _ = houses(5_000, seed=12)
    rows = X.tolist()
    body = _json(rows) if content_type == "application/json" else _lines(rows)
    reply = runtime_client(server.url).invoke_endpoint(
        EndpointName="mmhost",
        TargetModel="Chicago_IL/Chicago_IL.tar.gz",
        ContentType=content_type,
        Accept="application/json",
        Body=body,
    )
    got = [p["score"] for p in json.loads(reply["Body"].read())["predictions"]]
    np.testing.assert_allclose(got, house_pipeline(0).predict(X), rtol=RTOL_PRICE)
