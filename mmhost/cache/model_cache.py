"""The cache facade: acquire a model on the device (loading it once, however many ask), release
it, and demote what the budgets can't hold.

All state here is touched only from the engine's event loop (no locks); artifact reads and
decoding run on worker threads. Tiers are exclusive for device and host (a model is in one of
them), the disk tier is inclusive (downloads are kept while they fit).

Invariant: a Resident with pins > 0 is never evicted; its slot is freed on its last release.

The pieces: ``policy.py`` decides what to evict, ``tiers.py`` holds each tier's values with
their bytes, ``mover.py`` moves models between the device and host tiers, ``disk.py`` keeps
artifact files, ``loader.py`` reads them. This module is the flow: single-flight acquire,
revalidation, promotion, the cold load, and the views (loaded, usage, stats).

Size: the flow's steps and the counters they keep are read together; each step is one method.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from mmhost.artifacts import Artifact
from mmhost.cache.decoder import Decoder
from mmhost.cache.disk import DiskTier
from mmhost.cache.loader import Loaded, load_model
from mmhost.cache.mover import CacheCounters, Mover, Resident
from mmhost.cache.policy import LRUPolicy, Policy
from mmhost.errors import InsufficientCapacity, ModelNotFound
from mmhost.families.router import Families, Model
from mmhost.metrics import Metrics
from mmhost.settings import Settings
from mmhost.store.base import Store
from mmhost.types import (
    CacheStats,
    DeviceTierStats,
    HotModel,
    LoadSeconds,
    ModelUsage,
    TierStats,
)

log = logging.getLogger("mmhost.cache")
_TOO_BIG_MEMORY = 100_000  # models remembered as bigger than the device budget
FAILURE_WARN_SECONDS = 60.0  # at most one load-failure warning a model this often
_WARNED_MEMORY = 10_000  # models whose last failure warning is remembered


class _Flight:
    """A load in progress and how many requests wait on it."""

    __slots__ = ("task", "waiters", "granted")

    def __init__(self) -> None:
        self.task: asyncio.Future[Resident]
        self.waiters = 0
        self.granted = False


class ModelCache:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        families: Families,
        executor: Executor,
        device_budget: int,
        preprocessor: Artifact | None = None,
        policy: Policy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.families = families
        self.executor = executor
        self.preprocessor = preprocessor
        self.policy: Policy = policy or LRUPolicy()
        self.metrics = metrics or Metrics()
        self.counters = CacheCounters()
        self.mover = Mover(
            families, self.policy, device_budget, settings.host_budget, self.counters, self.metrics
        )
        self.device, self.host, self.resident = (
            self.mover.device,
            self.mover.host,
            self.mover.resident,
        )
        self.disk = DiskTier(settings.disk_dir, settings.disk_budget) if settings.disk_dir else None
        self.decoder = Decoder(settings.large_artifact_bytes, settings.decode_processes)
        self._warned: dict[str, float] = {}  # model -> when its last load failure was logged
        self._flights: dict[str, _Flight] = {}
        # models bigger than the whole device budget, by the version found so: not decoded
        # again on every request while that version stays in the store
        self._too_big: dict[str, tuple[str, int]] = {}
        self._unpinned = asyncio.Event()  # set whenever a pin count drops to 0

    # --- the request path ------------------------------------------------------------------
    def acquire_now(self, name: str) -> Resident | None:
        """The model pinned, if that takes no waiting: a device hit (after a due local
        revalidation) or a promotion from the host tier. None: use ``acquire``."""
        r = self.resident.get(name)
        remote = not self.store.local
        if r is not None and self._due(r.checked_at):
            if remote:
                # a remote check may be slow or fail: serve what we have, check beside it
                if name not in self._flights:
                    self._revalidate_beside(name, r)
            else:
                # a local stat costs microseconds: check inline and stay on the fast path
                try:
                    if self.store.version(name) == r.version:
                        r.checked_at = time.monotonic()
                except ModelNotFound:
                    self.mover.forget(name)  # deleted from the store: not served stale forever
                    raise
        if r is not None and (remote or not self._due(r.checked_at)):
            r.pins += 1
            self.device.touch(r)
            self.counters.hits["device"] += 1
            return r
        if r is None and name not in self._flights and (r := self._promote_now(name)):
            r.pins += 1
            return r
        return None

    async def acquire(self, name: str) -> Resident:
        """The model on the device, pinned. Call ``release`` when its batch is done."""
        r = self.acquire_now(name)
        if r is not None:
            return r
        flight = self._flights.get(name)
        if flight is None:
            flight = self._flights[name] = _Flight()
            flight.task = asyncio.ensure_future(self._fly(name, self.resident.get(name), flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except BaseException:
            if flight.granted:  # our pin was taken for us; we won't use it
                self.release(flight.task.result())
            else:
                flight.waiters -= 1
            raise

    def _revalidate_beside(self, name: str, r: Resident) -> None:
        """A flight nobody waits on: it checks the version and, if it changed, loads the new
        one before the old is dropped. A store that is down leaves ``r`` serving."""
        flight = self._flights[name] = _Flight()
        flight.task = asyncio.ensure_future(self._fly(name, r, flight))
        flight.task.add_done_callback(_log_failure(name))

    def _promote_now(self, name: str) -> Resident | None:
        """host -> device without leaving the request path: no I/O (a local stat at most), so
        no flight is needed. None when it can't be done now (the flight path then does it)."""
        entry = self.host.get(name)
        if entry is None or (self._due(entry.checked_at) and not self.store.local):
            return None
        if self._due(entry.checked_at) and self.store.version(name) != entry.version:
            return None  # changed in the store: the flight path reloads it
        return self.mover.host_to_device(name, entry)

    async def _fly(self, name: str, current: Resident | None, flight: _Flight) -> Resident:
        """One load however many ask. The result is pinned for every waiter in the same
        synchronous step that placed it, so no other load can evict it before they run."""
        try:
            r = await self._bring_in(name, current)
            r.pins += flight.waiters
            flight.granted = True
            return r
        finally:
            del self._flights[name]

    def release(self, r: Resident) -> None:
        r.pins -= 1
        if r.pins == 0:
            if r.gone:
                self.mover.free(r)
            self._unpinned.set()

    # --- loading, promotion, revalidation ----------------------------------------------------
    async def _bring_in(self, name: str, current: Resident | None) -> Resident:
        """The flight's work: keep ``current`` if the store still has its version, else promote
        the host tier's copy, else load from the store (or the disk tier)."""
        if current is not None:
            kept = await self._revalidate(name, current)
            if kept is not None:
                return kept
        if current is None or current.gone:
            promoted = await self._promote(name)
            if promoted is not None:
                return promoted
        return await self._load_cold(name)

    async def _revalidate(self, name: str, current: Resident) -> Resident | None:
        """``current`` when it is still the store's version (None: a newer one is to load)."""
        loop = asyncio.get_running_loop()
        version = await self._version(loop, name, current.version)
        current.checked_at = time.monotonic()
        if version != current.version:
            self.counters.reloads += 1
            return None
        if current.gone:  # (it was demoted while we asked the store)
            return None
        self.counters.hits["device"] += 1
        return current

    async def _promote(self, name: str) -> Resident | None:
        """The host tier's copy on the device, once revalidated if due; None when there is
        none or the store has another version. Waits for pinned room like a cold load."""
        entry = self.host.get(name)
        if entry is None:
            return None
        if self._due(entry.checked_at):
            version = await self._version(asyncio.get_running_loop(), name, entry.version)
            if version != entry.version or self.host.get(name) is not entry:
                return None
        need = self.families.slot_bytes(entry.model)
        return await self._await_room(name, need, lambda: self.mover.host_to_device(name, entry))

    async def _load_cold(self, name: str) -> Resident:
        """From the store (or the disk tier): fetch, decode, place; counted and logged."""
        loop = asyncio.get_running_loop()
        too_big = self._too_big.get(name)
        if too_big is not None:
            if await loop.run_in_executor(self.executor, self.store.version, name) == too_big[0]:
                raise InsufficientCapacity(name, too_big[1], self.device.budget, never=True)
            del self._too_big[name]
        t0 = time.perf_counter()
        try:
            loaded: Loaded = await loop.run_in_executor(
                self.executor,
                load_model,
                name,
                self.store,
                self.disk,
                self.preprocessor,
                self.settings.max_artifact_bytes,
                self.decoder,
            )
        except ModelNotFound:
            raise  # a caller's unknown key: not a failure of the host's
        except Exception as exc:
            self.counters.load_failures += 1
            self._warn_failed(name, exc)
            raise
        # a newer copy replaces whatever is in the tiers now; requests in flight on the old
        # one finish on it (its slot is freed on their last release)
        self.mover.forget(name)
        t1 = time.perf_counter()
        need = self.families.slot_bytes(loaded.model)
        if need > self.device.budget:
            if len(self._too_big) >= _TOO_BIG_MEMORY:
                self._too_big.clear()
            self._too_big[name] = (loaded.version, need)
            self.counters.load_failures += 1
            too_large = InsufficientCapacity(name, need, self.device.budget, never=True)
            self._warn_failed(name, too_large)
            raise too_large
        r = await self._place(name, loaded.model, loaded.version)
        t2 = time.perf_counter()
        c = self.counters
        c.loads += 1
        c.load_seconds_sum += t2 - t0
        c.load_seconds_max = max(c.load_seconds_max, t2 - t0)
        c.fetch_seconds_sum += loaded.fetch_seconds
        c.decode_seconds_sum += loaded.decode_seconds
        c.place_seconds_sum += t2 - t1
        self.metrics.downloading(loaded.fetch_seconds)
        self.metrics.loading(loaded.decode_seconds + (t2 - t1))
        if loaded.from_disk:
            c.hits["disk"] += 1
        else:
            c.misses += 1
        log.info(
            "loaded %s (version %s) in %.1f ms",
            name,
            loaded.version,
            (t2 - t0) * 1e3,
            extra={
                "fields": {
                    "event": "load",
                    "model": name,
                    "version": loaded.version,
                    "from": "disk" if loaded.from_disk else "store",
                    "ms": round((t2 - t0) * 1e3, 3),
                    "fetch_ms": round(loaded.fetch_seconds * 1e3, 3),
                    "decode_ms": round(loaded.decode_seconds * 1e3, 3),
                    "place_ms": round((t2 - t1) * 1e3, 3),
                }
            },
        )
        return r

    def _warn_failed(self, name: str, exc: BaseException) -> None:
        """One warning a model per ``FAILURE_WARN_SECONDS`` naming it and the reason (a model
        that keeps failing on every request does not flood the log)."""
        now = time.monotonic()
        last = self._warned.get(name)
        if last is not None and now - last < FAILURE_WARN_SECONDS:
            return
        if len(self._warned) >= _WARNED_MEMORY:
            self._warned.clear()
        self._warned[name] = now
        status = getattr(exc, "status", 500)
        log.warning(
            "model %s failed to load (%d): %s",
            name,
            status,
            exc,
            extra={"fields": {"event": "load_failed", "model": name, "status": status}},
        )

    async def _version(self, loop: asyncio.AbstractEventLoop, name: str, have: str) -> str:
        try:
            return await loop.run_in_executor(self.executor, self.store.version, name)
        except ModelNotFound:
            self.mover.forget(name)  # deleted from the store: not served stale forever
            raise
        except Exception as exc:  # the store is unreachable: keep serving what we have
            log.warning("could not revalidate %s (%s); serving the loaded version", name, exc)
            return have

    def _due(self, checked_at: float) -> bool:
        every = self.settings.revalidate_seconds
        return every > 0 and time.monotonic() - checked_at >= every

    async def _place(self, name: str, model: Model, version: str) -> Resident:
        need = self.families.slot_bytes(model)
        return await self._await_room(
            name, need, lambda: self.mover.place_now(name, model, version)
        )

    async def _await_room(
        self, name: str, need: int, attempt: Callable[[], Resident | None]
    ) -> Resident:
        """``attempt()`` until it places the model: while everything evictable is pinned by
        batches in flight, wait for one to finish, up to ``capacity_wait_seconds``."""
        deadline = time.monotonic() + self.settings.capacity_wait_seconds
        while (r := attempt()) is None:
            left = deadline - time.monotonic()
            if need > self.device.budget or left <= 0:
                raise InsufficientCapacity(name, need, self.device.budget)
            self._unpinned.clear()
            try:
                await asyncio.wait_for(self._unpinned.wait(), left)
            except asyncio.TimeoutError:
                pass
        return r

    # --- management --------------------------------------------------------------------------
    def close(self) -> None:
        self.decoder.close()

    def unload(self, name: str) -> bool:
        t0 = time.perf_counter()
        gone = self.mover.forget(name)
        if gone:
            self.metrics.unloading(time.perf_counter() - t0)
        return gone

    def loaded(self) -> dict[str, str]:
        out = {name: "device" for name in self.resident}
        out.update({name: "host" for name in self.host.keys()})
        return out

    def hottest(self, n: int) -> list[HotModel]:
        """The ``n`` device-resident models that served the most requests since placed."""
        top = heapq.nlargest(n, self.resident.values(), key=lambda r: r.uses)
        return [HotModel(r.name, r.uses, r.version) for r in top]

    def usage(self, name: str | None = None) -> list[ModelUsage]:
        """What each loaded model (or ``name`` alone, if loaded) has served since it was last
        placed on the device (a model demoted to host RAM reports zeros)."""
        names = [name] if name is not None else sorted(self.loaded())
        out = []
        for n in names:
            r = self.resident.get(n)
            if r is not None and not r.gone:
                out.append(
                    ModelUsage(
                        n, r.version, "device", r.answered, r.rows, r.infer_seconds, r.last_used
                    )
                )
            elif (entry := self.host.get(n)) is not None:
                out.append(ModelUsage(n, entry.version, "host", 0, 0, 0.0, 0.0))
        return out

    def tier_of(self, name: str) -> str | None:
        if name in self.resident:
            return "device"
        return "host" if name in self.host else None

    def loading(self, name: str) -> bool:
        return name in self._flights

    def host_model(self, name: str) -> Model | None:
        """The host-tier copy of a demoted model (tests and tools; None if not there)."""
        e = self.host.get(name)
        return None if e is None else e.model

    def stats(self) -> CacheStats:
        c = self.counters
        tiers: dict[str, TierStats] = {
            "device": DeviceTierStats(
                len(self.device),
                self.device.used,
                self.device.budget,
                reserved_bytes=self.families.reserved_bytes,
                families=self.families.stats(),
            ),
            "host": TierStats(len(self.host), self.host.used, self.host.budget),
        }
        if self.disk is not None:
            t = self.disk.tier
            tiers["disk"] = TierStats(len(t), t.used, t.budget)
        return CacheStats(
            tiers=tiers,
            hits=dict(c.hits),
            misses=c.misses,
            loads=c.loads,
            load_failures=c.load_failures,
            reloads=c.reloads,
            evictions={**c.evictions, "disk": self.disk.evictions if self.disk is not None else 0},
            load_seconds=LoadSeconds(
                count=c.loads,
                sum=c.load_seconds_sum,
                max=c.load_seconds_max,
                fetch_sum=c.fetch_seconds_sum,
                decode_sum=c.decode_seconds_sum,
                place_sum=c.place_seconds_sum,
            ),
            loading=len(self._flights),
        )


def _log_failure(name: str) -> Callable[[asyncio.Future[Resident]], None]:
    def done(task: asyncio.Future[Resident]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("revalidating %s failed: %s", name, task.exception())

    return done
