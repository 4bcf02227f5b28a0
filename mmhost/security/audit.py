"""The audit log: one JSON line per denied or unauthenticated request and per throttled
principal (at most one line a second each, with how many were throttled since). Who, what
model, which action, why; never a secret or a body.

Nothing a caller sends can make the log grow faster than the server can afford: every string
field is clipped to ``MAX_FIELD`` characters, and unauthenticated requests (which anyone can
send) log at most one line a second per source address, with the count dropped since."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

MAX_FIELD = 256  # characters of one field (a path, a reason) that a line keeps
MAX_SOURCES = 10_000  # source addresses whose last line is remembered


class AuditLog:
    def __init__(self, path: str | None = None) -> None:
        """``path``: a file to append to; None or "-": stderr."""
        self.log = logging.getLogger(f"mmhost.audit.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        handler: logging.Handler = (
            logging.StreamHandler(sys.stderr) if path in (None, "-") else logging.FileHandler(path)
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.log.addHandler(handler)
        self._throttled: dict[str, tuple[float, int]] = {}  # principal -> (last line, since)
        self._sources: dict[str, tuple[float, int]] = {}  # address -> (last line, dropped)

    def event(self, event: str, **fields: Any) -> None:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event}
        line.update((k, _clipped(v)) for k, v in fields.items() if v is not None)
        self.log.info(json.dumps(line, separators=(",", ":"), ensure_ascii=True))

    def unauthenticated(self, remote: str | None, **fields: Any) -> None:
        """One line a second at most per source address (``dropped_since_last``: how many
        were not written since the previous line)."""
        source = remote or "unknown"
        now = time.monotonic()
        last, since = self._sources.get(source, (-1.0, 0))
        if last >= 0 and now - last < 1.0:
            self._sources[source] = (last, since + 1)
            return
        if len(self._sources) >= MAX_SOURCES:
            self._sources.clear()  # forgetting costs at most one line per address
        self._sources[source] = (now, 0)
        self.event("unauthenticated", remote=remote, dropped_since_last=since, **fields)

    def throttled(self, principal: str, **fields: Any) -> None:
        now = time.monotonic()
        last, since = self._throttled.get(principal, (0.0, 0))
        if now - last < 1.0:
            self._throttled[principal] = (last, since + 1)
            return
        self._throttled[principal] = (now, 0)
        self.event("throttled", principal=principal, suppressed_since_last=since, **fields)

    def close(self) -> None:
        for h in list(self.log.handlers):
            h.close()
            self.log.removeHandler(h)


def _clipped(v: Any) -> Any:
    if isinstance(v, str) and len(v) > MAX_FIELD:
        return v[: MAX_FIELD - 3] + "..."
    return v
