"""Cold loads from S3 on loopback: the fleet's 1,000 houses models, all loaded cold from an
S3-compatible server (moto's server, in its own process on 127.0.0.1) by ``c`` concurrent
loaders with ``--max-concurrent-downloads c``, for c = 1, 8, 32.

Each round starts a fresh ``Host`` (nothing in any tier, no disk tier) and loads every model
once: ``c`` tasks on the engine loop, each taking the next name and awaiting ``Host._load`` (the
load path a cold request takes: GET, size/MD5 check, untar, validate, compose, place). Reported
per round: models/s, the p50/p99 of the single loads, and the share of load time spent
downloading (the GET and its checks), decoding (untar, safetensors, compose) and placing (the copy
into the arena: device memory on a GPU), from the cache's own counters.

Baseline: what a per-model server does on a cold load, on the same server and the same
models: ``boto3`` ``get_object`` of the pipeline's joblib pickle, then ``joblib.load``, in a
loop (c = 1) and on 32 threads. moto answers a GET in ~1-3 ms on loopback, much faster than
S3 over a network (tens of ms to first byte), so concurrency helps more against a real S3.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
import joblib
import numpy as np
import pytest
from fleet import RTOL_PRICE, Fleet, describe

from mmhost import Host
from mmhost.tools.houses import houses

GROUP = "cold load from S3 (loopback): 1,000 models"
BUCKET, PREFIX = "bench", "fleet/"
ROUNDS = 2
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3(fleet: Fleet) -> Iterator[str]:
    """moto's S3 server in a child process, holding the fleet's artifacts and pickles."""
    old = {k: os.environ.get(k) for k in (*CREDS, "AWS_DEFAULT_REGION")}
    os.environ.update(CREDS, AWS_DEFAULT_REGION="us-east-1")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client = boto3.client("s3", endpoint_url=url)
        client.create_bucket(Bucket=BUCKET)

        def upload(i: int) -> None:
            name = fleet.names[i]
            data = (fleet.store / name).read_bytes()
            client.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=data)
            pickle = io.BytesIO()
            joblib.dump(fleet.pipelines[i], pickle)
            client.put_object(Bucket=BUCKET, Key=f"pickles/{i:04d}.joblib", Body=pickle.getvalue())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(len(fleet.names))))
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _load_all(h: Host, names: list[str], c: int) -> list[float]:
    todo = iter(names)
    took: list[float] = []

    async def loader() -> None:
        for name in todo:
            t0 = time.perf_counter()
            await h._load(name)
            took.append(time.perf_counter() - t0)

    await asyncio.gather(*(loader() for _ in range(c)))
    return took


@pytest.mark.parametrize("c", [1, 8, 32])
def test_cold_load_from_s3(benchmark: Any, fleet: Fleet, s3: str, c: int) -> None:
    took: list[float] = []
    shares: list[dict[str, float]] = []

    def setup() -> tuple[tuple[Host], dict[str, Any]]:
        h = Host(
            store=f"s3://{BUCKET}/{PREFIX}",
            s3_endpoint_url=s3,
            max_concurrent_downloads=c,
            load_workers=c,
            revalidate_seconds=0,
        )
        return (h,), {}

    def run(h: Host) -> None:
        took.extend(h._run(_load_all(h, fleet.names, c)))
        t = h.stats()["load_seconds"]
        assert t["count"] == len(fleet.names)
        shares.append({k: t[f"{k}_sum"] / t["sum"] for k in ("fetch", "decode", "place")})
        h.close()

    describe(benchmark, GROUP, f"mmhost, {c} concurrent download(s)", len(fleet.names), "loads")
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(
        load_p50_s=statistics.median(took),
        load_p99_s=float(np.percentile(took, 99)),
        download_pct=100 * statistics.mean(s["fetch"] for s in shares),
        decode_pct=100 * statistics.mean(s["decode"] for s in shares),
        place_pct=100 * statistics.mean(s["place"] for s in shares),
    )
    # the models loaded are the fleet's: spot-check one against scikit-learn
    X, _ = houses(4, seed=7)
    with Host(store=f"s3://{BUCKET}/{PREFIX}", s3_endpoint_url=s3) as h:
        got = h.predict(fleet.names[-1], X.tolist())
    np.testing.assert_allclose(got, fleet.pipelines[-1].predict(X), rtol=RTOL_PRICE)


@pytest.mark.parametrize("threads", [1, 32])
def test_boto3_and_joblib_load(benchmark: Any, fleet: Fleet, s3: str, threads: int) -> None:
    client = boto3.client("s3", endpoint_url=s3)
    keys = [f"pickles/{i:04d}.joblib" for i in range(len(fleet.names))]

    def load(key: str) -> Any:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return joblib.load(io.BytesIO(body))

    def run() -> None:
        if threads == 1:
            models = [load(k) for k in keys]
        else:
            with ThreadPoolExecutor(threads) as pool:
                models = list(pool.map(load, keys))
        assert len(models) == len(keys)

    what = "loop" if threads == 1 else f"{threads} threads"
    describe(
        benchmark,
        GROUP,
        f"boto3 get_object + joblib.load, {what}",
        len(fleet.names),
        "loads",
        baseline=threads == 1,
    )
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
