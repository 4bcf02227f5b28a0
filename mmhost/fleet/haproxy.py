"""The HAProxy configuration in front of N ``mmhost serve`` replicas (``mmhost fleet
haproxy-config``).

Every request that names a model is sent to that model's owner on a consistent-hash ring, so each
model is hot on one replica. ``hash-balance-factor`` bounds the load: a replica with more
requests in flight than the factor times the average (150: half again) passes new ones to the
next replica on the ring, so a hot model spills over while every other model stays put. A
replica that fails its checks leaves the ring and only its models move (to the next replica
each); when it passes again they move back.

- SageMaker's routes carry the model in ``X-Amzn-SageMaker-Target-Model``: backend ``sagemaker``,
  ``balance hdr(...)``.
- The container and KServe V2 routes carry it in the path (``/models/{name}/invoke``,
  ``/v2/models/{name}[/versions/{v}]/infer``, ``/v2/repository/models/{name}/load``, ...), and
  ``POST /models`` in its JSON body's ``model_name``: the frontend reads it into ``txn.model``,
  backend ``models`` hashes that. Its servers track the first backend's, so there is one set of
  checks, and both rings are the same (same server ids, same hash), so a model has one owner
  whichever route asks for it.
- Requests that name no model (``/ping``, ``/metrics``, ``GET /models``) go round robin.
- Checks: ``/ping`` (alive) then ``/v2/health/ready`` (ready): a replica told to stop turns
  unready while it drains, so it leaves the ring before it stops accepting.
- Retries: a refused connection, an empty answer or a 503 is retried on the next replica.
- Keep-alive to the replicas (``http-reuse safe``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"


@dataclasses.dataclass(frozen=True)
class Address:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{text!r} is not HOST:PORT")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: the port must be 1 to 65535")
        if any(c.isspace() or c in "#'\"\\" for c in host):
            raise ValueError(f"{text!r}: the host may not hold spaces, quotes, '#' or '\\'")
        return cls(host, int(port))

    @property
    def literal(self) -> bool:
        """An IP address (no DNS needed)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_addresses(text: str) -> list[Address]:
    """``HOST:PORT,HOST:PORT,...``: at least one, none twice."""
    found = [Address.parse(part) for part in text.split(",") if part.strip()]
    if not found:
        raise ValueError("no replicas: give HOST:PORT,HOST:PORT,...")
    if len(set(found)) != len(found):
        raise ValueError(f"a replica is named twice in {text!r}")
    return found


