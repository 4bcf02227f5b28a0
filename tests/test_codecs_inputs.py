from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mmhost.codecs import media
from mmhost.codecs.inputs import decode
from mmhost.errors import ValidationError


def npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def as_json(doc: object) -> bytes:
    return json.dumps(doc).encode()


# --- CSV -------------------------------------------------------------------------------------
def test_csv_rows_keep_strings_for_categorical_columns_and_skip_blank_lines():
    body = b"1992,1531, 6 ,y,n\n\n2001,900,3,n,y\r\n\n"
    assert decode(body, media.CSV) == [
        ["1992", "1531", "6", "y", "n"],
        ["2001", "900", "3", "n", "y"],
    ]


def test_csv_quoted_cells_may_hold_commas():
    assert decode(b'1,"a, b"\n', media.CSV) == [["1", "a, b"]]


def test_csv_strips_a_utf8_bom():
    assert decode(b"\xef\xbb\xbf1,2\n3,4\n", media.CSV) == [["1", "2"], ["3", "4"]]


def test_csv_that_is_not_utf8_is_refused():
    with pytest.raises(ValidationError, match=r"not UTF-8 text \(byte 2\)"):
        decode(b"1,\xff\xfe,3\n", media.CSV)


@pytest.mark.parametrize("body", [b"", b"\n\n", b"\r\n"])
def test_csv_without_rows_is_refused(body):
    with pytest.raises(ValidationError, match="no rows"):
        decode(body, media.CSV)


# --- JSON ------------------------------------------------------------------------------------
TENSORS = [
    {"name": "a", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
    {"name": "b", "shape": [2, 1], "datatype": "BYTES", "data": ["x", "y"]},
]


@pytest.mark.parametrize(
    "doc,rows",
    [
        ({"instances": [{"features": [1, "y"]}, {"features": [2, "n"]}]}, [[1, "y"], [2, "n"]]),
        (
            {"instances": [{"data": {"features": {"values": [1.5, "a"]}}}]},
            [[1.5, "a"]],
        ),
        ({"instances": [[1, 2], [3, 4]]}, [[1, 2], [3, 4]]),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4]]),
        ([1, "y", None], [[1, "y", None]]),
        ({"features": [1, 2, 3]}, [[1, 2, 3]]),
        ({"data": {"features": {"values": [4, 5]}}}, [[4, 5]]),
        ({"inputs": [[1, 2], [3, 4]]}, [[1, 2], [3, 4]]),
        ({"inputs": TENSORS}, {"a": [1.0, 2.0], "b": ["x", "y"]}),
        ({"instances": []}, []),
        ([], []),
    ],
)
def test_json_shapes(doc, rows):
    assert decode(as_json(doc), media.JSON) == rows


def test_json_v2_tensor_of_rows_is_an_array():
    doc = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    np.testing.assert_array_equal(decode(as_json(doc), media.JSON), [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    "body,match",
    [
        (b'{"instances": [[1, 2]', "the body is not valid JSON"),
        (b"\xff\xfe\xfd", "the body is not valid JSON"),
        (b"42", 'expected {"instances"'),
        (b'"a string"', "or a list of rows"),
        (b'{"rows": [[1, 2]]}', 'expected {"instances"'),
        (b'{"instances": {"features": [1]}}', '"instances" must be a list'),
        (b'{"inputs": "1,2"}', '"inputs" must be a list of rows or of V2 tensors'),
        (b'{"instances": [[1, 2], 3]}', "instance 1: expected a list of values"),
        (b'{"instances": [{}]}', "instance 0: expected a list of values"),
        (b'{"instances": [[1], {"a": 1}]}', "instance 0 is a list, but instance 1 an object"),
        (b'{"instances": [{"a": 1}, {"b": 1}]}', "instance 1 names other columns than instance 0"),
        (b'{"features": "1,2"}', "instance 0: features must be a list"),
        (b'{"instances": [{"data": {"features": {}}}]}', "features must be a list"),
        (b"[1, [2, 3]]", "instance 0: expected a list of values"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}', "data must be a list"),
    ],
)
def test_json_errors_say_what_is_wrong(body, match):
    with pytest.raises(ValidationError, match=match):
        decode(body, media.JSON)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000])
def test_deeply_nested_json_is_a_validation_error(body):
    with pytest.raises(ValidationError, match="nested too deeply"):
        decode(body, media.JSON)


