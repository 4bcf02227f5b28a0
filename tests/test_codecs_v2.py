from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from mmhost.codecs import v2
from mmhost.errors import ValidationError


def tensor(name: str, shape: list, datatype: str, data=None, **params) -> dict:
    t = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        t["data"] = data
    if params:
        t["parameters"] = params
    return t


def request(*tensors: dict, **extra) -> bytes:
    return json.dumps({"inputs": list(tensors), **extra}).encode()


def rows_of(*tensors: dict):
    return v2.parse_request(request(*tensors))[1]


def binary_request(*parts: tuple[dict, bytes]) -> tuple[bytes, str]:
    """(body, Inference-Header-Content-Length) for tensors sent with the binary extension."""
    heads = [{**t, "parameters": {"binary_data_size": len(raw)}} for t, raw in parts]
    head = json.dumps({"inputs": heads}).encode()
    return head + b"".join(raw for _, raw in parts), str(len(head))


def bytes_elements(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


# --- JSON requests ---------------------------------------------------------------------------
def test_one_fp32_tensor_of_n_by_c_is_an_n_by_c_array():
    doc, rows = v2.parse_request(request(tensor("x", [2, 3], "FP32", [1, 2, 3, 4, 5, 6.5])))
    assert doc["inputs"][0]["name"] == "x"
    assert isinstance(rows, np.ndarray) and rows.shape == (2, 3)
    np.testing.assert_array_equal(rows, [[1, 2, 3], [4, 5, 6.5]])


def test_one_bytes_tensor_of_n_by_c_is_list_rows_keeping_strings():
    rows = rows_of(tensor("x", [2, 3], "BYTES", [1992, "y", 0.5, "2001", "n", None]))
    assert rows == [[1992, "y", 0.5], ["2001", "n", None]]


def test_several_column_tensors_are_columns_by_name():
    cols = rows_of(
        tensor("a", [2], "FP32", [1.5, 2.5]),
        tensor("b", [2, 1], "BYTES", ["x", "y"]),
        tensor("c", [2], "INT64", [3, 4]),
    )
    assert cols == {"a": [1.5, 2.5], "b": ["x", "y"], "c": [3.0, 4.0]}


@pytest.mark.parametrize(
    "t,expected",
    [
        (tensor("a", [3, 1], "FP64", [1, 2, 3]), {"a": [1.0, 2.0, 3.0]}),
        (tensor("a", [2], "BOOL", [True, False]), {"a": [True, False]}),
        (tensor("a", [2, 1], "FP32", [[1], [2]]), {"a": [1.0, 2.0]}),
        (tensor("x", [2, 2], "BYTES", [["a", "b"], ["c", "d"]]), [["a", "b"], ["c", "d"]]),
    ],
)
def test_one_column_tensor_is_a_column_and_nested_data_is_flattened(t, expected):
    assert rows_of(t) == expected


@pytest.mark.parametrize(
    "tensors,match",
    [
        ([tensor("x", [2, 2], "FP32", [1, 2, 3])], r"shape \[2, 2\] needs 4 values, got 3"),
        ([tensor("x", [2], "FLOAT", [1, 2])], "datatype 'FLOAT' is not one of BOOL"),
        ([tensor("x", [-1, 2], "FP32", [1, 2])], "shape must be 1-4 sizes >= 0"),
        ([tensor("x", [1, 1, 1, 1, 2], "FP32", [1, 2])], "shape must be 1-4 sizes >= 0"),
        ([tensor("x", [], "FP32", [])], "shape must be 1-4 sizes >= 0"),
        ([tensor("x", [2.0], "FP32", [1, 2])], "shape must be 1-4 sizes >= 0"),
        ([tensor("a", [1], "FP32", [1]), tensor("a", [1], "FP32", [2])], "'a' appears twice"),
        (
            [tensor("a", [2], "FP32", [1, 2]), tensor("b", [3], "FP32", [1, 2, 3])],
            "input 'b' has 3 rows; the others have 2",
        ),
        (
            [tensor("a", [2], "FP32", [1, 2]), tensor("b", [2, 2], "FP32", [1, 2, 3, 4])],
            r"one column per input \(\[N\] or \[N, 1\]\)",
        ),
        ([tensor("x", [2], "FP32", "1,2")], "'x': data must be a list"),
        ([tensor("x", [2], "FP32")], "'x': data must be a list"),
        ([tensor("x", [2], "FP32", ["a", "b"])], "FP32 data must be numbers"),
        ([tensor("x", [1], "BYTES", [{"k": 1}])], "BYTES data must be strings or numbers"),
        ([tensor("", [1], "FP32", [1])], "input 0: name must be a non-empty string"),
        (["x"], "input 0 must be an object"),
    ],
)
def test_bad_tensors_are_validation_errors(tensors, match):
    with pytest.raises(ValidationError, match=match):
        rows_of(*tensors)


@pytest.mark.parametrize(
    "body,match",
    [
        (b"{", "not valid JSON"),
        (b"[1, 2]", 'an object with "inputs"'),
        (b'{"inputs": []}', '"inputs" must be a non-empty list'),
        (b'{"inputs": {"name": "x"}}', '"inputs" must be a non-empty list'),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_bad_request_documents_are_validation_errors(body, match):
    with pytest.raises(ValidationError, match=match):
        v2.parse_request(body)


# --- binary tensor extension -----------------------------------------------------------------
def test_binary_fp32_tensor():
    x = np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, 7.0]], np.float32)
    body, n = binary_request((tensor("x", [2, 3], "FP32"), x.astype("<f4").tobytes()))
    _, rows = v2.parse_request(body, n)
    np.testing.assert_allclose(rows, x, rtol=0, atol=0)


