"""The whole path on a CUDA device: Triton kernel, arena in VRAM, pinned host tier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmhost.houses import houses
from tests.conftest import RTOL_PRICE, house_pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CITIES = ["Chicago_IL", "Houston_TX", "NewYork_NY"]


def test_host_on_cuda_matches_sklearn(city_store, host_factory):
    h = host_factory(store=str(city_store), device="cuda")
    X, _ = houses(64, seed=3)
    outs = h.predict_many([(f"{c}/{c}.tar.gz", X.tolist()) for c in CITIES])
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out, house_pipeline(i, 1.0 + i).predict(X), rtol=RTOL_PRICE)
    assert h.stats()["device"].startswith("cuda")


def test_demotion_on_cuda_uses_pinned_host_memory(city_store, host_factory):
    from mmhost.families.arena import size_class, slot_bytes

    h = host_factory(
        store=str(city_store), device="cuda", device_budget=slot_bytes(1, size_class(10))
    )
    h.load("Chicago_IL/Chicago_IL.tar.gz")
    h.load("Houston_TX/Houston_TX.tar.gz")
    demoted = h.cache.host_model("Chicago_IL/Chicago_IL.tar.gz")
    assert torch.from_numpy(demoted.weight).is_pinned()


def test_cuda_tensor_input_stays_on_device(store, host_factory):
    from sklearn.linear_model import LinearRegression

    from mmhost.convert import from_sklearn

    X = np.random.default_rng(0).normal(size=(32, 5))
    reg = LinearRegression().fit(X, X.sum(1))
    from_sklearn(reg).save(store / "num")
    h = host_factory(store=str(store), device="cuda")
    got = h.predict("num", torch.tensor(X, dtype=torch.float32, device="cuda"))
    np.testing.assert_allclose(got, reg.predict(X), rtol=1e-5, atol=1e-5)