# --- JSON Lines ------------------------------------------------------------------------------
def test_jsonlines_one_instance_per_line_in_any_shape():
    body = b'{"features": [1, "a"]}\n\n{"data": {"features": {"values": [2, "b"]}}}\r\n[3, "c"]\n'
    assert decode(body, media.JSONLINES) == [[1, "a"], [2, "b"], [3, "c"]]


def test_jsonlines_names_the_bad_line():
    body = b'[1, 2]\n\n{"features": [3, \n[5, 6]\n'
    with pytest.raises(ValidationError, match="line 3 is not valid JSON"):
        decode(body, media.JSONLINES)


def test_jsonlines_refuses_a_line_of_the_wrong_shape():
    with pytest.raises(ValidationError, match="expected a list of values"):
        decode(b"[1, 2]\n5\n", media.JSONLINES)


def test_jsonlines_deeply_nested_line_is_a_validation_error():
    with pytest.raises(ValidationError, match="line 2 is nested too deeply"):
        decode(b"[1]\n" + b"[" * 100_000, media.JSONLINES)


@pytest.mark.parametrize("body", [b"", b"\n \n"])
def test_jsonlines_without_rows_is_refused(body):
    with pytest.raises(ValidationError, match="no rows"):
        decode(body, media.JSONLINES)


def test_jsonlines_that_is_not_utf8_is_refused():
    with pytest.raises(ValidationError, match="not UTF-8"):
        decode(b"[1, 2]\n[\xff]\n", media.JSONLINES)


# --- NPY -------------------------------------------------------------------------------------
def test_npy_one_dimensional_is_one_row():
    out = decode(npy(np.array([1.0, 2.0, 3.0])), media.NPY)
    assert isinstance(out, np.ndarray) and out.shape == (1, 3)
    np.testing.assert_array_equal(out, [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8, bool])
def test_npy_two_dimensional_numeric_comes_back_as_an_array(dtype):
    arr = np.arange(6).reshape(2, 3).astype(dtype)
    out = decode(npy(arr), media.NPY)
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


def test_npy_string_array_comes_back_as_list_rows():
    arr = np.array([["1", "y"], ["2.5", "n"]])
    assert decode(npy(arr), media.NPY) == [["1", "y"], ["2.5", "n"]]


def test_npy_ascii_bytes_array_comes_back_as_str_rows():
    assert decode(npy(np.array([b"a", b"b"])), media.NPY) == [["a", "b"]]


def test_npy_object_array_is_never_unpickled():
    body = npy(np.array([[1, "a"], [2, None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValidationError, match="Object arrays cannot be loaded"):
        decode(body, media.NPY)


@pytest.mark.parametrize("body", [b"", b"not an array at all", b"\x93NUMPY\x01\x00garbage"])
def test_npy_garbage_bytes_are_refused(body):
    with pytest.raises(ValidationError, match="not a readable .npy array"):
        decode(body, media.NPY)


def test_npy_truncated_data_is_refused():
    with pytest.raises(ValidationError, match=r"claims shape \(4, 4\) \(128 bytes\)"):
        decode(npy(np.zeros((4, 4)))[:-8], media.NPY)


def test_npy_header_claiming_a_huge_shape_is_refused_before_allocating():
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)}
    npy_format.write_array_header_1_0(buf, header)
    with pytest.raises(ValidationError, match="claims shape"):
        decode(buf.getvalue(), media.NPY)


def test_npy_bytes_array_must_be_utf8():
    with pytest.raises(ValidationError, match="UTF-8"):
        decode(npy(np.array([[b"\xff", b"a"]])), media.NPY)


def test_jsonlines_keeps_unicode_line_separators_inside_strings():
    assert decode('["a\u2028b", 1]\n'.encode(), media.JSONLINES) == [["a\u2028b", 1]]


def test_npz_archive_is_refused():
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 2)))
    with pytest.raises(ValidationError, match="not an .npz archive"):
        decode(buf.getvalue(), media.NPY)


@pytest.mark.parametrize("arr", [np.zeros((2, 2, 2)), np.float64(3.0)])
def test_npy_other_dimensions_are_refused(arr):
    with pytest.raises(ValidationError, match="expected a 1-D or 2-D array, got shape"):
        decode(npy(np.asarray(arr)), media.NPY)


def test_npy_complex_dtype_is_refused():
    with pytest.raises(ValidationError, match="unsupported .npy dtype complex128"):
        decode(npy(np.zeros((1, 2), np.complex128)), media.NPY)
