"""HTTP: ``mmhost serve`` on one core against a bare FastAPI app on the same uvicorn.

Workload: ``POST /endpoints/mmhost/invocations``, one CSV row per request
(``1992,1531,6,3.0,0.68,1,y,n``), ``X-Amzn-SageMaker-Target-Model`` uniform over the 1,000
resident house-price models, ``Accept: application/json``. Closed loop at concurrency 1, 8 and
32 (keep-alive connections, each sends its next request when its answer is in).

Providers, per concurrency, in the same run:

- ``mmhost serve``: ``python -m mmhost.cli serve --log-level warning`` (every other setting
  its default) over the fleet's store, a separate process pinned to core 0 (``taskset -c 0``),
  all 1,000 models loaded (``POST /v2/repository/models/{name}/load``) and invoked once
  before the clock starts.
- the baseline: a bare FastAPI app (``http_load.py baseline``), one route that reads the body
  and returns a constant ``{"predictions":[{"score":1.0}]}``, under uvicorn with the settings
  of ``mmhost.api.server.config`` (uvloop + httptools, read back from the process), also pinned
  to core 0. Its req/s is the ceiling of the HTTP stack alone on one core.

The client (``http_load.Client``) runs in this process, its thread pinned to core 1. Every
answer is checked, off the clock (pytest-benchmark's teardown): status 200 and, for mmhost,
the score equal to the sklearn pipeline's price for that model and row (rtol 1e-5); for the
baseline, the constant body.

Each round is a fixed number of requests, the same for both servers at one concurrency (about
ROUND_SECONDS of mmhost's throughput, measured first), so the report's ratio column is mmhost's
req/s as a fraction of the baseline's. ``extra_info``: req/s, p50 and p99 over all measured
rounds; the server's CPU per request (all its threads, /proc) and its core's idle share; the
client's own CPU per request. A table of these is printed at the end of the module.

Profile (off by default): ``MMHOST_HTTP_PROFILE=/tmp/prof`` adds a test that runs
``py-spy record`` on both servers under c=32 load and prints CPU per request by layer, and
mmhost's top functions (``pip install py-spy``; raw stacks and the summary go to that folder).

    python -m pytest benchmarks/bench_http.py -o python_files='bench_*.py' -q -s
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from fleet import RTOL_PRICE, Fleet, describe
from http_load import (
    BASELINE_BODY,
    Client,
    Server,
    Window,
    build_request,
    event_loop_and_parser,
    new_loop,
    pin_prefix,
    pinned_thread,
    start_baseline,
    start_mmhost,
)

from mmhost.tools.houses import houses

SERVER_CORE, CLIENT_CORE = 0, 1
CONCURRENCY = (1, 8, 32)
ROWS_PER_MODEL = 4  # distinct (model, row) requests: 4,000
ORDER_LEN = 1 << 18  # the random sequence of requests every window walks through
ROUNDS = 5
ROUND_SECONDS = 0.8  # a round is about this long at mmhost's calibrated throughput
ENDPOINT = "mmhost"
PATH = f"/endpoints/{ENDPOINT}/invocations"
TARGET = "X-Amzn-SageMaker-Target-Model"

GROUP = "http: POST /endpoints/mmhost/invocations, 1 CSV row, 1000 models, c={}"
P_MMHOST = "mmhost serve (1 core)"
P_BASELINE = "bare FastAPI, constant answer (1 core)"
SERVERS = {"mmhost": P_MMHOST, "baseline": P_BASELINE}
TARGET_FRACTION_C32 = 0.6
TARGET_P50_C1_S = 0.5e-3


@dataclass
class Workload:
    names: list[str]
    bodies: list[bytes]  # one CSV row each
    models: np.ndarray  # (P,) the model index of each request
    want: np.ndarray  # (P,) the pipeline's price (float64)
    order: list[int]  # request indices, uniform over models (so over the pool too)

    def requests(self, port: int) -> list[bytes]:
        return [
            build_request(
                port,
                PATH,
                body,
                [
                    (TARGET, self.names[m]),
                    ("Content-Type", "text/csv"),
                    ("Accept", "application/json"),
                ],
            )
            for body, m in zip(self.bodies, self.models.tolist(), strict=True)
        ]


def _csv_row(row: np.ndarray) -> bytes:
    return ",".join(str(v) for v in row).encode()


@pytest.fixture(scope="module")
def workload(fleet: Fleet) -> Workload:
    bodies, models, want = [], [], []
    for i, pipe in enumerate(fleet.pipelines):
        X, _ = houses(ROWS_PER_MODEL, seed=300_000 + i)
        bodies += [_csv_row(r) for r in X]
        models += [i] * len(X)
        want.append(pipe.predict(X))
    rng = np.random.default_rng(20261125)
    order = rng.integers(0, len(bodies), ORDER_LEN).tolist()
    return Workload(fleet.names, bodies, np.array(models), np.concatenate(want), order)


# --- checks -----------------------------------------------------------------------------------
def check_mmhost(w: Window, wl: Workload) -> None:
    bad = [i for i, s in enumerate(w.status) if s != 200]
    assert not bad, f"{len(bad)}/{w.n} answers not 200; first: {w.status[bad[0]]} {w.body[bad[0]]}"
    scores = np.empty(w.n)
    for k, body in enumerate(w.body):
        preds = json.loads(body)["predictions"]
        assert len(preds) == 1, body
        scores[k] = preds[0]["score"]
    np.testing.assert_allclose(scores, wl.want[np.asarray(w.index)], rtol=RTOL_PRICE)


def check_baseline(w: Window, wl: Workload) -> None:
    bad = [
        i
        for i, (s, b) in enumerate(zip(w.status, w.body, strict=True))
        if s != 200 or b != BASELINE_BODY
    ]
    assert not bad, f"{len(bad)}/{w.n} bad answers; first: {w.status[bad[0]]} {w.body[bad[0]]}"


CHECKS = {"mmhost": check_mmhost, "baseline": check_baseline}


# --- servers and the client's loop --------------------------------------------------------------
@dataclass
class Running:
    server: Server
    requests: list[bytes]
    stack: str  # e.g. uvloop+httptools, read from the process's mapped libraries


_client_core: list[int | None] = [None]  # where the client's thread runs (None: unpinned)


@pytest.fixture(scope="module")
def loop() -> Iterator:
    """The client's event loop, its thread pinned to CLIENT_CORE for the whole module."""
    with pinned_thread(CLIENT_CORE) as core:
        _client_core[0] = core
        lp = new_loop()
        try:
            yield lp
        finally:
            lp.close()


