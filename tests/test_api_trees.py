"""XGBoost models over every route, with real clients against a real server on 127.0.0.1.

SageMaker's built-in XGBoost conventions: a ``model.tar.gz`` holding ``xgboost-model``; CSV rows
in (no header, empty cells are missing values); ``Accept: text/csv`` -> one score per line,
otherwise ``{"predictions": [{"score": ...}]}``.
"""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
import tritonclient.http as v2client
import xgboost as xgb
from botocore.exceptions import ClientError
from conftest import runtime_client

from mmhost.convert import save_xgboost

RTOL = 1e-5  # outputs after the link (see tests/test_families_trees.py)
BINARY = "xgb/binary/model.tar.gz"
SOFTPROB = "xgb/softprob/model.tar.gz"
REGRESSION = "xgb/regression/model.tar.gz"


def rows(n: int, seed: int, nan: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[rng.random(x.shape) < nan] = np.nan
    return x


def train(objective: str, **params) -> xgb.Booster:
    x = rows(300, 0)
    z = np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 2])
    y = np.digitize(z, [-0.5, 0.5]) if objective.startswith("multi") else (z > 0).astype(float)
    if objective == "reg:squarederror":
        y = z
    return xgb.train({"objective": objective, "max_depth": 5, **params}, xgb.DMatrix(x, y), 15)


@pytest.fixture(scope="module")
def boosters() -> dict[str, xgb.Booster]:
    return {
        BINARY: train("binary:logistic"),
        SOFTPROB: train("multi:softprob", num_class=3),
        REGRESSION: train("reg:squarederror"),
    }


@pytest.fixture
def server(serve, store, boosters):
    for name, bst in boosters.items():
        save_xgboost(bst, store / name)
    return serve(store=str(store))


def csv_body(x: np.ndarray) -> bytes:
    cells = [["" if math.isnan(v) else repr(v) for v in r] for r in x.tolist()]
    return "".join(",".join(r) + "\n" for r in cells).encode()


def invoke(client, target: str, body: bytes, accept: str = "application/json") -> dict:
    """boto3's invoke_endpoint with a CSV body."""
    return client.invoke_endpoint(
        EndpointName="mmhost", TargetModel=target, ContentType="text/csv", Accept=accept, Body=body
    )


def want(bst: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return bst.predict(xgb.DMatrix(x))


def test_boto3_csv_in_csv_out_one_score_per_line(server, boosters):
    client = runtime_client(server.url)
    x = rows(25, 1)
    reply = invoke(client, BINARY, csv_body(x), accept="text/csv")
    assert reply["ContentType"].startswith("text/csv")
    lines = reply["Body"].read().decode().splitlines()
    assert len(lines) == 25
    np.testing.assert_allclose([float(v) for v in lines], want(boosters[BINARY], x), rtol=RTOL)


def test_boto3_csv_in_json_out(server, boosters):
    client = runtime_client(server.url)
    x = rows(10, 2)
    for target in (BINARY, REGRESSION):
        reply = invoke(client, target, csv_body(x))
        preds = json.loads(reply["Body"].read())["predictions"]
        assert all(set(p) == {"score"} for p in preds)  # the built-in algorithm's shape
        got = [p["score"] for p in preds]
        np.testing.assert_allclose(got, want(boosters[target], x), rtol=RTOL, atol=1e-6)


def test_softprob_gives_every_class_probability(server, boosters):
    client = runtime_client(server.url)
    x = rows(6, 3)
    expected = want(boosters[SOFTPROB], x)  # (6, 3)
    for accept in ("text/csv", "application/json"):
        body = invoke(client, SOFTPROB, csv_body(x), accept=accept)["Body"].read()
        if accept == "text/csv":
            got = [[float(v) for v in line.split(",")] for line in body.decode().splitlines()]
        else:
            got = [p["score"] for p in json.loads(body)["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-6)


def test_json_instances_and_jsonlines(server, boosters):
    x = rows(4, 4, nan=0.0)
    body = {"instances": [{"features": r} for r in x.tolist()]}
    r = httpx.post(
        f"{server.url}/endpoints/mmhost/invocations",
        json=body,
        headers={"X-Amzn-SageMaker-Target-Model": REGRESSION, "Accept": "text/csv"},
    )
    assert r.status_code == 200, r.text
    got = [float(v) for v in r.text.splitlines()]
    np.testing.assert_allclose(got, want(boosters[REGRESSION], x), rtol=RTOL, atol=1e-6)


def test_bad_rows_are_clear_400s_and_the_model_keeps_serving(server, boosters):
    client = runtime_client(server.url)
    for body, why in [
        (b"1,2,3\n", "expected 4 values"),
        (b"1,2,abc,4\n", "column 'f2'"),
        (b"1,2,inf,4\n", "column 'f2'"),
    ]:
        with pytest.raises(ClientError) as info:
            invoke(client, BINARY, body)
        err = info.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert why in err["Error"]["Message"]
    x = rows(3, 5)
    reply = invoke(client, BINARY, csv_body(x))
    got = [p["score"] for p in json.loads(reply["Body"].read())["predictions"]]
    np.testing.assert_allclose(got, want(boosters[BINARY], x), rtol=RTOL)


def test_kserve_v2_infer_with_missing_values(server, boosters):
    client = v2client.InferenceServerClient(server.url.removeprefix("http://"))
    x = rows(5, 6)
    inp = v2client.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    res = client.infer(BINARY, [inp])
    np.testing.assert_allclose(res.as_numpy("score"), want(boosters[BINARY], x), rtol=RTOL)
    meta = client.get_model_metadata(BINARY)
    assert [i["name"] for i in meta["inputs"]] == ["f0", "f1", "f2", "f3"]
    assert meta["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1]}]
    meta = client.get_model_metadata(SOFTPROB)  # a bare softprob model: k columns, no labels
    assert meta["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1, 3]}]
    res = client.infer(SOFTPROB, [inp])
    np.testing.assert_allclose(res.as_numpy("score"), want(boosters[SOFTPROB], x), rtol=RTOL)


def test_container_contract_load_and_invoke(server, boosters, store):
    base = server.url
    r = httpx.post(f"{base}/models", json={"model_name": "reg", "url": str(store / REGRESSION)})
    assert r.status_code == 200, r.text
    x = rows(3, 7, nan=0.0)
    r = httpx.post(
        f"{base}/models/reg/invoke",
        content=csv_body(x),
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
    )
    assert r.status_code == 200, r.text
    got = [float(v) for v in r.text.splitlines()]
    np.testing.assert_allclose(got, want(boosters[REGRESSION], x), rtol=RTOL, atol=1e-6)


def test_a_bad_model_file_is_a_424_naming_it(server, store):
    (store / "xgb" / "broken").mkdir(parents=True)
    (store / "xgb" / "broken" / "xgboost-model").write_bytes(b'{"learner": {"truncated')
    client = runtime_client(server.url)
    with pytest.raises(ClientError) as info:
        invoke(client, "xgb/broken", b"1,2,3,4")
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "xgb/broken" in err["Error"]["Message"] and "JSON" in err["Error"]["Message"]
