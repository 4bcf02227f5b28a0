"""``mmhost fleet up``: N local ``mmhost serve`` replicas and HAProxy in front, supervised.

For one big host, or a test. Replica ``rN`` listens on ``base_port + N - 1`` and is pinned to
core ``N - 1`` when the process may use at least N cores (then with one intra-op thread each).
HAProxy gets the configuration of ``haproxy.py`` plus an admin socket, through which the fleet
reads what HAProxy thinks of each replica.

- A replica that exits while the fleet is up is started again (with a back-off when it keeps
  failing): HAProxy moves its models back once it passes its checks.
- SIGHUP restarts the replicas one at a time: SIGTERM (the replica turns unready, drains, then
  stops accepting), then a new process on the same port, then the next once HAProxy has seen the
  new one ready. No request fails.
- SIGINT / SIGTERM stop the fleet: every replica drains and stops, then HAProxy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from mmhost.errors import FleetError
from mmhost.fleet.haproxy import Address, Ring, haproxy_config, server_states

log = logging.getLogger("mmhost.fleet")

INSTALL_HINT = (
    "haproxy is not installed: apt-get install haproxy (Debian, Ubuntu), dnf install haproxy "
    "(Fedora, RHEL), brew install haproxy (macOS)"
)
READY_TIMEOUT_S = 120.0


@dataclasses.dataclass
class Replica:
    name: str
    address: Address
    core: int | None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    failures: int = 0  # exits in a row that came soon after a start
    started_at: float = 0.0
    retry_at: float = 0.0  # when a replica that keeps failing is tried again

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclasses.dataclass(frozen=True)
class FleetSpec:
    """What ``mmhost fleet up`` starts."""

    replicas: int
    serve_args: tuple[str, ...]
    """Flags given to every ``mmhost serve`` (``--store ...``, and what follows ``--``)."""
    bind: Address = Address("127.0.0.1", 8080)
    base_port: int | None = None
    """Port of ``r1`` (the next ones count up); None: the port after HAProxy's."""
    replica_address: str = "127.0.0.1"
    ring: Ring = Ring()
    drain_seconds: float | None = None
    """Each replica's ``--drain-seconds``; None: long enough for HAProxy to see it unready."""
    disk_dir: str | None = None
    """Each replica's disk tier in its own subfolder ``rN`` of this."""
    stats: Address | None = None
    pin: bool = True
    haproxy: str = "haproxy"

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("--replicas must be at least 1")
        first = self.first_port
        if first + self.replicas - 1 > 65535:
            raise ValueError(f"ports {first}..{first + self.replicas - 1} do not fit below 65536")

    @property
    def first_port(self) -> int:
        return self.base_port if self.base_port is not None else self.bind.port + 1

    @property
    def drain(self) -> float:
        """Out of the ring first: ``fall`` failed checks, one more interval, and a margin."""
        if self.drain_seconds is not None:
            return self.drain_seconds
        return (self.ring.fall + 2) * self.ring.check_interval_ms / 1000


