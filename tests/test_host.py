"""End to end through mmhost.Host: artifacts in a folder store, answers equal sklearn's."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
import torch
from conftest import ATOL_PROBA, RTOL_PRICE, house_classifier, house_pipeline
from sklearn.linear_model import LinearRegression

from mmhost import Host
from mmhost.convert import from_sklearn
from mmhost.errors import BadArtifact, InvalidModelName, ModelNotFound, ValidationError
from mmhost.tools.houses import COLUMNS, houses

CITIES = ["Chicago_IL", "Houston_TX", "NewYork_NY"]


def test_per_city_pipelines_match_sklearn(city_store, host_factory):
    h = host_factory(store=str(city_store))
    X, _ = houses(50, seed=99)
    for i, city in enumerate(CITIES):
        got = h.predict(f"{city}/{city}.tar.gz", X.tolist())
        np.testing.assert_allclose(got, house_pipeline(i, 1.0 + i).predict(X), rtol=RTOL_PRICE)


def test_csv_like_strings_are_accepted(city_store, host_factory):
    h = host_factory(store=str(city_store))
    row = "1992,1531,6,3.0,0.68,1,y,n".split(",")
    X = np.array([[1992, 1531, 6, 3.0, 0.68, 1, "y", "n"]], dtype=object)
    want = house_pipeline(0).predict(X)
    np.testing.assert_allclose(
        h.predict("Chicago_IL/Chicago_IL.tar.gz", [row]), want, rtol=RTOL_PRICE
    )


def test_logistic_classifier_probabilities(store, host_factory):
    clf = house_classifier()
    from_sklearn(clf, COLUMNS).save(store / "clf.tar.gz")
    h = host_factory(store=str(store))
    X, _ = houses(100, seed=5)
    np.testing.assert_allclose(
        h.predict("clf.tar.gz", X.tolist()), clf.predict_proba(X)[:, 1], atol=ATOL_PROBA
    )
    assert h.describe("clf.tar.gz")["classes"] == [0, 1]


def test_shared_preprocessor_in_front_of_bare_city_models(store, tmp_path, host_factory):
    """An inference pipeline: one shared ColumnTransformer, bare per-city regressors behind it."""
    pre = house_pipeline().named_steps["pre"]
    from_sklearn(pre, COLUMNS).save(tmp_path / "pre.tar.gz")
    models = {}
    for i, city in enumerate(CITIES):
        X, y = houses(300, seed=i, city_factor=1.0 + i)
        reg = LinearRegression().fit(pre.transform(X), y)  # 6 scaled + 4 one-hot = 10 inputs
        from_sklearn(reg).save(store / f"{city}.tar.gz")
        models[city] = reg
    h = host_factory(store=str(store), preprocessor=str(tmp_path / "pre.tar.gz"))
    X, _ = houses(40, seed=42)
    for city, reg in models.items():
        np.testing.assert_allclose(
            h.predict(f"{city}.tar.gz", X.tolist()), reg.predict(pre.transform(X)), rtol=RTOL_PRICE
        )


def test_requests_for_many_models_share_one_fused_call(city_store, host_factory):
    h = host_factory(store=str(city_store))
    X, _ = houses(3, seed=7)
    for city in CITIES:  # warm up: loads happen first
        h.load(f"{city}/{city}.tar.gz")
    outs = h.predict_many([(f"{c}/{c}.tar.gz", X.tolist()) for c in CITIES] * 2)
    assert h.stats()["batches"] == {"calls": 1, "rows": 18, "requests": 6}
    for i, out in enumerate(outs):
        np.testing.assert_allclose(
            out, house_pipeline(i % 3, 1.0 + i % 3).predict(X), rtol=RTOL_PRICE
        )


def test_numpy_requests_are_decoded_together_and_errors_stay_their_own(store, host_factory):
    X = np.random.default_rng(0).normal(size=(32, 5))
    regs = {}
    for i in range(3):
        regs[f"num{i}"] = LinearRegression().fit(X, X @ np.arange(1.0 + i, 6.0 + i))
        from_sklearn(regs[f"num{i}"]).save(store / f"num{i}")
    h = host_factory(store=str(store))
    bad = X[:2].copy()
    bad[1, 3] = np.nan  # no imputer: refused, for this request only
    requests = [(f"num{i % 3}", X[i : i + 2]) for i in range(9)]
    requests.insert(4, ("num1", bad))
    requests.insert(6, ("num2", X[:2, :4]))  # one column short
    outs = h.predict_many(requests)
    assert isinstance(outs[4], ValidationError) and "row 1, column 'x3'" in outs[4].message
    assert isinstance(outs[6], ValidationError) and "shape (2, 4)" in outs[6].message
    for (name, rows), out in zip(requests, outs, strict=True):
        if not isinstance(out, Exception):
            np.testing.assert_allclose(out, regs[name].predict(rows), rtol=1e-5)
    assert h.stats()["batches"]["calls"] == 1  # decoded per slab, not per request


def test_async_invoke_from_another_loop(city_store, host_factory):
    h = host_factory(store=str(city_store))
    X, _ = houses(3, seed=7)

    async def burst():
        return await asyncio.gather(*[h.apredict(f"{c}/{c}.tar.gz", X.tolist()) for c in CITIES])

    for i, out in enumerate(asyncio.run(burst())):
        np.testing.assert_allclose(out, house_pipeline(i, 1.0 + i).predict(X), rtol=RTOL_PRICE)


def test_torch_tensor_input(store, host_factory):
    X = np.random.default_rng(0).normal(size=(32, 5))
    reg = LinearRegression().fit(X, X.sum(1))
    from_sklearn(reg).save(store / "num")
    h = host_factory(store=str(store))
    got = h.predict("num", torch.tensor(X, dtype=torch.float32))
    np.testing.assert_allclose(got, reg.predict(X), rtol=1e-5, atol=1e-5)


def test_tensor_input_needs_numeric_schema(city_store, host_factory):
    h = host_factory(store=str(city_store))
    with pytest.raises(ValidationError, match="categorical"):
        h.predict("Chicago_IL/Chicago_IL.tar.gz", torch.zeros((1, 8)))


@pytest.mark.parametrize(
    "rows,match",
    [
        ([[1992, 1531, 6, 3.0, 0.68, 1, "y"]], "row 0: expected 8 values"),
        ([[1992, 1531, 6, 3.0, 0.68, 1, "y", "maybe"]], "row 0, column 'front_porch': unknown"),
        ([[1992, "lots", 6, 3.0, 0.68, 1, "y", "n"]], "column 'square_feet': 'lots' is not"),
        ([[1992, float("nan"), 6, 3.0, 0.68, 1, "y", "n"]], "missing and the model has no imputer"),
        ([[1992, "inf", 6, 3.0, 0.68, 1, "y", "n"]], "not a finite number"),
        ("not rows", "list of rows"),
    ],
)
def test_bad_rows_are_validation_errors_and_host_keeps_serving(
    city_store, host_factory, rows, match
):
    h = host_factory(store=str(city_store))
    with pytest.raises(ValidationError, match=match):
        h.predict("Chicago_IL/Chicago_IL.tar.gz", rows)
    X, _ = houses(2)
    assert h.predict("Chicago_IL/Chicago_IL.tar.gz", X.tolist()).shape == (2,)


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "/abs.tar.gz", "a/../../b", "nul\x00", "x" * 1025, "", "a//b"]
)
def test_bad_names_never_touch_the_file_system(city_store, host_factory, name):
    h = host_factory(store=str(city_store))
    with pytest.raises(InvalidModelName):
        h.predict(name, [[0] * 8])


def test_missing_model_says_which_key(city_store, host_factory):
    h = host_factory(store=str(city_store))
    with pytest.raises(ModelNotFound, match="Paris_FR/Paris_FR.tar.gz"):
        h.predict("Paris_FR/Paris_FR.tar.gz", [[0] * 8])


def test_symlink_out_of_the_store_is_refused(city_store, tmp_path, host_factory):
    outside = tmp_path / "outside.tar.gz"
    from_sklearn(house_pipeline(), COLUMNS).save(outside)
    (city_store / "escape.tar.gz").symlink_to(outside)
    h = host_factory(store=str(city_store))
    with pytest.raises(InvalidModelName, match="outside the store"):
        h.predict("escape.tar.gz", [[0] * 8])


def test_new_keys_are_invokable_at_once_and_changes_are_reloaded(store, host_factory):
    h = host_factory(store=str(store), revalidate_seconds=1e-6)
    X, _ = houses(5)
    from_sklearn(house_pipeline(0), COLUMNS).save(store / "m.tar.gz")
    first = h.predict("m.tar.gz", X.tolist())
    from_sklearn(house_pipeline(1, 3.0), COLUMNS).save(store / "m.tar.gz")
    second = h.predict("m.tar.gz", X.tolist())
    np.testing.assert_allclose(second, house_pipeline(1, 3.0).predict(X), rtol=RTOL_PRICE)
    assert not np.allclose(first, second)
    assert h.stats()["reloads"] == 1
    from_sklearn(house_pipeline(2), COLUMNS).save(store / "new" / "n.tar.gz")
    assert h.predict("new/n.tar.gz", X.tolist()).shape == (5,)


def test_requests_too_large_once_encoded_are_refused_before_encoding(city_store, host_factory):
    h = host_factory(store=str(city_store), max_request_values=16 * 3)  # 3 rows of the 16-wide slab
    X, _ = houses(4)
    with pytest.raises(
        ValidationError, match="4 rows x 16 encoded features or outputs = 64 values"
    ):
        h.predict("Chicago_IL/Chicago_IL.tar.gz", X.tolist())
    assert h.predict("Chicago_IL/Chicago_IL.tar.gz", X[:3].tolist()).shape == (3,)


def test_revalidate_zero_checks_only_on_cold_loads(store, host_factory):
    h = host_factory(store=str(store), revalidate_seconds=0)
    X, _ = houses(5)
    from_sklearn(house_pipeline(0), COLUMNS).save(store / "m.tar.gz")
    first = h.predict("m.tar.gz", X.tolist())
    from_sklearn(house_pipeline(1, 3.0), COLUMNS).save(store / "m.tar.gz")
    np.testing.assert_array_equal(h.predict("m.tar.gz", X.tolist()), first)  # resident: kept
    h.unload("m.tar.gz")
    np.testing.assert_allclose(  # the next cold load reads the store's current version
        h.predict("m.tar.gz", X.tolist()), house_pipeline(1, 3.0).predict(X), rtol=RTOL_PRICE
    )


def test_a_bad_artifact_fails_its_own_load_only(city_store, host_factory):
    (city_store / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    h = host_factory(store=str(city_store))
    with pytest.raises(BadArtifact, match="broken.tar.gz"):
        h.predict("broken.tar.gz", [[0] * 8])
    X, _ = houses(2)
    assert h.predict("Chicago_IL/Chicago_IL.tar.gz", X.tolist()).shape == (2,)
    assert h.stats()["load_failures"] == 1


def test_load_unload_list(city_store, host_factory):
    h = host_factory(store=str(city_store))
    info = h.load("Houston_TX/Houston_TX.tar.gz")
    assert info["task"] == "regressor" and [c["name"] for c in info["inputs"]] == COLUMNS
    assert h.list_models() == {"Houston_TX/Houston_TX.tar.gz": "device"}
    assert h.unload("Houston_TX/Houston_TX.tar.gz") is True
    assert h.unload("Houston_TX/Houston_TX.tar.gz") is False
    assert h.list_models() == {}
    assert h.stats()["tiers"]["device"]["bytes"] == 0


def test_closed_host_refuses_calls(city_store):
    h = Host(store=str(city_store))
    h.close()
    from mmhost.errors import HostClosed

    with pytest.raises(HostClosed):
        h.predict("Chicago_IL/Chicago_IL.tar.gz", [[0] * 8])


def test_too_many_rows_are_refused_before_any_work(city_store, host_factory):
    h = host_factory(store=str(city_store), max_rows_per_request=3)
    X, _ = houses(4)
    with pytest.raises(ValidationError, match="4 rows in one request; the limit is 3"):
        h.predict("Chicago_IL/Chicago_IL.tar.gz", X.tolist())
    assert h.stats()["loads"] == 0
    assert h.predict("Chicago_IL/Chicago_IL.tar.gz", X[:3].tolist()).shape == (3,)


def test_multiclass_shape(store, host_factory):
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(90, 4))
    clf = LogisticRegression().fit(X, np.arange(90) % 3)
    from_sklearn(clf).save(store / "mc.tar.gz")
    h = host_factory(store=str(store))
    got = h.predict("mc.tar.gz", X)
    assert got.shape == (90, 3)
    np.testing.assert_allclose(got, clf.predict_proba(X), atol=ATOL_PROBA)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-6)


def test_close_cancels_requests_in_flight(city_store, host_factory):
    import concurrent.futures

    h = Host(store=str(city_store), capacity_wait_seconds=60, device_budget=69)
    pinned = h._run(h.cache.acquire("Chicago_IL/Chicago_IL.tar.gz"))
    assert pinned.pins == 1
    X, _ = houses(1)
    waiting = h._submit(h.invoker.invoke("Houston_TX/Houston_TX.tar.gz", X.tolist()))  # needs room
    h.close()
    with pytest.raises(concurrent.futures.CancelledError):
        waiting.result(timeout=5)


def test_a_model_deleted_from_the_store_stops_being_served(city_store, host_factory):
    h = host_factory(store=str(city_store), revalidate_seconds=1e-6)
    X, _ = houses(1)
    h.predict("Chicago_IL/Chicago_IL.tar.gz", X.tolist())
    (city_store / "Chicago_IL" / "Chicago_IL.tar.gz").unlink()
    with pytest.raises(ModelNotFound):
        h.predict("Chicago_IL/Chicago_IL.tar.gz", X.tolist())
    assert h.list_models() == {}
    assert h.stats()["tiers"]["device"]["bytes"] == 0


def test_shared_preprocessor_and_the_models_own_scaler_compose(store, tmp_path, host_factory):
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pre = house_pipeline().named_steps["pre"]
    from_sklearn(pre, COLUMNS).save(tmp_path / "pre.tar.gz")
    X, y = houses(300, seed=4)
    own = make_pipeline(SimpleImputer(), StandardScaler(), LinearRegression())
    own.fit(pre.transform(X), y)
    from_sklearn(own).save(store / "own.tar.gz")
    h = host_factory(store=str(store), preprocessor=str(tmp_path / "pre.tar.gz"))
    Xt, _ = houses(20, seed=8)
    np.testing.assert_allclose(
        h.predict("own.tar.gz", Xt.tolist()), own.predict(pre.transform(Xt)), rtol=RTOL_PRICE
    )


def test_a_model_that_cannot_sit_behind_the_preprocessor_fails_its_own_load(
    city_store, tmp_path, host_factory
):
    pre = house_pipeline().named_steps["pre"]
    from_sklearn(pre, COLUMNS).save(tmp_path / "pre.tar.gz")
    h = host_factory(store=str(city_store), preprocessor=str(tmp_path / "pre.tar.gz"))
    with pytest.raises(BadArtifact, match="takes 8 inputs but the shared preprocessor produces 10"):
        h.predict("Chicago_IL/Chicago_IL.tar.gz", houses(1)[0].tolist())


def test_preprocessor_must_be_a_preprocessor(city_store):
    with pytest.raises(ValueError, match="not a preprocessor"):
        Host(store=str(city_store), preprocessor=str(city_store / "Chicago_IL/Chicago_IL.tar.gz"))


def test_a_failed_load_warns_once_a_model_and_an_unknown_key_is_no_failure(
    city_store, host_factory, caplog
):
    (city_store / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    h = host_factory(store=str(city_store))
    with caplog.at_level(logging.WARNING, logger="mmhost.cache"):
        for _ in range(3):
            with pytest.raises(BadArtifact):
                h.predict("broken.tar.gz", [[0] * 8])
        failures = h.stats()["load_failures"]
        with pytest.raises(ModelNotFound):
            h.predict("no/such/model.tar.gz", [[0] * 8])
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]  # rate-limited per model
    assert "broken.tar.gz" in warned[0].getMessage() and "424" in warned[0].getMessage()
    assert "could not be loaded" in warned[0].getMessage()  # the reason, named
    assert failures == 3 and h.stats()["load_failures"] == 3  # the unknown key is no failure
    assert "no/such" not in caplog.text


def test_describe_never_loads_and_the_old_names_are_deprecated(city_store, host_factory):
    from mmhost.errors import ModelNotLoaded

    h = host_factory(store=str(city_store))
    key = "Chicago_IL/Chicago_IL.tar.gz"
    with pytest.raises(ModelNotLoaded):
        h.describe(key)
    assert h.list_models() == {}  # describing did not load it
    info = h.load(key)
    assert h.describe(key) == info and info.task == "regressor" and info["outputs"] == 1
    X, _ = houses(3, seed=2)

    async def old_names():
        with pytest.warns(DeprecationWarning, match="Host.invoke is deprecated.*Host.apredict"):
            old = await h.invoke(key, X.tolist())
        with pytest.warns(DeprecationWarning, match="use Host.astats"):
            report = await h.areport(1)
        return old, report

    old, report = asyncio.run(old_names())
    np.testing.assert_array_equal(old, h.predict(key, X.tolist()))
    assert report.keys() == h.stats(1).keys()


def test_host_reads_mmhost_variables_as_serve_does(city_store, monkeypatch, host_factory):
    monkeypatch.setenv("MMHOST_MAX_ROWS_PER_REQUEST", "7")
    monkeypatch.setenv("MMHOST_STORE", str(city_store))
    h = host_factory()
    assert h.settings.max_rows_per_request == 7 and h.settings.store == str(city_store)
    assert host_factory(max_rows_per_request=9).settings.max_rows_per_request == 9  # kwargs win
