"""The trees family through the Host: XGBoost models from a store, in the arena, in the tiers.

Tolerance: margins are bit-identical to XGBoost (tests/test_kernels_trees.py); outputs go through
the link in torch (sigmoid, softmax, exp) where XGBoost uses C's expf, so outputs are compared
with rtol 1e-5 (a few float32 ulps). multi:softmax's class index is exact.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mmhost.convert import from_sklearn, save_xgboost
from mmhost.errors import BadArtifact, SlabFull, ValidationError
from mmhost.families.arena import fine_class
from mmhost.families.trees import TreeModel, TreesFamily, compile_trees, tree_slot_bytes
from mmhost.tools.houses import COLUMNS, houses

RTOL = 1e-5
OBJECTIVES = {
    "reg:squarederror": {},
    "reg:logistic": {},
    "binary:logistic": {},
    "binary:logitraw": {},
    "multi:softprob": {"num_class": 3},
    "multi:softmax": {"num_class": 3},
    "count:poisson": {},
    "reg:tweedie": {"tweedie_variance_power": 1.5},
}


def data(seed: int, n: int = 200, f: int = 6, nan: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    x[rng.random(x.shape) < nan] = np.nan
    return x


def labels(objective: str, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + rng.normal(0, 0.3, len(x))
    if objective.startswith("multi:"):
        return np.digitize(z, [-0.5, 0.5])
    if objective.startswith(("binary:", "reg:logistic")):
        return (z > 0).astype(float)
    if objective in ("count:poisson", "reg:tweedie"):
        return rng.poisson(np.exp(z / 2))
    return z


@cache
def booster(objective: str, seed: int = 0, rounds: int = 8, depth: int = 4) -> xgb.Booster:
    x = data(seed)
    params = {"objective": objective, "max_depth": depth, "nthread": 1, "seed": seed}
    params.update(OBJECTIVES[objective])
    return xgb.train(params, xgb.DMatrix(x, labels(objective, x, seed)), rounds)


def expect_predictions(got: np.ndarray, bst: xgb.Booster, x: np.ndarray) -> None:
    want = bst.predict(xgb.DMatrix(x))
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
@pytest.mark.parametrize("fmt", ["ubj", "json"])
def test_sagemaker_model_tar_gz_serves_every_objective(host_factory, store, objective, fmt):
    bst = booster(objective)
    save_xgboost(bytes(bst.save_raw(raw_format=fmt)), store / "m" / "model.tar.gz")
    host = host_factory(store=str(store))
    x = data(1, 40)
    got = host.predict("m/model.tar.gz", x)
    expect_predictions(got, bst, x)
    if objective == "multi:softmax":  # the class index, as XGBoost gives it
        assert set(np.unique(got)) <= {0.0, 1.0, 2.0}
    described = host.describe("m/model.tar.gz")
    assert [c["name"] for c in described["inputs"]] == [f"f{i}" for i in range(6)]
    assert all(c["missing"] == "NaN" for c in described["inputs"])


def test_missing_values_in_lists_and_tensors(host_factory, store):
    bst = booster("binary:logistic")
    save_xgboost(bst, store / "b.tar.gz")
    host = host_factory(store=str(store))
    x = data(2, 20, nan=0.4)
    rows = [["" if math.isnan(v) else v for v in r] for r in x.tolist()]  # CSV-like cells
    expect_predictions(host.predict("b.tar.gz", rows), bst, x)
    expect_predictions(host.predict("b.tar.gz", torch.from_numpy(x)), bst, x)
    with pytest.raises(ValidationError, match="column 'f2'"):
        host.predict("b.tar.gz", [[0, 0, math.inf, 0, 0, 0]])


def test_a_model_trained_with_feature_names_takes_columns_by_name(host_factory, store):
    x = data(9, 100, f=3)
    names = ["sqft", "year", "lot"]
    dm = xgb.DMatrix(x, np.nan_to_num(x[:, 0]), feature_names=names)
    bst = xgb.train({"max_depth": 3, "nthread": 1}, dm, 5)
    save_xgboost(bst, store / "named.tar.gz")
    host = host_factory(store=str(store))
    assert [c["name"] for c in host.load("named.tar.gz")["inputs"]] == names
    by_name = {"lot": x[:4, 2].tolist(), "sqft": x[:4, 0].tolist(), "year": x[:4, 1].tolist()}
    want = bst.predict(xgb.DMatrix(x[:4], feature_names=names))
    np.testing.assert_allclose(host.predict("named.tar.gz", by_name), want, rtol=RTOL)


@pytest.mark.parametrize("depth", [1, 3, 6, 10])
def test_depths(host_factory, store, depth):
    bst = booster("reg:squarederror", seed=depth, rounds=5, depth=depth)
    save_xgboost(bst, store / "d.tar.gz")
    x = data(3, 50)
    expect_predictions(host_factory(store=str(store)).predict("d.tar.gz", x), bst, x)


def test_a_mixed_batch_over_1000_distinct_models(host_factory, store):
    """One predict_many over 1,000 models of 1-12 trees and 1-30 features, two rows each."""
    rng = np.random.default_rng(7)
    boosters, xs = [], []
    for i in range(1000):
        f = int(rng.integers(1, 31))
        x = rng.normal(size=(40, f)).astype(np.float32)
        x[rng.random(x.shape) < 0.1] = np.nan
        y = np.nan_to_num(x[:, 0]) + rng.normal(0, 0.1, 40)
        obj = ("reg:squarederror", "binary:logistic")[i % 2]
        y = (y > 0).astype(float) if obj == "binary:logistic" else y
        params = {"objective": obj, "max_depth": int(rng.integers(1, 7)), "nthread": 1}
        bst = xgb.train(params, xgb.DMatrix(x, y), int(rng.integers(1, 13)))
        save_xgboost(bst, store / f"m{i}.tar.gz")
        boosters.append(bst)
        xs.append(x[:2])
    host = host_factory(store=str(store), load_workers=2)
    order = rng.permutation(1000)
    results = host.predict_many([(f"m{i}.tar.gz", xs[i]) for i in order])
    for i, got in zip(order, results, strict=True):
        assert not isinstance(got, Exception), got
        expect_predictions(got, boosters[i], xs[i])
    assert host.stats()["batches"]["calls"] < 100  # fused: a call per slab, not per model


def test_linear_and_tree_models_share_one_host(host_factory, city_store):
    from conftest import house_pipeline

    bst = booster("reg:squarederror")
    save_xgboost(bst, city_store / "trees" / "t.tar.gz")
    host = host_factory(store=str(city_store))
    x = data(4, 5)
    row = [1992, 1531, 6, 3.0, 0.68, 1, "y", "n"]
    lin, trees = host.predict_many([("Chicago_IL/Chicago_IL.tar.gz", [row]), ("trees/t.tar.gz", x)])
    np.testing.assert_allclose(lin, house_pipeline(0).predict(np.array([row], object)), rtol=1e-5)
    expect_predictions(trees, bst, x)


def test_demotion_round_trip_is_exact_and_accounting_is_exact_bytes(host_factory, store):
    models = {f"m{i}.tar.gz": booster("binary:logistic", seed=i) for i in range(4)}
    for name, bst in models.items():
        save_xgboost(bst, store / name)
    probe = host_factory(store=str(store))
    sizes = []
    for name in models:
        probe.load(name)
        sizes.append(probe.cache.resident[name].slab.slot_bytes)
    assert probe.stats()["tiers"]["device"]["bytes"] == sum(sizes)  # exact slot bytes
    probe.close()
    # room for two of the four: every pass demotes models to the host tier and promotes others
    host = host_factory(store=str(store), device_budget=2 * max(sizes))
    x = data(5, 30)
    first = {name: host.predict(name, x) for name in models}
    for name, bst in models.items():  # promoted back (and others demoted): same answers
        again = host.predict(name, x)
        np.testing.assert_array_equal(again, first[name])
        expect_predictions(again, bst, x)
    stats = host.stats()
    resident = host.cache.resident.values()
    assert stats["tiers"]["device"]["bytes"] == sum(r.slab.slot_bytes for r in resident)
    assert stats["tiers"]["device"]["bytes"] <= 2 * max(sizes)
    held = [host.cache.host_model(n) for n, t in host.list_models().items() if t == "host"]
    assert held and stats["tiers"]["host"]["bytes"] == sum(m.nbytes for m in held if m)
    assert stats["evictions"]["device"] >= 2 and stats["hits"]["host"] >= 2


def test_a_shared_preprocessor_feeds_a_bare_xgboost_model(host_factory, store):
    """An inference pipeline: raw rows -> the shared scaler + one-hot -> SageMaker's trees."""
    X, y = houses(300, 3)
    pre = ColumnTransformer(
        [("num", StandardScaler(), list(range(6))), ("cat", OneHotEncoder(), [6, 7])]
    ).fit(X)
    from_sklearn(pre, COLUMNS).save(store.parent / "pre.tar.gz")
    features = pre.transform(X)
    bst = xgb.train({"max_depth": 5}, xgb.DMatrix(features, y), 20)
    save_xgboost(bst, store / "city" / "model.tar.gz")
    host = host_factory(store=str(store), preprocessor=str(store.parent / "pre.tar.gz"))
    got = host.predict("city/model.tar.gz", X[:50].tolist())
    np.testing.assert_allclose(got, bst.predict(xgb.DMatrix(features[:50])), rtol=RTOL)
    assert [c["name"] for c in host.describe("city/model.tar.gz")["inputs"]] == COLUMNS


