"""Fused k-NN vs per-model loops: 1,000 distinct k-NN classifiers (1,000 points x 16 dims each,
k = 10, uniform votes) x 1 row and x 100 rows, mixed in one batch (issue 15).

Providers, all answering the same rows with the same 1,000 models:

- scikit-learn loop: ``KNeighborsClassifier.predict(rows)`` per model (the models fitted with
  the default ``algorithm="auto"``, which picks a KD-tree here), the issue's first baseline
- faiss loop: ``IndexFlatL2.search(rows, 10)`` per model (exact search, the neighbours only: no
  vote, which favours faiss), one thread (``faiss.omp_set_num_threads(1)``), the second baseline
- fused: the k-NN family's ``forward`` on one slab holding all 1,000 models (``mmhost::knn``'s
  C++ kernel, then the vote), with torch's default threads (all cores) and with one thread

faiss and torch share one OpenMP runtime, so the thread count is set explicitly for each
provider (``faiss.omp_set_num_threads(1)`` alone would leave torch on one thread too).

Batches: x 1 row is one row per model in random model order; x 100 rows is 100 rows per model,
grouped by model as mmhost's batcher groups them. Checked off the clock: the fused labels equal
scikit-learn's on the benchmarked batch (continuous data: no ties).

Also reported: the bytes a resident model takes in its slab against its N x D x 4 bytes of
points (``extra_info["bytes"]``).

Targets (from the issue), at 1 row per model: fused >= 50x the scikit-learn loop and >= 3x the
faiss loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from fleet import describe
from sklearn.neighbors import KNeighborsClassifier

from mmhost.convert import from_sklearn
from mmhost.families.knn import KnnFamily, KnnModel, KnnSlab, compile_knn

faiss = pytest.importorskip("faiss")

THREADS = torch.get_num_threads()  # torch's default, before any provider changes it
N_MODELS = 1000
N_POINTS = 1000
D = 16
K = 10
P_SKLEARN = "scikit-learn predict loop"
P_FAISS = "faiss IndexFlatL2.search loop (1 thread)"
P_FUSED = "fused C++ op (torch threads)"
P_FUSED_1 = "fused C++ op (1 thread)"
TARGETS = {
    P_FUSED: [
        {"kind": "speedup", "vs": P_SKLEARN, "min": 50.0, "rows_per_model": 1},
        {"kind": "speedup", "vs": P_FAISS, "min": 3.0, "rows_per_model": 1},
    ]
}


@dataclass
class KnnFleet:
    estimators: list[KNeighborsClassifier]
    indexes: list[Any]
    family: KnnFamily
    slab: KnnSlab
    slots: list[int]
    models: list[KnnModel]


@dataclass
class KnnBatch:
    rows_per_model: int
    x: np.ndarray  # (N, D) float32
    row_model: np.ndarray  # (N,) model of each row
    calls: list[tuple[int, np.ndarray]]  # per-model loops: (model, its rows)
    xt: torch.Tensor
    slots: torch.Tensor


@pytest.fixture(scope="module")
def knn_fleet() -> KnnFleet:
    return build_knn_fleet()


@pytest.fixture(scope="module", params=[1, 100], ids=lambda r: f"{r}row")
def kbatch(request: pytest.FixtureRequest, knn_fleet: KnnFleet) -> KnnBatch:
    return make_knn_batch(knn_fleet, request.param)


def build_knn_fleet() -> KnnFleet:
    """The 1,000 models: fitted, indexed by faiss, converted and placed in one slab."""
    rng = np.random.default_rng(0)
    estimators, indexes, models = [], [], []
    family = KnnFamily(torch.device("cpu"))
    slots = []
    slab = None
    for _ in range(N_MODELS):
        x = rng.normal(size=(N_POINTS, D)).astype(np.float32)
        y = rng.integers(0, 5, N_POINTS)
        est = KNeighborsClassifier(K).fit(x, y)
        index = faiss.IndexFlatL2(D)
        index.add(x)
        model = compile_knn(from_sklearn(est))
        slab, slot = family.place(model)
        estimators.append(est)
        indexes.append(index)
        models.append(model)
        slots.append(slot)
    assert slab is not None and len(family.slabs) == 1
    return KnnFleet(estimators, indexes, family, slab, slots, models)


def make_knn_batch(knn_fleet: KnnFleet, r: int) -> KnnBatch:
    """``r`` rows per model: one in random model order (r = 1), else grouped by model."""
    rng = np.random.default_rng(r)
    order = rng.permutation(N_MODELS) if r == 1 else np.arange(N_MODELS)
    row_model = np.repeat(order, r)
    x = rng.normal(size=(len(row_model), D)).astype(np.float32)
    calls = [(int(m), x[i * r : (i + 1) * r]) for i, m in enumerate(order)]
    slots = torch.tensor([knn_fleet.slots[m] for m in row_model], dtype=torch.int64)
    return KnnBatch(r, x, row_model, calls, torch.from_numpy(x), slots)


def _label(benchmark: Any, batch: KnnBatch, provider: str, fleet: KnnFleet) -> None:
    s = "" if batch.rows_per_model == 1 else "s"
    shape = f"{N_POINTS} points x {D} dims, k={K}"
    group = f"k-NN: {N_MODELS} models x {batch.rows_per_model} row{s} ({shape})"
    extra: dict[str, Any] = {}
    if provider == P_SKLEARN:
        extra["baseline"] = True
    targets = [t for t in TARGETS.get(provider, []) if t["rows_per_model"] == batch.rows_per_model]
    if targets:
        extra["targets"] = [{k: v for k, v in t.items() if k != "rows_per_model"} for t in targets]
    if provider == P_FUSED:
        slot = fleet.family.slot_bytes(fleet.models[0])
        extra["model_bytes"] = f"{slot} a model ({slot / (N_POINTS * D * 4):.2f}x N x D x 4)"
    describe(benchmark, group, provider, len(batch.x), **extra)


def test_sklearn_loop(benchmark, knn_fleet, kbatch):
    est = knn_fleet.estimators
    _label(benchmark, kbatch, P_SKLEARN, knn_fleet)
    benchmark.pedantic(lambda: [est[m].predict(r) for m, r in kbatch.calls], rounds=3, iterations=1)


def test_faiss_loop(benchmark, knn_fleet, kbatch):
    faiss.omp_set_num_threads(1)
    idx = knn_fleet.indexes
    _label(benchmark, kbatch, P_FAISS, knn_fleet)
    try:
        benchmark.pedantic(
            lambda: [idx[m].search(r, K) for m, r in kbatch.calls], rounds=5, iterations=1
        )
    finally:
        faiss.omp_set_num_threads(THREADS)


def _fused(fleet: KnnFleet, batch: KnnBatch) -> torch.Tensor:
    return fleet.family.forward(fleet.slab, batch.xt, batch.slots)


def _check(fleet: KnnFleet, batch: KnnBatch) -> None:
    got = _fused(fleet, batch)[:, 0].numpy().astype(np.int64)
    want = np.concatenate([fleet.estimators[m].predict(r) for m, r in batch.calls])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [0, 1], ids=["torch-threads", "1-thread"])
def test_fused(benchmark, knn_fleet, kbatch, threads):
    _check(knn_fleet, kbatch)
    torch.set_num_threads(threads or THREADS)
    try:
        _label(benchmark, kbatch, P_FUSED_1 if threads else P_FUSED, knn_fleet)
        benchmark(lambda: _fused(knn_fleet, kbatch))
    finally:
        torch.set_num_threads(THREADS)