@dataclasses.dataclass(frozen=True)
class Ring:
    """How the proxy spreads, checks and retries."""

    balance_factor: int = 150
    """``hash-balance-factor``: a replica takes at most this percent of the average load in
    flight before the next one on the ring takes the excess; 0 turns the bound off."""
    check_interval_ms: int = 1000
    """Between two checks of a replica (``inter``)."""
    fall: int = 2
    """Failed checks in a row that take a replica out of the ring."""
    rise: int = 2
    """Passed checks in a row that put it back."""
    retries: int = 3
    """Tries after the first on a refused connection, an empty answer or a 503."""
    server_timeout_s: int = 120
    """The longest a replica may take to answer (a cold load included)."""
    maxconn: int = 4096
    """Client connections the proxy holds at once."""

    def __post_init__(self) -> None:
        if self.balance_factor and not 100 < self.balance_factor <= 65535:
            raise ValueError("the balance factor must be 0 (off) or 101 to 65535 percent")
        for name in ("check_interval_ms", "fall", "rise", "server_timeout_s", "maxconn"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")


# the model's name from the path, as the replicas' routers read it (mmhost/api/container.py,
# mmhost/api/v2.py): V2's /versions/{v} and route tails are never part of a name
_CONTAINER_NAME = "path,regsub('^/models/',''),regsub('/invoke$',''),url_dec"
_V2_NAME = (
    "path,regsub('^/v2/repository/models/|^/v2/models/',''),"
    "regsub('/ready$|/infer$|/config$|/stats$|/load$|/unload$',''),"
    "regsub('/versions/[^/]+$',''),url_dec"
)


def haproxy_config(
    replicas: Sequence[Address],
    bind: Address,
    ring: Ring = Ring(),
    stats: Address | None = None,
) -> str:
    """The whole ``haproxy.cfg``. Server ``rN`` (id N) is the N-th replica: keep the order
    when the list changes, since the ring is built from the ids. ``stats``: also serve HAProxy's
    own Prometheus metrics at ``/metrics`` and its stats page at ``/`` there."""
    if not replicas:
        raise ValueError("no replicas")
    if len(set(replicas)) != len(replicas):
        raise ValueError("a replica is named twice")
    dns = not all(r.literal for r in replicas)
    lines = [
        "# made by `mmhost fleet haproxy-config`: model affinity on a consistent-hash ring with",
        "# bounded load; see mmhost/fleet/haproxy.py for what each part does",
        "global",
        f"    maxconn {ring.maxconn}",
        "    log stdout format raw local0 warning",
        "",
    ]
    if dns:  # replicas by name (a StatefulSet's pods): resolved at start and while running
        lines += ["resolvers dns", "    parse-resolv-conf", "    hold valid 10s", ""]
    lines += [
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option http-keep-alive",
        "    http-reuse safe",
        "    timeout connect 2s",
        "    timeout client 60s",
        f"    timeout server {ring.server_timeout_s}s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        "    timeout check 2s",
        f"    retries {ring.retries}",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 503",
        "",
        "frontend mmhost",
        f"    bind {bind}",
        "    option http-buffer-request",
        "    # the model a container or V2 request is for; SageMaker's carry it in a header",
        "    http-request set-var(txn.model) req.body,json_query('$.model_name')"
        " if { method POST } { path /models }",
        f"    http-request set-var(txn.model) {_CONTAINER_NAME} if {{ path_beg /models/ }}",
        f"    http-request set-var(txn.model) {_V2_NAME}"
        " if { path_beg /v2/models/ /v2/repository/models/ } !{ path /v2/models/stats }",
        "    use_backend models if { var(txn.model) -m found }",
        "    default_backend sagemaker",
        "",
        "backend sagemaker",
        f"    balance hdr({MODEL_HEADER})",
        *_ring(ring),
        "    option httpchk",
        "    http-check connect",
        "    http-check send meth GET uri /ping",
        "    http-check expect status 200",
        "    http-check connect",
        "    http-check send meth GET uri /v2/health/ready",
        "    http-check expect status 200",
        f"    default-server check inter {ring.check_interval_ms}ms fall {ring.fall}"
        f" rise {ring.rise}" + (" resolvers dns init-addr last,libc,none" if dns else ""),
        *[f"    server r{i} {r} id {i}" for i, r in enumerate(replicas, 1)],
        "",
        "backend models",
        "    balance hash var(txn.model)",
        *_ring(ring),
        *[
            f"    server r{i} {r} id {i} track sagemaker/r{i}"
            + (" resolvers dns init-addr last,libc,none" if dns else "")
            for i, r in enumerate(replicas, 1)
        ],
    ]
    if stats is not None:
        lines += [
            "",
            "frontend stats",
            f"    bind {stats}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    stats enable",
            "    stats uri /",
            "    stats refresh 5s",
        ]
    return "\n".join(lines) + "\n"


def _ring(ring: Ring) -> list[str]:
    lines = ["    hash-type consistent"]
    if ring.balance_factor:
        lines.append(f"    hash-balance-factor {ring.balance_factor}")
    return lines


def server_states(show_stat: str) -> dict[str, str]:
    """Each replica's state (``UP``, ``DOWN``, ``UP 1/2``, ...) in HAProxy's ``show stat``."""
    rows = show_stat.splitlines()
    if not rows or not rows[0].startswith("# "):
        return {}
    head = rows[0][2:].split(",")
    states: dict[str, str] = {}
    for row in rows[1:]:
        cells = dict(zip(head, row.split(","), strict=False))
        if cells.get("pxname") == "sagemaker" and cells.get("svname", "").startswith("r"):
            states[cells["svname"]] = cells.get("status", "")
    return states
