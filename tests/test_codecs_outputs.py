from __future__ import annotations

import json

import numpy as np
import pytest

from mmhost.codecs import media
from mmhost.codecs.outputs import encode
from mmhost.types import Prediction

# scores are float32; their JSON/CSV text is the float32 value widened to a Python float
ATOL = 1e-6


def regressor(*scores: float) -> Prediction:
    return Prediction(np.array(scores, np.float32), "regressor", None)


def binary(scores: list[float], classes: list) -> Prediction:
    return Prediction(np.array(scores, np.float32), "binary_classifier", classes)


def multiclass(scores: list[list[float]], classes: list) -> Prediction:
    return Prediction(np.array(scores, np.float32), "multiclass_classifier", classes)


def predictions(body: bytes) -> list[dict]:
    doc = json.loads(body)
    assert list(doc) == ["predictions"]
    return doc["predictions"]


def test_regressor_json_is_one_score_per_row():
    out = predictions(encode(regressor(412000.5, -3.25), media.JSON))
    assert [list(r) for r in out] == [["score"], ["score"]]
    assert [r["score"] for r in out] == pytest.approx([412000.5, -3.25], abs=ATOL)


def test_json_is_compact():
    assert encode(regressor(1.5), media.JSON) == b'{"predictions":[{"score":1.5}]}'


def test_binary_classifier_with_int_classes():
    out = predictions(encode(binary([0.83, 0.1], [0, 1]), media.JSON))
    assert [r["predicted_label"] for r in out] == [1, 0]
    assert [r["score"] for r in out] == pytest.approx([0.83, 0.1], abs=ATOL)


def test_binary_classifier_with_string_classes():
    out = predictions(encode(binary([0.9, 0.2], ["no", "yes"]), media.JSON))
    assert [r["predicted_label"] for r in out] == ["yes", "no"]


def test_binary_label_is_the_positive_class_only_above_one_half():
    out = predictions(encode(binary([0.5, 0.5000001, 0.4999999], ["neg", "pos"]), media.JSON))
    assert [r["predicted_label"] for r in out] == ["neg", "pos", "neg"]


def test_multiclass_score_is_the_probability_list_and_label_the_argmax():
    p = multiclass([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]], ["a", "b", "c"])
    out = predictions(encode(p, media.JSON))
    assert [r["predicted_label"] for r in out] == ["b", "a", "c"]
    np.testing.assert_allclose([r["score"] for r in out], p.scores, atol=ATOL)


def test_multiclass_int_classes_keep_their_type():
    out = predictions(encode(multiclass([[0.2, 0.8, 0.0]], [3, 5, 7]), media.JSON))
    assert out[0]["predicted_label"] == 5


def test_jsonlines_is_one_object_per_line():
    body = encode(binary([0.83, 0.1], [0, 1]), media.JSONLINES)
    assert body.endswith(b"\n")
    lines = body.decode().splitlines()
    assert len(lines) == 2
    objs = [json.loads(line) for line in lines]
    assert [o["predicted_label"] for o in objs] == [1, 0]
    assert [o["score"] for o in objs] == pytest.approx([0.83, 0.1], abs=ATOL)


def test_jsonlines_regressor():
    assert encode(regressor(1.5, 2.0), media.JSONLINES) == b'{"score":1.5}\n{"score":2.0}\n'


def test_csv_is_one_score_per_line():
    body = encode(regressor(1.5, -2.25, 1e6), media.CSV)
    assert body == b"1.5\n-2.25\n1000000.0\n"


def test_csv_binary_classifier_is_the_positive_probability():
    body = encode(binary([0.83, 0.1], ["no", "yes"]), media.CSV)
    lines = body.decode().splitlines()
    assert [float(v) for v in lines] == pytest.approx([0.83, 0.1], abs=ATOL)
    assert "yes" not in body.decode()


def test_csv_multiclass_rows_are_comma_separated_probabilities():
    p = multiclass([[0.25, 0.5, 0.25], [0.125, 0.125, 0.75]], ["a", "b", "c"])
    assert encode(p, media.CSV) == b"0.25,0.5,0.25\n0.125,0.125,0.75\n"


def test_csv_round_trips_float32_scores():
    p = regressor(0.1, 1 / 3)
    back = np.array([float(v) for v in encode(p, media.CSV).split()], np.float32)
    np.testing.assert_array_equal(back, p.scores)


@pytest.mark.parametrize(
    "p",
    [
        regressor(),
        binary([], [0, 1]),
        Prediction(np.zeros((0, 3), np.float32), "multiclass_classifier", ["a", "b", "c"]),
    ],
)
def test_zero_rows(p):
    assert json.loads(encode(p, media.JSON)) == {"predictions": []}
    assert encode(p, media.JSONLINES) == b""
    assert encode(p, media.CSV) == b""


def test_unknown_media_type_is_a_programmer_error():
    with pytest.raises(AssertionError):
        encode(regressor(1.0), "application/xml")