class Fleet:
    """Start with ``start()``, then ``run()`` until a signal; or drive it from Python (tests)."""

    def __init__(self, spec: FleetSpec, out: IO[str] | None = None) -> None:
        self.spec = spec
        self.out = out or sys.stdout
        self.haproxy_bin = shutil.which(spec.haproxy)
        if self.haproxy_bin is None:
            raise FleetError(INSTALL_HINT)
        cores = sorted(os.sched_getaffinity(0))
        pin = spec.pin and len(cores) >= spec.replicas
        self.threads = 1 if pin else max(1, len(cores) // spec.replicas)
        self.replicas = [
            Replica(
                f"r{i + 1}",
                Address(spec.replica_address, spec.first_port + i),
                cores[i] if pin else None,
            )
            for i in range(spec.replicas)
        ]
        self.workdir = Path(tempfile.mkdtemp(prefix="mmhost-fleet-"))
        self.socket_path = self.workdir / "haproxy.sock"
        self.config_path = self.workdir / "haproxy.cfg"
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self._restart_requested = False

    # --- starting ---------------------------------------------------------------------------
    def start(self) -> Fleet:
        try:
            for r in self.replicas:
                self._spawn(r)
            for r in self.replicas:
                self._wait_ready(r)
            self._start_haproxy()
        except BaseException:
            self.stop()
            raise
        self._say(
            f"ready at http://{self.spec.bind} ({len(self.replicas)} replicas); SIGHUP "
            "restarts them one at a time, SIGINT or SIGTERM stops the fleet"
        )
        return self

    def _serve_command(self, r: Replica) -> list[str]:
        cmd = [sys.executable, "-m", "mmhost", "serve", *self.spec.serve_args]
        cmd += ["--bind-address", r.address.host, "--port", str(r.address.port)]
        cmd += ["--drain-seconds", str(self.spec.drain)]
        if self.spec.disk_dir is not None:
            cmd += ["--disk-dir", str(Path(self.spec.disk_dir) / r.name)]
        return cmd

    def _spawn(self, r: Replica) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        # its own session: a terminal's Ctrl-C reaches the fleet alone, which stops it in order
        r.process = subprocess.Popen(
            self._serve_command(r), env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        r.retry_at = 0.0
        r.started_at = time.monotonic()
        if r.core is not None:
            try:
                os.sched_setaffinity(r.process.pid, {r.core})
            except OSError as exc:  # it may have exited already: the wait says why
                log.warning("could not pin %s to core %d: %s", r.name, r.core, exc)
        where = f" on core {r.core}" if r.core is not None else ""
        self._say(f"replica {r.name} pid {r.process.pid} at {r.url}{where}")

    def _wait_ready(self, r: Replica, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        assert r.process is not None
        while time.monotonic() < deadline:
            if r.process.poll() is not None:
                raise FleetError(f"replica {r.name} exited with {r.process.returncode} at start")
            if _ready(r.url):
                return
            time.sleep(0.1)
        raise FleetError(f"replica {r.name} was not ready within {timeout:.0f} s")

    def _start_haproxy(self) -> None:
        text = haproxy_config(
            [r.address for r in self.replicas], self.spec.bind, self.spec.ring, self.spec.stats
        )
        admin = f"    stats socket {self.socket_path} mode 600 level admin\n"
        text = text.replace("global\n", "global\n" + admin, 1)
        self.config_path.write_text(text)
        assert self.haproxy_bin is not None
        check = subprocess.run(
            [self.haproxy_bin, "-c", "-q", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise FleetError(f"haproxy refused the configuration: {check.stderr.strip()}")
        self.haproxy = subprocess.Popen(
            [self.haproxy_bin, "-db", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.haproxy.poll() is not None:
                raise FleetError(f"haproxy exited with {self.haproxy.returncode} at start")
            if time.monotonic() > deadline:
                raise FleetError(f"haproxy did not listen on {self.spec.bind} within 30 s")
            time.sleep(0.05)
        self._say(f"haproxy pid {self.haproxy.pid} at http://{self.spec.bind} ({self.config_path})")

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.spec.bind.host, self.spec.bind.port), 0.5):
                return True
        except OSError:
            return False

    # --- what HAProxy sees ------------------------------------------------------------------
    def server_states(self) -> dict[str, str]:
        """Each replica's state in HAProxy (``UP``, ``DOWN``, ``UP 1/2``, ...)."""
        return server_states(self.admin("show stat"))

    def admin(self, command: str) -> str:
        """One command on HAProxy's admin socket, its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def wait_state(self, name: str, state: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.server_states().get(name) != state:
            if time.monotonic() > deadline:
                raise FleetError(f"haproxy did not see {name} {state} within {timeout:.0f} s")
            time.sleep(0.05)

    # --- running ----------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until SIGINT/SIGTERM (0) or HAProxy exits (1); SIGHUP: a rolling restart."""

        def on_stop(sig: int, frame: Any) -> None:
            self.stopping = True

        def on_hup(sig: int, frame: Any) -> None:
            self._restart_requested = True

        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, on_stop),
            signal.SIGTERM: signal.signal(signal.SIGTERM, on_stop),
            signal.SIGHUP: signal.signal(signal.SIGHUP, on_hup),
        }
        try:
            while not self.stopping:
                if self.haproxy is not None and self.haproxy.poll() is not None:
                    self._say(f"haproxy exited with {self.haproxy.returncode}: stopping")
                    return 1
                if self._restart_requested:
                    self._restart_requested = False
                    self.rolling_restart()
                self.supervise()
                time.sleep(0.1)
            return 0
        finally:
            self.stop()  # under the fleet's handlers: a second signal cannot cut it short
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def supervise(self) -> None:
        """Start again each replica that exited (after a back-off if it keeps failing)."""
        now = time.monotonic()
        for r in self.replicas:
            if self.stopping or r.process is None or r.process.poll() is None:
                continue
            if not r.retry_at:
                quick = now - r.started_at < 10
                r.failures = r.failures + 1 if quick else 0
                delay = min(30.0, 0.5 * 2**r.failures) if r.failures else 0.0
                self._say(
                    f"replica {r.name} exited with {r.process.returncode}; "
                    f"starting it again in {delay:.1f} s"
                )
                r.retry_at = now + delay
            if now >= r.retry_at:
                r.retry_at = 0.0
                r.restarts += 1
                self._spawn(r)

    def rolling_restart(self) -> None:
        """Each replica in turn: drained and stopped by SIGTERM, started again, seen ready."""
        self._say("rolling restart")
        for r in self.replicas:
            if self.stopping:
                return
            assert r.process is not None
            r.process.send_signal(signal.SIGTERM)
            self.wait_state(r.name, "DOWN", timeout=self.spec.drain + 30)
            _wait_exit(r.process, timeout=self.spec.drain + 60)
            r.restarts += 1
            self._spawn(r)
            self._wait_ready(r)
            self.wait_state(r.name, "UP")
        self._say("rolling restart done")

    def stop(self) -> None:
        """Every replica drains and stops (SIGTERM, then SIGKILL past the drain and a grace),
        then HAProxy."""
        self.stopping = True
        live = [r.process for r in self.replicas if r.process and r.process.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        for p in live:
            _wait_exit(p, timeout=self.spec.drain + 35)
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            _wait_exit(self.haproxy, timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _say(self, text: str) -> None:
        print(f"mmhost fleet: {text}", file=self.out, flush=True)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def up(spec: FleetSpec, out: IO[str] | None = None) -> int:
    """``mmhost fleet up``: start, supervise until a signal, stop. 2 when it cannot start."""
    try:
        fleet = Fleet(spec, out)
        fleet.start()
    except FleetError as exc:
        print(f"mmhost fleet: {exc}", file=sys.stderr)
        return 2
    return fleet.run()
