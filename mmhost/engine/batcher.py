"""The micro-batcher: rows of concurrent requests for many models -> one fused call per slab.

Submissions made during one turn of the event loop (plus ``max_delay_us`` if set) are run
together: per slab (size class) their rows and per-row slot indices are concatenated and the
family's fused op scores all of them at once. Rows of one slab are padded to the widest of
their call (a trees slab holds models of different feature counts), so a slab's submissions,
widest first, are split into calls whose padded cells stay within twice their real cells (or
``PAD_SLACK`` cells, whichever is more) and within ``max_batch_values``: one tenant's wide model
never makes another's narrow rows cost more than twice their size, while models of similar
widths still share one call. A submission is one request, or a group of
requests already decoded together; each gets back its own rows' scores, as a view of ONE host
copy of the call's output (one device-to-host copy per call, not per request). An error in
the op fails the submissions of that call only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from mmhost.families.arena import Slab
from mmhost.families.router import Families
from mmhost.metrics import Metrics
from mmhost.types import Rows, Slots

T = TypeVar("T")
PAD_SLACK = 1 << 20  # padded cells (4 MB) a call may hold beyond twice its real ones


@dataclass
class _Pending:
    slab: Slab
    x: Rows  # (n, D) rows: a linear slab's width; a trees model's own feature count
    slots: Slots
    requests: int
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchCounters:
    calls: int = 0
    rows: int = 0
    requests: int = 0


class Batcher:
    def __init__(
        self,
        families: Families,
        max_batch_rows: int,
        max_delay_us: int,
        metrics: Metrics | None = None,
        max_batch_values: int = 50_000_000,
    ) -> None:
        self.families = families
        self.metrics = metrics or Metrics()
        self.max_batch_rows = max_batch_rows
        self.max_batch_values = max_batch_values
        self.max_delay = max_delay_us / 1e6
        self._pending: list[_Pending] = []
        self._rows = 0
        self._scheduled = False
        self.counters = BatchCounters()

    def submit(
        self, slab: Slab, x: Rows, slots: Slots, requests: int = 1
    ) -> asyncio.Future[np.ndarray]:
        """Queue rows ``x`` (n, D) scored by the models in ``slots`` (one slot, or (n,)); the
        future gets the (n, K) float32 scores in host memory. The models must stay pinned until
        it is done. Host rows are moved to the device once per call, not once per request."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append(_Pending(slab, x, slots, requests, fut))
        self._rows += x.shape[0]
        if self._rows >= self.max_batch_rows:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            if self.max_delay > 0:
                loop.call_later(self.max_delay, self._flush)
            else:
                loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending, self._rows = self._pending, [], 0
        by_slab: dict[Slab, list[_Pending]] = defaultdict(list)
        for p in pending:
            if not p.future.done():  # a cancelled request needs no rows scored
                by_slab[p.slab].append(p)
        for slab, group in by_slab.items():
            for chunk in self._calls(group):
                self._run(slab, chunk)

    def _calls(self, group: list[_Pending]) -> list[list[_Pending]]:
        """One slab's submissions split into calls (see the module docstring)."""
        if len(group) == 1:
            return [group]
        calls: list[list[_Pending]] = []
        rows = cells = width = 0
        for p in sorted(group, key=lambda p: -p.x.shape[1]):  # widest first: sets the width
            n, d = p.x.shape
            if calls:
                padded = (rows + n) * width
                fits = (
                    rows + n <= self.max_batch_rows
                    and padded <= self.max_batch_values
                    and padded <= max(2 * (cells + n * d), PAD_SLACK)
                )
                if fits:
                    calls[-1].append(p)
                    rows, cells = rows + n, cells + n * d
                    continue
            calls.append([p])
            rows, cells, width = n, n * d, d
        return calls

    def _run(self, slab: Slab, group: list[_Pending]) -> None:
        try:
            counts = [p.x.shape[0] for p in group]
            x = _device_rows(group, self.families.device)  # (N, D)
            slots = np.concatenate(
                [
                    np.full(n, p.slots, np.int64) if isinstance(p.slots, int) else p.slots
                    for p, n in zip(group, counts, strict=True)
                ]
            )  # (N,)
            device_slots = torch.from_numpy(slots).to(x.device)
            out = self.families.forward(slab, x, device_slots).cpu().numpy()  # (N, K)
        except Exception as exc:
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        c = self.counters
        c.calls += 1
        c.rows += x.shape[0]
        one_model = len(group) == 1 and isinstance(group[0].slots, int)
        self.metrics.batch(x.shape[0], 1 if one_model else len(np.unique(slots)))
        c.requests += sum(p.requests for p in group)
        start = 0
        for p, n in zip(group, counts, strict=True):
            if not p.future.done():
                p.future.set_result(out[start : start + n])
            start += n


def _device_rows(group: list[_Pending], device: torch.device) -> torch.Tensor:
    """The group's rows as one (N, D) tensor on ``device``: host rows are joined on the host
    and copied once; tensors (already on the device) are joined there. Rows narrower than the
    widest (models of one trees slab read different feature counts) are padded with zeros that
    their model never reads."""
    xs = [p.x for p in group]
    d = max(x.shape[1] for x in xs)
    if all(isinstance(x, np.ndarray) for x in xs):
        if len(xs) == 1:
            return torch.from_numpy(xs[0]).to(device)
        host = np.zeros((sum(x.shape[0] for x in xs), d), np.float32)
        start = 0
        for x in xs:
            host[start : start + x.shape[0], : x.shape[1]] = x
            start += x.shape[0]
        return torch.from_numpy(host).to(device)
    parts = [torch.from_numpy(x).to(device) if isinstance(x, np.ndarray) else x for x in xs]
    parts = [
        torch.nn.functional.pad(t, (0, d - t.shape[1])) if t.shape[1] < d else t for t in parts
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def runs_of_rows(items: list[T], rows: Callable[[T], int], max_rows: int) -> list[list[T]]:
    """Consecutive runs of ``items`` holding at most ``max_rows`` rows in all (an item bigger
    than that stands alone)."""
    out: list[list[T]] = [[]]
    total = 0
    for item in items:
        n = rows(item)
        if out[-1] and total + n > max_rows:
            out.append([])
            total = 0
        out[-1].append(item)
        total += n
    return out
