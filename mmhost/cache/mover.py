"""The one mover between tiers: a model placed in a device slot, demoted to host RAM (its slot's
exact parameters read back), promoted back, dropped. What to evict is the policy's call
(``policy.py``); what each tier holds is a ``Tier`` (``tiers.py``). Runs on the engine loop
only; no I/O."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from mmhost.cache.policy import Policy
from mmhost.cache.tiers import Tier
from mmhost.families.arena import Slab
from mmhost.families.router import Families, Model
from mmhost.metrics import Metrics

log = logging.getLogger("mmhost.cache")


class Resident:
    """A model in the device tier: its slot, the version it was loaded at, its pins."""

    __slots__ = (
        "name",
        "meta",
        "slab",
        "slot",
        "version",
        "checked_at",
        "pins",
        "gone",
        "uses",
        "answered",
        "rows",
        "infer_seconds",
        "last_used",
    )

    def __init__(
        self, name: str, meta: Model, slab: Slab, slot: int, version: str, now: float
    ) -> None:
        self.name, self.meta, self.slab, self.slot = name, meta, slab, slot
        self.version, self.checked_at = version, now
        self.pins = 0
        self.gone = False  # replaced or unloaded; the slot is freed on the last release
        self.uses = 0  # requests served since it was placed (the hottest, in /stats)
        self.answered = 0  # of them, answered (scored without an error)
        self.rows = 0  # rows scored since it was placed
        self.infer_seconds = 0.0  # time in the fused op for them
        self.last_used = 0.0  # wall-clock time (epoch s) of its last answer; 0: none yet

    def served(self, rows: int, seconds: float = 0.0) -> None:
        """Account an answered request of ``rows`` rows that spent ``seconds`` in the op."""
        self.answered += 1
        self.rows += rows
        self.infer_seconds += seconds
        self.last_used = time.time()


@dataclass
class HostEntry:
    """A model demoted to host RAM: its parameters as read back from its slot."""

    model: Model
    version: str
    checked_at: float


@dataclass
class CacheCounters:
    hits: dict[str, int] = field(default_factory=lambda: {"device": 0, "host": 0, "disk": 0})
    misses: int = 0
    loads: int = 0
    load_failures: int = 0
    reloads: int = 0
    evictions: dict[str, int] = field(default_factory=lambda: {"device": 0, "host": 0})
    load_seconds_sum: float = 0.0
    load_seconds_max: float = 0.0
    # where cold-load time goes: fetching the bytes, decoding them, placing them on the device
    fetch_seconds_sum: float = 0.0
    decode_seconds_sum: float = 0.0
    place_seconds_sum: float = 0.0


class Mover:
    """The device and host tiers and the moves between them."""

    def __init__(
        self,
        families: Families,
        policy: Policy,
        device_budget: int,
        host_budget: int,
        counters: CacheCounters,
        metrics: Metrics,
    ) -> None:
        self.families = families
        self.policy = policy
        self.counters = counters
        self.metrics = metrics
        # keyed by the resident itself: a replaced model pinned by batches in flight keeps its
        # slot (and its bytes count) while ``resident[name]`` already names its successor
        self.device: Tier[Resident, None] = Tier("device", device_budget)
        self.host: Tier[str, HostEntry] = Tier("host", host_budget)
        self.resident: dict[str, Resident] = {}  # name -> its current device resident
        self._metas: dict[tuple[object, ...], Model] = {}

    def host_to_device(self, name: str, entry: HostEntry) -> Resident | None:
        """The one promotion: ``entry`` from the host tier into a slot, or back where it was
        (None) when the room it needs is pinned."""
        # out of the host tier first: demotions made to place it may need that room
        self.host.remove(name)
        r = self.place_now(name, entry.model, entry.version)
        if r is None:
            self.keep_on_host(name, entry.model, entry.version, entry.checked_at)
        else:
            self.counters.hits["host"] += 1
        return r

    def place_now(self, name: str, model: Model, version: str) -> Resident | None:
        """Place ``model`` on the device, demoting LRU models; None if the room it needs is
        pinned by batches in flight."""
        need = self.families.slot_bytes(model)
        victims = self.policy.victims(self.device, need, lambda r: r.pins > 0)
        if victims is None:
            return None
        for v in victims:
            self.demote(v)
        slab, slot = self.families.place(model)
        r = Resident(name, self.meta(model), slab, slot, version, time.monotonic())
        self.device.add(r, None, need)
        self.resident[name] = r
        return r

    def meta(self, model: Model) -> Model:
        """A parameter-less copy for the resident's bookkeeping, shared by every model with the
        same family, task, classes and schema (a million city models keep one between them)."""
        key = model.meta_key
        meta = self._metas.get(key)
        if meta is None:
            meta = self._metas[key] = model.stripped()
        return meta

    def demote(self, r: Resident) -> None:
        """device -> host: the slot's exact parameters go back to RAM."""
        t0 = time.perf_counter()
        model = self.families.read_back(r.slab, r.slot, r.meta)
        self.free(r)
        r.gone = True
        del self.resident[r.name]
        self.counters.evictions["device"] += 1
        self.keep_on_host(r.name, model, r.version, r.checked_at)
        took = time.perf_counter() - t0
        self.metrics.unloading(took)
        log.info(
            "evicted %s from the device",
            r.name,
            extra={
                "fields": {"event": "evict", "model": r.name, "tier": "device", "ms": took * 1e3}
            },
        )

    def keep_on_host(self, name: str, model: Model, version: str, checked: float) -> None:
        victims = self.policy.victims(self.host, model.nbytes, lambda _k: False)
        if victims is None:  # bigger than the whole host budget: it goes straight down
            self.counters.evictions["host"] += 1
            self.metrics.dropped(name)
            return
        for v in victims:  # host -> disk: the disk tier (if any) still holds the artifact
            self.host.remove(v)
            self.counters.evictions["host"] += 1
            self.metrics.dropped(v)
        self.host.add(name, HostEntry(model, version, checked), model.nbytes)

    def free(self, r: Resident) -> None:
        if r in self.device:
            self.device.remove(r)
            self.families.free(r.slab, r.slot)

    def forget(self, name: str) -> bool:
        """Drop ``name`` from the device and host tiers (in-flight users keep their slot)."""
        found = False
        r = self.resident.pop(name, None)
        if r is not None:
            found = True
            r.gone = True
            if r.pins == 0:
                self.free(r)
        if self.host.discard(name) is not None:
            found = True
        self.metrics.dropped(name)
        return found