def test_slot_bytes_and_size_classes():
    assert tree_slot_bytes(8, 4, 1) == 8 * 16 + 4 * 12 + 16 + 4 + 4 + 1
    for n in range(1, 5000):
        c = fine_class(n, 8)
        assert c >= n and (n <= 8 or c < 1.25 * n + 8), n
    assert len({fine_class(n, 8) for n in range(1000, 2000)}) <= 10


def _tree_model(seed: int = 0) -> TreeModel:
    from mmhost.artifacts import Artifact, Preprocessing

    blob = bytes(booster("binary:logistic", seed=seed).save_raw(raw_format="ubj"))
    art = Artifact("model", [], Preprocessing.identity(0), algorithm="xgboost", xgboost=blob)
    return compile_trees(art)


def test_a_slot_is_exactly_the_bytes_of_its_tensors():
    fam = TreesFamily(torch.device("cpu"))
    slab, _ = fam.place(_tree_model())
    per_slot = sum(getattr(slab, f)[0].nbytes for f in slab.fields)
    assert slab.slot_bytes == per_slot == tree_slot_bytes(slab.c, slab.t, slab.k)


def test_a_slab_stops_where_int32_node_indices_end(monkeypatch):
    import mmhost.families.trees as trees_family

    model = _tree_model()
    c = fine_class(len(model.nodes), 8)
    monkeypatch.setattr(trees_family, "_INT32_MAX", 70 * c - 1)  # room for 70 slots
    fam = TreesFamily(torch.device("cpu"))
    placed = [fam.place(model) for _ in range(70)]
    with pytest.raises(SlabFull, match="is full"):
        fam.place(model)
    slab = placed[0][0]
    assert slab.capacity == 70 and slab.used == 70
    fam.free(*placed[3])
    assert fam.place(model)[1] == placed[3][1]  # a freed slot is taken again


