"""The whole path on a CUDA device: Triton kernel, arena in VRAM, pinned host tier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import RTOL_PRICE, house_pipeline

from mmhost.tools.houses import houses

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


def test_xgboost_models_on_cuda_match_xgboost_and_survive_demotion(store, host_factory):
    import xgboost as xgb

    from mmhost.convert import save_xgboost

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    boosters = {}
    for i, objective in enumerate(["binary:logistic", "reg:squarederror", "count:poisson"]):
        y = np.abs(np.nan_to_num(x[:, i])) if objective != "binary:logistic" else x[:, 0] > 0
        boosters[f"m{i}.tar.gz"] = b = xgb.train(
            {"objective": objective, "max_depth": 6}, xgb.DMatrix(x, y.astype(float)), 30
        )
        save_xgboost(b, store / f"m{i}.tar.gz")
    probe = host_factory(store=str(store), device="cuda")
    probe.load("m0.tar.gz")
    one = probe.cache.resident["m0.tar.gz"].slab.slot_bytes
    h = host_factory(store=str(store), device="cuda", device_budget=2 * one)
    for _ in range(2):  # the second pass promotes demoted models back
        outs = h.predict_many([(name, x[:50]) for name in boosters])
        for b, out in zip(boosters.values(), outs, strict=True):
            np.testing.assert_allclose(out, b.predict(xgb.DMatrix(x[:50])), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task", ["regressor", "binary_classifier"])
def test_training_on_cuda_fits_what_the_cpu_fits(task):
    from mmhost.train import fit_table
    from mmhost.train.data import Table

    rng = np.random.default_rng(4)
    owner = np.repeat(np.arange(30), 200)
    x = rng.normal(size=(len(owner), 3))
    s = x @ [1.0, -2.0, 0.5] + owner * 0.1 + rng.normal(size=len(owner))
    y = s if task == "regressor" else (s > np.median(s)).astype(float)
    feats = {f"x{j}": x[:, j].copy() for j in range(3)}
    table = Table(owner.astype(str).astype(object), y, feats, np.zeros(len(y), bool), [])
    hp = {"predictor_type": task, "wd": 0.01, "holdout_fraction": 0.2}
    cpu, gpu = fit_table(table, **hp).entities, fit_table(table, device="cuda", **hp).entities
    for a, b in zip(cpu, gpu, strict=True):
        np.testing.assert_allclose(b.coef, a.coef, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(b.train_metric, a.train_metric, rtol=1e-6)
