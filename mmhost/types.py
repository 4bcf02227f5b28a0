"""The vocabulary the stages share: what rows and slots are, what a model is described as, what
an answer carries, what a loaded model served. Only numpy and torch below it; every stage may
import it, it imports no stage (see ``docs/architecture.md`` for the layers)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

Rows = np.ndarray | torch.Tensor
"""(n, D) float32 encoded rows: on the host, or a tensor on the device."""
Slots = int | np.ndarray
"""The slot of one model for every row, or (n,) int64: a slot per row."""


@dataclass(frozen=True)
class Neighbors:
    """A k-NN answer's neighbours of each row, nearest first."""

    labels: np.ndarray
    """(N, k): each neighbour's label (class or value)."""
    distances: np.ndarray
    """(N, k) float32, as the model reports them."""


@dataclass(frozen=True)
class Prediction:
    """One request's answer, with what a response encoder needs to label it."""

    scores: np.ndarray
    """As ``Host.predict`` returns them: (N,) or, for multiclass, (N, k) probabilities."""
    task: str
    """regressor, binary_classifier or multiclass_classifier."""
    classes: list[Any] | None
    """Class labels of a classifier (binary: [negative, positive])."""
    model_seconds: float = 0.0
    """Time in the model: waiting for the batch and the fused op (ModelLatency)."""
    wait_seconds: float = 0.0
    """Time spent waiting for the model to be loaded (0 when it was resident)."""
    threshold: float = 0.5
    """A binary classifier's decision threshold on P(positive)."""
    neighbors: Neighbors | None = None
    """A k-NN answer's neighbours (then ``scores`` are the predicted labels)."""


class Record(Mapping[str, Any]):
    """A frozen dataclass that also reads as the JSON object it stands for: ``r["field"]``,
    ``r.keys()``, equal to a dict of the same items, and ``to_json()`` (nested records too).
    The numbers a server reports are typed, and the dicts they replace still read the same."""

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:  # type: ignore[attr-defined]
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)  # type: ignore[attr-defined]

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, eq=False)
class ModelInfo(Record):
    """What a loaded model is: ``Host.load`` and ``Host.describe`` return it. Reads as a mapping
    too (``info["task"]``), as the dicts it replaces did."""

    name: str
    family: str
    task: str
    classes: list[Any] | None
    outputs: int
    """Score columns (a multiclass model's k probabilities)."""
    version: str
    inputs: list[dict[str, Any]]
    """The input columns as the V2 metadata and ``mmhost.json`` write them."""


@dataclass(frozen=True)
class ModelUsage:
    """A loaded model's version and what it served since it was placed (V2 statistics)."""

    name: str
    version: str
    tier: str
    requests: int
    """Answered."""
    rows: int
    infer_seconds: float
    last_used: float
    """Epoch seconds; 0: not used since placed."""


# --- what ``Host.stats`` reports (``GET /stats`` is its ``to_json()``) --------------------------
@dataclass(frozen=True, eq=False)
class TierStats(Record):
    models: int
    bytes: int
    budget: int


@dataclass(frozen=True, eq=False)
class DeviceTierStats(TierStats):
    reserved_bytes: int
    """Bytes the families' arena slabs reserve (>= the models' slot bytes)."""
    families: dict[str, dict[str, int]]
    """Each family's own numbers (``models``, ``slabs``, ``reserved_bytes``...)."""


@dataclass(frozen=True, eq=False)
class LoadSeconds(Record):
    """Loads' wall time, and its parts summed: fetch from the store, decode, place."""

    count: int
    sum: float
    max: float
    fetch_sum: float
    decode_sum: float
    place_sum: float


@dataclass(frozen=True, eq=False)
class CacheStats(Record):
    """The tiers and the cache's counters since the start."""

    tiers: dict[str, TierStats]
    """device, host and (with a disk tier) disk."""
    hits: dict[str, int]
    """Requests or loads served from each tier."""
    misses: int
    loads: int
    load_failures: int
    reloads: int
    evictions: dict[str, int]
    """Models demoted out of each tier."""
    load_seconds: LoadSeconds
    loading: int
    """Loads in flight now."""


@dataclass(frozen=True, eq=False)
class BatchStats(Record):
    calls: int
    """Fused calls."""
    rows: int
    requests: int


@dataclass(frozen=True, eq=False)
class HistogramSummary(Record):
    count: int
    sum: float
    mean: float | None
    p50_le: float | None
    """The upper bound of the bucket holding the median."""
    p99_le: float | None


@dataclass(frozen=True, eq=False)
class RequestStats(Record):
    """The request record: counts, errors by ``"status code"``, the histograms summarized."""

    invocations: int
    rows: int
    errors: dict[str, int]
    histograms: dict[str, HistogramSummary]


@dataclass(frozen=True, eq=False)
class HotModel(Record):
    model: str
    requests: int
    """Served since it was placed on the device."""
    version: str


@dataclass(frozen=True, eq=False)
class HostStats(CacheStats):
    """``Host.stats``: the cache's numbers, the device, the batcher's, the requests', and the
    hottest models."""

    device: str
    batches: BatchStats
    invocations: int
    rows: int
    errors: dict[str, int]
    histograms: dict[str, HistogramSummary]
    hottest: list[HotModel]