def test_an_empty_slab_gives_its_memory_back():
    fam = TreesFamily(torch.device("cpu"))
    placed = [fam.place(_tree_model(seed)) for seed in range(3)]
    assert fam.reserved_bytes > 0
    for slab, slot in placed:
        fam.free(slab, slot)
    assert fam.slabs == {} and fam.reserved_bytes == 0


def test_a_failed_copy_leaks_no_slot(monkeypatch):
    fam = TreesFamily(torch.device("cpu"))
    slab, _ = fam.place(_tree_model())
    links = dict(slab.links)

    def broken(*args):
        raise RuntimeError("copy failed")

    monkeypatch.setattr(fam, "write", broken)
    with pytest.raises(RuntimeError, match="copy failed"):
        fam.place(_tree_model())
    assert slab.used == 1 and slab.links == links


def test_the_request_limit_counts_outputs_and_the_raw_encoding(host_factory, store):
    x = data(0, 100, f=2)
    y = np.arange(100) % 5
    params = {"objective": "multi:softprob", "num_class": 5, "max_depth": 2, "nthread": 1}
    save_xgboost(xgb.train(params, xgb.DMatrix(x, y), 2), store / "k5.tar.gz")  # 2 in, 5 out
    host = host_factory(store=str(store), max_request_values=30)
    assert host.predict("k5.tar.gz", x[:6]).shape == (6, 5)  # 6 rows x 5 outputs = 30
    with pytest.raises(ValidationError, match="7 rows x 5 encoded features or outputs = 35"):
        host.predict("k5.tar.gz", x[:7])