def test_binary_bytes_and_numeric_tensors_together():
    body, n = binary_request(
        (tensor("city", [2], "BYTES"), bytes_elements(b"Chicago", "Zürich".encode())),
        (tensor("beds", [2, 1], "INT32"), np.array([3, 4], "<i4").tobytes()),
    )
    _, cols = v2.parse_request(body, n)
    assert cols == {"city": ["Chicago", "Zürich"], "beds": [3.0, 4.0]}


def test_binary_and_json_tensors_mix():
    head = {
        "inputs": [
            tensor("a", [2], "FP32", [1, 2]),
            tensor("b", [2], "FP64", binary_data_size=16),
        ]
    }
    raw = json.dumps(head).encode()
    _, cols = v2.parse_request(raw + np.array([3, 4], "<f8").tobytes(), str(len(raw)))
    assert cols == {"a": [1.0, 2.0], "b": [3.0, 4.0]}


@pytest.mark.parametrize(
    "parts,match",
    [
        ([(tensor("x", [3], "FP32"), b"\0" * 8)], r"needs 12 bytes, got 8"),
        ([(tensor("x", [2], "BYTES"), bytes_elements(b"a"))], "needs 2 values, got 1"),
        ([(tensor("x", [1], "BYTES"), b"\x05\0\0\0ab")], "truncated BYTES element"),
        ([(tensor("x", [1], "BYTES"), b"\x01\0")], "truncated BYTES element"),
    ],
)
def test_binary_size_mismatches_are_validation_errors(parts, match):
    body, n = binary_request(*parts)
    with pytest.raises(ValidationError, match=match):
        v2.parse_request(body, n)


def test_binary_data_size_past_the_body_is_refused():
    body, n = binary_request((tensor("x", [2], "FP32"), np.zeros(2, "<f4").tobytes()))
    with pytest.raises(ValidationError, match="runs past the body's binary part"):
        v2.parse_request(body[:-1], n)


def test_leftover_binary_bytes_are_refused():
    body, n = binary_request((tensor("x", [2], "FP32"), np.zeros(2, "<f4").tobytes()))
    with pytest.raises(ValidationError, match="3 bytes of binary data belong to no input"):
        v2.parse_request(body + b"xyz", n)


@pytest.mark.parametrize(
    "size,match", [(-1, "binary_data_size must be an integer >= 0"), ("8", "integer >= 0")]
)
def test_bad_binary_data_size_is_refused(size, match):
    head = json.dumps({"inputs": [tensor("x", [2], "FP32", binary_data_size=size)]}).encode()
    with pytest.raises(ValidationError, match=match):
        v2.parse_request(head + b"\0" * 8, str(len(head)))


@pytest.mark.parametrize(
    "header,match",
    [("abc", "must be an integer, not 'abc'"), ("-1", "outside the body"), ("9999", "outside")],
)
def test_bad_header_length_is_refused(header, match):
    body, _ = binary_request((tensor("x", [2], "FP32"), np.zeros(2, "<f4").tobytes()))
    with pytest.raises(ValidationError, match=match):
        v2.parse_request(body, header)


