"""The micro-batcher: concurrent requests share fused calls; one bad request fails alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mmhost.errors import ValidationError
from mmhost.houses import houses
from tests.conftest import RTOL_PRICE, house_pipeline

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
            return await h.invoke(f"{c}/{c}.tar.gz", X.tolist())

        return await asyncio.gather(*[one(c, i * 0.01) for i, c in enumerate(CITIES)])

    asyncio.run(staggered())
    assert h.stats()["batches"]["calls"] == calls + 1
