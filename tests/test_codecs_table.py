"""Large CSV bodies through the C++ encoder (``codecs/table.py``, ``csrc/csv.cpp``): the same
encoded rows as the per-row path for every plain body, and for every other body (or a bad cell
in a plain one) the per-row path itself, with its exact message."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import RTOL_PRICE, house_pipeline, runtime_client

from mmhost.artifacts import Column
from mmhost.codecs import encoder_for, inputs, media, table
from mmhost.codecs.limits import DecodeLimits
from mmhost.convert import from_sklearn
from mmhost.errors import ValidationError
from mmhost.tools.houses import COLUMNS, houses

LIMITS = DecodeLimits(max_rows=10_000)
SCHEMA = (
    Column("a", "float"),
    Column("b", "float", missing=-1.5),  # an imputer's fill
    Column("c", "float", missing=math.nan),  # passed through as NaN (trees)
    Column("d", "category", ("y", "n", "Zürich"), missing="n"),
    Column("e", "category", ("red", "blue"), unknown="ignore"),
)


def _rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = f"{rng.normal() * 10.0 ** int(rng.integers(-3, 6)):.6g}"
        b = "" if i % 7 == 0 else repr(float(rng.normal()))
        c = "NA" if i % 5 == 0 else str(int(rng.integers(-9, 9)))
        d = ["y", "n", "Zürich", "", "None"][i % 5]
        e = ["red", "blue", "green"][i % 3]
        out.append([a, b, c, d, e])
    return out


def _body(rows: list[list[str]], end: str = "\n", pad: str = "") -> bytes:
    return end.join(",".join(pad + v + pad for v in r) for r in rows).encode() + end.encode()


def _per_row(enc, body: bytes, dtype=np.float32):
    return enc.encode(inputs._csv_rows(body, LIMITS), dtype=dtype)


def _fast(enc, body: bytes, monkeypatch, dtype=np.float32):
    """Encoded by the C++ path, which must take it whole (the per-row path would raise)."""
    decoded = inputs.decode(body, media.CSV, LIMITS)
    assert isinstance(decoded, table.Body)
    monkeypatch.setattr(decoded, "_python", lambda: pytest.fail("took the per-row path"))
    return enc.encode(decoded, dtype=dtype)


@pytest.mark.parametrize(
    "end, pad, bom", [("\n", "", b""), ("\r\n", "", b""), ("\n", " ", b"\xef\xbb\xbf")]
)
def test_plain_bodies_encode_as_the_per_row_path(end, pad, bom, monkeypatch):
    enc = encoder_for(SCHEMA)
    body = bom + _body(_rows(500), end, pad)
    want = _per_row(enc, body)
    np.testing.assert_array_equal(_fast(enc, body, monkeypatch), want)  # NaN where NaN
    want64 = _per_row(enc, body, np.float64)
    np.testing.assert_array_equal(_fast(enc, body, monkeypatch, np.float64), want64)


# Numbers at the edges of the one-load shape (-?digits(.digits)?, at most 15 digits, read
# whole from 16 bytes): inside it, just outside it (the general parser takes those), and cells
# whose 16 bytes run past the body's end
EDGE_NUMBERS = [
    "0", "-0", "007", "-007.500", "1.", ".5", "-.5", "1.5e3", "1E-7",
    "123456789012345", "-123456789012345", "1234567890123456", "12345678901234.5",
    "0.000000000000001", "-9.99999999999999", "99999999999999.9", "4503599627370497",
    "0.1", "0.30000000000000004", "1" * 15, "9" * 15 + ".",
]  # fmt: skip


def _numbers(n: int, seed: int) -> list[str]:
    """n numbers of 1 to 15 digits, a dot anywhere among them or none, a sign or none."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        digits = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, 16))))
        dot = int(rng.integers(0, len(digits) + 1))
        if 0 < dot < len(digits):
            digits = digits[:dot] + "." + digits[dot:]
        out.append(("-" if rng.random() < 0.3 else "") + digits)
    return out


def test_numbers_read_from_one_load_are_exactly_the_parsers(monkeypatch):
    enc = encoder_for(SCHEMA[:2] + SCHEMA[4:])  # a, b (filled), e
    values = EDGE_NUMBERS * 4 + _numbers(2_000, 1)
    rows = [
        [v, values[-1 - i], ["red", "blue", " red", "green"][i % 4]] for i, v in enumerate(values)
    ]
    body = _body(rows)
    got = _fast(enc, body, monkeypatch, np.float64)
    np.testing.assert_array_equal(got, _per_row(enc, body, np.float64))
    np.testing.assert_array_equal(got[:, 0], [float(v) for v in values])  # exact, as Python reads
    np.testing.assert_array_equal(_fast(enc, body, monkeypatch), _per_row(enc, body))


@pytest.mark.parametrize(
    "last",
    [
        ["1", "2", "3", "y", "red"],
        ["-0.5", "", "NA", "n", "blue"],
        ["12345678.25", "7", "-1", "", "green"],
        ["0", "0", "0", "Zürich", ""],
    ],
)
def test_cells_near_the_bodys_end_encode_as_the_per_row_path(last, monkeypatch):
    """The last row's cells lie within 16 bytes of the body's end: no load may pass it."""
    enc = encoder_for(SCHEMA)
    for end in (b"", b"\n"):
        body = _body([*_rows(300), last])[:-1] + end
        np.testing.assert_array_equal(_fast(enc, body, monkeypatch), _per_row(enc, body))


