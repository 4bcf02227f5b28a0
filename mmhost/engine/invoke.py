"""Requests on the engine loop: validate, acquire the model (the cache), encode the rows (the
model's encoder), submit them to the batcher, answer (the family). ``invoke_many`` decodes the
requests whose models share an input schema and a slab as one block: for 1-row requests
decoding, not the fused op, is the cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import numpy as np
import torch

from mmhost.cache import ModelCache, Resident
from mmhost.codecs.outputs import MIN_VALUE_BYTES
from mmhost.engine.batcher import Batcher, runs_of_rows
from mmhost.errors import ModelNotReady, ResponseTooLarge, ValidationError
from mmhost.families.arena import Slab
from mmhost.families.router import Families
from mmhost.metrics import Metrics
from mmhost.settings import Settings
from mmhost.store import validate_key
from mmhost.types import Prediction, Rows, Slots

# slab, member requests, their rows (N, D), slots (N,), and each member's row count
_Block = tuple[Slab, list[int], Rows, np.ndarray, list[int]]


class Invoker:
    """The request path of one host; every method runs on the engine loop."""

    def __init__(
        self,
        settings: Settings,
        device: torch.device,
        cache: ModelCache,
        batcher: Batcher,
        families: Families,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.device = device
        self.cache = cache
        self.batcher = batcher
        self.families = families
        self.metrics = metrics

    async def invoke(
        self, name: str, rows: Any, max_response_bytes: int | None = None
    ) -> Prediction:
        key, n = self.checked_key(name, rows)
        self.metrics.invoked(key, n)
        waited = 0.0
        r = self.cache.acquire_now(key)
        if r is None:
            t0 = time.perf_counter()
            try:
                r = await self.acquire(key)
            finally:  # a failed load was waited for too
                waited = time.perf_counter() - t0
                self.metrics.loading_wait(waited)
        r.uses += 1
        self.metrics.served(key)
        try:
            if max_response_bytes is not None:
                _check_answer(self.families.answer_values(r.slab, r.meta), n, max_response_bytes)
            x = self.encode(r, rows)  # (n, D)
            t1 = time.perf_counter()
            out = await self.score(r.slab, x, r.slot)  # (n, K)
            in_model = time.perf_counter() - t1
            r.served(n, in_model)
        finally:
            self.cache.release(r)
        self.metrics.model_latency(in_model)
        m = r.meta
        scores, neighbors = self.families.answer(m, out)
        return Prediction(scores, m.task, m.classes, in_model, waited, m.threshold, neighbors)

    async def acquire(self, key: str) -> Resident:
        """The model pinned; a load still running after ``load_timeout_seconds`` goes without us."""
        r = self.cache.acquire_now(key)
        if r is not None:
            return r
        # shielded: the load (and our place in it) goes on when we stop waiting; the pin it
        # brings is dropped then, so a timed-out or cancelled request leaks nothing
        acquiring = asyncio.ensure_future(self.cache.acquire(key))
        try:
            return await asyncio.wait_for(
                asyncio.shield(acquiring), self.settings.load_timeout_seconds
            )
        except BaseException as exc:
            acquiring.add_done_callback(self._drop_pin)
            if isinstance(exc, asyncio.TimeoutError):
                raise ModelNotReady(key, self.settings.load_timeout_seconds) from None
            raise

    def _drop_pin(self, acquiring: asyncio.Future[Resident]) -> None:
        if not acquiring.cancelled() and acquiring.exception() is None:
            self.cache.release(acquiring.result())

    async def invoke_many(self, requests: list[tuple[str, Any]]) -> list[np.ndarray | Exception]:
        """Like one ``_invoke`` per request, but requests whose models share an input schema
        and a slab are decoded and submitted as one block (for 1-row requests decoding, not the
        op, is the cost)."""
        results: list[Any] = [None] * len(requests)
        held: dict[int, Resident] = {}
        sizes: dict[int, int] = {}
        misses = []
        for i, (name, rows) in enumerate(requests):
            try:
                key, sizes[i] = self.checked_key(name, rows)
            except ValidationError as exc:
                results[i] = exc
                continue
            self.metrics.invoked(key, sizes[i])
            r = self.cache.acquire_now(key)  # resident: no task, no await
            if r is None:
                misses.append(self._acquire_into(held, results, i, key))
            else:
                held[i] = r
        try:
            if misses:
                await asyncio.gather(*misses)
            blocks = self._blocks(requests, sizes, held, results)
            futures = [
                (members, counts, self.score(slab, x, slots, len(members)))
                for slab, members, x, slots, counts in blocks
            ]
            for members, counts, fut in futures:
                try:
                    out = await fut  # (rows of all members, K)
                except Exception as exc:
                    for i in members:
                        results[i] = exc
                    continue
                for i, part in zip(members, np.split(out, np.cumsum(counts)[:-1]), strict=True):
                    held[i].uses += 1
                    held[i].served(len(part))
                    self.metrics.served(held[i].name)
                    results[i] = self.families.answer(held[i].meta, part)[0]
        finally:
            for r in held.values():
                self.cache.release(r)
        return results

    async def _acquire_into(
        self, held: dict[int, Resident], results: list[Any], i: int, key: str
    ) -> None:
        try:
            held[i] = await self.acquire(key)
        except Exception as exc:
            results[i] = exc

    def _blocks(
        self,
        requests: list[tuple[str, Any]],
        sizes: dict[int, int],
        held: dict[int, Resident],
        results: list[Any],
    ) -> list[_Block]:
        """(slab, member requests, rows, slots) per block: list rows (or 2-D numeric arrays of
        one width) that share an encoder and a slab are decoded in one call; a block that fails
        to decode is split into single requests so each error stays with its own request."""
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, r in held.items():
            rows = requests[i][1]
            if isinstance(rows, list):
                key: tuple[object, ...] = (id(r.meta.encoder), id(r.slab), "list")
            elif _is_matrix(rows):
                key = (id(r.meta.encoder), id(r.slab), "array", rows.shape[1])
            else:  # tensors and anything else go alone
                key = (i,)
            groups.setdefault(key, []).append(i)
        blocks: list[_Block] = []
        for group in groups.values():
            for members in runs_of_rows(group, sizes.__getitem__, self.settings.max_batch_rows):
                self._decode_block(members, requests, sizes, held, results, blocks)
        return blocks

    def _decode_block(
        self,
        members: list[int],
        requests: list[tuple[str, Any]],
        sizes: dict[int, int],
        held: dict[int, Resident],
        results: list[Any],
        blocks: list[_Block],
    ) -> None:
        """Decode ``members`` together; if that fails, each alone, so an error (row numbers
        included) belongs to its own request."""
        attempts = ([members] if len(members) > 1 else []) + [[i] for i in members]
        for attempt in attempts:
            r0 = held[attempt[0]]
            rows = requests[attempt[0]][1]
            if len(attempt) > 1:
                parts = [requests[i][1] for i in attempt]
                rows = (
                    np.concatenate(parts)
                    if isinstance(rows, np.ndarray)
                    else [row for part in parts for row in part]
                )
            try:
                x = self.encode(r0, rows)  # (rows of all of them, D)
            except Exception as exc:
                if len(attempt) == 1:
                    results[attempt[0]] = exc
                continue
            counts = [sizes[i] for i in attempt]
            slots = np.repeat(np.array([held[i].slot for i in attempt], np.int64), counts)
            blocks.append((r0.slab, attempt, x, slots, counts))
            if len(attempt) > 1:
                return  # all decoded together: no singles needed

    def score(self, slab: Slab, x: Rows, slots: Slots, requests: int = 1) -> Awaitable[np.ndarray]:
        if x.shape[0] == 0:
            done: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
            done.set_result(np.zeros((0, slab.k), np.float32))
            return done
        return self.batcher.submit(slab, x, slots, requests)

    def checked_key(self, name: str, rows: Any) -> tuple[str, int]:
        """The validated key and the request's row count (refused past the limit)."""
        key = validate_key(name)
        n = _row_count(rows)
        if n > self.settings.max_rows_per_request:
            raise ValidationError(
                f"{n} rows in one request; the limit is {self.settings.max_rows_per_request}"
            )
        return key, n

    def encode(self, r: Resident, rows: Any) -> Rows:
        """Rows -> (n, D) float32 as the slab's op takes them (a linear slab's padded width):
        a tensor input stays a tensor on the device; anything else is a host array (the
        batcher moves a whole batch at once)."""
        encoder = r.meta.encoder
        d = self.families.row_width(r.slab, r.meta)
        # the widest array the request makes: the raw encoding, the op's rows, or its outputs
        wide = max(d, encoder.encoded_width, r.slab.k)
        cells = _row_count(rows) * wide
        if cells > self.settings.max_request_values:
            raise ValidationError(
                f"{_row_count(rows)} rows x {wide} encoded features or outputs = {cells} values "
                f"in one request; the limit is {self.settings.max_request_values}"
            )
        if _is_tensor(rows):
            return encoder.encode_tensor(rows, self.device, d)
        return encoder.encode(rows, d)


def _check_answer(per_row: int, n: int, limit: int) -> None:
    """Refuse an answer of ``n`` rows of ``per_row`` values that no encoding fits in
    ``limit`` bytes."""
    least = n * per_row * MIN_VALUE_BYTES
    if least > limit:
        raise ResponseTooLarge(
            f"{n} rows x {per_row} values (at least {MIN_VALUE_BYTES} bytes each)", least, limit
        )


def _row_count(rows: Any) -> int:
    if isinstance(rows, Mapping):  # columns by name
        return max((_row_count(v) for v in rows.values()), default=0)
    shape = getattr(rows, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    return len(rows) if isinstance(rows, (list, tuple)) else 0


def _is_matrix(rows: Any) -> bool:
    """A 2-D numeric numpy array (requests of these can be joined and decoded at once)."""
    return isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype.kind in "fiub"


def _is_tensor(rows: Any) -> bool:
    return isinstance(rows, torch.Tensor) or (
        hasattr(rows, "__dlpack__") and not isinstance(rows, np.ndarray)
    )
