"""``mmhost fleet up``: real ``mmhost serve`` replicas behind a real HAProxy on 127.0.0.1.

One fleet of three replicas serves the whole module; each test uses models of its own, and reads
where each model is loaded from every replica (``/v2/repository/index``, ``/metrics``). HAProxy
checks every 200 ms and takes a replica out after two failed checks. ``make test`` installs
Debian's haproxy where it is missing; without it these tests skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import runtime_client
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LinearRegression

from mmhost.convert import from_sklearn
from mmhost.fleet.haproxy import server_states

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed (make test installs Debian's haproxy with apt-get)",
)

REPLICAS = 3
CHECK_MS = 200


def key(prefix: str, i: int) -> str:
    return f"{prefix}{i:03d}/{prefix}{i:03d}.tar.gz"


def expected(i: int) -> float:
    """Model i scores the row (1, 2) as i * 1 + 1 * 2 + i."""
    return 2.0 * i + 2.0


@pytest.fixture(scope="module")
def fleet_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models a000..a299 (affinity), b000..b029 (bounded load), f000..f059 (failover),
    r000..r029 (rolling restart); model i is y = i * x0 + x1 + i."""
    root = tmp_path_factory.mktemp("fleet-store")
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    for prefix, n in (("a", 300), ("b", 30), ("f", 60), ("r", 30)):
        for i in range(n):
            model = LinearRegression().fit(X, X @ np.array([i, 1.0]) + i)
            from_sklearn(model).save(root / key(prefix, i))
    return root


