"""Hardening II (issue 13): what an attacker and an unlucky operator could still break, one
regression test per defect, over a real uvicorn server on 127.0.0.1 (moto for S3). Each test
asserts the 4xx/503 and that ``/ping`` and a warm model keep answering; waits are bounded by
socket timeouts, never by wall-clock assertions."""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import select
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import xgboost as xgb
from conftest import RTOL_PRICE, house_pipeline, runtime_client
from numpy.lib import format as npy_format
from prometheus_client.parser import text_string_to_metric_families
from test_api_security import (
    A_KEY,
    A_SECRET,
    B_API_KEY,
    B_KEY,
    B_SECRET,
    FULL,
    NOBODY_API_KEY,
    PRINCIPALS,
    audit_lines,
    error_of,
    invoke,
    ny_only_policy,
    start_secured,
)
from test_hardening import CHICAGO, ROW, assert_still_serving

from mmhost.cli import main as cli
from mmhost.convert import from_sklearn, save_xgboost
from mmhost.errors import ModelNotFound
from mmhost.settings import Settings
from mmhost.store import FolderStore
from mmhost.tools.houses import COLUMNS

NY = "NewYork_NY/NewYork_NY.tar.gz"
HUGE = 2**62
TIMEOUT = 10  # seconds any one socket read may wait


def ping(url: str) -> None:
    assert httpx.get(f"{url}/ping", timeout=TIMEOUT).status_code == 200


def invocations(
    url: str,
    body: bytes | str,
    target: str = CHICAGO,
    content_type: str = "text/csv",
    timeout: float = TIMEOUT,
) -> httpx.Response:
    headers = {"content-type": content_type, "X-Amzn-SageMaker-Target-Model": target}
    return httpx.post(f"{url}/invocations", content=body, headers=headers, timeout=timeout)


def connect(url: str) -> socket.socket:
    where = urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=TIMEOUT)
    return sock


