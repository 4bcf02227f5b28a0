"""The S3 store against a real S3-compatible server on loopback (moto's server mode), with real
boto3 clients on both sides."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import boto3
import httpx
import numpy as np
import pytest
from botocore.exceptions import ClientError
from conftest import RTOL_PRICE, house_pipeline, runtime_client
from sklearn.linear_model import LinearRegression

from mmhost.convert import from_sklearn
from mmhost.errors import ModelNotFound, StoreAccessDenied, StoreUnavailable
from mmhost.store.s3 import S3Store, _translate, parse_url
from mmhost.tools.houses import COLUMNS

ROW = "1992,1531,6,3.0,0.68,1,y,n"
PREFIX = "s3://models/prod/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture
def s3(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    box = SimpleNamespace(port=port, url=f"http://127.0.0.1:{port}", server=_start_moto(port))
    httpx.post(box.url + "/moto-api/reset")  # moto's state outlives a server: start empty
    box.client = boto3.client("s3", endpoint_url=box.url)
    box.client.create_bucket(Bucket="models")

    def upload(key: str, estimator) -> None:
        path = tmp_path / "upload.tar.gz"
        cols = COLUMNS if hasattr(estimator, "steps") else None
        (from_sklearn(estimator, cols) if cols else from_sklearn(estimator)).save(path)
        box.client.put_object(Bucket="models", Key="prod/" + key, Body=path.read_bytes())

    box.upload = upload
    yield box
    box.server.stop()


class FaultyProxy:
    """A loopback HTTP proxy in front of the S3 server that breaks chosen keys for real
    clients: ``truncate`` sends a GET's headers and half its body, then drops the connection;
    ``cut_headers`` sends a status line and part of the headers, then drops it;
    ``deny`` answers S3's own 403 AccessDenied. ``faults[key] = [mode, times]`` (None: always)."""

    DENIED = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Access Denied</Message></Error>"
    )

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.faults: dict[str, list] = {}
        self.gets: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def take(self, method: str, path: str) -> str | None:
        with self._lock:
            if method == "GET" and "list-type" not in path:
                self.gets.append(path)
            for key, fault in self.faults.items():
                mode, times = fault
                if path.split("?")[0].endswith("/" + key) and (method == "GET" or mode == "deny"):
                    if times is not None:
                        if times == 0:
                            continue
                        fault[1] = times - 1
                    return mode
        return None

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        proxy: FaultyProxy = self.server.proxy  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fault = proxy.take(self.command, self.path)
        if fault == "deny":
            self._reply(403, [("Content-Type", "application/xml")], proxy.DENIED)
            return
        conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=10)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
        up = conn.getresponse()
        data = up.read()
        conn.close()
        skip = {"transfer-encoding", "connection", "content-length"}
        headers = [(k, v) for k, v in up.getheaders() if k.lower() not in skip]
        if self.command == "HEAD":  # no body here, but the object's length stands
            headers.append(("Content-Length", up.getheader("Content-Length", "0")))
        if fault == "cut_headers":  # the status line and one header, then the connection ends
            self.wfile.write(b"HTTP/1.1 200 OK\r\nx-amz-request-id: cut\r\n")
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "truncate":
            self.send_response(up.status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._reply(up.status, headers, data)

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _reply(self, status: int, headers: list, data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


@pytest.fixture
def faulty(s3):
    proxy = FaultyProxy(s3.port)
    yield proxy
    proxy.stop()


def _invoke(client, target: str, body: str = ROW) -> float:
    reply = client.invoke_endpoint(
        EndpointName="mmhost", TargetModel=target, ContentType="text/csv", Body=body
    )
    return json.loads(reply["Body"].read())["predictions"][0]["score"]


def _want(seed: int, factor: float) -> float:
    return float(house_pipeline(seed, factor).predict(np.array([ROW.split(",")], dtype=object))[0])


def _count_gets(host) -> list[str]:
    gets: list[str] = []
    host.store.client.meta.events.register(
        "before-call.s3.GetObject", lambda **kw: gets.append(kw["params"]["url_path"])
    )
    return gets


def test_parse_url():
    assert parse_url("s3://b") == ("b", "")
    assert parse_url("s3://b/a/c") == ("b", "a/c/")
    with pytest.raises(ValueError, match="s3://"):
        parse_url("http://b/")


def test_per_city_models_from_s3_give_scikit_learns_prices(s3, serve):
    for i, city in enumerate(["Chicago_IL", "Houston_TX"]):
        s3.upload(f"{city}/{city}.tar.gz", house_pipeline(i, 1.0 + i))
    server = serve(store=PREFIX, s3_endpoint_url=s3.url)
    client = runtime_client(server.url)
    for i, city in enumerate(["Chicago_IL", "Houston_TX"]):
        got = _invoke(client, f"{city}/{city}.tar.gz")
        assert got == pytest.approx(_want(i, 1.0 + i), rel=RTOL_PRICE)
    index = httpx.post(server.url + "/v2/repository/index").json()
    assert [m["name"] for m in index] == [
        "Chicago_IL/Chicago_IL.tar.gz",
        "Houston_TX/Houston_TX.tar.gz",
    ]


def test_get_models_lists_the_store_prefix_page_by_page(s3, serve, monkeypatch):
    import mmhost.api.container as container

    monkeypatch.setattr(container, "PAGE", 2)
    keys = [f"{c}/{c}.tar.gz" for c in ("a", "b", "c", "d", "e")]
    for k in keys:
        s3.upload(k, house_pipeline(0))
    s3.client.put_object(Bucket="models", Key="prod/notes.txt", Body=b"not a model")
    s3.client.put_object(Bucket="models", Key="other/z.tar.gz", Body=b"outside the prefix")
    server = serve(store=PREFIX, s3_endpoint_url=s3.url)
    names, token = [], None
    while True:
        params = {"source": "store", **({"next_page_token": token} if token else {})}
        page = httpx.get(server.url + "/models", params=params).json()
        names += [m["modelName"] for m in page["models"]]
        if (token := page.get("nextPageToken")) is None:
            break
    assert names == keys
    page = httpx.get(server.url + "/models", params={"source": "store", "prefix": "c/"}).json()
    assert [m["modelName"] for m in page["models"]] == ["c/c.tar.gz"]


def test_a_missing_key_names_the_key(s3, serve):
    client = runtime_client(serve(store=PREFIX, s3_endpoint_url=s3.url).url)
    with pytest.raises(ClientError) as info:
        _invoke(client, "Paris_FR/Paris_FR.tar.gz")
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationError"
    assert "'Paris_FR/Paris_FR.tar.gz' was not found in s3://models/prod/" in err["Message"]


def test_concurrent_cold_requests_download_each_artifact_once(s3, serve):
    rng = np.random.default_rng(1)
    for m in range(100):
        X = rng.normal(size=(10, 3))
        s3.upload(f"m{m:03d}.tar.gz", LinearRegression().fit(X, X @ rng.normal(size=3) + m))
    server = serve(store=PREFIX, s3_endpoint_url=s3.url)
    gets = _count_gets(server.host)

    async def burst():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            hdr = {"content-type": "text/csv"}
            return await asyncio.gather(
                *(
                    c.post(
                        "/invocations",
                        content="0.1,0.2,0.3",
                        headers={**hdr, "x-amzn-sagemaker-target-model": f"m{i % 100:03d}.tar.gz"},
                    )
                    for i in range(300)
                )
            )

    replies = asyncio.run(burst())
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies[:3]]
    assert len(gets) == 100 and len(set(gets)) == 100


def test_store_down_hot_models_serve_cold_ones_503_then_recover(s3, serve):
    s3.upload("hot.tar.gz", house_pipeline(0))
    s3.upload("cold.tar.gz", house_pipeline(1, 2.0))
    server = serve(
        store=PREFIX,
        s3_endpoint_url=s3.url,
        revalidate_seconds=1e-6,
        s3_connect_timeout_seconds=0.5,
        s3_read_timeout_seconds=1.0,
        s3_max_attempts=1,
    )
    client = runtime_client(server.url)
    want = _want(0, 1.0)
    assert _invoke(client, "hot.tar.gz") == pytest.approx(want, rel=RTOL_PRICE)
    s3.server.stop()
    for _ in range(5):  # every use is due for revalidation: it runs beside, not in the way
        assert _invoke(client, "hot.tar.gz") == pytest.approx(want, rel=RTOL_PRICE)
    with pytest.raises(ClientError) as info:
        _invoke(client, "cold.tar.gz")
    assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "s3://models/prod/ is unavailable" in info.value.response["Error"]["Message"]
    s3.server = _start_moto(s3.port)  # back, with its objects
    assert _invoke(client, "cold.tar.gz") == pytest.approx(_want(1, 2.0), rel=RTOL_PRICE)


def test_an_overwritten_artifact_is_served_after_revalidation(s3, serve):
    from concurrent.futures import ThreadPoolExecutor

    s3.upload("city.tar.gz", house_pipeline(0, 1.0))
    server = serve(store=PREFIX, s3_endpoint_url=s3.url, revalidate_seconds=0.2)
    old, new = _want(0, 1.0), _want(0, 3.0)
    assert _invoke(runtime_client(server.url), "city.tar.gz") == pytest.approx(old, rel=RTOL_PRICE)

    def keep_invoking() -> list[float]:  # until the new version answers; none may fail
        client, seen = runtime_client(server.url), []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen.append(_invoke(client, "city.tar.gz"))
            if seen[-1] == pytest.approx(new, rel=RTOL_PRICE):
                break
        return seen

    with ThreadPoolExecutor(8) as pool:
        callers = [pool.submit(keep_invoking) for _ in range(8)]
        time.sleep(0.3)  # the callers are in flight when the artifact changes
        s3.upload("city.tar.gz", house_pipeline(0, 3.0))
        answers = [f.result() for f in callers]
    for seen in answers:
        assert seen[-1] == pytest.approx(new, rel=RTOL_PRICE)
        assert all(
            v in (pytest.approx(old, rel=RTOL_PRICE), pytest.approx(new, rel=RTOL_PRICE))
            for v in seen
        )
    assert server.host.stats()["reloads"] >= 1


def test_store_errors_are_translated():
    def client_error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "x"}}, "GetObject")

    assert isinstance(_translate(client_error("NoSuchKey"), "k", "s3://b/"), ModelNotFound)
    denied = _translate(client_error("AccessDenied"), "k", "s3://b/")
    assert isinstance(denied, StoreAccessDenied) and "'k'" in str(denied)
    assert isinstance(_translate(client_error("SlowDown"), "k", "s3://b/"), StoreUnavailable)


