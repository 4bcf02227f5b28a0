"""Large requests (issue 19): a CSV body of the houses schema (6 numbers, 2 'y'/'n' columns) at
1, 100, 10,000 and 100,000 rows, decoded and encoded into the model's float32 rows.

Providers, measured in one run on the same body:

- mmhost: ``inputs.decode`` + ``RowEncoder.encode``, the path a request takes (a large plain
  body goes whole to the C++ encoder, ``mmhost/csrc/csv.cpp``)
- per-row path: the same, with the C++ encoder off (the path before this issue, and the one any
  body it can't take still goes)
- pandas.read_csv + the pipeline's preprocessing (``ColumnTransformer.transform``): what a user
  runs in their own process instead; the baseline
- pandas.read_csv + the whole scikit-learn pipeline's ``predict``, and mmhost's decode + encode
  + ``host.predict``: the in-process whole (the issue's target: 4x pandas + scikit-learn)

The same for a JSON body (``{"instances": [[...], ...]}``) and a JSON Lines one: mmhost's C++
encoder (``mmhost/csrc/json.cpp``), the Python path (``json.loads`` + ``RowEncoder``), and the
baseline ``json.loads`` + numpy + ``ColumnTransformer.transform``.

Answers, encode alone: 1 to 100,000 scores as CSV, JSON and JSON Lines, by the C++ writer
(``mmhost/csrc/answers.cpp``) and by the Python path (``repr`` per value), the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from fleet import describe

from mmhost import Host
from mmhost.codecs import inputs, media, outputs, table, text
from mmhost.codecs.limits import DecodeLimits
from mmhost.codecs.rows import encoder_for
from mmhost.convert import from_sklearn
from mmhost.tools.houses import COLUMNS, houses
from mmhost.types import Prediction

SIZES = [1, 100, 10_000, 100_000]


@pytest.fixture(scope="module")
def pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = houses(1000, 0)
    pre = ColumnTransformer(
        [("num", StandardScaler(), COLUMNS[:6]), ("cat", OneHotEncoder(), COLUMNS[6:])]
    )
    return make_pipeline(pre, LinearRegression()).fit(pd.DataFrame(X, columns=COLUMNS), y)


@pytest.fixture(scope="module")
def model(pipeline, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    art = from_sklearn(pipeline, COLUMNS)
    art.save(store / "m.tar.gz")
    host = Host(store=str(store), max_rows_per_request=200_000, max_body_bytes=64 << 20)
    host.load("m.tar.gz")
    yield art, host
    host.close()


@pytest.fixture(scope="module")
def bodies() -> dict[int, bytes]:
    X, _ = houses(max(SIZES), 7)
    lines = [",".join(str(v) for v in row) for row in X.tolist()]
    return {n: ("\n".join(lines[:n]) + "\n").encode() for n in SIZES}


def _group(n: int) -> str:
    return f"CSV decode + encode, {n:,} rows of 8 columns"


@pytest.mark.parametrize("n", SIZES)
def test_mmhost(benchmark, model, bodies, n):
    art, _ = model
    enc = encoder_for(tuple(art.inputs))
    limits = DecodeLimits(max_rows=200_000, max_values=10**9)
    describe(benchmark, _group(n), "mmhost (C++ CSV encoder)", n)
    out = benchmark(lambda: enc.encode(inputs.decode(bodies[n], media.CSV, limits)))
    assert out.shape == (n, enc.width)


@pytest.mark.parametrize("n", SIZES)
def test_per_row(benchmark, model, bodies, n, monkeypatch):
    art, _ = model
    enc = encoder_for(tuple(art.inputs))
    limits = DecodeLimits(max_rows=200_000, max_values=10**9)
    monkeypatch.setattr(table, "encode", lambda *a, **k: None)  # as before the C++ encoder
    describe(benchmark, _group(n), "per-row path (csv module + RowEncoder)", n)
    want = enc.encode(inputs._csv_rows(bodies[n], limits))
    out = benchmark(lambda: enc.encode(inputs.decode(bodies[n], media.CSV, limits)))
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("n", SIZES)
def test_pandas_preprocessing(benchmark, pipeline, bodies, n):
    pre = pipeline[0]
    describe(
        benchmark, _group(n), "pandas.read_csv + ColumnTransformer.transform", n, baseline=True
    )
    benchmark(lambda: pre.transform(pd.read_csv(io.BytesIO(bodies[n]), header=None, names=COLUMNS)))


@pytest.mark.parametrize("n", SIZES)
def test_whole_pandas_sklearn(benchmark, pipeline, bodies, n):
    describe(
        benchmark,
        f"in-process whole: CSV body -> prices, {n:,} rows",
        "pandas + sklearn predict",
        n,
        baseline=True,
    )
    benchmark(
        lambda: pipeline.predict(pd.read_csv(io.BytesIO(bodies[n]), header=None, names=COLUMNS))
    )


@pytest.mark.parametrize("n", SIZES)
def test_whole_mmhost(benchmark, model, pipeline, bodies, n):
    _, host = model
    limits = DecodeLimits(max_rows=200_000, max_values=10**9)
    describe(
        benchmark,
        f"in-process whole: CSV body -> prices, {n:,} rows",
        "mmhost decode + host.predict",
        n,
    )
    got = benchmark(lambda: host.predict("m.tar.gz", inputs.decode(bodies[n], media.CSV, limits)))
    want = pipeline.predict(pd.read_csv(io.BytesIO(bodies[n]), header=None, names=COLUMNS))
    np.testing.assert_allclose(got, want, rtol=1e-5)


# --- JSON and JSON Lines bodies ------------------------------------------------------------
JSON_TYPES = {"json": media.JSON, "jsonlines": media.JSONLINES}


@pytest.fixture(scope="module")
def json_bodies() -> dict[tuple[str, int], bytes]:
    import json

    X, _ = houses(max(SIZES), 7)
    rows = X.tolist()
    out = {}
    for n in SIZES:
        out["json", n] = json.dumps({"instances": rows[:n]}).encode()
        out["jsonlines", n] = "".join(json.dumps(r) + "\n" for r in rows[:n]).encode()
    return out


def _json_group(kind: str, n: int) -> str:
    return f"{kind} decode + encode, {n:,} rows of 8 columns"


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(JSON_TYPES))
def test_json_mmhost(benchmark, model, json_bodies, kind, n):
    art, _ = model
    enc = encoder_for(tuple(art.inputs))
    limits = DecodeLimits(max_rows=200_000, max_values=10**9)
    body, media_type = json_bodies[kind, n], JSON_TYPES[kind]
    describe(benchmark, _json_group(kind, n), "mmhost (C++ JSON encoder)", n)
    out = benchmark(lambda: enc.encode(inputs.decode(body, media_type, limits)))
    decoded = inputs.decode(body, media_type, limits)
    python = decoded.rows() if isinstance(decoded, table.Body) else decoded
    np.testing.assert_array_equal(out, enc.encode(python))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(JSON_TYPES))
def test_json_python_path(benchmark, model, json_bodies, kind, n, monkeypatch):
    art, _ = model
    enc = encoder_for(tuple(art.inputs))
    limits = DecodeLimits(max_rows=200_000, max_values=10**9)
    body, media_type = json_bodies[kind, n], JSON_TYPES[kind]
    monkeypatch.setattr(table, "wrap_json", lambda *a, **k: None)  # as before the C++ encoder
    describe(benchmark, _json_group(kind, n), "Python path (json.loads + RowEncoder)", n)
    out = benchmark(lambda: enc.encode(inputs.decode(body, media_type, limits)))
    assert out.shape == (n, enc.width)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(JSON_TYPES))
def test_json_numpy_preprocessing(benchmark, pipeline, json_bodies, kind, n):
    import json

    pre = pipeline[0]
    body = json_bodies[kind, n]

    def run() -> np.ndarray:
        if kind == "json":
            rows = json.loads(body)["instances"]
        else:
            rows = [json.loads(line) for line in body.splitlines()]
        frame = pd.DataFrame(np.array(rows, dtype=object), columns=COLUMNS)
        frame[COLUMNS[:6]] = frame[COLUMNS[:6]].astype(np.float64)
        return pre.transform(frame)

    describe(
        benchmark, _json_group(kind, n), "json.loads + numpy + ColumnTransformer", n, baseline=True
    )
    benchmark(run)


# --- answers, encode alone -----------------------------------------------------------------
ANSWER_TYPES = {"csv": media.CSV, "json": media.JSON, "jsonlines": media.JSONLINES}


@pytest.fixture(scope="module")
def predictions() -> dict[int, Prediction]:
    rng = np.random.default_rng(3)
    scores = rng.normal(4e5, 1e5, max(SIZES)).astype(np.float32)
    return {n: Prediction(scores[:n], "regressor", None) for n in SIZES}


def _answer_group(kind: str, n: int) -> str:
    return f"answer encode: {n:,} scores as {kind}"


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(ANSWER_TYPES))
def test_answer_mmhost(benchmark, predictions, kind, n):
    p = predictions[n]
    describe(benchmark, _answer_group(kind, n), "mmhost (C++ writer from 64 rows)", n)
    got = benchmark(outputs.encode, p, ANSWER_TYPES[kind])
    assert got.count(b"score" if kind != "csv" else b"\n") == n


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(ANSWER_TYPES))
def test_answer_python_path(benchmark, predictions, kind, n, monkeypatch):
    p = predictions[n]
    native = outputs.encode(p, ANSWER_TYPES[kind])
    monkeypatch.setattr(text, "MIN_ROWS", 10**9)
    describe(benchmark, _answer_group(kind, n), "Python path (repr per value)", n, baseline=True)
    got = benchmark(outputs.encode, p, ANSWER_TYPES[kind])
    assert got == native  # the same bytes