def read_reply(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection, which it must do cleanly (a reset
    or no close within ``TIMEOUT`` fails the test)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def open_connections(server) -> int:
    """Connections the server holds open now (uvicorn's own count)."""
    return len(server.server.server_state.connections)


def until(condition, tries: int = 200) -> None:
    """Wait (up to ``tries`` x 50 ms) for ``condition()``: the server's loop catching up."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the server never got there")


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply else 0


@pytest.fixture
def secured(serve, city_store, tmp_path):
    return lambda principals=PRINCIPALS, **options: start_secured(
        serve, city_store, tmp_path, principals, **options
    )


@pytest.fixture
def chicago(serve, city_store):
    """A server over the three city models, Chicago warm."""

    def start(**options):
        server = serve(store=str(city_store), **options)
        assert_still_serving(server.url)
        return server

    return start


# --- 1. declared shapes and counts ----------------------------------------------------------
def v2_body(shape: list[int], datatype: str) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "rows", "shape": shape, "datatype": datatype, "data": []}]}
    ).encode()


@pytest.mark.parametrize(
    ("shape", "datatype", "why"),
    [
        ([HUGE, 0], "BYTES", f"{HUGE} rows"),
        ([0, HUGE], "FP32", f"dimension of {HUGE}"),
        ([HUGE, 0], "FP32", f"{HUGE} rows"),
    ],
)
def test_a_huge_declared_v2_shape_is_a_400_before_any_row_is_made(chicago, shape, datatype, why):
    server = chicago()
    body = v2_body(shape, datatype)
    r = httpx.post(f"{server.url}/v2/models/{CHICAGO}/infer", content=body, timeout=TIMEOUT)
    assert r.status_code == 400 and why in r.json()["error"]
    r = invocations(server.url, body, content_type="application/json")
    assert r.status_code == 400 and why in r.json()["message"]
    ping(server.url)
    assert_still_serving(server.url)


def test_a_huge_zero_sized_npy_array_is_a_400(chicago):
    server = chicago()
    head = io.BytesIO()
    npy_format.write_array_header_1_0(
        head, {"descr": "<U1", "fortran_order": False, "shape": (HUGE, 0)}
    )
    r = invocations(server.url, head.getvalue(), content_type="application/x-npy")
    assert r.status_code == 400 and f"{HUGE} rows" in r.json()["message"]
    assert_still_serving(server.url)


# --- 2. answers have a size cap -------------------------------------------------------------
def test_an_answer_past_max_response_bytes_is_a_413_naming_the_numbers(chicago):
    server = chicago(max_response_bytes=1000)
    headers = {"content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": CHICAGO}
    url = f"{server.url}/invocations"
    # 300 rows x 1 score: no encoding fits (4 bytes a value at least), refused before scoring
    r = httpx.post(url, content=b"\n".join([ROW] * 300), headers=headers, timeout=TIMEOUT)
    assert r.status_code == 413
    assert (
        "300 rows x 1 values" in r.json()["message"]
        and "limit is 1000 bytes" in r.json()["message"]
    )
    # 100 rows pass that bound, but their JSON answer (~20 bytes a score) does not
    r = httpx.post(url, content=b"\n".join([ROW] * 100), headers=headers, timeout=TIMEOUT)
    assert r.status_code == 413 and "limit is 1000 bytes" in r.json()["message"]
    v2 = {
        "inputs": [
            {
                "name": "rows",
                "shape": [300, 8],
                "datatype": "BYTES",
                "data": ROW.decode().split(",") * 300,
            }
        ]
    }
    r = httpx.post(f"{server.url}/v2/models/{CHICAGO}/infer", json=v2, timeout=TIMEOUT)
    assert r.status_code == 413
    assert_still_serving(server.url)


# --- 3. one tenant's wide rows don't pad another's -------------------------------------------
def _booster(features: int) -> xgb.Booster:
    rng = np.random.default_rng(features)
    x = rng.normal(size=(200, 4))
    bst = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(x, x[:, 0] * 2), 5)
    if features == 4:
        return bst
    doc = json.loads(bst.save_raw("json"))  # the same trees, over a wider feature space
    doc["learner"]["learner_model_param"]["num_feature"] = str(features)
    doc["learner"]["feature_names"] = []
    doc["learner"]["feature_types"] = []
    wide = xgb.Booster()
    wide.load_model(bytearray(json.dumps(doc).encode()))
    return wide


def test_a_wide_model_in_the_batch_does_not_pad_a_narrow_ones_rows(serve, store):
    narrow, wide = _booster(4), _booster(100_000)
    save_xgboost(narrow, store / "narrow.tar.gz")
    save_xgboost(wide, store / "wide.tar.gz")
    server = serve(store=str(store))
    host = server.host
    calls: list[tuple[int, int]] = []
    forward = host.families.forward

    def spy(slab, x, slots):  # records each fused call's (rows, width), then scores it
        calls.append(tuple(x.shape))
        return forward(slab, x, slots)

    host.families.forward = spy
    rows = np.random.default_rng(0).normal(size=(15_000, 4)).astype(np.float32)
    wide_row = np.zeros((1, 100_000), np.float32)
    wide_row[0, :4] = rows[0]
    host.predict("narrow.tar.gz", rows[:1])
    host.predict("wide.tar.gz", wide_row)  # both resident, in one slab (one size class)
    calls.clear()
    got = host.predict_many([("narrow.tar.gz", rows), ("wide.tar.gz", wide_row)])
    np.testing.assert_allclose(got[0], narrow.predict(xgb.DMatrix(rows)), rtol=1e-6)
    np.testing.assert_allclose(got[1], wide.predict(xgb.DMatrix(wide_row)), rtol=1e-6)
    assert sorted(calls) == [(1, 100_000), (15_000, 4)]  # never 15,001 x 100,000
    # and over HTTP, concurrently: both answer
    body = "\n".join(",".join(map(str, r)) for r in rows[:2000].tolist())

    def call(target: str, data: str) -> int:
        r = invocations(server.url, data, target=target, timeout=60)
        return r.status_code

    wide_csv = ",".join(map(str, wide_row[0].tolist()))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(call, "narrow.tar.gz", body),
            pool.submit(call, "wide.tar.gz", wide_csv),
        ]
        assert [f.result() for f in futures] == [200, 200]
    assert max(r * w for r, w in calls) <= 2 * 100_000
    ping(server.url)


# --- 4. bodies are not held for clients without credentials ----------------------------------
def test_an_unauthenticated_client_is_refused_before_its_body_is_read(secured):
    server = secured(body_timeout_seconds=1.0, max_inflight_body_bytes=1024**2)
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"X-Amzn-SageMaker-Target-Model: " + NY.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % (6 * 1024**2)
    )
    socks = [connect(server.url) for _ in range(20)]
    for sock in socks:  # the head alone: the answer comes before any body byte is sent
        sock.sendall(head)
    replies = [read_reply(s) for s in socks]
    for s in socks:
        s.close()
    assert {status_of(r) for r in replies} == {403}
    assert all(b"MissingAuthenticationTokenException" in r for r in replies)
    assert server.host.settings.max_body_bytes == 6 * 1024**2
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)
    assert invoke(a, NY) > 0


def test_a_body_that_stalls_is_a_408_and_bodies_in_flight_are_capped(secured):
    server = secured(body_timeout_seconds=1.0, max_inflight_body_bytes=1024**2)
    auth = b"Authorization: Bearer " + B_API_KEY.encode() + b"\r\n"
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        + auth
        + b"X-Amzn-SageMaker-Target-Model: "
        + NY.encode()
        + b"\r\nContent-Length: %d\r\n\r\n"
    )
    stalled = connect(server.url)
    stalled.sendall(head % (len(ROW) + 1) + ROW)  # one byte short, forever
    reply = read_reply(stalled)
    stalled.close()
    assert status_of(reply) == 408 and b"did not arrive within 1 s" in reply
    busy = connect(server.url)  # authenticated, but its declared body passes the cap
    busy.sendall(head % (2 * 1024**2))
    reply = read_reply(busy)
    busy.close()
    assert status_of(reply) == 503 and b"retry" in reply
    b = runtime_client(server.url, key_id=B_KEY, secret=B_SECRET)
    assert invoke(b, NY) > 0


# --- 5. a full disk tier does not fail loads -------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    """A tmpfs of the given options, mounted for the test (skips where mounting is refused)."""
    mounts = []

    def mount(options: str) -> Path:
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_enospc_in_the_disk_tier_serves_the_model_and_leaves_no_temp_file(
    serve, city_store, tiny_fs, caplog
):
    disk = tiny_fs("size=200m,nr_inodes=3")  # room in bytes, but no inode for the record
    server = serve(store=str(city_store), disk_dir=str(disk))
    with caplog.at_level(logging.WARNING, logger="mmhost.cache"):
        assert_still_serving(server.url)  # a cold load whose disk copy can't be written
        assert_still_serving(server.url, NY)
    assert "could not keep" in caplog.text
    assert [p.name for p in disk.iterdir() if ".tmp" in p.name] == []
    ping(server.url)


def test_the_disk_tier_leaves_the_filesystem_its_free_space(serve, city_store, tiny_fs, caplog):
    disk = tiny_fs("size=1m")  # under MIN_FREE_BYTES free: nothing is kept, all is served
    server = serve(store=str(city_store), disk_dir=str(disk), disk_budget="10GiB")
    with caplog.at_level(logging.WARNING, logger="mmhost.cache"):
        assert_still_serving(server.url)
    assert "not keeping" in caplog.text
    assert list(disk.iterdir()) == []


# --- 6. slowloris ----------------------------------------------------------------------------
def test_a_head_sent_byte_by_byte_is_cut_off_with_a_408(chicago):
    server = chicago(header_timeout_seconds=1.0)
    sock = connect(server.url)
    sock.sendall(b"GET /ping HTTP/1.1\r\n")
    for _ in range(100):  # a header byte every 0.1 s, until the server answers
        if select.select([sock], [], [], 0.1)[0]:
            break
        sock.sendall(b"X")
    reply = read_reply(sock)
    sock.close()
    assert status_of(reply) == 408
    idle = connect(server.url)  # connected, nothing sent: closed too
    assert status_of(read_reply(idle)) == 408
    idle.close()
    ping(server.url)


def test_connections_past_the_cap_get_503_and_idle_ones_are_closed(chicago):
    server = chicago(max_connections=5, keep_alive_timeout_seconds=0.5, header_timeout_seconds=30.0)
    until(lambda: open_connections(server) == 0)
    held = [connect(server.url) for _ in range(5)]
    until(lambda: open_connections(server) == 5)
    extra = connect(server.url)
    assert status_of(read_reply(extra)) == 503
    extra.close()
    for s in held:
        s.close()
    until(lambda: open_connections(server) == 0)
    ping(server.url)
    kept = connect(server.url)  # a kept-alive connection, idle after its answer
    kept.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_reply(kept)  # the answer, then the server closes it (keep_alive_timeout_seconds)
    kept.close()
    assert status_of(reply) == 200
    assert_still_serving(server.url)


# --- 7. the audit log can't be amplified -----------------------------------------------------
def test_unauthenticated_audit_lines_are_clipped_and_rate_limited(secured):
    server = secured()
    path = "/models/" + "x" * 60_000
    for _ in range(30):
        r = httpx.get(
            server.url + path, headers={"Authorization": "Bearer " + "n" * 20}, timeout=TIMEOUT
        )
        assert r.status_code == 403
    time.sleep(1.1)  # the next line reports what was dropped meanwhile
    httpx.get(
        server.url + "/models", headers={"Authorization": "Bearer " + "n" * 20}, timeout=TIMEOUT
    )
    lines = [e for e in audit_lines(server) if e["event"] == "unauthenticated"]
    assert 2 <= len(lines) <= 16  # one a second at most (30 requests take well under 15 s)
    assert all(len(json.dumps(e)) < 1024 for e in lines)
    assert sum(e["dropped_since_last"] for e in lines) + len(lines) == 31
    b = runtime_client(server.url, key_id=B_KEY, secret=B_SECRET)
    assert invoke(b, NY) > 0


# --- 8. container names are per principal ----------------------------------------------------
def test_container_names_are_each_principals_own(secured):
    ny_loader = {
        **PRINCIPALS[0],
        "policies": [
            ny_only_policy("*"),
            {"Statement": {"Effect": "Allow", "Action": "mmhost:ListModels", "Resource": "*"}},
        ],
    }
    server = secured([ny_loader, PRINCIPALS[1], PRINCIPALS[2]], max_container_models=2)
    admin = {"Authorization": f"Bearer {B_API_KEY}"}
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)
    # principal A (NewYork_NY/* only) takes the name "chicago" for New York's model, by SigV4
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def signed(method: str, path: str, body: bytes = b"") -> httpx.Response:
        req = AWSRequest(
            method=method,
            url=server.url + path,
            data=body,
            headers={"Content-Type": "application/json"},
        )
        SigV4Auth(Credentials(A_KEY, A_SECRET), "sagemaker", "us-east-1").add_auth(req)
        return httpx.request(
            method, req.url, content=body, headers=dict(req.headers.items()), timeout=TIMEOUT
        )

    load = json.dumps({"model_name": "chicago", "url": NY}).encode()
    assert signed("POST", "/models", load).status_code == 200
    r = httpx.post(
        f"{server.url}/models",
        json={"model_name": "chicago", "url": CHICAGO},
        headers=admin,
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text  # not 409: the admin's "chicago" is its own
    reply = httpx.post(
        f"{server.url}/models/chicago/invoke",
        content=ROW,
        headers={**admin, "content-type": "text/csv"},
        timeout=TIMEOUT,
    )
    want = house_pipeline(0).predict(np.array([ROW.decode().split(",")], dtype=object))[0]
    assert reply.json()["predictions"][0]["score"] == pytest.approx(want, rel=RTOL_PRICE)
    assert [m["modelName"] for m in signed("GET", "/models").json()["models"]] == ["chicago"]
    assert signed("GET", "/models/chicago").json()["key"] == NY
    # what the admin loaded is invisible to A: the same answer as for a name nobody loaded
    httpx.post(
        f"{server.url}/models",
        json={"model_name": "houston", "url": "Houston_TX/Houston_TX.tar.gz"},
        headers=admin,
        timeout=TIMEOUT,
    )
    seen, unseen = signed("GET", "/models/houston"), signed("GET", "/models/nobody-loaded")
    assert seen.status_code == unseen.status_code == 403
    assert seen.json()["message"].replace("houston", "N") == unseen.json()["message"].replace(
        "nobody-loaded", "N"
    )
    # a bounded number of names each
    r = httpx.post(
        f"{server.url}/models",
        json={"model_name": "third", "url": NY},
        headers=admin,
        timeout=TIMEOUT,
    )
    assert r.status_code == 400 and "the limit is 2" in r.json()["message"]
    assert invoke(a, NY) > 0


# --- 9. unknown condition keys and policy variables are refused at start-up -------------------
@pytest.mark.parametrize(
    ("condition", "resource", "why"),
    [
        ({"StringLike": {"sagemaker:TargetModels": "Chicago_*"}}, "*", "'sagemaker:TargetModels'"),
        ({"StringEquals": {"aws:PrincipalTag/team": "ops"}}, "*", "'aws:PrincipalTag/team'"),
        ({"StringLike": {"sagemaker:TargetModel": "${aws:username}/*"}}, "*", "policy variables"),
        ({}, "arn:aws:sagemaker:*:*:endpoint/${aws:username}", "policy variables"),
    ],
)
def test_unknown_condition_keys_and_variables_stop_start_up(
    tmp_path, city_store, capsys, condition, resource, why
):
    deny = {"Effect": "Deny", "Action": "sagemaker:InvokeEndpoint", "Resource": resource}
    if condition:
        deny["Condition"] = condition
    principal = {
        **PRINCIPALS[1],
        "policies": [FULL, {"Version": "2012-10-17", "Statement": [deny]}],
    }
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"principals": [principal]}))
    assert cli(["serve", "--store", str(city_store), "--auth-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert why in err and "principals[0].policies[1].Statement[0]" in err


# --- 10. no existence oracle, no path leak ---------------------------------------------------
def test_a_load_is_authorized_before_the_store_is_looked_at(secured, city_store):
    server = secured()
    nobody = {"Authorization": f"Bearer {NOBODY_API_KEY}"}
    answers = []
    for url in (CHICAGO, "Nowhere/Nowhere.tar.gz", str(city_store / "Chicago_IL")):
        r = httpx.post(
            f"{server.url}/models",
            json={"model_name": "x", "url": url},
            headers=nobody,
            timeout=TIMEOUT,
        )
        answers.append((r.status_code, r.headers["x-amzn-ErrorType"]))
    assert answers == [(403, "AccessDeniedException")] * 3
    admin = {"Authorization": f"Bearer {B_API_KEY}"}
    r = httpx.post(
        f"{server.url}/models",
        json={"model_name": "x", "url": "Nowhere/Nowhere.tar.gz"},
        headers=admin,
        timeout=TIMEOUT,
    )
    assert r.status_code == 400 and "'Nowhere/Nowhere.tar.gz'" in r.json()["message"]
    assert str(city_store) not in r.json()["message"]  # the key and the store's name only


# --- 11. a cold load is charged once ---------------------------------------------------------
def test_concurrent_requests_for_one_cold_model_are_charged_one_load(secured):
    server = secured(cold_load_limit=1.0)
    client = runtime_client(server.url, key_id=B_KEY, secret=B_SECRET)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        scores = list(pool.map(lambda _: invoke(client, CHICAGO), range(20)))
    assert len(scores) == 20 and len(set(scores)) == 1
    assert server.host.stats()["loads"] == 1


# --- 12. non-ASCII target models through boto3 -----------------------------------------------
ZURICH = "Zürich/Zürich.tar.gz"


def test_a_non_ascii_target_model_is_invoked_through_boto3(secured, serve, city_store):
    from_sklearn(house_pipeline(7), COLUMNS).save(city_store / ZURICH)
    want = house_pipeline(7).predict(np.array([ROW.decode().split(",")], dtype=object))[0]
    open_server = serve(store=str(city_store))
    assert invoke(runtime_client(open_server.url), ZURICH) == pytest.approx(want, rel=RTOL_PRICE)
    zurich_only = {
        **PRINCIPALS[0],
        "policies": [
            {
                "Statement": {
                    "Effect": "Allow",
                    "Action": "sagemaker:InvokeEndpoint",
                    "Resource": "*",
                    "Condition": {"StringLike": {"sagemaker:TargetModel": "Zürich/*"}},
                }
            }
        ],
    }
    server = secured([zurich_only])
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)
    assert invoke(a, ZURICH) == pytest.approx(want, rel=RTOL_PRICE)
    assert error_of(lambda: invoke(a, NY))[0] == "AccessDeniedException"


# --- 13. large decodes in their own process --------------------------------------------------
def test_a_large_model_is_decoded_in_a_worker_process(serve, store):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6))
    bst = xgb.train({"max_depth": 6, "nthread": 1}, xgb.DMatrix(x, x[:, 0]), 40)
    save_xgboost(bst, store / "big.tar.gz")
    save_xgboost(_booster(4), store / "small.tar.gz")

    def expanded(name: str) -> int:  # a gzip's trailer holds its expanded size
        return int.from_bytes((store / name).read_bytes()[-4:], "little")

    assert expanded("small.tar.gz") < expanded("big.tar.gz")
    server = serve(store=str(store), large_artifact_bytes=expanded("big.tar.gz"))
    csv = "\n".join(",".join(map(str, r)) for r in x[:5].tolist())
    for target, model, rows in (
        ("small.tar.gz", _booster(4), x[:5, :4]),
        ("big.tar.gz", bst, x[:5]),
    ):
        body = (
            csv
            if target == "big.tar.gz"
            else "\n".join(",".join(map(str, r)) for r in rows.tolist())
        )
        r = invocations(server.url, body, target=target, timeout=60)
        got = [p["score"] for p in r.json()["predictions"]]
        np.testing.assert_allclose(
            got, model.predict(xgb.DMatrix(rows.astype(np.float32))), rtol=1e-6
        )
    assert server.host.cache.decoder.large_decodes == 1  # big only; small decoded in-thread
    ping(server.url)


# --- 14. 500s that were 4xx or 503s ----------------------------------------------------------
def test_a_deeply_nested_cell_is_a_400(chicago):
    server = chicago()
    cell = "[" * 900 + "]" * 900  # its repr recursed past Python's limit
    body = f'[[1992, 1531, 6, 3.0, 0.68, 1, {cell}, "n"]]'
    r = invocations(server.url, body, content_type="application/json")
    assert r.status_code == 400 and "unknown category a list" in r.json()["message"]
    assert_still_serving(server.url)


@pytest.mark.parametrize("query", ["next_page_token=%C2%B2", "next_page_token=" + "9" * 5000])
def test_bad_page_tokens_and_top_are_400s(chicago, query):
    server = chicago()
    assert httpx.get(f"{server.url}/models?{query}", timeout=TIMEOUT).status_code == 400
    top = query.replace("next_page_token", "top")
    assert httpx.get(f"{server.url}/stats?{top}", timeout=TIMEOUT).status_code == 400
    assert_still_serving(server.url)


def test_a_file_deleted_between_stat_and_read_is_not_found(city_store, monkeypatch):
    store = FolderStore(city_store)
    target = city_store / CHICAGO
    read = Path.read_bytes

    def deleted_first(self):  # the file goes between version() and read_bytes()
        if self == target:
            target.unlink()
        return read(self)

    monkeypatch.setattr(Path, "read_bytes", deleted_first)
    with pytest.raises(ModelNotFound, match="Chicago_IL.tar.gz") as info:
        store.fetch(CHICAGO)
    assert str(city_store.resolve()) not in str(info.value)


def test_a_client_gone_mid_body_is_neither_a_500_nor_an_internal_error(chicago, caplog):
    server = chicago()
    with caplog.at_level(logging.ERROR):
        sock = connect(server.url)
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"X-Amzn-SageMaker-Target-Model: "
            + CHICAGO.encode()
            + b"\r\nContent-Length: 1000\r\n\r\n1992,"
        )
        time.sleep(0.2)
        sock.close()
        assert_still_serving(server.url)
    assert "internal error" not in caplog.text
    metrics = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    statuses = [
        s.labels["status"]
        for f in text_string_to_metric_families(metrics)
        if f.name == "mmhost_errors"
        for s in f.samples
    ]
    assert "500" not in statuses


def test_a_500_closes_its_connection_cleanly(chicago, caplog):
    server = chicago()

    def bug(key):
        raise RuntimeError("a bug")

    server.host.store.version = bug  # a bug on the load path (Houston is cold)
    sock = connect(server.url)
    sock.sendall(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"X-Amzn-SageMaker-Target-Model: Houston_TX/Houston_TX.tar.gz\r\n"
        b"Content-Length: %d\r\n\r\n" % len(ROW) + ROW
    )
    with caplog.at_level(logging.ERROR):
        reply = read_reply(sock)  # ends in a clean close (EOF), not a reset
    sock.close()
    assert status_of(reply) == 500 and b"connection: close" in reply.lower()
    logged = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(logged) == 1  # ours, with its traceback; none from uvicorn
    assert not [r for r in caplog.records if r.getMessage().startswith("Exception in ASGI")]
    assert_still_serving(server.url)


# --- 15. footguns ----------------------------------------------------------------------------
def test_per_model_series_exist_for_loaded_models_only(chicago):
    server = chicago(per_model_metrics=True)
    for i in range(50):
        httpx.post(
            f"{server.url}/invocations",
            content=ROW,
            timeout=TIMEOUT,
            headers={
                "content-type": "text/csv",
                "X-Amzn-SageMaker-Target-Model": f"nope{i}.tar.gz",
            },
        )

    def series() -> set[str]:
        text = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
        return {
            s.labels["model"]
            for f in text_string_to_metric_families(text)
            if f.name == "mmhost_model_invocations"
            for s in f.samples
        }

    assert series() == {CHICAGO}
    server.host.unload(CHICAGO)
    assert series() == set()


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("--max-concurrent-downloads", "0", "max_concurrent_downloads must be >= 1"),
        ("--clock-skew-seconds", "-1", "clock_skew_seconds must be >= 0"),
        ("--load-timeout-seconds", "0", "load_timeout_seconds must be > 0"),
        ("--header-timeout-seconds", "nan", "header_timeout_seconds must be > 0"),
    ],
)
def test_numeric_settings_out_of_range_stop_start_up(city_store, capsys, flag, value, why):
    assert cli(["serve", "--store", str(city_store), flag, value]) == 2
    assert why in capsys.readouterr().err


def test_an_unwritable_disk_dir_stops_start_up_with_a_message(city_store, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli(["serve", "--store", str(city_store), "--disk-dir", str(blocker / "disk")]) == 2
    err = capsys.readouterr().err
    assert "is not a writable folder" in err and "Traceback" not in err


def test_a_model_bigger_than_the_device_budget_can_never_fit_and_is_not_decoded_again(
    serve, city_store
):
    server = serve(store=str(city_store), device_budget=64)
    for _ in range(2):
        r = invocations(server.url, ROW)
        assert r.status_code == 507 and "it can never be loaded here" in r.json()["message"]
    assert server.host.stats()["load_failures"] == 1  # decoded once; then answered from memory
    ping(server.url)


def test_settings_reject_what_they_cannot_honour():
    for bad in (
        {"max_response_bytes": 0},
        {"body_timeout_seconds": 0},
        {"max_connections": 0},
        {"decode_processes": -1},
        {"rate_burst": -1},
    ):
        with pytest.raises(ValueError, match="must be"):
            Settings(**bad)
