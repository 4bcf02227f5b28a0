"""Replays issue 13's reproductions against a real ``mmhost serve`` and prints what happened:

    .venv/bin/python benchmarks/hardening_replay.py

1. a V2 tensor of shape [2**62, 0] (a ~100-byte request that used to hang the loop)
2. a 50,000-row CSV to a 1,000-class multi:softprob model (a 1.1 GB answer before)
3. 15,000 and 65,000 rows of a 4-feature model batched with 1 row of a 100,000-feature model of
   the same slab (16 s and 7.1 GB, then MemoryError, before)
4. 200 unauthenticated connections declaring 6 MiB bodies and sending them (1.2 GB held before)
5. 1,010 slowloris connections against the default limits (every client locked out before)

Not a timing benchmark (no ratio is claimed from it): the regression tests are in
``tests/test_hardening_attacks.py``; this shows the numbers of one run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import xgboost as xgb
from fleet import house_pipeline, serve_process

from mmhost import Host
from mmhost.convert import from_sklearn, save_xgboost
from mmhost.tools.houses import COLUMNS

CHICAGO = "Chicago_IL/Chicago_IL.tar.gz"
KEY = "k" * 20


def _mib(proc: subprocess.Popen[bytes]) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def _booster(features: int) -> xgb.Booster:
    x = np.random.default_rng(0).normal(size=(200, 4))
    bst = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(x, x[:, 0]), 5)
    doc = json.loads(bst.save_raw("json"))  # the same trees over ``features`` columns
    doc["learner"]["learner_model_param"]["num_feature"] = str(features)
    doc["learner"]["feature_names"] = doc["learner"]["feature_types"] = []
    out = xgb.Booster()
    out.load_model(bytearray(json.dumps(doc).encode()))
    return out


def main() -> None:
    store = Path(tempfile.mkdtemp()) / "store"
    from_sklearn(house_pipeline(0, 1.0), COLUMNS).save(store / CHICAGO)
    x = np.random.default_rng(0).normal(size=(3000, 4))
    y = np.random.default_rng(1).integers(0, 1000, 3000)
    params = {"objective": "multi:softprob", "num_class": 1000, "max_depth": 1, "nthread": 2}
    save_xgboost(xgb.train(params, xgb.DMatrix(x, y), 1), store / "soft.tar.gz")
    save_xgboost(_booster(4), store / "narrow.tar.gz")
    save_xgboost(_booster(100_000), store / "wide.tar.gz")
    auth = store.parent / "auth.json"
    allow = {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}
    principal = {
        "arn": "arn:aws:iam::111122223333:user/ops",
        "api_keys": [KEY],
        "policies": [allow],
    }
    auth.write_text(json.dumps({"principals": [principal]}))

    proc, url = serve_process(store, "--auth-config", str(auth))
    bearer = {"Authorization": f"Bearer {KEY}"}
    try:
        v2 = {"inputs": [{"name": "rows", "shape": [2**62, 0], "datatype": "BYTES", "data": []}]}
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v2/models/{CHICAGO}/infer", json=v2, headers=bearer, timeout=30)
        ms = (time.perf_counter() - t0) * 1e3
        print(f"1. V2 [2**62, 0]: {r.status_code} in {ms:.0f} ms: {r.json()['error']}")

        soft = {
            **bearer,
            "content-type": "text/csv",
            "X-Amzn-SageMaker-Target-Model": "soft.tar.gz",
        }
        httpx.post(f"{url}/invocations", content=b"0.1,0.2,0.3,0.4", headers=soft, timeout=60)
        before = _mib(proc)
        body = b"\n".join([b"0.1,0.2,0.3,0.4"] * 50_000)
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/invocations", content=body, headers=soft, timeout=60)
        ms = (time.perf_counter() - t0) * 1e3
        print(
            f"2. 50,000 rows x 1,000 classes ({len(body):,} B): {r.status_code} in {ms:.0f} ms, "
            f"RSS {before:.0f} -> {_mib(proc):.0f} MiB: {r.json()['message']}"
        )

        head = (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"X-Amzn-SageMaker-Target-Model: " + CHICAGO.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % (6 * 2**20)
        )
        answers: list[bytes] = []
        port = int(url.rsplit(":", 1)[1])

        def unauthenticated() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(head)
                try:
                    for _ in range(6):
                        s.sendall(b"1" * (2**20 - (1 if _ == 5 else 0)))
                except OSError:
                    pass  # the server answered and closed
                answers.append(s.recv(64).split(b" ")[1])

        before = _mib(proc)
        threads = [threading.Thread(target=unauthenticated) for _ in range(200)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(
            f"4. 200 unauthenticated 6 MiB bodies: {sorted(set(answers))} in "
            f"{time.perf_counter() - t0:.1f} s, RSS {before:.0f} -> {_mib(proc):.0f} MiB"
        )
    finally:
        proc.terminate()
        proc.wait()

    with Host(store=str(store)) as host:
        rows = np.random.default_rng(0).normal(size=(65_000, 4)).astype(np.float32)
        wide = np.zeros((1, 100_000), np.float32)
        host.predict("narrow.tar.gz", rows[:1])
        host.predict("wide.tar.gz", wide)
        for n in (15_000, 65_000):
            t0 = time.perf_counter()
            out = host.predict_many([("narrow.tar.gz", rows[:n]), ("wide.tar.gz", wide)])
            ms = (time.perf_counter() - t0) * 1e3
            ok = all(isinstance(o, np.ndarray) for o in out)
            print(f"3. {n:,} narrow rows + 1 wide row, one batch: {ms:.0f} ms, all answered: {ok}")

    proc, url = serve_process(store)
    port = int(url.rsplit(":", 1)[1])
    slow = []
    try:
        for _ in range(1010):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /ping HTTP/1.1\r\nHo")
            slow.append(s)
        t0 = time.perf_counter()
        first = None
        while True:
            try:
                status = httpx.get(f"{url}/ping", timeout=2).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            first = first or status
            if status == 200:
                break
            time.sleep(0.1)
        print(
            f"5. 1,010 slowloris connections: a client first got {first} at once, then 200 "
            f"after {time.perf_counter() - t0:.1f} s (the 5 s head deadline closed them)"
        )
    finally:
        for s in slow:
            s.close()
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