# --- responses -------------------------------------------------------------------------------
def test_outputs_of_a_regressor_are_one_fp32_score():
    out = v2.outputs(np.array([1.5, 2.5], np.float32), "regressor", None)
    assert out == [{"name": "score", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]


@pytest.mark.parametrize("ascii_only", [False, True])
def test_a_large_tensor_renders_as_json_dumps_writes_it(ascii_only):
    rng = np.random.default_rng(4)
    raw = rng.random((300, 3))
    p = (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    tensors = v2.outputs(p, "multiclass_classifier", ["a", "b", "é"])
    assert isinstance(tensors[0]["data"], np.ndarray)  # past codecs.text.MIN_ROWS
    head = {"model_name": "m/ü", "id": "7"}
    plain = [{**t, "data": np.asarray(t["data"]).tolist()} for t in tensors]
    want = json.dumps(
        {**head, "outputs": plain}, ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":")
    ).encode()
    assert v2.render(head, tensors, ascii_only) == want
    assert v2.render(head, plain, ascii_only) == want


def test_outputs_of_a_binary_classifier_add_the_label():
    score, label = v2.outputs(np.array([0.75, 0.5], np.float32), "binary_classifier", ["n", "y"])
    assert (score["shape"], score["data"]) == ([2], [0.75, 0.5])
    assert label["name"] == "predicted_label" and label["datatype"] == "BYTES"
    assert (label["shape"], label["data"]) == ([2], ["y", "n"])


def test_outputs_of_a_multiclass_classifier_are_n_by_k():
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    score, label = v2.outputs(p, "multiclass_classifier", [0, 1, 2])
    assert (score["shape"], score["datatype"]) == ([2, 3], "FP32")
    np.testing.assert_allclose(score["data"], p.reshape(-1), atol=1e-7)
    assert (label["shape"], label["datatype"], label["data"]) == ([2], "INT64", [1, 0])


@pytest.mark.parametrize(
    "classes,expected",
    [
        ([0, 1], "INT64"),
        (["a", "b"], "BYTES"),
        ([False, True], "BOOL"),
        ([0.5, 1.5], "FP64"),
        ([0, "b"], "BYTES"),
        ([True, 2], "BYTES"),
    ],
)
def test_label_type_follows_the_classes(classes, expected):
    assert v2.label_type(classes) == expected


TENSORS = v2.outputs(np.array([0.75], np.float32), "binary_classifier", [0, 1])


def test_select_by_name_in_the_requested_order():
    assert v2.select(TENSORS, None) == TENSORS
    picked = v2.select(TENSORS, [{"name": "predicted_label"}, {"name": "score"}])
    assert [t["name"] for t in picked] == ["predicted_label", "score"]


@pytest.mark.parametrize(
    "requested,match",
    [
        ([{"name": "proba"}], "unknown output.s. proba; this model has score, predicted_label"),
        ("score", '"outputs" must be a list'),
        ([{"nom": "score"}], '"outputs" must be a list'),
    ],
)
def test_select_refuses_unknown_or_malformed_outputs(requested, match):
    with pytest.raises(ValidationError, match=match):
        v2.select(TENSORS, requested)


@pytest.mark.parametrize(
    "params,requested,expected",
    [
        ({}, None, set()),
        ({"binary_data_output": True}, None, {"score", "predicted_label"}),
        ({"binary_data_output": False}, None, set()),
        ({}, [{"name": "score", "parameters": {"binary_data": True}}], {"score"}),
        ({}, [{"name": "score"}], set()),
        ({"binary_data_output": True}, [{"name": "score"}], {"score"}),
        (
            {"binary_data_output": True},
            [{"name": "score", "parameters": {"binary_data": False}}, {"name": "predicted_label"}],
            {"predicted_label"},
        ),
    ],
)
def test_wants_binary(params, requested, expected):
    assert v2.wants_binary({"parameters": params}, requested) == expected


def test_encode_binary_round_trips_numeric_and_bytes_tensors():
    p = np.array([0.75, 0.25, 0.5], np.float32)
    tensors = v2.outputs(p, "binary_classifier", ["no", "yes"])
    heads, raw = v2.encode_binary(tensors, {"score", "predicted_label"})
    assert all("data" not in h for h in heads)
    sizes = [h["parameters"]["binary_data_size"] for h in heads]
    assert sizes == [12, sum(4 + len(s) for s in ["yes", "no", "no"])] and sum(sizes) == len(raw)
    np.testing.assert_array_equal(np.frombuffer(raw[:12], "<f4"), p)
    labels, pos = [], 12
    while pos < len(raw):
        (k,) = struct.unpack_from("<I", raw, pos)
        labels.append(raw[pos + 4 : pos + 4 + k].decode())
        pos += 4 + k
    assert labels == ["yes", "no", "no"]


def test_encode_binary_moves_only_the_named_outputs():
    tensors = v2.outputs(np.array([0.75, 0.25], np.float32), "binary_classifier", [3, 7])
    heads, raw = v2.encode_binary(tensors, {"predicted_label"})
    assert heads[0] == tensors[0]
    assert heads[1]["parameters"] == {"binary_data_size": 16} and "data" not in heads[1]
    assert np.frombuffer(raw, "<i8").tolist() == [7, 3]


def test_encode_binary_output_decodes_as_a_binary_request():
    tensors = v2.outputs(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "regressor", None)
    heads, raw = v2.encode_binary(tensors, {"score"})
    head = json.dumps({"inputs": heads}).encode()
    _, rows = v2.parse_request(head + raw, str(len(head)))
    np.testing.assert_array_equal(rows, [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    "datatype, data, match",
    [
        ("BOOL", ["false", "true"], "BOOL data must be true or false"),
        ("FP32", ["1.5", 2.0], "FP32 data must be numbers"),
    ],
)
def test_json_data_must_match_its_datatype(datatype, data, match):
    doc = {"inputs": [{"name": "a", "shape": [2], "datatype": datatype, "data": data}]}
    with pytest.raises(ValidationError, match=match):
        v2.parse_request(json.dumps(doc).encode())
