"""The ``mmhost`` command: ``mmhost serve`` and ``mmhost demo``.

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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from mmhost.demo import main as demo

        demo(args.store)
        return 0
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


def _serve(settings: Settings) -> int:
    from mmhost.api import serve
    from mmhost.host import Host
    from mmhost.security import Guard

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
