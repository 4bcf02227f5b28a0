"""The audit log: one JSON line per denied or unauthenticated request and per throttled
principal (at most one line a second each, with how many were throttled since). Who, what
model, which action, why; never a secret or a body."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


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

    def event(self, event: str, **fields: Any) -> None:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event}
        line.update((k, v) for k, v in fields.items() if v is not None)
        self.log.info(json.dumps(line, separators=(",", ":"), ensure_ascii=True))

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