def test_key_of_accepts_urls_inside_the_store_only(s3):
    store = S3Store(PREFIX, endpoint_url=s3.url)
    assert store.key_of("s3://models/prod/a/b.tar.gz") == "a/b.tar.gz"
    assert store.key_of("a/b.tar.gz") == "a/b.tar.gz"
    with pytest.raises(Exception, match="outside the store"):
        store.key_of("s3://other/prod/a.tar.gz")


def test_a_restart_with_a_warm_disk_dir_downloads_nothing(s3, host_factory, tmp_path):
    for i in range(3):
        s3.upload(f"c{i}.tar.gz", house_pipeline(i, 1.0 + i))
    disk = str(tmp_path / "disk")
    rows = [ROW.split(",")]
    first = host_factory(store=PREFIX, s3_endpoint_url=s3.url, disk_dir=disk)
    gets = _count_gets(first)
    want = [first.predict(f"c{i}.tar.gz", rows)[0] for i in range(3)]
    assert len(gets) == 3
    first.close()
    again = host_factory(store=PREFIX, s3_endpoint_url=s3.url, disk_dir=disk)
    gets = _count_gets(again)
    assert [again.predict(f"c{i}.tar.gz", rows)[0] for i in range(3)] == want
    assert gets == []  # re-indexed from disk; the ETag (a HEAD) said it is current
    assert again.stats()["hits"]["disk"] == 3


