"""The SageMaker runtime routes through boto3's sagemaker-runtime client, against a real uvicorn
server on 127.0.0.1 (``serve`` fixture)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError
from conftest import ATOL_PROBA, RTOL_PRICE, house_classifier, house_pipeline, runtime_client
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mmhost.api import ServerThread, create_app
from mmhost.convert import from_sklearn
from mmhost.tools.houses import COLUMNS, houses

CHICAGO = "Chicago_IL/Chicago_IL.tar.gz"
ROW = [1992, 1531, 6, 3.0, 0.68, 1, "y", "n"]
NAMED = dict(zip(COLUMNS, ROW, strict=True))  # {"year_built": 1992, ...}


def _csv(rows) -> bytes:
    return "".join(",".join(str(v) for v in r) + "\n" for r in rows).encode()


def _want(pipe, rows) -> np.ndarray:
    return pipe.predict(np.array(rows, dtype=object))


def _scores(reply) -> list:
    return [p["score"] for p in json.loads(reply["Body"].read())["predictions"]]


@pytest.fixture
def server(serve, city_store):
    return serve(store=str(city_store))


@pytest.fixture
def client(server):
    return runtime_client(server.url)


def _invoke(client, body, content_type="text/csv", accept="application/json", target=CHICAGO):
    return client.invoke_endpoint(
        EndpointName="mmhost",
        TargetModel=target,
        ContentType=content_type,
        Accept=accept,
        Body=body,
    )


def _error(call) -> tuple[str, int, dict]:
    with pytest.raises(ClientError) as info:
        call()
    r = info.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r


def test_csv_rows_get_scikit_learns_prices(client):
    rows = houses(5, seed=7)[0].tolist()
    for i, city in enumerate(["Chicago_IL", "Houston_TX", "NewYork_NY"]):
        reply = _invoke(client, _csv(rows), target=f"{city}/{city}.tar.gz")
        want = _want(house_pipeline(i, 1.0 + i), rows)
        np.testing.assert_allclose(_scores(reply), want, rtol=RTOL_PRICE)
        assert reply["ContentType"] == "application/json"
        assert reply["InvokedProductionVariant"] == "AllTraffic"


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/json", json.dumps({"instances": [{"features": ROW}, {"features": ROW}]})),
        ("application/json", json.dumps({"instances": [ROW, ROW]})),
        ("application/json", json.dumps([ROW, ROW])),
        (
            "application/json",
            json.dumps({"instances": [{"data": {"features": {"values": ROW}}}] * 2}),
        ),
        ("application/json", json.dumps({"inputs": [ROW, ROW]})),
        (
            "application/json",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": c,
                            "shape": [2],
                            "datatype": "BYTES" if j > 5 else "FP64",
                            "data": [ROW[j]] * 2,
                        }
                        for j, c in enumerate(COLUMNS)
                    ]
                }
            ),
        ),
        ("application/jsonlines", json.dumps({"features": ROW}) + "\n" + json.dumps(ROW) + "\n"),
        # objects of named columns, in any order
        ("application/json", json.dumps({"instances": [NAMED] * 2})),
        ("application/json", json.dumps([dict(reversed(NAMED.items()))] * 2)),
        ("application/jsonlines", (json.dumps(NAMED) + "\n") * 2),
        ("text/csv; charset=utf-8", _csv([ROW, ROW]).decode()),
    ],
)
def test_every_body_format_gives_the_same_prices(client, content_type, body):
    reply = _invoke(client, body.encode(), content_type)
    np.testing.assert_allclose(
        _scores(reply), _want(house_pipeline(0), [ROW, ROW]), rtol=RTOL_PRICE
    )


def test_npy_bodies(serve, store):
    X, y = houses(200, seed=3)
    num = X[:, :6].astype(np.float64)
    pipe = Pipeline([("s", StandardScaler()), ("lr", LinearRegression())]).fit(num, y)
    from_sklearn(pipe, COLUMNS[:6]).save(store / "numeric.tar.gz")
    from_sklearn(house_pipeline(0), COLUMNS).save(store / "mixed.tar.gz")
    client = runtime_client(serve(store=str(store)).url)
    buf = io.BytesIO()
    np.save(buf, num[:4].astype(np.float32))
    reply = _invoke(client, buf.getvalue(), "application/x-npy", target="numeric.tar.gz")
    np.testing.assert_allclose(_scores(reply), pipe.predict(num[:4]), rtol=RTOL_PRICE)
    buf = io.BytesIO()
    np.save(buf, np.array([[str(v) for v in ROW]]))  # a string array for categorical columns
    reply = _invoke(client, buf.getvalue(), "application/x-npy", target="mixed.tar.gz")
    np.testing.assert_allclose(_scores(reply), _want(house_pipeline(0), [ROW]), rtol=RTOL_PRICE)


def test_accept_csv_and_jsonlines(client):
    want = _want(house_pipeline(0), [ROW, ROW])
    csv_reply = _invoke(client, _csv([ROW, ROW]), accept="text/csv")
    assert csv_reply["ContentType"].startswith("text/csv")
    got = [float(v) for v in csv_reply["Body"].read().decode().split()]
    np.testing.assert_allclose(got, want, rtol=RTOL_PRICE)
    lines = _invoke(client, _csv([ROW, ROW]), accept="application/jsonlines")["Body"].read()
    got = [json.loads(line)["score"] for line in lines.decode().splitlines()]
    np.testing.assert_allclose(got, want, rtol=RTOL_PRICE)


def test_classifier_answers_score_and_predicted_label(serve, store):
    clf = house_classifier()
    from_sklearn(clf, COLUMNS).save(store / "clf.tar.gz")
    client = runtime_client(serve(store=str(store)).url)
    rows = houses(20, seed=11)[0].tolist()
    preds = json.loads(_invoke(client, _csv(rows), target="clf.tar.gz")["Body"].read())
    proba = clf.predict_proba(np.array(rows, dtype=object))[:, 1]
    got = preds["predictions"]
    np.testing.assert_allclose([p["score"] for p in got], proba, atol=ATOL_PROBA)
    assert [p["predicted_label"] for p in got] == clf.predict(np.array(rows, dtype=object)).tolist()


def test_custom_attributes_are_passed_back(client):
    reply = client.invoke_endpoint(
        EndpointName="mmhost",
        TargetModel=CHICAGO,
        ContentType="text/csv",
        Body=_csv([ROW]),
        CustomAttributes="trace=abc-123",
    )
    assert reply["CustomAttributes"] == "trace=abc-123"


# --- errors: the codes boto3 users catch ---------------------------------------------------
@pytest.mark.parametrize(
    "target, body, words",
    [
        (CHICAGO, b"1992,1531,6\n", "expected 8 values"),
        (CHICAGO, b"1992,big,6,3.0,0.68,1,y,n\n", "'big' is not a number"),
        (CHICAGO, b"1992,1531,6,3.0,0.68,1,maybe,n\n", "unknown category 'maybe'"),
        (
            CHICAGO,
            (",".join(COLUMNS) + "\n").encode() + _csv([ROW]),
            "row 0 names columns (year_built, square_feet, num_bedrooms, num_bathrooms): a "
            "header row is not accepted; send the values only, in the order year_built,",
        ),
        ("Paris_FR/Paris_FR.tar.gz", _csv([ROW]), "'Paris_FR/Paris_FR.tar.gz' was not found"),
        ("../../etc/passwd", _csv([ROW]), "invalid target model name"),
    ],
)
def test_bad_requests_are_validation_errors(client, target, body, words):
    code, status, r = _error(lambda: _invoke(client, body, target=target))
    assert (code, status) == ("ValidationError", 400)
    assert words in r["Error"]["Message"]
    assert "Traceback" not in r["Error"]["Message"]


def test_named_columns_that_miss_some_name_them(client):
    body = json.dumps({"instances": [{"year_built": 1992, "roof": "flat"}]}).encode()
    code, status, r = _error(lambda: _invoke(client, body, "application/json"))
    assert (code, status) == ("ValidationError", 400)
    assert "missing column(s) square_feet" in r["Error"]["Message"]
    assert "unknown column(s) roof" in r["Error"]["Message"]


def test_a_key_naming_the_folder_of_one_archive_names_that_file(client):
    code, status, r = _error(lambda: _invoke(client, _csv([ROW]), target="Chicago_IL"))
    assert status == 424
    assert (
        "this key is a folder that holds one archive, 'Chicago_IL.tar.gz'" in r["Error"]["Message"]
    )


def test_bad_json_is_a_validation_error(client):
    code, status, r = _error(lambda: _invoke(client, b'{"instances": [', "application/json"))
    assert (code, status) == ("ValidationError", 400)
    assert "not valid JSON" in r["Error"]["Message"]


def test_missing_target_model_header(client):
    code, status, r = _error(
        lambda: client.invoke_endpoint(EndpointName="mmhost", ContentType="text/csv", Body=b"1")
    )
    assert (code, status) == ("ValidationError", 400)
    assert "missing a target model header" in r["Error"]["Message"]


def test_unknown_endpoint_name(client):
    code, status, r = _error(
        lambda: client.invoke_endpoint(
            EndpointName="other", TargetModel=CHICAGO, ContentType="text/csv", Body=_csv([ROW])
        )
    )
    assert (code, status) == ("ValidationError", 400)
    assert "Endpoint other not found" in r["Error"]["Message"]


def test_media_types_415_and_406(client):
    code, status, _ = _error(lambda: _invoke(client, b"x", "image/png"))
    assert (code, status) == ("ValidationError", 415)
    code, status, _ = _error(lambda: _invoke(client, _csv([ROW]), accept="application/xml"))
    assert (code, status) == ("ValidationError", 406)


def test_bodies_over_6_mib_are_refused_and_the_server_keeps_serving(client):
    big = _csv([ROW]) * (6 * 1024 * 1024 // len(_csv([ROW])) + 1)
    code, status, r = _error(lambda: _invoke(client, big))
    assert (code, status) == ("ValidationError", 413)
    assert "6291456" in r["Error"]["Message"]
    assert len(_scores(_invoke(client, _csv([ROW])))) == 1


def test_a_broken_artifact_is_a_model_error(serve, store):
    (store / "broken.tar.gz").write_bytes(b"\x1f\x8b this is not a gzip stream")
    from_sklearn(house_pipeline(0), COLUMNS).save(store / "ok.tar.gz")
    client = runtime_client(serve(store=str(store)).url)
    code, status, r = _error(lambda: _invoke(client, _csv([ROW]), target="broken.tar.gz"))
    assert (code, status) == ("ModelError", 424)
    assert r["OriginalStatusCode"] == 500
    assert "broken.tar.gz" in r["OriginalMessage"]
    assert len(_scores(_invoke(client, _csv([ROW]), target="ok.tar.gz"))) == 1


def test_a_load_past_the_timeout_is_model_not_ready_then_serves(serve, city_store):
    client = runtime_client(serve(store=str(city_store), load_timeout_seconds=1e-6).url)
    code, status, r = _error(lambda: _invoke(client, _csv([ROW])))
    assert (code, status) == ("ModelNotReadyException", 429)
    assert "still loading" in r["Error"]["Message"]
    deadline = time.monotonic() + 30
    while True:  # the load went on without the request: a retry finds the model resident
        try:
            reply = _invoke(client, _csv([ROW]))
            break
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ModelNotReadyException"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    np.testing.assert_allclose(_scores(reply), _want(house_pipeline(0), [ROW]), rtol=RTOL_PRICE)


def test_a_closed_host_is_service_unavailable(host_factory, city_store):
    # the app's host is closed while the server (on another host's loop) keeps running
    served = host_factory(store=str(city_store))
    with ServerThread(host_factory(store=str(city_store)), port=0, app=create_app(served)) as s:
        served.close()
        code, status, _ = _error(lambda: _invoke(runtime_client(s.url), _csv([ROW])))
    assert (code, status) == ("ServiceUnavailable", 503)
