"""KServe V2 routes with a real V2 client (``tritonclient[http]``) against a real server."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as v2client
from conftest import ATOL_PROBA, RTOL_PRICE, house_classifier, house_pipeline
from sklearn.linear_model import LinearRegression
from tritonclient.utils import InferenceServerException

from mmhost.convert import from_sklearn
from mmhost.tools.houses import COLUMNS, houses

CHICAGO = "Chicago_IL/Chicago_IL.tar.gz"


@pytest.fixture
def server(serve, city_store):
    return serve(store=str(city_store))


@pytest.fixture
def client(server):
    c = v2client.InferenceServerClient(server.url.removeprefix("http://"))
    yield c
    c.close()


def _bytes_input(rows, binary: bool = True) -> v2client.InferInput:
    x = np.array([[str(v) for v in r] for r in rows], dtype=object)  # (N, 8)
    inp = v2client.InferInput("rows", list(x.shape), "BYTES")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "mmhost" and "model_repository" in meta["extensions"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_scikit_learn(client, binary):
    rows = houses(6, seed=5)[0].tolist()
    out = v2client.InferRequestedOutput("score", binary_data=binary)
    res = client.infer(CHICAGO, [_bytes_input(rows, binary)], outputs=[out])
    want = house_pipeline(0).predict(np.array(rows, dtype=object))
    np.testing.assert_allclose(res.as_numpy("score"), want, rtol=RTOL_PRICE)
    assert res.get_response()["model_name"] == CHICAGO


@pytest.mark.parametrize("binary", [True, False])
def test_a_large_infer_is_written_natively_and_matches_scikit_learn(client, binary):
    rows = houses(2_000, seed=6)[0].tolist()  # past codecs.text.MIN_ROWS: the C++ writer
    out = v2client.InferRequestedOutput("score", binary_data=binary)
    res = client.infer(CHICAGO, [_bytes_input(rows, binary)], outputs=[out])
    want = house_pipeline(0).predict(np.array(rows, dtype=object))
    np.testing.assert_allclose(res.as_numpy("score"), want, rtol=RTOL_PRICE)


def test_one_tensor_per_column(client):
    rows = houses(3, seed=9)[0]
    inputs = []
    for j, name in enumerate(COLUMNS):
        if j < 6:
            inp = v2client.InferInput(name, [3], "FP32")
            inp.set_data_from_numpy(rows[:, j].astype(np.float32))
        else:
            inp = v2client.InferInput(name, [3, 1], "BYTES")
            inp.set_data_from_numpy(rows[:, j : j + 1].astype(object))
        inputs.append(inp)
    res = client.infer(CHICAGO, inputs)
    want = house_pipeline(0).predict(rows)
    np.testing.assert_allclose(res.as_numpy("score"), want, rtol=RTOL_PRICE)


def test_fp32_matrix_for_a_numeric_model(serve, store):
    X, y = houses(100, seed=1)
    num = X[:, :6].astype(np.float32)
    reg = LinearRegression().fit(num, y)
    from_sklearn(reg).save(store / "numeric" / "model.tar.gz")
    c = v2client.InferenceServerClient(serve(store=str(store)).url.removeprefix("http://"))
    inp = v2client.InferInput("x", [4, 6], "FP32")
    inp.set_data_from_numpy(num[:4])
    res = c.infer("numeric/model.tar.gz", [inp])
    np.testing.assert_allclose(res.as_numpy("score"), reg.predict(num[:4]), rtol=RTOL_PRICE)


def test_classifier_outputs_score_and_predicted_label(serve, store):
    clf = house_classifier()
    from_sklearn(clf, COLUMNS).save(store / "clf.tar.gz")
    c = v2client.InferenceServerClient(serve(store=str(store)).url.removeprefix("http://"))
    rows = houses(10, seed=4)[0].tolist()
    res = c.infer("clf.tar.gz", [_bytes_input(rows)])
    X = np.array(rows, dtype=object)
    np.testing.assert_allclose(res.as_numpy("score"), clf.predict_proba(X)[:, 1], atol=ATOL_PROBA)
    assert res.as_numpy("predicted_label").tolist() == clf.predict(X).tolist()
    meta = c.get_model_metadata("clf.tar.gz")
    assert [o["name"] for o in meta["outputs"]] == ["score", "predicted_label"]


def test_repository_load_ready_metadata_unload(client):
    assert not client.is_model_ready(CHICAGO)
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index == {
        "Chicago_IL/Chicago_IL.tar.gz": "UNAVAILABLE",
        "Houston_TX/Houston_TX.tar.gz": "UNAVAILABLE",
        "NewYork_NY/NewYork_NY.tar.gz": "UNAVAILABLE",
    }
    client.load_model(CHICAGO)
    assert client.is_model_ready(CHICAGO)
    meta = client.get_model_metadata(CHICAGO)
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    assert meta["inputs"][6]["datatype"] == "BYTES"
    assert client.get_model_repository_index()[0]["state"] == "READY"
    client.unload_model(CHICAGO)
    assert not client.is_model_ready(CHICAGO)


def test_errors_are_v2_shaped_and_name_the_problem(client, server):
    with pytest.raises(InferenceServerException, match="was not found"):
        client.infer("Paris_FR/Paris_FR.tar.gz", [_bytes_input([[1] * 8])])
    with pytest.raises(InferenceServerException, match="unknown category"):
        client.infer(CHICAGO, [_bytes_input([[1992, 1531, 6, 3.0, 0.68, 1, "maybe", "n"]])])
    with pytest.raises(InferenceServerException, match="unknown output"):
        client.infer(
            CHICAGO,
            [_bytes_input([[1992, 1531, 6, 3.0, 0.68, 1, "y", "n"]])],
            outputs=[v2client.InferRequestedOutput("nope")],
        )
    r = httpx.post(f"{server.url}/v2/models/{CHICAGO}/infer", content=b'{"inputs": 3}')
    assert r.status_code == 400
    assert r.json() == {"error": '"inputs" must be a non-empty list of tensors'}
    assert "x-amzn-ErrorType" not in r.headers


def test_a_bad_index_request_is_400(server):
    r = httpx.post(f"{server.url}/v2/repository/index", content=b"{nope")
    assert r.status_code == 400
    assert "the index request is not valid JSON" in r.json()["error"]


def test_versioned_routes_config_and_statistics_as_tritonclient_calls_them(client, server):
    rows = houses(4, seed=2)[0].tolist()
    want = house_pipeline(0).predict(np.array(rows, dtype=object))
    client.load_model(CHICAGO)
    version = client.get_model_metadata(CHICAGO)["versions"][0]
    # every model route under /versions/{v}, for a name holding "/" and ".tar.gz"
    assert client.is_model_ready(CHICAGO, model_version=version)
    meta = client.get_model_metadata(CHICAGO, model_version=version)
    assert meta["name"] == CHICAGO and meta["versions"] == [version]
    res = client.infer(CHICAGO, [_bytes_input(rows)], model_version=version)
    np.testing.assert_allclose(res.as_numpy("score"), want, rtol=RTOL_PRICE)
    config = client.get_model_config(CHICAGO)
    assert config == client.get_model_config(CHICAGO, model_version=version)
    assert config["name"] == CHICAGO and config["max_batch_size"] == 100_000
    assert [(i["name"], i["data_type"]) for i in config["input"]][5:7] == [
        ("garage_spaces", "TYPE_FP32"),
        ("deck", "TYPE_STRING"),
    ]
    assert [o["name"] for o in config["output"]] == ["score"]
    # the statistics extension: per model and for all; two requests of 4 rows answered
    client.infer(CHICAGO, [_bytes_input(rows)])
    stats = client.get_inference_statistics(CHICAGO)["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == CHICAGO and stats[0]["version"] == version
    assert stats[0]["inference_count"] == 8 and stats[0]["execution_count"] == 2
    assert stats[0]["inference_stats"]["success"]["count"] == 2
    assert stats[0]["inference_stats"]["success"]["ns"] > 0 and stats[0]["last_inference"] > 0
    assert client.get_inference_statistics(CHICAGO, model_version=version) == {"model_stats": stats}
    assert [s["name"] for s in client.get_inference_statistics()["model_stats"]] == [CHICAGO]
    # none of these sub-routes was read as a model name (nothing failed to load)
    assert server.host.stats()["load_failures"] == 0
    assert sorted(server.host.list_models()) == [CHICAGO]


def test_an_unserved_version_or_an_unloaded_model_is_404(client, server):
    client.load_model(CHICAGO)
    with pytest.raises(InferenceServerException, match="has no version '7' here") as e:
        client.get_model_metadata(CHICAGO, model_version="7")
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException, match="has no version"):
        client.infer(CHICAGO, [_bytes_input([[1992, 1531, 6, 3.0, 0.68, 1, "y", "n"]])], "7")
    assert not client.is_model_ready(CHICAGO, model_version="7")
    with pytest.raises(InferenceServerException, match="is not loaded"):
        client.get_inference_statistics("Houston_TX/Houston_TX.tar.gz")
    assert server.host.stats()["load_failures"] == 0
