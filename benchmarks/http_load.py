"""HTTP load tooling for ``bench_http.py``: server processes, a closed-loop client, a baseline.

- ``Server``: a server started as a separate process (pinned to one core with ``taskset`` when
  it exists), on a free loopback port, waited on with ``GET /ping``, always stopped (SIGTERM,
  then SIGKILL of its process group).
- ``Client``: a closed-loop HTTP/1.1 keep-alive client on asyncio (uvloop when installed) with
  ``concurrency`` connections, each sending its next request as soon as its answer is in. It
  parses answers with httptools (the parser uvicorn uses) inside ``Protocol.data_received``:
  no task, future or stream per request, so the client's own cost per request stays a small
  fraction of the server's (``Window.client_cpu_s`` says how much). Requests are prebuilt
  bytes; every answer (status, body, latency) is kept for checking after the window.
- the baseline: a bare FastAPI app, one route ``POST /endpoints/{endpoint}/invocations`` that
  reads the body and returns a constant JSON, served by uvicorn with the keyword arguments of
  ``mmhost.api.server.config`` (no access log, no server header, the same graceful timeout).
  loop and http are uvicorn's "auto": uvloop and httptools when installed; ``mmhost serve``
  runs the same uvicorn server on its engine loop, also uvloop (``event_loop_and_parser``
  reads both back from the processes' mapped libraries).

    python benchmarks/http_load.py baseline --port 8081           # the baseline server
    python benchmarks/http_load.py clients --seconds 2            # raw client vs httpx cost
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httptools
from fastapi import FastAPI, Request, Response

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] brings it
    uvloop = None

BASELINE_BODY = b'{"predictions":[{"score":1.0}]}'
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the cores this process may use, read before any thread of it is pinned
ALLOWED_CORES = frozenset(os.sched_getaffinity(0))


# --- the baseline app -----------------------------------------------------------------------
def baseline_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/endpoints/{endpoint}/invocations")
    async def invocations(endpoint: str, request: Request) -> Response:
        await request.body()
        return Response(BASELINE_BODY, media_type="application/json")

    @app.get("/ping")  # readiness only (after the measured route, as in mmhost)
    async def ping() -> Response:
        return Response(b"", media_type="text/plain")

    return app


def serve_baseline(port: int, log_level: str = "warning") -> None:
    """uvicorn with the keyword arguments of ``mmhost.api.server.config``."""
    import uvicorn

    from mmhost.settings import Settings

    uvicorn.Server(
        uvicorn.Config(
            baseline_app(),
            host="127.0.0.1",
            port=port,
            log_level=log_level,
            access_log=log_level == "debug",
            timeout_graceful_shutdown=Settings().graceful_timeout_seconds,  # type: ignore[arg-type]
            server_header=False,
        )
    ).run()


# --- server processes -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin_prefix(core: int) -> list[str]:
    """``taskset -c CORE`` when taskset exists and the core is ours, else nothing."""
    taskset = shutil.which("taskset")
    if taskset and core in ALLOWED_CORES and len(ALLOWED_CORES) > 1:
        return [taskset, "-c", str(core)]
    return []


def loaded_libraries(pid: int) -> set[str]:
    """Names of the extension modules mapped into a process (to see uvloop / httptools)."""
    names = set()
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
        for line in f:
            path = line.rsplit(" ", 1)[-1].strip()
            if path.endswith(".so") or ".so." in path:
                names.add(os.path.basename(path))
    return names


def event_loop_and_parser(pid: int) -> str:
    libs = " ".join(loaded_libraries(pid))
    loop = "uvloop" if "uvloop" in libs or "loop.cpython" in libs else "asyncio"
    http = "httptools" if "parser.cpython" in libs or "httptools" in libs else "h11"
    return f"{loop}+{http}"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies, so a killed benchmark leaves
    no server behind (Linux; kept across exec, so it also holds after taskset)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Server:
    """A server process on 127.0.0.1:``port``, pinned to ``core`` when possible."""

    def __init__(self, name: str, argv: Sequence[str], port: int, core: int = 0) -> None:
        self.name, self.port = name, port
        self.pinned = pin_prefix(core)
        self.core = core if self.pinned else None
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"mmhost-bench-{name}-", suffix=".log", delete=False
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), str(HERE), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [*self.pinned, *argv],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            start_new_session=True,  # its own process group: stop() can reach every child
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> Server:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(OSError):
                if http_request("127.0.0.1", self.port, "GET", "/ping", timeout=2.0)[0] == 200:
                    if self.core is not None:
                        got = os.sched_getaffinity(self.proc.pid)
                        assert got == {self.core}, f"{self.name} runs on cores {got}"
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, n: int = 4000) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (uvicorn's graceful stop), then SIGKILL to the whole process group."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of its group, if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        finally:
            self.log.close()
            with contextlib.suppress(OSError):
                os.unlink(self.log.name)


def start_baseline(core: int = 0) -> Server:
    port = free_port()
    argv = [sys.executable, str(HERE / "http_load.py"), "baseline", "--port", str(port)]
    return Server("baseline", argv, port, core)


def start_mmhost(store: str | Path, core: int = 0, *flags: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "mmhost.cli", "serve", "--store", str(store)]
    argv += ["--port", str(port), "--log-level", "warning", *flags]
    return Server("mmhost", argv, port, core)


def http_request(
    host: str, port: int, method: str, path: str, body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes]:
    """One blocking request on a fresh connection (setup and checks, not the load)."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# --- the closed-loop client -----------------------------------------------------------------