@pytest.fixture(scope="module")
def servers(fleet: Fleet, workload: Workload, loop) -> Iterator[dict[str, Running]]:
    started: list[Server] = []
    try:
        started.append(start_mmhost(fleet.store, SERVER_CORE))
        started.append(start_baseline(SERVER_CORE))
        running = {}
        for s in started:
            s.wait_ready()
            running[s.name] = Running(s, workload.requests(s.port), event_loop_and_parser(s.pid))
        _make_resident(running["mmhost"], workload, loop)
        yield running
    finally:
        for s in started:
            s.stop()


def _make_resident(m: Running, wl: Workload, loop) -> None:
    """Load all 1,000 models (V2 repository load), then one checked invocation per model."""
    port = m.server.port
    loads = [build_request(port, f"/v2/repository/models/{n}/load", b"") for n in wl.names]
    client = Client(loop, port, 8).connect()
    try:
        w = client.window(loads, list(range(len(loads))), n=len(loads))
        assert w.n == len(wl.names) and set(w.status) == {200}, Counter(w.status)
        first = [int(np.flatnonzero(wl.models == i)[0]) for i in range(len(wl.names))]
        w = client.window(m.requests, first, n=len(first))
        check_mmhost(w, wl)
        assert sorted(set(wl.models[w.index].tolist())) == list(range(len(wl.names)))
    finally:
        client.close()
    assert _ready_count(port, loop) == len(wl.names)


def _ready_count(port: int, loop) -> int:
    req = build_request(port, "/v2/repository/index", b'{"ready": true}')
    client = Client(loop, port, 1).connect()
    try:
        w = client.window([req], [0], n=1)
    finally:
        client.close()
    assert w.status == [200], w.body
    return sum(1 for m in json.loads(w.body[0]) if m["state"] == "READY")


_round_sizes: dict[int, int] = {}


def round_size(c: int, servers: dict[str, Running], wl: Workload, loop) -> int:
    """Requests per round at concurrency ``c``: ~ROUND_SECONDS of mmhost's throughput
    (measured once per concurrency with a short checked window, which also warms up)."""
    if c not in _round_sizes:
        m = servers["mmhost"]
        client = Client(loop, m.server.port, c).connect()
        try:
            w = client.window(m.requests, wl.order, seconds=0.4)
        finally:
            client.close()
        check_mmhost(w, wl)
        _round_sizes[c] = max(200, int(round(w.rate * ROUND_SECONDS, -2)))
    return _round_sizes[c]


