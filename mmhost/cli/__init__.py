"""The ``mmhost`` command: ``mmhost serve``, ``mmhost demo``, ``mmhost experiment cache`` and
``mmhost plot``.

Every field of ``Settings`` is a ``serve`` flag (``--device-budget 512MiB``) and an environment
variable (``MMHOST_DEVICE_BUDGET``); a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any

from mmhost.settings import Settings, coerce, field_help


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmhost", description="A multi-model host.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the models of a store over HTTP",
        description="Serve a model store over HTTP (SageMaker runtime, container contract, "
        "KServe V2). Every flag is also an MMHOST_* environment variable.",
    )
    docs = field_help()
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else None
        serve.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.split("_")[-1].upper(),
            help=f"{docs.get(f.name, '')} [env MMHOST_{f.name.upper()}; default {default}]".replace(
                "%", "%%"
            ),
        )
    demo = sub.add_parser("demo", help="run the walkthrough (trains, serves, invokes)")
    demo.add_argument("--store", default="demo-store", help="folder to write the demo models to")
    _experiment_parser(sub)
    plot = sub.add_parser(
        "plot",
        help="chart loaded models, memory utilization and cache hits from a CSV",
        description="Render the two charts of `mmhost experiment cache` from a CSV with its "
        "columns (invocation, LoadedModelCount, MemoryUtilization, ModelCacheHit_last10; "
        "optional: phase, ModelCacheHit_phase).",
    )
    plot.add_argument("--from-csv", required=True, metavar="FILE", help="the samples")
    plot.add_argument("--out", metavar="DIR", help="folder for the PNGs [default: the CSV's]")
    return p


def _experiment_parser(sub: Any) -> None:
    from mmhost.experiment import CacheExperiment

    d = CacheExperiment.__dataclass_fields__
    experiment = sub.add_parser("experiment", help="reproducible experiments on a local host")
    kinds = experiment.add_subparsers(dest="experiment", required=True)
    cache = kinds.add_parser(
        "cache",
        help="N copies of one model, a device tier for 60%% of them, three phases of calls",
        description="Invoke models 0..N/2-1, again, then 0..N-1 on an in-process host whose "
        "device tier holds a fraction of them; write a CSV of LoadedModelCount, "
        "MemoryUtilization and ModelCacheHit per invocation, and two charts.",
    )
    flags = [
        ("--models", "models", int, "N", "models in the store"),
        ("--budget-fraction", "budget_fraction", float, "F", "share of them the device holds"),
        ("--policy", "policy", str, "NAME", "eviction policy; only lru exists"),
        ("--device", "device", str, "DEVICE", "cpu, cuda or auto"),
        ("--out", "out", str, "DIR", "folder for the CSV and the charts"),
        ("--seed", "seed", int, "SEED", "seeds the training data and the rows sent"),
    ]
    for flag, field, kind, metavar, text in flags:
        cache.add_argument(
            flag,
            type=kind,
            default=d[field].default,
            metavar=metavar,
            help=f"{text} [default: %(default)s]",
        )
    cache.add_argument(
        "--device-budget",
        metavar="BYTES",
        help="bytes of the device tier (4140, 4KiB); wins over --budget-fraction",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from mmhost.demo import main as demo

        demo(args.store)
        return 0
    if args.command == "experiment":
        return _experiment_cache(args)
    if args.command == "plot":
        return _plot(args)
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    try:
        settings = Settings.from_env(**_typed(overrides))
        return _serve(settings)
    except ValueError as exc:
        print(f"mmhost serve: {exc}", file=sys.stderr)
        return 2


def _typed(raw: dict[str, str]) -> dict[str, Any]:
    """Flag strings -> field types, with the same rules as the environment."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out = {}
    for name, value in raw.items():
        try:
            out[name] = coerce(fields[name], value)
        except ValueError as exc:
            raise ValueError(f"--{name.replace('_', '-')} {value!r}: {exc}") from None
    return out


def _experiment_cache(args: argparse.Namespace) -> int:
    from mmhost.experiment import CacheExperiment, run
    from mmhost.plot import PlotsNotInstalled
    from mmhost.settings import parse_bytes

    try:
        cfg = CacheExperiment(
            models=args.models,
            budget_fraction=args.budget_fraction,
            device_budget=parse_bytes(args.device_budget),
            policy=args.policy,
            device=args.device,
            out=args.out,
            seed=args.seed,
        )
        run(cfg)
    except (ValueError, PlotsNotInstalled) as exc:
        print(f"mmhost experiment cache: {exc}", file=sys.stderr)
        return 2
    return 0


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmhost.plot import PlotsNotInstalled, read_csv, render

    try:
        data = read_csv(args.from_csv)
        paths = render(data, args.out or Path(args.from_csv).parent)
    except (ValueError, PlotsNotInstalled) as exc:
        print(f"mmhost plot: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _serve(settings: Settings) -> int:
    from mmhost import logs
    from mmhost.api import serve
    from mmhost.host import Host
    from mmhost.security import Guard

    logs.configure(settings.log_level, settings.log_format)
    guard = Guard.from_settings(settings)  # a bad auth config stops here, before any load
    log = logging.getLogger("mmhost")
    if guard.open:
        loopback = settings.host in ("127.0.0.1", "localhost", "::1")
        log.warning(
            "no --auth-config: every caller that can reach %s may invoke every model%s",
            settings.host,
            "" if loopback else " (this address is not loopback: anyone on the network)",
        )
    else:
        assert guard.config is not None
        log.info(
            "auth: %d principal(s) from %s", len(guard.config.principals), settings.auth_config
        )
    host = Host(settings=settings)
    log.info(
        "serving store %s on http://%s:%d (endpoint %s, device %s)",
        settings.store,
        settings.host,
        settings.port,
        settings.endpoint_name,
        host.device,
    )
    serve(host, guard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
