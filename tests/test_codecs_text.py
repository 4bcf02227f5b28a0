"""Large answers written by C++ (``codecs.text``): byte for byte what the Python path writes,
for every answer shape, and every double written as Python's repr writes it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmhost.artifacts.manifest import RCF_TASK
from mmhost.codecs import media, outputs, text
from mmhost.kernels import _native
from mmhost.types import Prediction

pytestmark = pytest.mark.skipif(_native.load() is None, reason="the C++ kernels are not built")

N = 300  # past text.MIN_ROWS: the native path
EDGES = [
    0.0, -0.0, 1.0, -2.5, 0.1, 1 / 3, 100.0, 1e15, 1e16, 9.999999999999998e15, 1e-4, 1e-5,
    0.00012345, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 123456789012345678.0,
    -1e-7, 3.4028234663852886e38, 412000.5, 1e22, 1e23,
]  # fmt: skip


def _python(p: Prediction, media_type: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    with monkeypatch.context() as m:
        m.setattr(text, "MIN_ROWS", 10**9)
        return outputs.encode(p, media_type)


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    wide = rng.normal(0, 1, n) * 10.0 ** rng.integers(-30, 30, n)
    return np.concatenate([EDGES, wide])[:n]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=64, max_size=200))
def test_every_double_is_written_as_python_repr_writes_it(values):
    b = text.write(np.array(values), text.CSV)
    assert b == "".join(repr(v) + "\n" for v in values).encode()


def test_edge_values_and_float32_scores_match_repr():
    rng = np.random.default_rng(0)
    v = _values(rng, 2000)
    with np.errstate(over="ignore"):
        f32 = v.astype(np.float32)
    f32 = f32[np.isfinite(f32)]
    for scores in (v, f32):
        assert text.write(scores, text.CSV) == "".join(f"{x!r}\n" for x in scores.tolist()).encode()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**53), 2**53), st.integers(-40, 20)),
        min_size=64,
        max_size=200,
    )
)
def test_short_exact_values_are_written_as_repr_writes_them(parts):
    """m x 2^e with small m and e (counts, prices, dyadic fractions, float32 values): the
    writer's integer path, which must give repr's digits, also for 15, 16 and 17 digits."""
    values = [math.ldexp(m, e) for m, e in parts]
    values += [float(f) for f in np.float32(values)]  # as a float32 model scores them
    values += [v * 10.0**k for v, k in zip(values, range(-3, 4), strict=False)]
    b = text.write(np.array(values), text.CSV)
    assert b == "".join(repr(v) + "\n" for v in values).encode()


def test_the_digit_bounds_of_the_integer_path():
    edges = [2.0**53, 2.0**53 + 2, 999999999999999.0, 1e15 + 1, 9999999999999998.0, 2.0**-21]
    edges += [0.5**22, 3 * 0.5**21, 123456789012345.5, 12345678901234.25, 2.0**63, 2.0**64]
    values = np.array((edges * 8)[:64])
    b = text.write(values, text.CSV)
    assert b == "".join(repr(v) + "\n" for v in values.tolist()).encode()


TASKS = [
    ("regressor", None, 1),
    ("binary_classifier", [0, 1], 1),
    ("binary_classifier", ["no", "yes"], 1),
    ("multiclass_classifier", ["a", "b", "c"], 3),
    ("multiclass_classifier", [1.5, 2, True, 'é"q'], 4),
    (RCF_TASK, None, 1),
]


@pytest.mark.parametrize("media_type", [media.CSV, media.JSON, media.JSONLINES])
@pytest.mark.parametrize(("task", "classes", "k"), TASKS)
def test_each_answer_shape_is_the_python_paths_bytes(task, classes, k, media_type, monkeypatch):
    rng = np.random.default_rng(len(task) + k)
    if k == 1:
        scores = rng.random(N).astype(np.float32)
        if classes is None:
            scores = (_values(rng, N) % 1e30).astype(np.float32)
    else:
        raw = rng.random((N, k))
        scores = (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    threshold = 0.37 if task == "binary_classifier" else 0.5
    p = Prediction(scores, task, classes, threshold=threshold)
    native = (
        text.write(scores, text.CSV) if media_type == media.CSV else outputs.encode(p, media_type)
    )
    assert native == _python(p, media_type, monkeypatch)
    assert outputs.encode(p, media_type) == native


def test_a_small_answer_stays_on_the_python_path():
    assert text.write(np.zeros(text.MIN_ROWS - 1), text.CSV) is None


def test_the_native_writer_refuses_what_it_is_not_given():
    fn = _native.function("format_rows", "answer text")

    bad = torch.tensor([[1.0], [math.inf]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="not finite"):
        fn(bad, torch.empty(0, dtype=torch.int64), [], list(text.CSV))
    ok = torch.zeros((2, 1), dtype=torch.float64)
    with pytest.raises(RuntimeError, match="label index out of range"):
        fn(ok, torch.tensor([0, 2]), ["0", "1"], list(text.CSV))
    with pytest.raises(ValueError, match="9 pieces"):
        fn(ok, torch.empty(0, dtype=torch.int64), [], ["", ""])
