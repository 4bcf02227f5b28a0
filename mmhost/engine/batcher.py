"""The micro-batcher: rows of concurrent requests for many models -> one fused call per slab.

Requests submitted during one turn of the event loop (plus ``max_delay_us`` if set) are run
together: for each slab (size class) their rows are concatenated, a slot index is attached to
every row, and the family's fused op scores all of them at once. Each request gets back its own
rows' scores; an error in the op fails the requests of that call only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import torch

from mmhost.cache import Resident
from mmhost.families.arena import Slab
from mmhost.families.linear import LinearFamily


@dataclass
class _Pending:
    resident: Resident
    x: torch.Tensor  # (n, D) for the resident's slab
    future: asyncio.Future[torch.Tensor]


@dataclass
class BatchCounters:
    calls: int = 0
    rows: int = 0
    requests: int = 0


class Batcher:
    def __init__(self, family: LinearFamily, max_batch_rows: int, max_delay_us: int) -> None:
        self.family = family
        self.max_batch_rows = max_batch_rows
        self.max_delay = max_delay_us / 1e6
        self._pending: list[_Pending] = []
        self._rows = 0
        self._scheduled = False
        self.counters = BatchCounters()

    def submit(self, resident: Resident, x: torch.Tensor) -> asyncio.Future[torch.Tensor]:
        """Queue ``x`` (already encoded and padded to the slab width) for the resident model.
        The resident must stay pinned until the future is done."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[torch.Tensor] = loop.create_future()
        self._pending.append(_Pending(resident, x, fut))
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
                by_slab[p.resident.slab].append(p)
        for slab, group in by_slab.items():
            for chunk in _chunks(group, self.max_batch_rows):
                self._run(slab, chunk)

    def _run(self, slab: Slab, group: list[_Pending]) -> None:
        try:
            counts = [p.x.shape[0] for p in group]
            x = group[0].x if len(group) == 1 else torch.cat([p.x for p in group])  # (N, D)
            slots = torch.repeat_interleave(
                torch.tensor([p.resident.slot for p in group], dtype=torch.int64),
                torch.tensor(counts),
            ).to(slab.device)  # (N,)
            out = self.family.forward(slab, x, slots)  # (N, K)
        except Exception as exc:
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        c = self.counters
        c.calls += 1
        c.rows += x.shape[0]
        c.requests += len(group)
        for p, part in zip(group, torch.split(out, counts), strict=True):
            if not p.future.done():
                p.future.set_result(part)


def _chunks(group: list[_Pending], max_rows: int) -> list[list[_Pending]]:
    out: list[list[_Pending]] = [[]]
    rows = 0
    for p in group:
        if rows and rows + p.x.shape[0] > max_rows:
            out.append([])
            rows = 0
        out[-1].append(p)
        rows += p.x.shape[0]
    return out
