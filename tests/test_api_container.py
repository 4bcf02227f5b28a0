"""The multi-model container contract (/models, /invocations, /ping) over real HTTP."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from conftest import RTOL_PRICE, house_pipeline

from mmhost.api import ServerThread, create_app

ROW = "1992,1531,6,3.0,0.68,1,y,n"
CHICAGO = "Chicago_IL/Chicago_IL.tar.gz"


def _want(seed: int, factor: float) -> float:
    return float(house_pipeline(seed, factor).predict(np.array([ROW.split(",")], dtype=object))[0])


@pytest.fixture
def http(serve, city_store):
    server = serve(store=str(city_store))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        c.store = city_store  # type: ignore[attr-defined]
        yield c


def _invoke(http, name: str) -> httpx.Response:
    return http.post(f"/models/{name}/invoke", content=ROW, headers={"content-type": "text/csv"})


def test_ping(http):
    assert http.get("/ping").status_code == 200


def test_load_list_describe_invoke_unload(http):
    assert http.get("/models").json() == {"models": []}
    r = http.post("/models", json={"model_name": "chicago/v1", "url": CHICAGO})
    assert r.status_code == 200, r.text
    listed = http.get("/models").json()["models"]
    assert listed == [{"modelName": "chicago/v1", "modelUrl": CHICAGO}]
    assert http.get("/models/chicago/v1").json()["modelUrl"] == CHICAGO
    r = _invoke(http, "chicago/v1")
    assert r.status_code == 200
    assert r.json()["predictions"][0]["score"] == pytest.approx(_want(0, 1.0), rel=RTOL_PRICE)
    assert http.delete("/models/chicago/v1").status_code == 200
    assert http.get("/models/chicago/v1").status_code == 404
    assert _invoke(http, "chicago/v1").status_code == 404


def test_url_may_be_a_path_inside_the_store_or_a_model_folder(http):
    folder = http.store / "Houston_TX"  # holds exactly one archive, as an unpacked model dir
    assert http.post("/models", json={"model_name": "h", "url": str(folder)}).status_code == 200
    r = _invoke(http, "h")
    assert r.json()["predictions"][0]["score"] == pytest.approx(_want(1, 2.0), rel=RTOL_PRICE)
    url = f"file://{http.store / 'NewYork_NY' / 'NewYork_NY.tar.gz'}"
    assert http.post("/models", json={"model_name": "ny", "url": url}).status_code == 200


def test_a_second_load_of_a_name_is_409(http):
    assert http.post("/models", json={"model_name": "c", "url": CHICAGO}).status_code == 200
    r = http.post("/models", json={"model_name": "c", "url": CHICAGO})
    assert r.status_code == 409
    assert "already loaded" in r.json()["message"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model_name": "x", "url": "/etc"}, 400, "outside the store"),
        ({"model_name": "x", "url": "../.."}, 400, "invalid target model name"),
        ({"model_name": "x", "url": "Paris_FR/Paris_FR.tar.gz"}, 400, "not found"),
        ({"model_name": "x", "url": "."}, 400, "invalid target model name"),
        ({"model_name": "", "url": CHICAGO}, 400, "model_name"),
        ({"url": CHICAGO}, 400, "model_name"),
        ([1, 2], 400, "model_name"),
    ],
)
def test_bad_loads_are_refused_and_nothing_is_registered(http, body, status, words):
    r = http.post("/models", json=body)
    assert r.status_code == status
    assert words in r.json()["message"]
    assert r.headers["x-amzn-ErrorType"] == "ValidationError"
    assert http.get("/models").json() == {"models": []}


def test_unknown_names_are_404(http):
    assert http.get("/models/nope").status_code == 404
    assert http.delete("/models/nope").status_code == 404
    assert _invoke(http, "nope").status_code == 404


def test_the_model_list_is_paged(http, monkeypatch):
    import mmhost.api.container as container

    monkeypatch.setattr(container, "PAGE", 2)
    for i in range(5):
        http.post("/models", json={"model_name": f"m{i}", "url": CHICAGO})
    names, token = [], None
    while True:
        page = http.get("/models", params={"next_page_token": token} if token else {}).json()
        names += [m["modelName"] for m in page["models"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert names == [f"m{i}" for i in range(5)]
    assert http.get("/models", params={"next_page_token": "zz"}).status_code == 400


def _list_all(http, **params) -> list[str]:
    names, token = [], None
    while True:
        page = http.get(
            "/models", params={**params, **({"next_page_token": token} if token else {})}
        )
        assert page.status_code == 200, page.text
        names += [m["modelName"] for m in page.json()["models"]]
        token = page.json().get("nextPageToken")
        if token is None:
            return names


def test_the_store_can_be_listed_page_by_page(http, monkeypatch):
    import mmhost.api.container as container

    monkeypatch.setattr(container, "PAGE", 2)
    everything = sorted(p.relative_to(http.store).as_posix() for p in http.store.rglob("*.tar.gz"))
    assert len(everything) > 2
    assert _list_all(http, source="store") == everything
    assert _list_all(http, source="store", prefix="Chicago") == [CHICAGO]
    assert _list_all(http) == []  # nothing loaded: the default lists loaded models
    listed = http.get("/models", params={"source": "store"}).json()["models"][0]
    assert (
        http.post("/models", json={"model_name": "x", "url": listed["modelUrl"]}).status_code == 200
    )
    assert http.get("/models", params={"source": "bucket"}).status_code == 400
    bad = http.get("/models", params={"source": "store", "prefix": "a\x01"})
    assert bad.status_code == 400 and "printable" in bad.json()["message"]


def test_invocations_route_uses_the_target_model_header(http):
    r = http.post(
        "/invocations",
        content=ROW,
        headers={"content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": CHICAGO},
    )
    assert r.status_code == 200
    assert r.headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert r.json()["predictions"][0]["score"] == pytest.approx(_want(0, 1.0), rel=RTOL_PRICE)
    r = http.post("/invocations", content=ROW, headers={"content-type": "text/csv"})
    assert r.status_code == 400
    assert "missing a target model header" in r.json()["message"]


def test_unknown_routes_and_methods_have_the_error_shape(http):
    r = http.get("/nowhere")
    assert r.status_code == 404
    assert r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert http.put("/ping").status_code == 405


def test_a_bug_is_a_500_without_a_stack_trace(host_factory, city_store):
    host = host_factory(store=str(city_store), log_level="error")
    app = create_app(host)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with ServerThread(host, port=0, app=app) as server:
        r = httpx.get(server.url + "/boom")
    assert r.status_code == 500
    assert r.headers["x-amzn-ErrorType"] == "InternalFailure"
    assert "secret" not in r.text and "Traceback" not in r.text


def test_a_model_that_cannot_fit_is_507(serve, city_store):
    server = serve(store=str(city_store), device_budget=16, capacity_wait_seconds=0.1)
    r = httpx.post(server.url + "/models", json={"model_name": "c", "url": CHICAGO}, timeout=30)
    assert r.status_code == 507
    assert "device budget" in r.json()["message"]
    assert httpx.get(server.url + "/models").json() == {"models": []}


def test_a_load_request_that_is_not_json_is_400(http):
    r = http.post("/models", content=b'{"model_name": ')
    assert r.status_code == 400
    assert "the load request is not valid JSON" in r.json()["message"]


def test_one_registry_the_v2_repository_does_not_unload_what_a_container_name_holds(http):
    assert http.post("/models", json={"model_name": "chicago", "url": CHICAGO}).status_code == 200
    index = http.post("/v2/repository/index", json={"ready": True}).json()
    assert [m["name"] for m in index] == [CHICAGO]  # the same data plane: loaded once
    r = http.post(f"/v2/repository/models/{CHICAGO}/unload")
    assert r.status_code == 409 and "1 container-contract name(s)" in r.json()["error"]
    assert _invoke(http, "chicago").status_code == 200  # still served under its name
    assert http.delete("/models/chicago").status_code == 200  # the last name: unloaded
    assert http.post("/v2/repository/index", json={"ready": True}).json() == []
