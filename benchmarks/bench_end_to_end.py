"""End to end: ``Host.predict_many`` on raw rows (numbers and 'y'/'n' strings), 1,000 resident
models x 1 row, one request per model, all submitted together.

Providers:

- host.predict_many: decode, acquire, batch, one fused call, split, per-request results
- parts of it, measured alone on the same rows in the same run: decode (one
  ``encoder.encode`` over the rows of all requests that share a schema, as
  ``Invoker.invoke_many`` does) and the fused op (``family.forward`` on the batch the
  batcher builds). The report derives the rest: acquire and release, batching, the engine
  loop and its futures, splitting the results, the thread hop.
- host.predict loop: the same 1,000 requests one at a time (no batching across models)
- sklearn pipeline loop: the baseline, ``pipe.predict`` per model on the same raw rows

Models are resident and ``revalidate_seconds`` is an hour, so this is the steady state: no
store version checks in the timed path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fleet import P_PIPELINE, RTOL_PRICE, Batch, describe, make_batch

from mmhost import Host
from mmhost.families.arena import size_class

GROUP = "end to end: predict_many, 1000 models x 1 row (raw rows)"
P_HOST = "host.predict_many (end to end)"
P_DECODE = "decode alone (one encoder.encode over all rows)"
P_OP = "fused op alone (family.forward on the batch)"
P_LOOP = "host.predict loop (one request at a time)"


@pytest.fixture(scope="module")
def batch(fleet) -> Batch:
    return make_batch(fleet, 1)


@pytest.fixture(scope="module")
def requests(fleet, batch: Batch) -> list[tuple[str, list]]:
    """As a JSON request body decodes: a list of rows, each a list of numbers and strings."""
    return [(name, X.tolist()) for name, X in zip(fleet.names, batch.raw, strict=True)]


@pytest.fixture(scope="module")
def host(fleet, requests):
    h = Host(store=str(fleet.store), revalidate_seconds=3600)
    try:
        h.predict_many(requests)  # cold loads, off the clock
        assert len(h.list_models()) == len(requests)
        yield h
    finally:
        h.close()


def _check(outs: list, batch: Batch) -> None:
    for out in outs:
        assert not isinstance(out, Exception), out
    np.testing.assert_allclose(np.concatenate(outs).reshape(-1), batch.want, rtol=RTOL_PRICE)


def test_predict_many(benchmark, host, requests, batch):
    calls = host.stats()["batches"]["calls"]
    _check(host.predict_many(requests), batch)
    fused_calls = host.stats()["batches"]["calls"] - calls
    assert fused_calls == 1, f"1000 requests took {fused_calls} fused calls, not 1"
    describe(benchmark, GROUP, P_HOST, batch.n_rows, fused_calls_per_predict_many=fused_calls)
    benchmark(host.predict_many, requests)


def test_decode_alone(benchmark, host, requests, batch):
    (encoder,) = {host.cache.resident[name].meta.encoder for name, _ in requests}
    width = size_class(encoder.width)

    def run():
        return torch.from_numpy(
            encoder.encode([row for _, rows in requests for row in rows], width)
        )

    assert torch.equal(run(), batch.x)
    describe(benchmark, GROUP, P_DECODE, batch.n_rows, part_of=P_HOST)
    benchmark(run)


def test_fused_op_alone(benchmark, host, requests, batch):
    residents = [host.cache.resident[name] for name, _ in requests]
    (slab,) = {r.slab for r in residents}
    slots = torch.tensor([r.slot for r in residents], dtype=torch.int64)  # (N,), 1 row each
    _check([host.families.forward(slab, batch.x, slots).numpy()], batch)
    describe(benchmark, GROUP, P_OP, batch.n_rows, part_of=P_HOST)
    benchmark(host.families.forward, slab, batch.x, slots)


def test_predict_loop(benchmark, host, requests, batch):
    def run():
        return [host.predict(name, rows) for name, rows in requests]

    _check(run(), batch)
    describe(benchmark, GROUP, P_LOOP, batch.n_rows)
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


def test_sklearn_pipeline_loop(benchmark, fleet, batch):
    def run():
        return [p.predict(X) for p, X in zip(fleet.pipelines, batch.raw, strict=True)]

    _check(run(), batch)
    describe(benchmark, GROUP, P_PIPELINE, batch.n_rows, baseline=True)
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
