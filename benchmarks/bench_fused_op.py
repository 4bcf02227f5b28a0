"""Fused multi-model op vs per-model loops: 1,000 distinct houses models x 1 row and x 100 rows.

Providers, all scoring the same rows with the same 1,000 models:

- sklearn pipeline loop: ``pipe.predict(raw)`` per model (ColumnTransformer + LinearRegression)
- sklearn bare-estimator loop: ``lr.predict(encoded)`` per model, rows already transformed
- torch per-model loop: ``x @ w.T + b`` per model, weights already in tensors
- fused reference op: ``linear_reference`` (plain torch: gather, bmm, where) on the whole batch
- fused C++ op: ``mmhost._C.linear_forward`` on the whole batch (what CPU dispatch runs)
- fused op via ``linear_forward``: the C++ op behind check_inputs + torch.ops dispatch, the
  call the engine makes

The fused providers also report GB/s: the least bytes one call must move (x, slots, out, and
each model's parameters once) over its median time.

Targets (from the issue): fused >= 200x the bare-estimator loop; C++ >= 5x plain torch ops
(the reference fused op on the same batch).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fleet import (
    P_BARE,
    P_CPP,
    P_PIPELINE,
    P_REFERENCE,
    P_TORCH_LOOP,
    RTOL_PRICE,
    Batch,
    describe,
    make_batch,
)

from mmhost.kernels import _native
from mmhost.kernels.linear import linear_forward, linear_reference

P_DISPATCH = "fused op via linear_forward (torch.ops dispatch)"
BASELINES = (P_PIPELINE, P_BARE, P_TORCH_LOOP, P_REFERENCE)


@pytest.fixture(scope="module", params=[1, 100], ids=lambda r: f"{r}row")
def batch(request: pytest.FixtureRequest, fleet) -> Batch:
    return make_batch(fleet, request.param)


def _label(benchmark, batch: Batch, provider: str, **extra) -> None:
    r = batch.rows_per_model
    group = f"fused op: 1000 models x {r} row{'s' if r > 1 else ''}"
    describe(benchmark, group, provider, batch.n_rows, baseline=provider in BASELINES, **extra)


def _op_bytes(batch: Batch) -> int:
    """Least traffic of a fused call: x, slots and out once, each model's parameters once."""
    slab = batch.slab
    params = (slab.weight[0].nbytes + slab.bias[0].nbytes + 1) * len(batch.slots)
    return int(batch.x.nbytes + batch.row_slots.nbytes + 4 * batch.n_rows * slab.k + params)


def _check(out, batch: Batch) -> None:
    np.testing.assert_allclose(np.asarray(out).reshape(-1), batch.want, rtol=RTOL_PRICE)


def test_sklearn_pipeline_loop(benchmark, fleet, batch):
    def run():
        return [p.predict(X) for p, X in zip(fleet.pipelines, batch.raw, strict=True)]

    _check(np.concatenate(run()), batch)
    _label(benchmark, batch, P_PIPELINE)
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)


def test_bare_estimator_loop(benchmark, fleet, batch):
    estimators = [p.named_steps["lr"] for p in fleet.pipelines]

    def run():
        return [e.predict(X) for e, X in zip(estimators, batch.encoded64, strict=True)]

    _check(np.concatenate(run()), batch)
    _label(benchmark, batch, P_BARE)
    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)


def test_torch_per_model_loop(benchmark, batch):
    w = [batch.slab.weight[s] for s in batch.slots]  # (K, D) views
    b = [batch.slab.bias[s] for s in batch.slots]  # (K,) views
    xs = torch.split(batch.x, batch.rows_per_model)  # (r, D) views

    def run():
        return [xi @ wi.T + bi for xi, wi, bi in zip(xs, w, b, strict=True)]

    _check(torch.cat(run()), batch)
    _label(benchmark, batch, P_TORCH_LOOP)
    benchmark(run)


def test_fused_reference(benchmark, batch):
    args = (batch.x, batch.row_slots, batch.slab.weight, batch.slab.bias, batch.slab.link)
    _check(linear_reference(*args), batch)
    _label(benchmark, batch, P_REFERENCE, bytes=_op_bytes(batch))
    benchmark(linear_reference, *args)


@pytest.mark.skipif(not _native.available(), reason="mmhost._C is not built")
def test_fused_cpp(benchmark, batch):
    op = _native.load().linear_forward  # type: ignore[union-attr]
    args = (batch.x, batch.row_slots, batch.slab.weight, batch.slab.bias, batch.slab.link)
    _check(op(*args), batch)
    targets = [
        {"kind": "speedup", "vs": P_BARE, "min": 200},
        {"kind": "speedup", "vs": P_REFERENCE, "min": 5},
    ]
    _label(benchmark, batch, P_CPP, targets=targets, bytes=_op_bytes(batch))
    benchmark(op, *args)


def test_fused_dispatch(benchmark, batch):
    args = (batch.x, batch.row_slots, batch.slab.weight, batch.slab.bias, batch.slab.link)
    _check(linear_forward(*args), batch)
    _label(benchmark, batch, P_DISPATCH, bytes=_op_bytes(batch))
    benchmark(linear_forward, *args)
