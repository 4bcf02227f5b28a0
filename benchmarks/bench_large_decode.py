"""A cold load of a very large model while warm requests keep coming (issue 13, row 13).

A real ``mmhost serve`` (a subprocess) over a store with the houses model (warm) and one XGBoost
model whose JSON is ~212 MiB (20,000 depth-8 trees; the issue's was 226 MB). One client
thread keeps invoking the warm model while another asks for the big one (a cold load). Timed:
the cold load. Recorded in ``extra_info``: the warm requests served meanwhile, their p50 and
their worst latency, which is what a parse under the server's GIL stalls.

Providers: ``--decode-processes 0`` (the decode on a load thread, as before: the baseline) and
``--decode-processes 1`` (in the worker process, ``mmhost/cache/decoder.py``).
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb
from fleet import describe, house_pipeline, serve_process

from mmhost.convert import from_sklearn
from mmhost.tools.houses import COLUMNS

GROUP = "cold load of a 212 MiB XGBoost JSON model, warm requests beside it"
TREES = 20_000
WARM = "Chicago_IL/Chicago_IL.tar.gz"
ROW = b"1992,1531,6,3.0,0.68,1,y,n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: Any) -> Path:
    root = tmp_path_factory.mktemp("store")
    from_sklearn(house_pipeline(0, 1.0), COLUMNS).save(root / WARM)
    x = np.random.default_rng(0).normal(size=(5000, 8))
    bst = xgb.train({"max_depth": 8, "nthread": 2}, xgb.DMatrix(x, x[:, 0] + x[:, 1] ** 2), 1)
    doc = json.loads(bst.save_raw("json"))
    model = doc["learner"]["gradient_booster"]["model"]
    model["trees"] = [{**model["trees"][0], "id": i} for i in range(TREES)]  # the same tree
    model["tree_info"] = [0] * TREES
    model["iteration_indptr"] = [0, TREES]
    model["gbtree_model_param"]["num_trees"] = str(TREES)
    raw = json.dumps(doc).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    (root / "big.tar.gz").write_bytes(buf.getvalue())
    return root


@pytest.mark.parametrize("processes", [0, 1])
def test_cold_load_beside_warm_requests(benchmark: Any, store: Path, processes: int) -> None:
    flags = ["--decode-processes", str(processes), "--max-artifact-bytes", "1GiB"]
    server, url = serve_process(store, *flags, "--load-timeout-seconds", "300")
    warm = {"content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": WARM}
    cold = {"content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": "big.tar.gz"}
    client = httpx.Client(timeout=300)
    try:
        assert client.post(f"{url}/invocations", content=ROW, headers=warm).status_code == 200
        latencies: list[float] = []
        stop = threading.Event()

        def keep_invoking() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                client.post(f"{url}/invocations", content=ROW, headers=warm)
                latencies.append(time.perf_counter() - t0)

        def cold_load() -> None:
            body = ",".join(["0.1"] * 8)
            r = httpx.post(f"{url}/invocations", content=body, headers=cold, timeout=300)
            assert r.status_code == 200, r.text

        provider = "decode in a worker process" if processes else "decode on a load thread"
        describe(benchmark, GROUP, provider, 1, unit="loads", baseline=not processes)
        beside = threading.Thread(target=keep_invoking)
        beside.start()
        try:
            benchmark.pedantic(cold_load, rounds=1, iterations=1)
        finally:
            stop.set()
            beside.join()
        benchmark.extra_info.update(
            warm_requests=len(latencies),
            warm_p50_s=float(np.median(latencies)),
            warm_max_s=max(latencies),
        )
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=30)
