"""The fleet: the cost of HAProxy's hop, and the loads a model-affinity ring saves.

Store: 300 small linear models (two features, y = i * x0 + x1 + i). Requests: ``POST
/endpoints/mmhost/invocations``, one CSV row, ``X-Amzn-SageMaker-Target-Model`` uniform over the
300 models, closed loop at concurrency 8 and 32 (``http_load.Client``, its thread pinned to core
1; every answer checked off the clock).

Throughput and p99 (group ``fleet: ...``), in one run:
- ``direct``: one ``mmhost serve`` pinned to core 0, no proxy: the baseline.
- ``haproxy, 1 replica``: the same replica behind HAProxy (``mmhost fleet haproxy-config``; its
  two threads unpinned): the hop's cost.
- ``haproxy, 2 replicas``: replicas pinned to cores 0 and 1. On this 2-core machine the client
  and HAProxy share those cores with them, so this row shows what a second replica buys when
  nothing is spare, not what it buys on a host with cores for it.

Loads per model (``test_loads_per_model``): fresh replicas behind HAProxy with the generated
ring, or with the same configuration but ``balance roundrobin``; every model invoked 5 times in a
shuffled order, one at a time (c=1) and at c=8; the summed ``mmhost_model_loads_total`` of the
replicas divided by 300; the ring with its default bound (``hash-balance-factor 150``), with
200, and with none. The bound spills a request whose owner already has more than its share in
flight (at small loads: a second request in flight on one replica of two), so under concurrency
some models load on two replicas; without a bound none does, and a hot model cannot spill.

    python -m pytest benchmarks/bench_fleet.py -o python_files='bench_*.py' -q -s
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from http_load import (
    Client,
    Server,
    build_request,
    free_port,
    http_request,
    new_loop,
    pinned_thread,
)
from http_load import start_mmhost as start_replica
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LinearRegression

from mmhost.convert import from_sklearn
from mmhost.fleet import Address, Ring, haproxy_config

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")

MODELS = 300
CONCURRENCY = (8, 32)
ROUNDS = 5
ROUND_REQUESTS = 3000
PATH = "/endpoints/mmhost/invocations"
CLIENT_CORE = 1
GROUP = "fleet: 1 CSV row, 300 models, c={}"
_results: dict[tuple[int, str], tuple[float, float]] = {}
_loads: dict[tuple[str, int], float] = {}


def key(i: int) -> str:
    return f"m{i:03d}/m{i:03d}.tar.gz"


@pytest.fixture(scope="module")
def store() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="mmhost-fleet-bench-"))
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    for i in range(MODELS):
        model = LinearRegression().fit(X, X @ np.array([i, 1.0]) + i)
        from_sklearn(model).save(root / key(i))
    yield root
    shutil.rmtree(root, ignore_errors=True)


class Proxy:
    """HAProxy on a free port in front of ``replicas`` with the generated configuration
    (``roundrobin``: the same, balanced round robin instead of on the ring)."""

    def __init__(self, replicas: list[Server], roundrobin: bool = False, factor: int = 150) -> None:
        self.port = free_port()
        addresses = [Address("127.0.0.1", r.port) for r in replicas]
        ring = Ring(balance_factor=factor)
        text = haproxy_config(addresses, Address("127.0.0.1", self.port), ring)
        if roundrobin:
            text = text.replace("balance hdr(X-Amzn-SageMaker-Target-Model)", "balance roundrobin")
            text = text.replace("balance hash var(txn.model)", "balance roundrobin")
        self.dir = Path(tempfile.mkdtemp(prefix="mmhost-haproxy-"))
        (self.dir / "haproxy.cfg").write_text(text)
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.dir / "haproxy.cfg")], stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "no haproxy"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def requests_for(port: int) -> list[bytes]:
    return [
        build_request(
            port,
            PATH,
            b"1,2",
            [
                ("X-Amzn-SageMaker-Target-Model", key(i)),
                ("Content-Type", "text/csv"),
                ("Accept", "text/csv"),
            ],
        )
        for i in range(MODELS)
    ]


def check(window) -> None:
    assert set(window.status) == {200}, set(window.status)
    for i, body in zip(window.index, window.body, strict=True):
        assert float(body) == 2.0 * i + 2.0, (i, body)


def loads_total(replicas: list[Server]) -> float:
    total = 0.0
    for r in replicas:
        _, text = http_request("127.0.0.1", r.port, "GET", "/metrics")
        for family in text_string_to_metric_families(text.decode()):
            if family.name == "mmhost_model_loads":
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


@pytest.fixture(scope="module")
def loop():
    with pinned_thread(CLIENT_CORE):
        lp = new_loop()
        try:
            yield lp
        finally:
            lp.close()


def _setup(store: Path, provider: str) -> tuple[list[Server], Proxy | None, int]:
    n = 2 if provider == "haproxy, 2 replicas" else 1
    replicas = [start_replica(store, core) for core in range(n)]
    for r in replicas:
        r.wait_ready()
    if provider == "direct":
        return replicas, None, replicas[0].port
    proxy = Proxy(replicas)
    return replicas, proxy, proxy.port


PROVIDERS = ("direct", "haproxy, 1 replica", "haproxy, 2 replicas")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("concurrency", CONCURRENCY)
def test_fleet_http(benchmark, store, loop, concurrency: int, provider: str) -> None:
    benchmark.group = GROUP.format(concurrency)
    benchmark.name = provider
    replicas, proxy, port = _setup(store, provider)
    try:
        reqs = requests_for(port)
        order = np.random.default_rng(concurrency).integers(0, MODELS, 1 << 16).tolist()
        client = Client(loop, port, concurrency).connect()
        warm = client.window(reqs, list(range(MODELS)) * 2, n=2 * MODELS)  # every model loaded
        assert set(warm.status) == {200}
        windows = []

        def run() -> None:
            windows.append(client.window(reqs, order, n=ROUND_REQUESTS))

        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
        client.close()
        measured = windows[1:]
        for w in measured:
            check(w)
        n = sum(w.n for w in measured)
        rate = n / sum(w.elapsed_s for w in measured)
        p99 = float(np.percentile(np.concatenate([w.latency_ns for w in measured]), 99)) / 1e6
        benchmark.extra_info.update({"req_per_s": round(rate), "p99_ms": round(p99, 3)})
        _results[(concurrency, provider)] = (rate, p99)
    finally:
        if proxy is not None:
            proxy.stop()
        for r in replicas:
            r.stop()


@pytest.mark.parametrize("concurrency", (1, 8))
@pytest.mark.parametrize("balance", ("ring", "ring, factor 200", "ring, no bound", "roundrobin"))
def test_loads_per_model(benchmark, store, loop, balance: str, concurrency: int) -> None:
    benchmark.group = "fleet: loads per model, 2 replicas, 300 models x 5"
    benchmark.name = f"{balance}, c={concurrency}"
    replicas = [start_replica(store, core) for core in range(2)]
    for r in replicas:
        r.wait_ready()
    factor = {"ring, factor 200": 200, "ring, no bound": 0}.get(balance, 150)
    proxy = Proxy(replicas, roundrobin=balance == "roundrobin", factor=factor)
    try:
        reqs = requests_for(proxy.port)
        order = [int(i) for i in np.random.default_rng(5).permutation(np.repeat(np.arange(300), 5))]
        client = Client(loop, proxy.port, concurrency).connect()
        windows = []
        benchmark.pedantic(
            lambda: windows.append(client.window(reqs, order, n=len(order))),
            rounds=1,
            iterations=1,
        )
        client.close()
        check(windows[0])
        per_model = loads_total(replicas) / MODELS
        benchmark.extra_info["loads_per_model"] = round(per_model, 3)
        _loads[(balance, concurrency)] = per_model
    finally:
        proxy.stop()
        for r in replicas:
            r.stop()


def teardown_module() -> None:
    if _results:
        print("\nfleet: req/s, p99 (ms), req/s vs direct")
        for c in CONCURRENCY:
            base = _results.get((c, "direct"), (float("nan"), 0.0))[0]
            for p in PROVIDERS:
                if (c, p) in _results:
                    rate, p99 = _results[(c, p)]
                    print(f"  c={c:<3} {p:<22} {rate:8.0f} {p99:8.2f} {rate / base:6.2f}x")
    if _loads:
        print("fleet: loads per model (2 replicas, each model invoked 5 times)")
        for (balance, c), v in sorted(_loads.items()):
            print(f"  {balance:<18} c={c}: {v:.3f}")