def _error(enc, body: bytes) -> str:
    with pytest.raises(ValidationError) as info:
        enc.encode(inputs.decode(body, media.CSV, LIMITS))
    return info.value.message


def _per_row_error(enc, body: bytes) -> str:
    with pytest.raises(ValidationError) as info:
        _per_row(enc, body)
    return info.value.message


def _with(rows: list[list[str]], i: int, j: int, value: str) -> list[list[str]]:
    rows = [list(r) for r in rows]
    rows[i][j] = value
    return rows


BAD = {
    "a word in a number": _with(_rows(200), 150, 0, "big"),
    "inf": _with(_rows(200), 150, 0, "inf"),
    "past float32": _with(_rows(200), 150, 0, "1e39"),
    "a long number": _with(_rows(200), 150, 0, "9" * 5_000),
    "missing, no fill": _with(_rows(200), 150, 0, ""),
    "an unknown category": _with(_rows(200), 150, 3, "maybe"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_cell_is_named_as_the_per_row_path_names_it(case):
    enc = encoder_for(SCHEMA)
    body = _body(BAD[case])
    message = _error(enc, body)
    assert message == _per_row_error(enc, body) and message.startswith("row 150, column")


def test_a_field_past_the_csv_limit_is_refused_as_before():
    enc = encoder_for(SCHEMA)
    body = _body(_with(_rows(200), 150, 0, "0." + "1" * 200_000))
    assert (
        _error(enc, body)
        == _per_row_error(enc, body)
        == ("malformed CSV: field larger than field limit (131072)")
    )


def test_a_header_row_still_gets_its_hint():
    enc = encoder_for(SCHEMA)
    body = _body([["a", "b", "c", "d", "e"], *_rows(100)])
    assert "a header row is not accepted" in _error(enc, body)


@pytest.mark.parametrize(
    "body",
    [
        _body(_rows(100)).replace(b"Z\xc3\xbcrich", b'"Z\xc3\xbcrich,\nline"', 1),  # quoted
        _body(_rows(50)) + b"\n  \n" + _body(_rows(50, 1)),  # a blank line inside
        _body(_rows(50)).replace(b"\n", b"\r", 3),  # lone CRs end lines for the csv module
        _body(_rows(100)).replace(b"\n", b"\r\n", 10),  # mixed line ends
        _body(_with(_rows(100), 60, 4, "red,extra")),  # a line with a field too many
        _body(_rows(100)).replace(b"y,", b"y\xc2\xa0,", 1),  # a no-break space Python strips
        _body(_rows(100)).replace(b"green", b"gr\xffen", 1),  # not UTF-8, in an ignored cell
        _body(_rows(100)).replace(b"green", b"gr\xc3\xa9en", 1),  # UTF-8, an ignored category
    ],
    ids=[
        "quoted",
        "blank-line",
        "lone-cr",
        "mixed-ends",
        "extra-field",
        "nbsp",
        "bad-utf8",
        "utf8",
    ],
)
def test_bodies_that_are_not_plain_go_the_per_row_way(body):
    enc = encoder_for(SCHEMA)
    try:
        want = _per_row(enc, body)
    except ValidationError as exc:
        assert _error(enc, body) == exc.message
    else:
        np.testing.assert_array_equal(enc.encode(inputs.decode(body, media.CSV, LIMITS)), want)


@pytest.mark.parametrize(
    "tail", [b"", b"\n", b"\r\n", b"\n\n \t\x0b\x0c\r\n", b" x\x1c", b"\x1f\n"]
)
@pytest.mark.parametrize("size", [70, 1_000, 1_031])
def test_the_native_line_count_is_the_python_one(size, tail, monkeypatch):
    """wrap's lines, counted by csv_lines (32 bytes a step), as bytes.count counts them."""
    body = _body(_rows(size))[:-1] + tail
    want = body.rstrip().count(b"\n") + 1
    assert len(table.wrap(body, 10_000, list)) == want
    quoted = body[: len(body) // 2] + b'"' + body[len(body) // 2 :]
    assert table.wrap(quoted, 10_000, list) is None
    monkeypatch.setattr(table._native, "function", lambda *a: None)  # no C++ kernels
    assert len(table.wrap(body, 10_000, list)) == want


def test_a_small_body_takes_the_per_row_path():
    assert isinstance(inputs.decode(_body(_rows(10)), media.CSV, LIMITS), list)


def test_large_csv_requests_over_boto3_get_scikit_learns_prices(serve, city_store):
    server = serve(store=str(city_store))
    X, _ = houses(5_000, seed=11)
    body = "".join(",".join(str(v) for v in r) + "\n" for r in X.tolist())
    reply = runtime_client(server.url).invoke_endpoint(
        EndpointName="mmhost",
        TargetModel="Chicago_IL/Chicago_IL.tar.gz",
        ContentType="text/csv",
        Accept="text/csv",
        Body=body,
    )
    got = [float(v) for v in reply["Body"].read().split()]
    np.testing.assert_allclose(got, house_pipeline(0).predict(X), rtol=RTOL_PRICE)
    assert len(from_sklearn(house_pipeline(0), COLUMNS).inputs) == 8