def free_ports(n: int) -> list[int]:
    """n consecutive free ports on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n >= 65535:
            continue
        socks = []
        try:
            for p in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return list(range(first, first + n))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


class RunningFleet:
    """``mmhost fleet up`` as a user starts it, and what it prints (read as it comes)."""

    def __init__(self, store: Path) -> None:
        ports = free_ports(REPLICAS + 1)
        self.proxy = f"http://127.0.0.1:{ports[0]}"
        self.replica_urls = {f"r{i + 1}": f"http://127.0.0.1:{p}" for i, p in enumerate(ports[1:])}
        cmd = [sys.executable, "-m", "mmhost", "fleet", "up", "--replicas", str(REPLICAS),
               "--store", str(store), "--haproxy-port", str(ports[0]),
               "--check-interval-ms", str(CHECK_MS), "--", "--log-level", "warning"]  # fmt: skip
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("ready at", timeout=180)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from the fleet:\n" + "\n".join(self.lines))

    def pid(self, replica: str) -> int:
        """The replica's newest process."""
        said = [m for line in self.lines if (m := re.search(rf"replica {replica} pid (\d+)", line))]
        return int(said[-1].group(1))

    def socket_path(self) -> str:
        line = self.wait_for("haproxy pid")
        found = re.search(r"\((.*)haproxy\.cfg\)", line)
        assert found
        return found.group(1) + "haproxy.sock"

    def states(self) -> dict[str, str]:
        """What HAProxy thinks of each replica (from its admin socket)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.socket_path())
            s.sendall(b"show stat\n")
            text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
        return server_states(text)

    def wait_state(self, replica: str, state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.states().get(replica) != state:
            assert time.monotonic() < deadline, f"{replica} not {state}: {self.states()}"
            time.sleep(0.05)

    def loaded(self) -> dict[str, set[str]]:
        """The models each replica holds."""
        out = {}
        for name, url in self.replica_urls.items():
            try:
                reply = requests.post(
                    url + "/v2/repository/index", json={"ready": True}, timeout=10
                )
            except requests.ConnectionError:  # down (killed, or starting again)
                out[name] = set()
                continue
            reply.raise_for_status()
            out[name] = {m["name"] for m in reply.json()}
        return out

    def loads_total(self) -> float:
        total = 0.0
        for url in self.replica_urls.values():
            text = requests.get(url + "/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                if family.name == "mmhost_model_loads":
                    total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return total

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        rc = self.process.wait(timeout=120)
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return rc


@pytest.fixture(scope="module")
def fleet(fleet_store: Path) -> Iterator[RunningFleet]:
    running = RunningFleet(fleet_store)
    yield running
    rc = running.stop()
    assert rc == 0, "\n".join(running.lines)


def owners(loaded: dict[str, set[str]], name: str) -> list[str]:
    return [replica for replica, names in loaded.items() if name in names]


class Load:
    """Requests for ``names`` in turn from ``threads`` threads until stopped; every failure
    kept (with what it was)."""

    def __init__(self, url: str, names: list[tuple[str, float]], threads: int = 2) -> None:
        self.url, self.names = url, names
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, offset: int) -> None:
        client = runtime_client(self.url)
        i = offset
        while not self._stop.is_set():
            name, want = self.names[i % len(self.names)]
            i += 1
            try:
                got = invoke(client, name)
                if got != want:
                    self.failures.append(f"{name}: {got} != {want}")
                else:
                    self.ok += 1
            except Exception as exc:  # noqa: BLE001  # every kind of failure is counted
                self.failures.append(f"{name}: {exc!r}")

    def stop(self) -> Load:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self


def invoke(client, name: str) -> float:
    reply = client.invoke_endpoint(
        EndpointName="mmhost",
        TargetModel=name,
        ContentType="text/csv",
        Accept="text/csv",
        Body=b"1,2",
    )
    return float(reply["Body"].read().decode().strip())


def test_each_model_is_loaded_on_exactly_one_replica(fleet: RunningFleet) -> None:
    client = runtime_client(fleet.proxy)
    before = fleet.loads_total()
    order = [i for _ in range(3) for i in np.random.default_rng(0).permutation(300)]
    for i in order:  # uniformly, one request at a time
        assert invoke(client, key("a", i)) == expected(i)
    loaded = fleet.loaded()
    assert fleet.loads_total() - before == 300
    assert all(len(owners(loaded, key("a", i))) == 1 for i in range(300))
    assert all(len(loaded[r]) >= 50 for r in loaded), {r: len(n) for r, n in loaded.items()}
    # the path routes hash the same name onto the same ring: no new load anywhere
    for i in range(0, 300, 10):
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        url = f"{fleet.proxy}/v2/models/{key('a', i)}/infer"
        assert requests.post(url, json=body, timeout=10).json()["outputs"][0]["data"] == [
            expected(i)
        ]
    assert fleet.loads_total() - before == 300


def test_container_routes_reach_the_replica_that_loaded_the_name(fleet: RunningFleet) -> None:
    """``POST /models`` is routed by its body's ``model_name``, the later calls by the name in
    their path: each reaches the one replica that holds the name (another would answer 404)."""
    with requests.Session() as http:
        for i in range(20):
            name = f"container-{i}"
            loaded = http.post(
                fleet.proxy + "/models", json={"model_name": name, "url": key("a", i)}, timeout=30
            )
            assert loaded.status_code == 200, loaded.text
            assert http.get(f"{fleet.proxy}/models/{name}", timeout=10).status_code == 200
            answer = http.post(
                f"{fleet.proxy}/models/{name}/invoke",
                data=b"1,2",
                headers={"Content-Type": "text/csv", "Accept": "text/csv"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            assert float(answer.text) == expected(i)
            assert http.delete(f"{fleet.proxy}/models/{name}", timeout=10).status_code == 200


def test_a_hot_model_spills_to_a_second_replica_and_the_rest_stay(fleet: RunningFleet) -> None:
    client = runtime_client(fleet.proxy)
    for i in range(30):
        assert invoke(client, key("b", i)) == expected(i)
    hot = key("b", 0)
    assert len(owners(fleet.loaded(), hot)) == 1

    def hammer(_: int) -> list[float]:
        c = runtime_client(fleet.proxy)
        return [invoke(c, hot) for _ in range(60)]

    with ThreadPoolExecutor(16) as pool:  # one model, far more traffic than the rest
        answers = [a for part in pool.map(hammer, range(16)) for a in part]
    assert answers == [expected(0)] * 960
    for i in range(1, 30):  # the others again, one at a time
        assert invoke(client, key("b", i)) == expected(i)
    loaded = fleet.loaded()
    assert len(owners(loaded, hot)) >= 2
    assert all(len(owners(loaded, key("b", i))) == 1 for i in range(1, 30))


def test_a_killed_replica_fails_over_and_its_models_move_back(fleet: RunningFleet) -> None:
    client = runtime_client(fleet.proxy)
    names = [(key("f", i), expected(i)) for i in range(60)]
    for name, want in names:
        assert invoke(client, name) == want
    first = fleet.loaded()
    victim = "r2"
    moved = [n for n, _ in names if n in first[victim]]
    assert moved
    old_pid = fleet.pid(victim)
    lines_before = len(fleet.lines)
    load = Load(fleet.proxy, names, threads=2)
    time.sleep(0.5)
    os.kill(old_pid, signal.SIGKILL)
    fleet.wait_state(victim, "DOWN", timeout=10)
    time.sleep(1.0)  # under load with the replica out
    load.stop()
    # requests in flight on the killed replica are retried on the next one (retry-on
    # empty-response conn-failure): at most one per load thread may fail
    assert len(load.failures) <= 2, load.failures
    print(f"failover: {load.ok} answered, {len(load.failures)} failed: {load.failures}")
    assert load.ok > 0
    during = fleet.loaded()
    for name in moved:  # the victim's models are now served (so loaded) by the survivors
        assert owners({r: during[r] for r in during if r != victim}, name), name
    fleet.wait_for(f"replica {victim} pid", after=lines_before)  # started again by the fleet
    assert fleet.pid(victim) != old_pid
    fleet.wait_state(victim, "UP", timeout=60)
    for name, want in names:
        assert invoke(client, name) == want
    back = fleet.loaded()
    assert set(moved) <= back[victim]  # the ring gives the returned replica its models back


def test_a_rolling_restart_fails_no_request(fleet: RunningFleet) -> None:
    names = [(key("r", i), expected(i)) for i in range(30)]
    pids = {r: fleet.pid(r) for r in fleet.replica_urls}
    lines_before = len(fleet.lines)
    load = Load(fleet.proxy, names, threads=2)
    time.sleep(0.5)
    fleet.process.send_signal(signal.SIGHUP)
    fleet.wait_for("rolling restart done", timeout=240, after=lines_before)
    time.sleep(0.5)
    load.stop()
    assert load.failures == []
    assert load.ok > 100
    assert all(fleet.pid(r) != pids[r] for r in pids)
