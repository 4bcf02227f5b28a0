"""The fused ops on a CUDA device (the Triton kernels) against the same ops on the CPU (C++) and
a per-model loop: what a session with a GPU runs first. Skips without CUDA.

Groups (1,000 distinct models each, mixed batches as in ``bench_fused_op.py`` and
``bench_trees.py``):

- linear: 1,000 houses models x 1 row and x 100 rows (``linear_forward``)
- trees: 1,000 XGBoost models (binary:logistic, 100 trees of depth 6) x 1 row and x 100 rows
  (``trees_forward`` + sigmoid; the boosters are trained once and cached by ``bench_trees.py``)
- k-NN: 1,000 classifiers of 1,000 points x 16 dims, k = 10, x 1 row and x 100 rows (the k-NN
  family's ``forward``: ``mmhost::knn`` and the vote; the fleet of ``bench_knn.py``)
- RCF: 500 forests of 100 trees x 256 samples in 8 dims x 1 row and x 100 rows
  (``rcf_forward``; the fleet of ``bench_rcf.py``, trained with krcf first, ~1 min)
- training (issue 20): ``mmhost.train.fit_table`` on the workloads of ``bench_train.py``
  (10,000 ridge regressors x 500 rows, 1,000 L2 logistic classifiers x 2,000 rows, 10
  features), ``device="cpu"`` against ``device="cuda"``. On the device the regressors' Gram
  matrices still come from the CPU pass (C++) and only their solve runs there; the classifiers
  run the batched torch Newton solver there (the C++ Newton kernel is the CPU's). The time
  per entity is the inverse of the report's throughput (models/s).

Providers per group:

- the fused C++ op on the CPU (the baseline; torch's default threads)
- the fused op on the device, inputs already there (``torch.cuda.synchronize`` inside the
  timing)
- the same with the transfers a server pays: rows to the device, scores back to the host
- trees only: the per-model ``xgboost`` ``inplace_predict`` loop (CPU, nthread=1)

Checked off the clock: linear scores to rtol 1e-5 of the CPU op (the Triton kernel sums in
another order); tree margins bit-identical to the CPU op's.

``MMHOST_BENCH_DEVICE=cpu`` runs this file on the CPU (the "device" is then the C++ op again):
a check of the benchmark itself, never a claim.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from bench_knn import KnnBatch, KnnFleet, build_knn_fleet, make_knn_batch
from bench_rcf import RcfBatch, RcfFleet, build_rcf_fleet, make_rcf_batch
from bench_train import WD, WORKLOADS, build_tables
from bench_trees import P_XGB, TreeBatch, TreeFleet, load_tree_fleet, make_tree_batch
from fleet import RTOL_PRICE, Batch, describe, make_batch

from mmhost.families.knn import KnnFamily
from mmhost.kernels.linear import linear_forward
from mmhost.kernels.rcf import rcf_forward
from mmhost.kernels.trees import trees_forward
from mmhost.train import fit_table

DEVICE = os.environ.get("MMHOST_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
pytestmark = pytest.mark.skipif(not DEVICE, reason="needs a CUDA device")
NAME = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
P_CPU = "fused C++ op on the CPU"
P_DEV = f"fused op on {NAME} (inputs resident)"
P_DEV_COPY = f"fused op on {NAME}, rows in and scores out over the bus"
BASELINES = (P_CPU, P_XGB)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _label(benchmark: Any, family: str, rows_per_model: int, n: int, provider: str) -> None:
    s = "s" if rows_per_model > 1 else ""
    group = f"{family} on {NAME}: 1000 models x {rows_per_model} row{s}"
    describe(benchmark, group, provider, n, baseline=provider in BASELINES)


# -- linear -----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[1, 100], ids=lambda r: f"{r}row")
def lbatch(request: pytest.FixtureRequest, fleet) -> Batch:
    return make_batch(fleet, request.param)


def _linear_args(batch: Batch, device: str) -> tuple[torch.Tensor, ...]:
    s = batch.slab
    return tuple(t.to(device) for t in (batch.x, batch.row_slots, s.weight, s.bias, s.link))


def test_linear_cpu(benchmark, lbatch):
    args = _linear_args(lbatch, "cpu")
    _label(benchmark, "linear", lbatch.rows_per_model, lbatch.n_rows, P_CPU)
    benchmark(linear_forward, *args)


def test_linear_device(benchmark, lbatch):
    args = _linear_args(lbatch, DEVICE)
    want = linear_forward(*_linear_args(lbatch, "cpu"))
    np.testing.assert_allclose(linear_forward(*args).cpu(), want, rtol=RTOL_PRICE)

    def run() -> torch.Tensor:
        out = linear_forward(*args)
        _sync()
        return out

    _label(benchmark, "linear", lbatch.rows_per_model, lbatch.n_rows, P_DEV)
    benchmark(run)


def test_linear_device_with_transfers(benchmark, lbatch):
    x, slots, *params = _linear_args(lbatch, DEVICE)
    host_x = lbatch.x.pin_memory() if DEVICE == "cuda" else lbatch.x

    def run() -> np.ndarray:
        return linear_forward(host_x.to(DEVICE, non_blocking=True), slots, *params).cpu().numpy()

    _label(benchmark, "linear", lbatch.rows_per_model, lbatch.n_rows, P_DEV_COPY)
    benchmark(run)


# -- trees ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_tree_fleet() -> TreeFleet:
    return load_tree_fleet()


@pytest.fixture(scope="module", params=[1, 100], ids=lambda r: f"{r}row")
def tbatch(request: pytest.FixtureRequest, gpu_tree_fleet: TreeFleet) -> TreeBatch:
    return make_tree_batch(gpu_tree_fleet, request.param)


def _tree_args(fleet: TreeFleet, batch: TreeBatch, device: str) -> tuple[torch.Tensor, ...]:
    return (batch.xt.to(device), batch.row_model_t.to(device), *fleet.packed.to(device))


def test_trees_xgboost_loop(benchmark, gpu_tree_fleet, tbatch):
    boosters = gpu_tree_fleet.boosters

    def run() -> list[np.ndarray]:
        return [boosters[m].inplace_predict(r) for m, r in tbatch.calls]

    _label(benchmark, "trees", tbatch.rows_per_model, tbatch.n_rows, P_XGB)
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


def test_trees_cpu(benchmark, gpu_tree_fleet, tbatch):
    args = _tree_args(gpu_tree_fleet, tbatch, "cpu")
    _label(benchmark, "trees", tbatch.rows_per_model, tbatch.n_rows, P_CPU)
    benchmark(lambda: torch.sigmoid(trees_forward(*args)))


def test_trees_device(benchmark, gpu_tree_fleet, tbatch):
    args = _tree_args(gpu_tree_fleet, tbatch, DEVICE)
    want = trees_forward(*_tree_args(gpu_tree_fleet, tbatch, "cpu"))
    assert torch.equal(trees_forward(*args).cpu(), want)  # margins bit for bit

    def run() -> torch.Tensor:
        out = torch.sigmoid(trees_forward(*args))
        _sync()
        return out

    _label(benchmark, "trees", tbatch.rows_per_model, tbatch.n_rows, P_DEV)
    benchmark(run)


def test_trees_device_with_transfers(benchmark, gpu_tree_fleet, tbatch):
    _, row_model, *packed = _tree_args(gpu_tree_fleet, tbatch, DEVICE)
    host_x = tbatch.xt.pin_memory() if DEVICE == "cuda" else tbatch.xt

    def run() -> np.ndarray:
        x = host_x.to(DEVICE, non_blocking=True)
        return torch.sigmoid(trees_forward(x, row_model, *packed)).cpu().numpy()

    _label(benchmark, "trees", tbatch.rows_per_model, tbatch.n_rows, P_DEV_COPY)
    benchmark(run)


# -- k-NN -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def knn_fleet() -> KnnFleet:
    return build_knn_fleet()


@pytest.fixture(scope="module", params=[1, 100], ids=lambda r: f"{r}row")
def kbatch(request: pytest.FixtureRequest, knn_fleet: KnnFleet) -> KnnBatch:
    return make_knn_batch(knn_fleet, request.param)


@pytest.fixture(scope="module")
def device_knn(knn_fleet: KnnFleet) -> tuple[KnnFamily, Any, torch.Tensor]:
    """The same 1,000 models placed in a family on the device: (family, slab, slot of each)."""
    family = KnnFamily(torch.device(DEVICE))
    placed = [family.place(m) for m in knn_fleet.models]
    slots = torch.tensor([s for _, s in placed], dtype=torch.int64, device=DEVICE)
    return family, placed[0][0], slots


def test_knn_cpu(benchmark, knn_fleet, kbatch):
    _label(benchmark, "k-NN", kbatch.rows_per_model, len(kbatch.x), P_CPU)
    benchmark(lambda: knn_fleet.family.forward(knn_fleet.slab, kbatch.xt, kbatch.slots))


def test_knn_device(benchmark, knn_fleet, kbatch, device_knn):
    family, slab, slots = device_knn
    x = kbatch.xt.to(DEVICE)
    row_slots = slots[torch.from_numpy(kbatch.row_model).to(DEVICE)]
    want = knn_fleet.family.forward(knn_fleet.slab, kbatch.xt, kbatch.slots)
    got = family.forward(slab, x, row_slots).cpu()
    assert torch.equal(got[:, 0], want[:, 0])  # the same labels (continuous data: no ties)

    def run() -> torch.Tensor:
        out = family.forward(slab, x, row_slots)
        _sync()
        return out

    _label(benchmark, "k-NN", kbatch.rows_per_model, len(kbatch.x), P_DEV)
    benchmark(run)


# -- RCF --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rcf_fleet() -> RcfFleet:
    return build_rcf_fleet()


@pytest.fixture(scope="module", params=[1, 100], ids=lambda r: f"{r}row")
def rbatch(request: pytest.FixtureRequest, rcf_fleet: RcfFleet) -> RcfBatch:
    return make_rcf_batch(request.param, rcf_fleet.slot_of)


def test_rcf_cpu(benchmark, rcf_fleet, rbatch):
    args = (rbatch.xt, rbatch.row_model_t, *rcf_fleet.packed)
    _label(benchmark, "RCF", rbatch.rows_per_model, len(rbatch.x), P_CPU)
    benchmark(lambda: rcf_forward(*args))


def test_rcf_device(benchmark, rcf_fleet, rbatch):
    cpu = (rbatch.xt, rbatch.row_model_t, *rcf_fleet.packed)
    args = tuple(a.to(DEVICE) for a in cpu)
    torch.testing.assert_close(rcf_forward(*args).cpu(), rcf_forward(*cpu), rtol=1e-12, atol=0)

    def run() -> torch.Tensor:
        out = rcf_forward(*args)
        _sync()
        return out

    _label(benchmark, "RCF", rbatch.rows_per_model, len(rbatch.x), P_DEV)
    benchmark(run)


# -- training ---------------------------------------------------------------------------------
P_TRAIN_CPU = "fit_table on the CPU (C++ passes, 2 threads here)"
P_TRAIN_DEV = f"fit_table on {NAME}"


@pytest.fixture(scope="module")
def train_tables() -> dict[str, Any]:
    return {task: got[0] for task, got in build_tables().items()}


def _fit(table: Any, task: str, device: str) -> Any:
    hp: dict[str, Any] = {"predictor_type": task, "wd": WD, "normalize_data": False}
    if task == "regressor":
        hp["normalize_label"] = False
    return fit_table(table, holdout_fraction=0.0, device=device, **hp)


def _train_label(benchmark: Any, task: str, provider: str) -> None:
    e, n, f = WORKLOADS[task]
    group = f"train on {NAME}: {task}, {e:,} entities x {n:,} rows x {f} features"
    describe(benchmark, group, provider, e, unit="models", baseline=provider == P_TRAIN_CPU)


@pytest.mark.parametrize("task", list(WORKLOADS))
def test_train_cpu(benchmark, train_tables, task):
    _train_label(benchmark, task, P_TRAIN_CPU)
    benchmark.pedantic(lambda: _fit(train_tables[task], task, "cpu"), rounds=3, iterations=1)


@pytest.mark.parametrize("task", list(WORKLOADS))
def test_train_device(benchmark, train_tables, task):
    table = train_tables[task]
    cpu, dev = _fit(table, task, "cpu").entities, _fit(table, task, DEVICE).entities
    for a, b in zip(cpu[:: len(cpu) // 10], dev[:: len(dev) // 10], strict=True):
        np.testing.assert_allclose(b.coef, a.coef, rtol=1e-6, atol=1e-8)

    def run() -> Any:
        out = _fit(table, task, DEVICE)
        _sync()
        return out

    _train_label(benchmark, task, P_TRAIN_DEV)
    benchmark.pedantic(run, rounds=3, iterations=1)