def test_a_damaged_disk_copy_is_never_served(s3, host_factory, tmp_path):
    s3.upload("c.tar.gz", house_pipeline(0))
    disk = tmp_path / "disk"
    rows = [ROW.split(",")]
    first = host_factory(store=PREFIX, s3_endpoint_url=s3.url, disk_dir=str(disk))
    want = first.predict("c.tar.gz", rows)[0]
    first.close()
    (artifact,) = disk.glob("*.artifact")
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))  # same size
    (disk / "leftover.artifact.tmp77").write_bytes(b"half a download")
    again = host_factory(store=PREFIX, s3_endpoint_url=s3.url, disk_dir=str(disk))
    assert not list(disk.glob("*.tmp*"))  # a partial download is gone after restart
    gets = _count_gets(again)
    assert again.predict("c.tar.gz", rows)[0] == want
    assert len(gets) == 1  # the bad copy failed its sha256: deleted and fetched again


def test_a_disk_copy_serves_while_the_store_is_down(s3, host_factory, tmp_path):
    s3.upload("c.tar.gz", house_pipeline(0))
    disk = str(tmp_path / "disk")
    rows = [ROW.split(",")]
    first = host_factory(store=PREFIX, s3_endpoint_url=s3.url, disk_dir=disk)
    want = first.predict("c.tar.gz", rows)[0]
    first.close()
    s3.server.stop()
    again = host_factory(
        store=PREFIX,
        s3_endpoint_url=s3.url,
        disk_dir=disk,
        s3_connect_timeout_seconds=0.5,
        s3_max_attempts=1,
    )
    assert again.predict("c.tar.gz", rows)[0] == want
    s3.server = _start_moto(s3.port)  # for the fixture's teardown


