"""``mmhost serve``: the checks before the port opens (kernels, store, preloads), then the
server until SIGTERM/SIGINT (``mmhost.api.serve``)."""

from __future__ import annotations

import logging
import sys

from mmhost.settings import Settings

log = logging.getLogger("mmhost")


def serve(settings: Settings) -> int:
    """Run the server until a signal stops it; 2 when start-up fails (the reason printed)."""
    from mmhost import logs
    from mmhost.api import serve as run_server
    from mmhost.errors import MmhostError
    from mmhost.host import Host
    from mmhost.kernels import _native
    from mmhost.security import Guard

    logs.configure(settings.log_level, settings.log_format)
    guard = Guard.from_settings(settings)  # a bad auth config stops here, before any load
    if guard.open:
        loopback = settings.bind_address in ("127.0.0.1", "localhost", "::1")
        log.warning(
            "no --auth-config: every caller that can reach %s may invoke every model%s",
            settings.bind_address,
            "" if loopback else " (this address is not loopback: anyone on the network)",
        )
    else:
        assert guard.config is not None
        log.info(
            "auth: %d principal(s) from %s", len(guard.config.principals), settings.auth_config
        )
    try:
        keys = preloads(settings)
    except ValueError as exc:
        print(f"mmhost serve: {exc}", file=sys.stderr)
        return 2
    host = Host(settings=settings)
    if host.device.type == "cpu":
        _native.load()  # a first-use build of the kernels happens now, not on a request
    step = "the store check"
    try:
        if settings.store_check:
            host.store.list(limit=1)  # StoreUnavailable / StoreAccessDenied say why
        for key in keys:
            step = f"loading {key!r} (--load-model)"
            host.load(key)
    except MmhostError as exc:
        host.close()
        hint = " (--store-check false skips this check)" if step == "the store check" else ""
        print(f"mmhost serve: {step} failed: {exc}{hint}", file=sys.stderr)
        return 2
    if keys:
        log.info("loaded %d model(s) before serving", len(keys))
    log.info(
        "serving store %s (endpoint %s, device %s)",
        settings.store,
        settings.endpoint_name,
        host.device,
    )
    run_server(host, guard)
    return 0


def preloads(settings: Settings) -> list[str]:
    """--load-model keys, then those of --load-models-from's file."""
    keys = list(settings.load_model)
    if settings.load_models_from:
        try:
            text = open(settings.load_models_from, encoding="utf-8").read()
        except OSError as exc:
            raise ValueError(f"--load-models-from {settings.load_models_from}: {exc}") from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    return keys
