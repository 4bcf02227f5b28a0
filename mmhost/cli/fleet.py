"""``mmhost fleet haproxy-config`` and ``mmhost fleet up``: replicas behind HAProxy."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    fleet = sub.add_parser("fleet", help="run past one host: replicas behind HAProxy")
    verbs = fleet.add_subparsers(dest="verb", required=True)
    cfg = verbs.add_parser(
        "haproxy-config",
        help="print the HAProxy configuration for a set of replicas",
        description="Print an haproxy.cfg that sends each model to one replica (a "
        "consistent-hash ring on the model's name, with bounded load), checks /ping and "
        "/v2/health/ready, and retries refused connections on the next replica.",
    )
    cfg.add_argument(
        "--replicas",
        required=True,
        metavar="HOST:PORT,...",
        help="the replicas, in a stable order (the ring is built from it)",
    )
    cfg.add_argument(
        "--bind",
        default="127.0.0.1:8080",
        metavar="ADDR:PORT",
        help="where HAProxy listens [127.0.0.1:8080]",
    )
    cfg.add_argument(
        "--stats",
        metavar="ADDR:PORT",
        help="also serve HAProxy's Prometheus metrics (/metrics) and stats page",
    )
    _ring_args(cfg)
    up = verbs.add_parser(
        "up",
        help="start N local replicas and HAProxy in front, until SIGINT/SIGTERM",
        description="Start N `mmhost serve` replicas on this host (pinned to cores when there "
        "are enough) and HAProxy in front of them. A replica that exits is started again; "
        "SIGHUP restarts them one at a time without failing a request; SIGINT or SIGTERM "
        "stops them all. Flags after -- go to every `mmhost serve`.",
    )
    up.add_argument("--replicas", type=int, required=True, help="how many replicas")
    up.add_argument("--store", required=True, help="the model store (folder or s3://)")
    up.add_argument("--haproxy-port", type=int, default=8080, help="HAProxy's port [8080]")
    up.add_argument("--bind-address", default="127.0.0.1", help="HAProxy's address [127.0.0.1]")
    up.add_argument(
        "--base-port",
        type=int,
        help="the first replica's port (the next count up) [haproxy-port + 1]",
    )
    up.add_argument(
        "--drain-seconds",
        type=float,
        help="each replica's drain on SIGTERM [(fall + 2) x check interval]",
    )
    up.add_argument("--disk-dir", help="disk tier folder: each replica in its own rN/ in it")
    up.add_argument("--stats", metavar="ADDR:PORT", help="HAProxy's metrics and stats page")
    up.add_argument("--no-pin", action="store_true", help="do not pin replicas to cores")
    _ring_args(up)
    up.add_argument(
        "serve_args", nargs=argparse.REMAINDER, help="-- then flags for every mmhost serve"
    )


def _ring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--balance-factor",
        type=int,
        default=150,
        help="a replica takes at most this %% of the average load (0: no bound) [150]",
    )
    p.add_argument(
        "--check-interval-ms",
        type=int,
        default=1000,
        help="between two health checks of a replica [1000]",
    )
    p.add_argument("--fall", type=int, default=2, help="failed checks that take one out [2]")
    p.add_argument("--rise", type=int, default=2, help="passed checks that put it back [2]")


def run(args: argparse.Namespace) -> int:
    from mmhost.fleet import Address, FleetSpec, Ring, haproxy_config, parse_addresses, up

    try:
        ring = Ring(
            balance_factor=args.balance_factor,
            check_interval_ms=args.check_interval_ms,
            fall=args.fall,
            rise=args.rise,
        )
        stats = Address.parse(args.stats) if args.stats else None
        if args.verb == "haproxy-config":
            replicas = parse_addresses(args.replicas)
            sys.stdout.write(haproxy_config(replicas, Address.parse(args.bind), ring, stats))
            return 0
        extra = list(args.serve_args)
        if extra[:1] == ["--"]:
            extra = extra[1:]
        spec = FleetSpec(
            replicas=args.replicas,
            serve_args=("--store", args.store, *extra),
            bind=Address(args.bind_address, args.haproxy_port),
            base_port=args.base_port,
            ring=ring,
            drain_seconds=args.drain_seconds,
            disk_dir=args.disk_dir,
            stats=stats,
            pin=not args.no_pin,
        )
    except ValueError as exc:
        print(f"mmhost fleet {args.verb}: {exc}", file=sys.stderr)
        return 2
    return up(spec)
