"""Every metric mmhost exposes, declared in one place, in Prometheus' format.

Events are recorded as plain numbers on the engine loop (no locks: only that loop touches
them; an observation costs a bisect and two additions) and turned into Prometheus families
when ``/metrics`` is scraped, with the cache's own counters and tier sizes read at that moment.

The names operators know from the cloud's multi-model endpoints, and ours:

    LoadedModelCount        mmhost_loaded_models{tier}
    MemoryUtilization       mmhost_tier_utilization{tier="host"}  (bytes / budget)
    GPUMemoryUtilization    mmhost_tier_utilization{tier="device"}; on CUDA also
                            mmhost_gpu_memory_used_bytes / mmhost_gpu_memory_total_bytes
    ModelCacheHit           mmhost_cache_hits_total{tier} / (hits + mmhost_cache_misses_total)
    ModelLoadingWaitTime    mmhost_model_loading_wait_seconds (a request waiting for its load)
    ModelDownloadingTime    mmhost_model_downloading_seconds (reading the artifact's bytes)
    ModelLoadingTime        mmhost_model_loading_seconds (decode + place on the device)
    ModelUnloadingTime      mmhost_model_unloading_seconds (demote or unload)
    Invocations             mmhost_invocations_total
    ModelLatency            mmhost_model_latency_seconds (wait for the batch + the fused op)
    OverheadLatency         mmhost_overhead_latency_seconds (the rest of an HTTP request)

No metric has a per-model label unless ``per_model_metrics`` is set: a million models must not
make a million series.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator
from typing import cast

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from mmhost.types import CacheStats, DeviceTierStats, HistogramSummary, RequestStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS = (
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class Histogram:
    """Counts per bucket (upper bounds ``le``) and a sum; engine loop only, no lock."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (None: no observations;
        inf: above the last bound)."""
        total = self.count
        if total == 0:
            return None
        rank, seen = q * total, 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return float("inf")

    def summary(self) -> HistogramSummary:
        n = self.count
        return HistogramSummary(
            count=n,
            sum=self.sum,
            mean=self.sum / n if n else None,
            p50_le=self.quantile(0.5),
            p99_le=self.quantile(0.99),
        )

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.sum)


# name -> (help, bounds): the histograms, observed as events happen
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "model_latency_seconds": (
        "Time a request spent in its model: waiting for its batch and the fused op (ModelLatency).",
        _SECONDS,
    ),
    "overhead_latency_seconds": (
        "The rest of an HTTP request: reading, authorizing, decoding, encoding (OverheadLatency).",
        _SECONDS,
    ),
    "model_loading_wait_seconds": (
        "Time a request waited for its model to be loaded (ModelLoadingWaitTime).",
        _SECONDS,
    ),
    "model_downloading_seconds": (
        "Time a load spent reading the artifact from the store or disk (ModelDownloadingTime).",
        _SECONDS,
    ),
    "model_loading_seconds": (
        "Time a load spent decoding the artifact and placing it on the device (ModelLoadingTime).",
        _SECONDS,
    ),
    "model_unloading_seconds": (
        "Time taken to demote a model from the device or unload it (ModelUnloadingTime).",
        _SECONDS,
    ),
    "batch_rows": ("Rows per fused call.", _ROWS),
    "batch_models": ("Distinct models per fused call.", _ROWS),
}


class Metrics:
    """The host's event record. ``collector(host_stats)`` exports it with the cache's numbers."""

    def __init__(self, per_model: bool = False) -> None:
        self.hist = {name: Histogram(bounds) for name, (_, bounds) in HISTOGRAMS.items()}
        self.invocations = 0
        self.rows = 0
        self.errors: Counter[tuple[str, str]] = Counter()  # (status, code) -> count
        self.per_model: Counter[str] | None = Counter() if per_model else None
        # bound once: the hot path calls these without a dict lookup
        self.model_latency = self.hist["model_latency_seconds"].observe
        self.overhead = self.hist["overhead_latency_seconds"].observe
        self.loading_wait = self.hist["model_loading_wait_seconds"].observe
        self.downloading = self.hist["model_downloading_seconds"].observe
        self.loading = self.hist["model_loading_seconds"].observe
        self.unloading = self.hist["model_unloading_seconds"].observe

    def invoked(self, model: str, rows: int) -> None:
        self.invocations += 1
        self.rows += rows

    def served(self, model: str) -> None:
        """A request that reached its loaded model (per-model series exist for those only:
        names asked for and never found make none)."""
        if self.per_model is not None:
            self.per_model[model] += 1

    def dropped(self, model: str) -> None:
        """``model`` left the loaded tiers (device and host): its series goes with it."""
        if self.per_model is not None:
            self.per_model.pop(model, None)

    def batch(self, rows: int, models: int) -> None:
        self.hist["batch_rows"].observe(rows)
        self.hist["batch_models"].observe(models)

    def error(self, status: int, code: str) -> None:
        self.errors[(str(status), code)] += 1

    def summary(self) -> RequestStats:
        """The event record (for ``/stats``)."""
        return RequestStats(
            invocations=self.invocations,
            rows=self.rows,
            errors={f"{status} {code}": n for (status, code), n in sorted(self.errors.items())},
            histograms={name: h.summary() for name, h in self.hist.items()},
        )

    def families(self, stats: CacheStats, gpu: tuple[int, int] | None) -> Iterator[Metric]:
        """Everything, as Prometheus metric families. ``stats``: ``ModelCache.stats()``;
        ``gpu``: (used, total) bytes of the CUDA device, or None."""
        tiers = stats.tiers
        loaded = GaugeMetricFamily(
            "mmhost_loaded_models", "Models held in each tier (LoadedModelCount).", labels=["tier"]
        )
        used = GaugeMetricFamily("mmhost_tier_bytes", "Bytes held in each tier.", labels=["tier"])
        budget = GaugeMetricFamily(
            "mmhost_tier_budget_bytes", "Each tier's byte budget.", labels=["tier"]
        )
        util = GaugeMetricFamily(
            "mmhost_tier_utilization",
            "Bytes held / budget per tier (device: GPUMemoryUtilization on CUDA; host: "
            "MemoryUtilization).",
            labels=["tier"],
        )
        for tier, t in tiers.items():
            loaded.add_metric([tier], t.models)
            used.add_metric([tier], t.bytes)
            budget.add_metric([tier], t.budget)
            util.add_metric([tier], t.bytes / t.budget if t.budget else 0.0)
        yield from (loaded, used, budget, util)
        family_models = GaugeMetricFamily(
            "mmhost_family_models", "Device-resident models of each family.", labels=["family"]
        )
        reserved = GaugeMetricFamily(
            "mmhost_arena_reserved_bytes",
            "Device bytes each family's arena slabs reserve (>= its models' slot bytes).",
            labels=["family"],
        )
        for name, fam in cast(DeviceTierStats, tiers["device"]).families.items():
            family_models.add_metric([name], fam["models"])
            reserved.add_metric([name], fam["reserved_bytes"])
        yield from (family_models, reserved)
        yield GaugeMetricFamily("mmhost_models_loading", "Loads in progress.", value=stats.loading)
        if gpu is not None:
            yield GaugeMetricFamily(
                "mmhost_gpu_memory_used_bytes", "Memory in use on the GPU.", value=gpu[0]
            )
            yield GaugeMetricFamily(
                "mmhost_gpu_memory_total_bytes", "The GPU's memory.", value=gpu[1]
            )
        yield _counter(
            "mmhost_invocations", "Requests to invoke a model (Invocations).", self.invocations
        )
        yield _counter("mmhost_rows", "Rows scored.", self.rows)
        hits = CounterMetricFamily(
            "mmhost_cache_hits",
            "Requests or loads served from a tier (device: ModelCacheHit).",
            labels=["tier"],
        )
        for tier, n in stats.hits.items():
            hits.add_metric([tier], n)
        yield hits
        yield _counter("mmhost_cache_misses", "Loads that went to the store.", stats.misses)
        yield _counter("mmhost_model_loads", "Models loaded (from disk or store).", stats.loads)
        yield _counter("mmhost_model_load_failures", "Loads that failed.", stats.load_failures)
        yield _counter(
            "mmhost_model_reloads",
            "Models reloaded after their artifact changed.",
            stats.reloads,
        )
        evictions = CounterMetricFamily(
            "mmhost_evictions",
            "Models demoted out of a tier (device -> host, host -> out, disk deletions).",
            labels=["tier"],
        )
        for tier, n in stats.evictions.items():
            evictions.add_metric([tier], n)
        yield evictions
        errors = CounterMetricFamily(
            "mmhost_errors", "Error responses, by status and code.", labels=["status", "code"]
        )
        for (status, code), n in sorted(self.errors.items()):
            errors.add_metric([status, code], n)
        yield errors
        for name, (doc, _) in HISTOGRAMS.items():
            yield self.hist[name].family("mmhost_" + name, doc)
        if self.per_model is not None:
            per = CounterMetricFamily(
                "mmhost_model_invocations",
                "Invocations per loaded model (since it was loaded).",
                labels=["model"],
            )
            for model, n in self.per_model.items():
                per.add_metric([model], n)
            yield per


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class _Collector:
    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self.collect = collect


def exposition(families: Callable[[], Iterator[Metric]]) -> bytes:
    """The Prometheus text format of ``families()``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))
    return generate_latest(registry)
