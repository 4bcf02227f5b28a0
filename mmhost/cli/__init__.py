"""The ``mmhost`` command (also ``python -m mmhost``): ``serve``, ``convert``, ``store ls``,
``build-kernels``, ``train linear-learner``, ``fleet haproxy-config``, ``fleet up``, ``demo``,
``experiment cache`` and ``plot``.

Every field of ``Settings`` is a ``serve`` flag (``--device-budget 512MiB``) and an environment
variable (``MMHOST_DEVICE_BUDGET``); a flag wins over the environment. Booleans are switches
(``--per-model-metrics`` / ``--no-per-model-metrics``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import mmhost
from mmhost.cli import fleet, train
from mmhost.settings import RENAMED, Settings, coerce, field_help

# what a command needs beyond the server, by the module a missing import names
_EXTRAS = {
    "sklearn": "demo",
    "tqdm": "demo",
    "matplotlib": "plots",
    "krcf": "rcf",
    "pandas": "train",
    "pyarrow": "train",
}
_METAVARS = {"load_models_from": "FILE", "auth_config": "FILE", "audit_log": "FILE"}


def format_bytes(n: int | None) -> str:
    """1073741824 -> '1GiB' (the largest binary unit that divides it), None -> 'none'."""
    if n is None:
        return "none"
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmhost", description="A multi-model host.")
    p.add_argument("--version", action="version", version=f"mmhost {mmhost.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the models of a store over HTTP",
        description="Serve a model store over HTTP (SageMaker runtime, container contract, "
        "KServe V2). Every flag is also an MMHOST_* environment variable.",
    )
    _settings_flags(serve)
    _tool_parsers(sub)
    train.add_parser(sub)
    fleet.add_parser(sub)
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


class _Switch(argparse.Action):
    """A boolean flag: ``--x`` sets it, ``--no-x`` clears it, and ``--x false`` (or true, yes,
    no, 1, 0, on, off) says which, as the environment variable does."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        names = [n for o in option_strings for n in (o, "--no-" + o[2:])]
        super().__init__(names, dest, nargs="?", metavar="true|false", **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, ns: Any, value: Any, option: str | None = None
    ) -> None:
        if option is not None and option.startswith("--no-"):
            if value is not None:
                parser.error(f"{option} takes no value")
            setattr(ns, self.dest, False)
            return
        text = "true" if value is None else str(value).strip().lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            parser.error(f"{option} takes true or false, not {value!r}")
        setattr(ns, self.dest, text in ("1", "true", "yes", "on"))


def _settings_flags(serve: argparse.ArgumentParser) -> None:
    docs = field_help()
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = str(f.type)
        shown = format_bytes(default) if f.name in Settings._byte_fields else default
        if kind.startswith("tuple"):
            shown = "none"
        text = f"{docs.get(f.name, '')} [env MMHOST_{f.name.upper()}; default {shown}]"
        extra: dict[str, Any] = {"metavar": _METAVARS.get(f.name, f.name.split("_")[-1].upper())}
        if kind == "bool":
            extra = {"action": _Switch}
        elif kind.startswith("tuple"):
            extra = {"action": "append", "metavar": "KEY"}
        elif f.name in Settings._byte_fields:
            extra["metavar"] = "BYTES"
        serve.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=text.replace("%", "%%"),
            **extra,
        )
    for old, new in RENAMED.items():
        serve.add_argument(
            "--" + old.replace("_", "-"), dest=new, action=_Renamed, help=argparse.SUPPRESS
        )


class _Renamed(argparse.Action):
    """A flag of the previous release: stored as its new name, with a notice."""

    def __call__(self, parser: Any, ns: Any, value: Any, option: str | None = None) -> None:
        new = "--" + self.dest.replace("_", "-")
        print(f"mmhost: {option} is deprecated (mmhost 0.2 removes it): use {new}", file=sys.stderr)
        setattr(ns, self.dest, value)


def _tool_parsers(sub: Any) -> None:
    convert = sub.add_parser(
        "convert",
        help="convert a folder or S3 prefix of models into mmhost artifacts, offline",
        description="Convert every model under SRC (a folder or s3://bucket/prefix/) into an "
        "mmhost artifact under DST, keeping the keys (city/model.joblib -> "
        "city/model.tar.gz): scikit-learn joblib/pickle files (TRUSTED input only: "
        "unpickling runs code; this command is for offline use, never on a server), XGBoost "
        "model files (.json, .ubj, xgboost-model) and the archives mmhost reads (SageMaker's "
        "Linear Learner, XGBoost and k-NN model.tar.gz). A model that fails is reported and "
        "the rest go on; the exit status is 1 when any failed.",
    )
    convert.add_argument("src", help="folder or s3://bucket/prefix/ to read")
    convert.add_argument("dst", help="folder or s3://bucket/prefix/ to write")
    convert.add_argument("--s3-endpoint-url", help="S3-compatible server for both [env]")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    store = sub.add_parser("store", help="look into a model store")
    verbs = store.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser(
        "ls",
        help="list the model keys of a store",
        description="List the model keys of a store (those a TargetModel can name), sorted.",
    )
    ls.add_argument("prefix", nargs="?", default="", help="only keys starting so")
    ls.add_argument("--store", help="folder or s3://bucket/prefix/ [env MMHOST_STORE]")
    ls.add_argument("--s3-endpoint-url", help="S3-compatible server [env]")
    sub.add_parser(
        "build-kernels",
        help="compile the C++ CPU kernels now (or say why they can't be)",
        description="Build (or find) the C++ kernels for the torch installed here; mmhost "
        "otherwise does it on first use. Prints where the module is.",
    )


def _experiment_parser(sub: Any) -> None:
    from mmhost.tools.experiment import CacheExperiment

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
    try:
        return _run(args)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"mmhost {args.command}: needs {exc.name}, which mmhost's {extra!r} extra installs: "
            f"pip install 'mmhost[{extra}]'",
            file=sys.stderr,
        )
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from mmhost.tools.demo import main as demo

        demo(args.store)
        return 0
    if args.command == "experiment":
        return _experiment_cache(args)
    if args.command == "plot":
        return _plot(args)
    if args.command == "train":
        return train.run(args)
    if args.command == "fleet":
        return fleet.run(args)
    if args.command in ("convert", "store", "build-kernels"):
        from mmhost.cli import tools

        return tools.run(args)
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    try:
        settings = Settings.from_env(**_typed(overrides))
        from mmhost.cli.serve import serve

        return serve(settings)
    except ValueError as exc:
        print(f"mmhost serve: {exc}", file=sys.stderr)
        return 2


def _typed(raw: dict[str, str]) -> dict[str, Any]:
    """Flag strings -> field types, with the same rules as the environment."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out = {}
    for name, value in raw.items():
        if not isinstance(value, str):  # a switch's bool, a repeated flag's list
            out[name] = tuple(value) if isinstance(value, list) else value
            continue
        try:
            out[name] = coerce(fields[name], value)
        except ValueError as exc:
            raise ValueError(f"--{name.replace('_', '-')} {value!r}: {exc}") from None
    return out


def _experiment_cache(args: argparse.Namespace) -> int:
    from mmhost.settings import parse_bytes
    from mmhost.tools.experiment import CacheExperiment, run
    from mmhost.tools.plot import PlotsNotInstalled

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

    from mmhost.tools.plot import PlotsNotInstalled, read_csv, render

    try:
        data = read_csv(args.from_csv)
        paths = render(data, args.out or Path(args.from_csv).parent)
    except (ValueError, PlotsNotInstalled) as exc:
        print(f"mmhost plot: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
