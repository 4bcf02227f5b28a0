"""Large requests over HTTP (issue 19): one ``mmhost serve`` pinned to core 0, one model (the
houses pipeline: 6 scaled numbers, 2 one-hot 'y'/'n' columns, a linear regression), bodies of
1, 100, 10,000 and 100,000 rows in each content type, the answer in the same type
(``text/csv`` in and out; ``application/json`` ``{"instances": [[...], ...]}`` in,
``{"predictions": [{"score": ...}]}`` out; ``application/jsonlines`` a row a line in, a record
a line out).

Providers, per size and content type, in the same run:

- ``mmhost serve``: ``POST /endpoints/mmhost/invocations`` over loopback, one keep-alive
  connection from this process (its thread pinned to core 1), the model loaded and invoked
  once before the clock starts; the time is the whole request: send, decode, score, encode,
  receive.
- the in-process baselines, what a user runs in their own process instead, on core 1: for CSV
  ``pandas.read_csv`` + the scikit-learn pipeline's ``predict``; for JSON and JSON Lines
  ``json.loads`` + a numpy / pandas frame + ``predict``.

Every answer is checked off the clock against the pipeline's prices (rtol 1e-5). The report's
extra_info holds rows/s.

    python -m pytest benchmarks/bench_http_large.py -o python_files='bench_*.py' -q
"""

from __future__ import annotations

import http.client
import io
import json
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from fleet import RTOL_PRICE, describe
from http_load import pinned_thread, start_mmhost

from mmhost.convert import from_sklearn
from mmhost.tools.houses import COLUMNS, houses

SIZES = [1, 100, 10_000, 100_000]
TYPES = {"csv": "text/csv", "json": "application/json", "jsonlines": "application/jsonlines"}
MODEL = "houses.tar.gz"
SERVER_CORE, CLIENT_CORE = 0, 1
LIMIT = str(64 << 20)


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
def data(pipeline) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    X, _ = houses(max(SIZES), 7)
    want = pipeline.predict(pd.DataFrame(X, columns=COLUMNS))
    return {n: (X[:n], want[:n]) for n in SIZES}


def body_of(kind: str, X: np.ndarray) -> bytes:
    rows = X.tolist()
    if kind == "csv":
        return "".join(",".join(str(v) for v in r) + "\n" for r in rows).encode()
    if kind == "json":
        return json.dumps({"instances": rows}).encode()
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def scores_of(kind: str, answer: bytes) -> np.ndarray:
    if kind == "csv":
        return np.array(answer.split(), np.float64)
    if kind == "json":
        return np.array([p["score"] for p in json.loads(answer)["predictions"]])
    return np.array([json.loads(line)["score"] for line in answer.splitlines()])


@pytest.fixture(scope="module")
def client_core() -> Iterator[int | None]:
    with pinned_thread(CLIENT_CORE) as core:
        yield core


@pytest.fixture(scope="module")
def server(pipeline, tmp_path_factory, client_core) -> Iterator[int]:
    store = tmp_path_factory.mktemp("store")
    from_sklearn(pipeline, COLUMNS).save(store / MODEL)
    flags = ["--max-rows-per-request", "200000", "--max-body-bytes", LIMIT]
    flags += ["--max-response-bytes", LIMIT]
    s = start_mmhost(store, SERVER_CORE, *flags).wait_ready()
    try:
        yield s.port
    finally:
        s.stop()


class Connection:
    """One keep-alive connection: POST a body, the answer's bytes (status checked)."""

    def __init__(self, port: int, kind: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {
            "Content-Type": TYPES[kind],
            "Accept": TYPES[kind],
            "X-Amzn-SageMaker-Target-Model": MODEL,
        }

    def post(self, body: bytes) -> bytes:
        self.conn.request("POST", "/endpoints/mmhost/invocations", body, self.headers)
        r = self.conn.getresponse()
        answer = r.read()
        assert r.status == 200, answer[:300]
        return answer


def _group(kind: str, n: int) -> str:
    return f"large requests over HTTP: {TYPES[kind]} in and out, {n:,} rows"


def _rounds(n: int) -> int:
    return 200 if n <= 100 else (30 if n <= 10_000 else 8)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(TYPES))
def test_mmhost_serve(benchmark, server, data, kind, n):
    X, want = data[n]
    body = body_of(kind, X)
    conn = Connection(server, kind)
    np.testing.assert_allclose(scores_of(kind, conn.post(body)), want, rtol=RTOL_PRICE)  # warm
    describe(benchmark, _group(kind, n), "mmhost serve (1 core), whole request", n)
    # (30 rounds at least: a request of 100,000 rows takes ~20 ms, and its median is noisy)
    answer = benchmark.pedantic(conn.post, (body,), rounds=max(_rounds(n), 30), iterations=1)
    np.testing.assert_allclose(scores_of(kind, answer), want, rtol=RTOL_PRICE)
    benchmark.extra_info["body_bytes"] = len(body)
    benchmark.extra_info["rows_per_s"] = n / benchmark.stats.stats.min
    conn.conn.close()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(TYPES))
def test_in_process_baseline(benchmark, pipeline, data, client_core, kind, n):
    X, want = data[n]
    body = body_of(kind, X)

    def csv() -> np.ndarray:
        frame = pd.read_csv(io.BytesIO(body), header=None, names=COLUMNS)
        return pipeline.predict(frame)

    def from_json() -> np.ndarray:
        if kind == "json":
            rows = json.loads(body)["instances"]
        else:
            rows = [json.loads(line) for line in body.splitlines()]
        frame = pd.DataFrame(np.array(rows, dtype=object), columns=COLUMNS)
        frame[COLUMNS[:6]] = frame[COLUMNS[:6]].astype(np.float64)
        return pipeline.predict(frame)

    fn = csv if kind == "csv" else from_json
    what = "pandas.read_csv + sklearn predict" if kind == "csv" else "json.loads + numpy + sklearn"
    describe(benchmark, _group(kind, n), f"in process: {what}", n, baseline=True)
    got = benchmark.pedantic(fn, rounds=_rounds(n), iterations=1)
    np.testing.assert_allclose(got, want, rtol=RTOL_PRICE)
    benchmark.extra_info["rows_per_s"] = n / benchmark.stats.stats.min
    benchmark.extra_info["client_core"] = client_core
    benchmark.extra_info["pid"] = os.getpid()