def core_times(core: int) -> list[int]:
    """The /proc/stat jiffies of one core: user nice system idle iowait irq softirq steal..."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                return [int(v) for v in line.split()[1:]]
    return []


def idle_share(before: list[int], after: list[int]) -> float:
    d = [b - a for a, b in zip(before, after, strict=True)]
    return (d[3] + d[4]) / max(sum(d[:8]), 1) if d else float("nan")


# --- the benchmark -----------------------------------------------------------------------------
_results: dict[tuple[int, str], dict] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not _results:
        return
    lines = table_lines(_results)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


def table_lines(results: dict[tuple[int, str], dict]) -> list[str]:
    out = [
        "| concurrency | server | req/s | p50 | p99 | mmhost / baseline req/s "
        "| server CPU/req (system share) | server process CPU | core 0 idle | client CPU/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (c, name), r in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1] != "mmhost")):
        base = results.get((c, "baseline"))
        frac = f"{r['rps'] / base['rps']:.2f}" if name == "mmhost" and base else ""
        out.append(
            f"| {c} | {name} | {r['rps']:,.0f} | {r['p50'] * 1e3:.3f} ms | "
            f"{r['p99'] * 1e3:.3f} ms | {frac} | {r['server_cpu'] * 1e6:.0f} µs "
            f"({r['server_sys_share']:.0%}) | {r['server_busy']:.0%} | {r['core_idle']:.0%} | "
            f"{r['client_cpu'] * 1e6:.1f} µs |"
        )
    return out


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("concurrency", CONCURRENCY, ids=lambda c: f"c{c}")
def test_http(benchmark, servers, workload, loop, concurrency: int, server: str) -> None:
    running = servers[server]
    check = CHECKS[server]
    n = round_size(concurrency, servers, workload, loop)
    windows: list[Window] = []
    server_cpu: list[tuple[float, float]] = []  # (user, system) seconds of all its threads
    core_idle: list[float] = []  # idle share of the server's core (/proc/stat)
    proc = psutil.Process(running.server.pid)
    client = Client(loop, running.server.port, concurrency).connect()
    try:

        def run() -> None:
            before, core_before = proc.cpu_times(), core_times(SERVER_CORE)
            windows.append(client.window(running.requests, workload.order, n=n))
            after, core_after = proc.cpu_times(), core_times(SERVER_CORE)
            server_cpu.append((after.user - before.user, after.system - before.system))
            core_idle.append(idle_share(core_before, core_after))

        def verify() -> None:  # every answer of every round, off the clock
            assert windows[-1].n == n, (windows[-1].n, n)
            check(windows[-1], workload)

        targets = []
        if server == "mmhost" and concurrency == 32:
            targets.append({"kind": "speedup", "vs": P_BASELINE, "min": TARGET_FRACTION_C32})
        if server == "mmhost" and concurrency == 1:
            targets.append({"kind": "extra_max", "key": "p50_s", "max": TARGET_P50_C1_S})
        describe(
            benchmark,
            GROUP.format(concurrency),
            SERVERS[server],
            n,
            unit="requests",
            baseline=server == "baseline",
            targets=targets,
        )
        benchmark.pedantic(run, teardown=verify, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    finally:
        client.close()
    assert running.server.proc.poll() is None, running.server.tail()

    measured = windows[1:]  # the first is the warmup round (checked all the same)
    total = sum(w.n for w in measured)
    elapsed = sum(w.elapsed_s for w in measured)
    cpu = sum(w.client_cpu_s for w in measured)
    s_user = sum(u for u, _ in server_cpu[1:])
    s_sys = sum(k for _, k in server_cpu[1:])
    lat = np.concatenate([np.asarray(w.latency_ns) for w in measured]) / 1e9
    r = {
        "rps": total / elapsed,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "client_cpu": cpu / total,
        "server_cpu": (s_user + s_sys) / total,
        "server_sys_share": s_sys / max(s_user + s_sys, 1e-9),
        "server_busy": (s_user + s_sys) / elapsed,
        "core_idle": float(np.mean(core_idle[1:])),
    }
    _results[(concurrency, server)] = r
    benchmark.extra_info.update(
        requests_per_second=round(r["rps"], 1),
        p50_s=r["p50"],
        p99_s=r["p99"],
        mean_s=float(lat.mean()),
        client_cpu_per_request_s=r["client_cpu"],
        client_core_busy_pct=round(100 * cpu / elapsed, 1),
        server_cpu_per_request_s=r["server_cpu"],
        server_cpu_system_pct=round(100 * r["server_sys_share"], 1),
        server_process_cpu_pct=round(100 * r["server_busy"], 1),
        server_core_idle_pct=round(100 * r["core_idle"], 1),
        server_stack=running.stack,
        server_cpus=",".join(map(str, sorted(os.sched_getaffinity(running.server.pid)))),
        client_core="unpinned" if _client_core[0] is None else _client_core[0],
        checked_answers=sum(w.n for w in windows),
    )


# --- where mmhost's time goes (opt-in) -------------------------------------------------------
PROFILE_DIR = os.environ.get("MMHOST_HTTP_PROFILE")
PROFILE_SECONDS = 8
PROFILE_RATE = 250
# py-spy keeps only the samples of the thread holding the GIL: on one core that is where the CPU
# goes (its idle detection does not work on this VM: waiting threads show up as busy). Passes:
# Python frames of mmhost and of the baseline (same layers, so per-request costs compare),
# then mmhost with native frames (gc, syscalls, C extensions; unwinding slows it down ~2x).
PROFILE_PASSES = [
    ("mmhost", "python", ["--gil"]),
    ("baseline", "python", ["--gil"]),
    ("mmhost", "native", ["--gil", "--native"]),
]


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@pytest.mark.skipif(not PROFILE_DIR, reason="set MMHOST_HTTP_PROFILE=DIR to profile the server")
def test_profile_mmhost_c32(servers, workload, loop) -> None:
    spy = _py_spy()
    if spy is None:
        pytest.skip("py-spy is not installed (pip install py-spy)")
    out = Path(PROFILE_DIR or ".")
    out.mkdir(parents=True, exist_ok=True)
    summaries, layers = [], {}
    for server, kind, flags in PROFILE_PASSES:
        running = servers[server]
        raw = out / f"{server}-c32-{kind}.txt"
        cmd = [*pin_prefix(CLIENT_CORE), spy, "record", "--pid", str(running.server.pid)]
        cmd += ["--duration", str(PROFILE_SECONDS), "--rate", str(PROFILE_RATE)]
        cmd += ["--format", "raw", "--function", "--threads", "--output", str(raw), *flags]
        client = Client(loop, running.server.port, 32).connect()
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            w = client.window(running.requests, workload.order, seconds=PROFILE_SECONDS + 1.5)
            spy_out = spy_proc.communicate(timeout=60)[0].decode(errors="replace")
        finally:
            if spy_proc.poll() is None:
                spy_proc.kill()
                spy_proc.wait()
            client.close()
        CHECKS[server](w, workload)
        assert spy_proc.returncode == 0 and raw.exists(), spy_out
        title = f"{server}, py-spy {' '.join(flags)} ({kind} frames)"
        text, per_request = summarize_profile(raw.read_text(), w, title)
        summaries.append(text)
        layers[(server, kind)] = per_request
    summaries.insert(
        0, compare_layers(layers[("mmhost", "python")], layers[("baseline", "python")])
    )
    summary = "\n\n".join(summaries)
    (out / "c32-summary.txt").write_text(summary + "\n")
    print("\n" + summary)


def compare_layers(mm: dict[str, float], base: dict[str, float]) -> str:
    names = dict(BUCKETS)
    lines = [
        "## CPU per request by layer, c=32, GIL-held samples (python frames), µs",
        "",
        "| layer | mmhost | baseline | mmhost - baseline |",
        "|---|---|---|---|",
    ]
    for k, _ in BUCKETS:
        a, b = mm.get(k, 0.0), base.get(k, 0.0)
        if a or b:
            lines.append(f"| {names[k]} | {a * 1e6:.0f} | {b * 1e6:.0f} | {(a - b) * 1e6:+.0f} |")
    ta, tb = sum(mm.values()), sum(base.values())
    lines.append(f"| total | {ta * 1e6:.0f} | {tb * 1e6:.0f} | {(ta - tb) * 1e6:+.0f} |")
    return "\n".join(lines)


def _parse_frame(frame: str) -> tuple[str, str]:
    """'f (pkg/mod.py:12)' -> ('f', 'pkg/mod.py'); 'write (libc.so.6)' -> ('write', 'libc.so.6')."""
    if frame.endswith(")") and " (" in frame:
        func, where = frame[:-1].rsplit(" (", 1)
        file, _, line = where.rpartition(":")
        return func, file if line.isdigit() else where
    return frame, ""


HOP = {
    "_on_engine",
    "_submit",
    "run_coroutine_threadsafe",
    "wrap_future",
    "_chain_future",
    "_call_set_state",
    "_copy_future_state",
    "_set_state",
    "_call_check_cancel",
    "call_soon_threadsafe",
    "_write_to_self",
}
BUCKETS = [
    ("gc", "Python's cyclic GC (gc_collect_main)"),
    ("hop", "thread hop to/from the engine loop (run_coroutine_threadsafe, wrap_future, wakeups)"),
    ("codecs", "mmhost codecs (CSV decode, JSON encode, media types)"),
    ("cache", "mmhost cache + store (acquire, revalidation stat/realpath)"),
    ("engine", "mmhost engine: Host._invoke, encode, batcher, fused op (torch)"),
    ("api", "mmhost api (invocation, read_body, reply headers)"),
    ("fastapi", "FastAPI/Starlette (middleware, routing, dependencies, Request/Response)"),
    ("uvicorn", "uvicorn httptools protocol (parse, ASGI cycle, response write)"),
    ("loop", "event loops + other (uvloop/asyncio internals, task steps, stdlib)"),
]


def classify(frames: list[str]) -> str:
    """The bucket of one stack: walk from the leaf up, the first frame that names one wins."""
    for frame in reversed(frames):
        func, file = _parse_frame(frame)
        if func.startswith("gc_collect") or func == "gc_collect_main":
            return "gc"
        if func in HOP or func.startswith("_chain_future"):
            return "hop"
        if file.startswith("mmhost/codecs"):
            return "codecs"
        if file.startswith(("mmhost/cache", "mmhost/store")):
            return "cache"
        if file.startswith(("mmhost/engine", "mmhost/kernels", "mmhost/families", "torch/")):
            return "engine"
        if file == "mmhost/host.py":
            return "engine"
        if file.startswith("mmhost/api"):
            return "api"
        if file.startswith(("fastapi/", "starlette/")):
            return "fastapi"
        if file.startswith("uvicorn/"):
            return "uvicorn"
    return "loop"


def summarize_profile(
    raw: str, w: Window, title: str, top: int = 20
) -> tuple[str, dict[str, float]]:
    """Buckets, threads, and self / total (inclusive) shares of py-spy's raw stacks; and the
    seconds of GIL-held time per request in each bucket."""
    stacks: list[tuple[list[str], int]] = []
    for line in raw.splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    n = sum(c for _, c in stacks) or 1
    ticks = PROFILE_SECONDS * PROFILE_RATE
    self_f, total_f, self_file, threads, buckets = (Counter() for _ in range(5))
    for frames, c in stacks:
        thread, frames = frames[0], [f for f in frames[1:] if f]
        threads[thread.split(": ", 1)[-1]] += c
        if not frames:
            continue
        buckets[classify(frames)] += c
        self_f[frames[-1]] += c
        self_file[_parse_frame(frames[-1])[1] or frames[-1]] += c
        for f in set(frames):
            total_f[f] += c
    names = dict(BUCKETS)
    sampled_requests = w.rate * PROFILE_SECONDS
    per_request = {k: c / PROFILE_RATE / sampled_requests for k, c in buckets.items()}
    lines = [
        f"## {title}: c=32, {PROFILE_SECONDS} s at {PROFILE_RATE} Hz",
        f"{w.rate:,.0f} req/s while sampled (every answer checked); {n} samples with the GIL "
        f"held = {n / ticks:.0%} of the sampling ticks. Shares below are of those samples.",
        "",
        "by layer (each sample goes to the innermost frame that names a layer), share and "
        "µs per request:",
    ]
    lines += [
        f"  {buckets[k] / n:6.1%}  {per_request[k] * 1e6:6.0f} µs  {names[k]}"
        for k, _ in BUCKETS
        if buckets[k]
    ]
    lines += ["", "threads:"]
    lines += [f"  {c / n:6.1%}  {t}" for t, c in threads.most_common()]
    lines += ["", "self time by file:"]
    lines += [f"  {c / n:6.1%}  {f}" for f, c in self_file.most_common(top)]
    lines += ["", "self time by function:"]
    lines += [f"  {c / n:6.1%}  {f}" for f, c in self_f.most_common(top)]
    lines += ["", "total (inclusive) time by function, below the event loop:"]
    skip = ("<module>", "_run_code", "_run_module_as_main", "main (mmhost", "_serve (", "serve (")
    inner = [(f, c) for f, c in total_f.most_common() if not f.startswith(skip) and c < 0.9 * n]
    lines += [f"  {c / n:6.1%}  {f}" for f, c in inner[: top * 2]]
    return "\n".join(lines), per_request