def build_request(
    port: int, path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Window:
    """What one closed-loop window sent and got back, in order of completion."""

    concurrency: int
    index: list[int] = field(default_factory=list)  # which prebuilt request
    status: list[int] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    latency_ns: list[int] = field(default_factory=list)  # write -> last byte of the answer
    elapsed_s: float = 0.0  # first write -> last answer
    client_cpu_s: float = 0.0  # this thread's CPU time (user + system) during the window

    @property
    def n(self) -> int:
        return len(self.status)

    @property
    def rate(self) -> float:
        return self.n / self.elapsed_s


class _Run:
    """Shared state of one window: which request comes next, when to stop, where answers go."""

    def __init__(
        self,
        reqs: Sequence[bytes],
        order: Sequence[int],
        start: int,
        n: int,
        deadline_ns: int,
        window: Window,
        done: asyncio.Future,
    ) -> None:
        self.reqs, self.order, self.cursor = reqs, order, start
        self.left, self.deadline_ns = n, deadline_ns
        self.window, self.done = window, done
        self.active = 0
        self.error: BaseException | None = None

    def finish(self, conn: _Conn, exc: BaseException | None = None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        conn.run = None
        self.active -= 1
        if self.active == 0 and not self.done.done():
            self.done.set_result(None)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; sends its next request from ``data_received``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.run: _Run | None = None
        self.idx = -1
        self.t0 = 0
        self.chunks: list[bytes] = []
        self.complete = False
        self.lost: asyncio.Future | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        if self.run is not None:
            self.run.finish(self, ConnectionError(f"connection lost mid-window: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.run is not None:
                self.run.finish(self, exc)
            return
        if self.complete:
            t1 = time.perf_counter_ns()
            run = self.run
            if run is None:  # an answer after the window ended: should not happen
                return
            w = run.window
            w.index.append(self.idx)
            w.status.append(self.parser.get_status_code())
            w.body.append(b"".join(self.chunks))
            w.latency_ns.append(t1 - self.t0)
            self.send_next()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.chunks = []
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    # the closed loop
    def send_next(self) -> None:
        run = self.run
        assert run is not None
        if run.left <= 0 or run.error is not None or time.perf_counter_ns() >= run.deadline_ns:
            run.finish(self)
            return
        run.left -= 1
        self.idx = run.order[run.cursor % len(run.order)]
        run.cursor += 1
        self.complete = False
        self.t0 = time.perf_counter_ns()
        self.transport.write(run.reqs[self.idx])  # type: ignore[union-attr]


def new_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


class Client:
    """``concurrency`` keep-alive connections to one server, driven by ``loop`` (sync API)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, concurrency: int) -> None:
        self.loop, self.port, self.concurrency = loop, port, concurrency
        self.conns: list[_Conn] = []
        self.cursor = 0  # where the next window starts in the request order

    def connect(self) -> Client:
        async def one() -> _Conn:
            _, proto = await self.loop.create_connection(_Conn, "127.0.0.1", self.port)
            return proto

        async def all_() -> list[_Conn]:
            return list(await asyncio.gather(*(one() for _ in range(self.concurrency))))

        self.conns = self.loop.run_until_complete(all_())
        return self

    def window(
        self,
        reqs: Sequence[bytes],
        order: Sequence[int],
        n: int | None = None,
        seconds: float | None = None,
    ) -> Window:
        """Send ``n`` requests (or for ``seconds``), ``reqs[order[i]]`` in turn, closed-loop."""
        if n is None and seconds is None:
            raise ValueError("give n, seconds or both")
        w = Window(self.concurrency)
        done = self.loop.create_future()
        deadline = time.perf_counter_ns() + int((seconds or 1e9) * 1e9)
        run = _Run(reqs, order, self.cursor, n if n is not None else 1 << 62, deadline, w, done)
        cpu0 = time.thread_time()
        t0 = time.perf_counter()
        for c in self.conns:
            if c.transport is None or c.transport.is_closing():
                raise ConnectionError("a client connection is closed")
            c.run = run
            run.active += 1
        for c in self.conns:
            c.send_next()
        self.loop.run_until_complete(done)
        w.elapsed_s = time.perf_counter() - t0
        w.client_cpu_s = time.thread_time() - cpu0
        self.cursor = run.cursor
        if run.error is not None:
            raise run.error
        return w

    def close(self) -> None:
        waits = []
        for c in self.conns:
            if c.transport is not None and not c.transport.is_closing():
                c.transport.close()
            if c.lost is not None:
                waits.append(c.lost)
        if waits and not self.loop.is_closed():
            self.loop.run_until_complete(asyncio.wait(waits, timeout=5))
        self.conns = []


@contextlib.contextmanager
def pinned_thread(core: int):
    """Pin the calling thread to ``core`` (if it is ours and there is another one for the
    server), restoring its affinity after. Yields the core, or None when not pinned."""
    before = os.sched_getaffinity(0)
    if core not in ALLOWED_CORES or len(ALLOWED_CORES) < 2:
        yield None
        return
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, before)


# --- comparing clients (their own cost) ---------------------------------------------------
def _httpx_window(port: int, reqs: list[tuple[bytes, dict]], concurrency: int, seconds: float):
    import httpx

    async def main() -> tuple[int, float, float]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        url = f"http://127.0.0.1:{port}/endpoints/mmhost/invocations"
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            count = 0
            stop = time.perf_counter() + seconds

            async def worker(k: int) -> None:
                nonlocal count
                i = k
                while time.perf_counter() < stop:
                    body, headers = reqs[i % len(reqs)]
                    r = await client.post(url, content=body, headers=headers)
                    assert r.status_code == 200 and r.content == BASELINE_BODY, r
                    count += 1
                    i += concurrency

            await asyncio.gather(*(worker(k) for k in range(concurrency)))  # warm the pool
            count, stop = 0, time.perf_counter() + seconds
            cpu0, t0 = time.thread_time(), time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return count, time.perf_counter() - t0, time.thread_time() - cpu0

    loop = new_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def compare_clients(seconds: float, concurrency: int) -> None:
    """Each client's req/s and own CPU per request against the baseline server (core 0), the
    client on core 1: the raw client the benchmark uses, and httpx.AsyncClient."""
    server = start_baseline(core=0).wait_ready()
    try:
        body = b"1992,1531,6,3.0,0.68,1,y,n"
        headers = {
            "X-Amzn-SageMaker-Target-Model": "city0000.tar.gz",
            "Content-Type": "text/csv",
            "Accept": "application/json",
        }
        path = "/endpoints/mmhost/invocations"
        raw = [build_request(server.port, path, body, list(headers.items()))]
        with pinned_thread(1) as core:
            loop = new_loop()
            client = Client(loop, server.port, concurrency).connect()
            try:
                client.window(raw, [0], seconds=0.5)
                w = client.window(raw, [0], seconds=seconds)
                assert all(s == 200 for s in w.status) and set(w.body) == {BASELINE_BODY}
            finally:
                client.close()
                loop.close()
            n, el, cpu = _httpx_window(server.port, [(body, headers)], concurrency, seconds)
        print(f"client pinned to core {core}; baseline server ({server.pinned or 'unpinned'})")
        print(f"{'client':<28}{'req/s':>10}{'client CPU/req':>16}{'client CPU share':>18}")
        for name, rate, per, share in (
            ("raw asyncio + httptools", w.rate, w.client_cpu_s / w.n, w.client_cpu_s / w.elapsed_s),
            ("httpx.AsyncClient", n / el, cpu / n, cpu / el),
        ):
            print(f"{name:<28}{rate:>10,.0f}{per * 1e6:>13.1f} µs{share:>18.0%}")
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("baseline", help="serve the bare FastAPI baseline")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--log-level", default="warning")
    c = sub.add_parser("clients", help="the raw client's and httpx's own cost, vs the baseline")
    c.add_argument("--seconds", type=float, default=2.0)
    c.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args(argv)
    if args.command == "baseline":
        serve_baseline(args.port, args.log_level)
    else:
        compare_clients(args.seconds, args.concurrency)


if __name__ == "__main__":
    main()