def test_identical_schemas_share_one_encoder(host_factory, store):
    for i in range(3):
        save_xgboost(booster("reg:squarederror", seed=i), store / f"s{i}.tar.gz")
    host = host_factory(store=str(store))
    for i in range(3):
        host.load(f"s{i}.tar.gz")
    metas = {id(r.meta) for r in host.cache.resident.values()}
    assert len(metas) == 1


# --- scikit-learn pipelines ending in XGBoost's wrappers -----------------------------------
def pipeline(estimator, seed: int = 0, n: int = 300) -> tuple[Pipeline, np.ndarray]:
    X, y = houses(n, seed)
    X = X.copy()
    X[np.random.default_rng(seed).random(n) < 0.1, 3] = np.nan  # bathrooms sometimes missing
    pre = ColumnTransformer(
        [("num", StandardScaler(), list(range(6))), ("cat", OneHotEncoder(), [6, 7])]
    )
    if type(estimator).__name__ == "XGBClassifier":
        y = np.digitize(y, np.quantile(y, [0.5] if estimator.n_classes_hint == 2 else [0.33, 0.66]))
    return Pipeline([("pre", pre), ("xgb", estimator)]).fit(X, y), X


def _classifier(classes: int):
    est = xgb.XGBClassifier(n_estimators=20, max_depth=4, nthread=1)
    est.n_classes_hint = classes  # (read by pipeline() only)
    return est


@pytest.mark.parametrize("kind", ["regressor", "binary", "multiclass"])
def test_sklearn_pipeline_with_xgboost_serves_like_the_pipeline(host_factory, store, kind):
    est = {
        "regressor": lambda: xgb.XGBRegressor(n_estimators=20, max_depth=4, nthread=1),
        "binary": lambda: _classifier(2),
        "multiclass": lambda: _classifier(3),
    }[kind]()
    pipe, X = pipeline(est)
    art = from_sklearn(pipe, COLUMNS)
    assert art.algorithm == "xgboost"
    art.save(store / "p.tar.gz")
    host = host_factory(store=str(store))
    rows = X[:60]
    got = host.predict("p.tar.gz", rows.tolist())
    if kind == "regressor":
        np.testing.assert_allclose(got, pipe.predict(rows), rtol=RTOL)
    else:
        proba = pipe.predict_proba(rows)
        want = proba[:, 1] if kind == "binary" else proba
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)
        assert host.describe("p.tar.gz")["classes"] == list(range(2 if kind == "binary" else 3))


