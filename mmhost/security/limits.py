"""Token buckets: a rate with a burst, refilled by the clock. Used on the engine loop only."""

from __future__ import annotations

import math
import time


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held (0: one second's worth, at least 1);
    rate 0 = unlimited."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: int = 0) -> None:
        self.rate = rate
        self.burst = float(burst if burst > 0 else max(1, math.ceil(rate)))
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