def test_downloads_in_flight_are_bounded(s3, host_factory):
    rng = np.random.default_rng(2)
    for m in range(20):
        X = rng.normal(size=(10, 3))
        s3.upload(f"m{m:02d}.tar.gz", LinearRegression().fit(X, X @ rng.normal(size=3)))
    host = host_factory(store=PREFIX, s3_endpoint_url=s3.url, max_concurrent_downloads=2)
    lock, now, peak = threading.Lock(), [0], [0]

    def start(**kw) -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])

    def end(**kw) -> None:
        with lock:
            now[0] -= 1

    host.store.client.meta.events.register("before-call.s3.GetObject", start)
    host.store.client.meta.events.register("after-call.s3.GetObject", end)
    out = host.predict_many([(f"m{m:02d}.tar.gz", [[0.1, 0.2, 0.3]]) for m in range(20)])
    assert all(isinstance(o, np.ndarray) for o in out)
    assert 1 <= peak[0] <= 2


def test_a_download_broken_off_halfway_is_never_kept_or_served(s3, faulty, host_factory, tmp_path):
    s3.upload("t.tar.gz", house_pipeline(0))
    disk = tmp_path / "disk"
    rows = [ROW.split(",")]
    opts = {"store": PREFIX, "s3_endpoint_url": faulty.url, "disk_dir": str(disk)}
    faulty.faults["t.tar.gz"] = ["truncate", None]
    first = host_factory(**opts, s3_max_attempts=3)
    with pytest.raises(StoreUnavailable, match="'t.tar.gz' broke off"):
        first.predict("t.tar.gz", rows)
    assert len(faulty.gets) == 3  # every attempt broke off; each was a fresh GET
    assert list(disk.iterdir()) == []  # nothing of the partial bodies is on disk
    faulty.faults["t.tar.gz"] = ["truncate", 1]  # the next body breaks off, the one after not
    want = first.predict("t.tar.gz", rows)[0]
    assert want == pytest.approx(_want(0, 1.0), rel=RTOL_PRICE)
    first.close()
    faulty.gets.clear()
    again = host_factory(**opts)
    assert again.predict("t.tar.gz", rows)[0] == want
    assert faulty.gets == []  # the complete copy on disk was re-used


def test_access_denied_by_s3_names_the_key(s3, faulty, serve):
    s3.upload("secret.tar.gz", house_pipeline(0))
    s3.upload("open.tar.gz", house_pipeline(1, 2.0))
    faulty.faults["secret.tar.gz"] = ["deny", None]
    client = runtime_client(serve(store=PREFIX, s3_endpoint_url=faulty.url).url)
    with pytest.raises(ClientError) as info:
        _invoke(client, "secret.tar.gz")
    err = info.value.response["Error"]
    assert err["Code"] == "ModelError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "'secret.tar.gz'" in err["Message"] and "denied" in err["Message"]
    assert _invoke(client, "open.tar.gz") == pytest.approx(_want(1, 2.0), rel=RTOL_PRICE)


def test_an_s3_reply_cut_inside_its_headers_is_retried_then_503(s3, faulty, serve):
    s3.upload("cut.tar.gz", house_pipeline(0))
    faulty.faults["cut.tar.gz"] = ["cut_headers", None]
    client = runtime_client(serve(store=PREFIX, s3_endpoint_url=faulty.url, s3_max_attempts=3).url)
    with pytest.raises(ClientError) as info:
        _invoke(client, "cut.tar.gz")
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "lacks its ETag or Content-Length" in err["Error"]["Message"]
    assert sum(g.split("?")[0].endswith("/cut.tar.gz") for g in faulty.gets) == 3  # retried
    faulty.faults.clear()
    assert _invoke(client, "cut.tar.gz") == pytest.approx(_want(0, 1.0), rel=RTOL_PRICE)
