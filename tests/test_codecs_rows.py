from __future__ import annotations

import numpy as np
import pytest

from mmhost.artifacts import Column
from mmhost.codecs import encoder_for
from mmhost.errors import ValidationError

COLS = (
    Column("a"),
    Column("b", missing=2.5),
    Column("c", "category", ("x", "y", "z"), "error"),
    Column("d", "category", (1, 2), "ignore", missing=2),
)


def test_layout_and_encoding():
    enc = encoder_for(COLS)
    assert enc.offsets == [0, 1, 2, 5] and enc.width == 7
    out = enc.encode([[1, None, "y", 1], ["3", "", "z", "7"], [0.5, "nan", "x", None]], width=8)
    np.testing.assert_array_equal(
        out,
        np.array(
            [
                [1, 2.5, 0, 1, 0, 1, 0, 0],
                [3, 2.5, 0, 0, 1, 0, 0, 0],  # d=7 unknown, ignored: all zero
                [0.5, 2.5, 1, 0, 0, 0, 1, 0],  # d missing -> 2
            ],
            np.float32,
        ),
    )


def test_encoders_are_shared_between_equal_schemas():
    assert encoder_for(COLS) is encoder_for(tuple(COLS))


def test_numeric_fast_path_imputes_and_refuses_inf():
    enc = encoder_for((Column("a"), Column("b", missing=-1.0)))
    out = enc.encode(np.array([[1.0, np.nan]]))
    np.testing.assert_array_equal(out, [[1.0, -1.0]])
    with pytest.raises(ValidationError, match="row 1, column 'a'"):
        enc.encode(np.array([[1.0, 2.0], [np.inf, 0.0]]))
    with pytest.raises(ValidationError, match="shape"):
        enc.encode(np.zeros((2, 3)))


@pytest.mark.parametrize(
    "rows,match",
    [
        ([[1, 2, "q", 1]], "row 0, column 'c': unknown category 'q'"),
        ([[1, 2, "x"]], "row 0: expected 4 values"),
        ([[1, 2, "x", 1], "abcd"], "row 1: expected 4 values"),
        ([[[1], 2, "x", 1]], "column 'a': expected a number, got list"),
        ([[{"v": 1}, 2, "x", 1]], "column 'a': expected a number, got dict"),
        ([[1, 2, ["x"], 1]], "unknown category"),
        ([["1e999", 2, "x", 1]], "not a finite number"),
        (None, "list of rows"),
    ],
)
def test_errors_name_row_and_column(rows, match):
    with pytest.raises(ValidationError, match=match):
        encoder_for(COLS).encode(rows)


def test_empty_request_is_empty():
    assert encoder_for(COLS).encode([]).shape == (0, 7)


def test_columns_by_name_are_encoded_in_schema_order():
    enc = encoder_for(COLS)
    by_name = {"d": [1, None], "c": ["y", "z"], "b": ["", 4], "a": np.array([1.0, 3.0])}
    np.testing.assert_array_equal(
        enc.encode(by_name), enc.encode([[1.0, "", "y", 1], [3.0, 4, "z", None]])
    )


def test_columns_by_name_numeric_schema():
    enc = encoder_for((Column("a"), Column("b")))
    out = enc.encode({"b": (2.5, 4.0), "a": [1, 3]})
    np.testing.assert_array_equal(out, np.array([[1, 2.5], [3, 4]], np.float32))


def test_columns_by_name_with_no_rows_is_empty():
    assert encoder_for(COLS).encode({"a": [], "b": [], "c": [], "d": []}).shape == (0, 7)


@pytest.mark.parametrize(
    "by_name,match",
    [
        ({"a": [1], "b": [2], "c": ["x"]}, r"missing column\(s\) d; the model takes a, b, c, d"),
        (
            {"a": [1], "b": [2], "c": ["x"], "d": [1], "e": [0]},
            r"unknown column\(s\) e; the model takes",
        ),
        ({"a": [1], "b": [2], "c": ["x"], "e": [0]}, r"missing column\(s\) d; unknown column"),
        ({"a": 1, "b": [2], "c": ["x"], "d": [1]}, "column 'a': expected a list of values"),
        ({"a": "12", "b": [2], "c": ["x"], "d": [1]}, "column 'a': expected a list of values"),
        ({"a": [1, 2], "b": [2], "c": ["x"], "d": [1]}, "different lengths: a=2, b=1, c=1, d=1"),
        ({"a": [1], "b": [2], "c": ["q"], "d": [1]}, "row 0, column 'c': unknown category 'q'"),
    ],
)
def test_columns_by_name_errors(by_name, match):
    with pytest.raises(ValidationError, match=match):
        encoder_for(COLS).encode(by_name)


def test_small_and_large_batches_encode_the_same():
    cols = (
        Column("a", "float", missing=2.5),
        Column("b", "category", categories=("y", "n"), unknown="ignore", missing="n"),
        Column("c", "float"),
    )
    enc = encoder_for(cols)
    rows = [[1, "y", "3"], ["", None, 4.5], ["nan", "zz", 0], [True, "n", "-1e3"]] * 10
    big = enc.encode(rows)  # 40 rows: the column path
    small = np.concatenate([enc.encode(rows[i : i + 4]) for i in range(0, 40, 4)])
    np.testing.assert_array_equal(big, small)


@pytest.mark.parametrize("n", [1, 40])
def test_numbers_beyond_float32_are_refused(n):
    enc = encoder_for((Column("a", "float"),))
    with pytest.raises(ValidationError, match="float32's range"):
        enc.encode([[1.0]] * (n - 1) + [[1e39]])
    with pytest.raises(ValidationError, match="float32's range"):
        enc.encode(np.array([[1e39]] * n))
