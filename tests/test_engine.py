"""The micro-batcher: concurrent requests share fused calls; one bad request fails alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import RTOL_PRICE, house_pipeline

from mmhost.errors import ValidationError
from mmhost.tools.houses import houses

CITIES = ["Chicago_IL", "Houston_TX", "NewYork_NY"]


def warm(h):
    for c in CITIES:
        h.load(f"{c}/{c}.tar.gz")
    return h.stats()["batches"]["calls"]


def test_a_bad_request_fails_alone(city_store, host_factory):
    h = host_factory(store=str(city_store))
    calls = warm(h)
    X, _ = houses(2)
    bad = [[1, 2, 3, 4, 5, 6, "y", "perhaps"]]

    a, b, c = h.predict_many(
        [
            ("Chicago_IL/Chicago_IL.tar.gz", X.tolist()),
            ("Houston_TX/Houston_TX.tar.gz", bad),
            ("NewYork_NY/NewYork_NY.tar.gz", X.tolist()),
        ]
    )
    assert isinstance(b, ValidationError)
    np.testing.assert_allclose(a, house_pipeline(0).predict(X), rtol=RTOL_PRICE)
    np.testing.assert_allclose(c, house_pipeline(2, 3.0).predict(X), rtol=RTOL_PRICE)
    assert h.stats()["batches"]["calls"] == calls + 1


@pytest.mark.parametrize("max_rows", [1, 6])
def test_bursts_larger_than_max_batch_rows_are_split(city_store, host_factory, max_rows):
    h = host_factory(store=str(city_store), max_batch_rows=max_rows)
    calls = warm(h)
    X, _ = houses(3)

    outs = h.predict_many([(f"{c}/{c}.tar.gz", X.tolist()) for c in CITIES])
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out, house_pipeline(i, 1.0 + i).predict(X), rtol=RTOL_PRICE)
    b = h.stats()["batches"]
    assert b["rows"] == 9 and b["calls"] - calls == (3 if max_rows == 1 else 2)


def test_max_delay_gathers_requests_from_separate_turns(city_store, host_factory):
    h = host_factory(store=str(city_store), max_delay_us=500_000)
    calls = warm(h)
    X, _ = houses(1)

    async def staggered():
        async def one(c, delay):
            await asyncio.sleep(delay)
            return await h.apredict(f"{c}/{c}.tar.gz", X.tolist())

        return await asyncio.gather(*[one(c, i * 0.01) for i, c in enumerate(CITIES)])

    asyncio.run(staggered())
    assert h.stats()["batches"]["calls"] == calls + 1


def test_predict_many_mixes_slabs_input_kinds_and_errors(city_store, host_factory):
    from sklearn.linear_model import LogisticRegression

    from mmhost.convert import from_sklearn

    Xn = np.random.default_rng(0).normal(size=(30, 4))
    clf = LogisticRegression().fit(Xn, np.arange(30) % 3)
    from_sklearn(clf).save(city_store / "mc.tar.gz")
    h = host_factory(store=str(city_store))
    X, _ = houses(4)
    requests = [
        ("Chicago_IL/Chicago_IL.tar.gz", X.tolist()),
        ("mc.tar.gz", Xn),  # an array: decoded on its own, multiclass slab (K=3)
        ("Houston_TX/Houston_TX.tar.gz", X[:1].tolist()),
        ("missing.tar.gz", X.tolist()),
        ("NewYork_NY/NewYork_NY.tar.gz", []),
        ("Houston_TX/Houston_TX.tar.gz", X[1:].tolist()),
    ]
    out = h.predict_many(requests)
    np.testing.assert_allclose(out[0], house_pipeline(0).predict(X), rtol=RTOL_PRICE)
    np.testing.assert_allclose(out[1], clf.predict_proba(Xn), atol=1e-5)
    np.testing.assert_allclose(out[2], house_pipeline(1, 2.0).predict(X[:1]), rtol=RTOL_PRICE)
    assert "missing.tar.gz" in str(out[3])
    assert out[4].shape == (0,)
    np.testing.assert_allclose(out[5], house_pipeline(1, 2.0).predict(X[1:]), rtol=RTOL_PRICE)
    assert h.stats()["tiers"]["device"]["models"] == 4
    assert all(r.pins == 0 for r in h.cache.resident.values())