def test_a_scaled_pipeline_takes_tensors(host_factory, store):
    x = data(11, 200, f=4)
    y = np.nan_to_num(x[:, 0]) * 3 + np.nan_to_num(x[:, 1])
    x64 = x.astype(np.float64)
    est = xgb.XGBRegressor(n_estimators=10, max_depth=4, nthread=1)
    pipe = Pipeline([("scale", StandardScaler()), ("xgb", est)]).fit(x64, y)
    from_sklearn(pipe).save(store / "scaled")
    host = host_factory(store=str(store))
    for rows in (x[:30], x[30:60]):  # the second call reuses the mapping on the device
        got = host.predict("scaled", torch.from_numpy(rows))
        # mmhost scales in float64 whatever the input's dtype, as scikit-learn does for float64
        # rows (for float32 rows scikit-learn scales in float32, and splits may then differ)
        np.testing.assert_allclose(got, pipe.predict(rows.astype(np.float64)), rtol=RTOL)


def test_pipeline_refuses_a_non_nan_missing_value():
    from mmhost.errors import UnsupportedModel

    pipe, _ = pipeline(xgb.XGBRegressor(n_estimators=2, max_depth=2, missing=0.0))
    with pytest.raises(UnsupportedModel, match="missing=0.0"):
        from_sklearn(pipe, COLUMNS)


# --- bad model files fail their own load ---------------------------------------------------
def _doc() -> dict:
    return json.loads(bytes(booster("reg:squarederror").save_raw(raw_format="json")))


def _with_tree(change) -> bytes:
    doc = _doc()
    change(doc["learner"]["gradient_booster"]["model"]["trees"][0])
    return json.dumps(doc).encode()


def _cycle(tree: dict) -> None:
    tree["left_children"][1] = 0  # node 1's left child is the root


def _feature_out_of_range(tree: dict) -> None:
    tree["split_indices"][0] = 99


def _child_out_of_range(tree: dict) -> None:
    tree["right_children"][0] = 10_000


BAD = {
    "truncated JSON": lambda: bytes(booster("reg:squarederror").save_raw("json"))[:-40],
    "truncated UBJSON": lambda: bytes(booster("reg:squarederror").save_raw("ubj"))[:-40],
    "a cycle": lambda: _with_tree(_cycle),
    "a feature out of range": lambda: _with_tree(_feature_out_of_range),
    "a child out of range": lambda: _with_tree(_child_out_of_range),
    "dart": lambda: json.dumps(
        {**_doc(), "learner": {**_doc()["learner"], "gradient_booster": {"name": "dart"}}}
    ).encode(),
    "a pickle": lambda: b"\x80\x04\x95" + b"\x00" * 32,
    "2**31-1 features": lambda: _with_param("num_feature", str(2**31 - 1)),
    "two targets": lambda: _with_param("num_target", "2"),
}


def _with_param(key: str, value: str) -> bytes:
    doc = _doc()
    doc["learner"]["learner_model_param"][key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_files_fail_their_own_load(host_factory, store, case):
    import io
    import tarfile

    blob = BAD[case]()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    (store / "bad.tar.gz").write_bytes(buf.getvalue())
    save_xgboost(booster("reg:squarederror"), store / "good.tar.gz")
    host = host_factory(store=str(store))
    with pytest.raises(BadArtifact) as info:
        host.predict("bad.tar.gz", data(6, 2))
    assert "bad.tar.gz" in info.value.message and len(info.value.message) < 600
    expect_predictions(
        host.predict("good.tar.gz", data(6, 2)), booster("reg:squarederror"), data(6, 2)
    )
    assert host.stats()["load_failures"] == 1


def test_folder_artifacts_hold_the_model_file_too(host_factory, store: Path):
    folder = store / "folder_model"
    folder.mkdir()
    bst = booster("binary:logistic")
    (folder / "xgboost-model").write_bytes(bytes(bst.save_raw(raw_format="json")))
    x = data(8, 10)
    expect_predictions(host_factory(store=str(store)).predict("folder_model", x), bst, x)
