"""The k-NN family (``mmhost/families/knn.py``): scikit-learn's KNeighbors* converted and served
through a Host, answering as scikit-learn's ``predict``; the tie rules; slots and bytes.

Tolerances: classifiers' labels equal scikit-learn's exactly (the data are continuous, so no
two neighbours are equidistant and no vote ties, except in the tie tests, which use exact
integer data). Regressors' means agree to rtol 1e-5 (float32 points and sums against
scikit-learn's float64), 1e-4 with cosine distance weights (1 - u.v of close neighbours loses
float32 digits to cancellation).
"""

from __future__ import annotations

import csv

import httpx
import numpy as np
import pandas as pd
import pytest
import safetensors.numpy
import torch
from sklearn.compose import ColumnTransformer
from sklearn.neighbors import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    RadiusNeighborsClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mmhost.artifacts import read_artifact
from mmhost.artifacts.manifest import ManifestError
from mmhost.convert import from_sklearn
from mmhost.errors import UnsupportedModel
from mmhost.families.knn import KnnFamily, compile_knn, knn_slot_bytes
from mmhost.kernels.knn import decide_reference, knn_decide

METRICS = {
    "euclidean": {},
    "minkowski": {"p": 2},
    "cosine": {"metric": "cosine"},
}


def data(n: int, d: int, seed: int, classes: int = 4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d)
    return x, rng.integers(0, classes, n), x @ rng.normal(size=d)


def serve_models(host_factory, store, models: dict) -> object:
    for name, m in models.items():
        from_sklearn(m).save(store / f"{name}.tar.gz")
    return host_factory(store=str(store))


def check(host, name: str, model, q: np.ndarray, rtol: float = 1e-5) -> None:
    got = host.predict(f"{name}.tar.gz", q)
    want = model.predict(q)
    if isinstance(model[-1] if hasattr(model, "steps") else model, KNeighborsClassifier):
        assert got.tolist() == want.tolist(), name
    else:
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("metric", list(METRICS))
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize(("k", "d", "n"), [(1, 1, 1), (5, 16, 300), (64, 40, 2000)])
def test_equal_to_scikit_learn(host_factory, store, metric, weights, k, d, n):
    x, y, yr = data(n, d, seed=k + d)
    kw = {"n_neighbors": k, "weights": weights, **METRICS[metric]}
    models = {
        "c": KNeighborsClassifier(**kw).fit(x, y),
        "r": KNeighborsRegressor(**kw).fit(x, yr),
        "sc": make_pipeline(StandardScaler(), KNeighborsClassifier(**kw)).fit(x, y),
        "sr": make_pipeline(StandardScaler(), KNeighborsRegressor(**kw)).fit(x, yr),
    }
    host = serve_models(host_factory, store, models)
    q, _, _ = data(120, d, seed=99)
    q[:3] = x[:3]  # exact matches: distance weights give those neighbours all the weight
    rtol = 1e-4 if metric == "cosine" and weights == "distance" else 1e-5
    for name, m in models.items():
        check(host, name, m, q, rtol)


def test_512_dims_and_100k_points(host_factory, store):
    x, y, yr = data(600, 512, seed=1)
    big, big_y, big_r = data(100_000, 3, seed=2, classes=9)
    models = {
        "wide": KNeighborsClassifier(7).fit(x, y),
        "many": KNeighborsRegressor(10, weights="distance").fit(big, big_r),
        "many_c": KNeighborsClassifier(33).fit(big, big_y),
    }
    host = serve_models(host_factory, store, models)
    check(host, "wide", models["wide"], data(40, 512, seed=3)[0])
    q = data(200, 3, seed=4)[0]
    check(host, "many", models["many"], q)
    check(host, "many_c", models["many_c"], q)


def test_behind_a_one_hot_and_scaler_pipeline(host_factory, store):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": rng.normal(100, 30, 400),
            "rooms": rng.integers(1, 6, 400).astype(float),
            "kind": rng.choice(["flat", "house", "loft"], 400),
        }
    )
    y = rng.integers(0, 3, 400)
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["size", "rooms"]), ("cat", OneHotEncoder(), ["kind"])]
    )
    model = make_pipeline(pre, KNeighborsClassifier(9, weights="distance")).fit(frame, y)
    from_sklearn(model).save(store / "p.tar.gz")
    host = host_factory(store=str(store))
    q = frame.sample(50, random_state=1).copy()
    q["size"] += rng.normal(0, 5, 50)
    got = host.predict("p.tar.gz", q.to_dict("list"))
    assert got.tolist() == model.predict(q).tolist()


def test_mixed_batches_over_500_models(host_factory, store):
    models = {}
    for i in range(500):
        x, y, yr = data(20 + i % 37, 6, seed=i)
        kw = {"n_neighbors": 1 + i % 9, "weights": ("uniform", "distance")[i % 2]}
        if i % 3 == 2:
            kw["metric"] = "cosine"
        est = (
            KNeighborsClassifier(**kw).fit(x, y) if i % 2 else KNeighborsRegressor(**kw).fit(x, yr)
        )
        models[f"m{i}"] = est
    host = serve_models(host_factory, store, models)
    rng = np.random.default_rng(7)
    queries = {name: rng.normal(size=(1 + i % 3, 6)) for i, name in enumerate(models)}
    got = host.predict_many([(f"{n}.tar.gz", q) for n, q in queries.items()])
    for (name, m), answer in zip(models.items(), got, strict=True):
        want = m.predict(queries[name])
        if isinstance(m, KNeighborsClassifier):
            assert answer.tolist() == want.tolist(), name
        else:
            np.testing.assert_allclose(answer.astype(float), want, rtol=1e-4, atol=1e-6)
    stats = host.stats()  # one fused call per slab (size class), not per model
    assert stats["batches"]["calls"] <= stats["tiers"]["device"]["families"]["knn"]["slabs"]


# --- the tie rules ---------------------------------------------------------------------------
def test_a_vote_tie_goes_to_the_smallest_label_as_in_scikit_learn(host_factory, store):
    # two neighbours of label 2 at distance 1, two of label 0 at distance 2: 2 vs 2 votes
    x = np.array([[1.0], [-1.0], [2.0], [-2.0], [10.0]])
    y = np.array([2, 2, 0, 0, 1])
    models = {"t": KNeighborsClassifier(4).fit(x, y), "s": KNeighborsClassifier(2).fit(x, y)}
    host = serve_models(host_factory, store, models)
    q = np.zeros((1, 1))
    assert host.predict("t.tar.gz", q).tolist() == models["t"].predict(q).tolist() == [0]
    assert host.predict("s.tar.gz", q).tolist() == [2]


def test_equidistant_neighbours_are_taken_in_the_models_point_order():
    # points 0..3 are all at distance 1 from the query; k = 2 takes points 0 and 1
    x = np.array([[1.0], [-1.0], [1.0], [-1.0], [5.0]])
    est = KNeighborsClassifier(2).fit(x, [3, 1, 0, 0, 0])
    model = compile_knn(from_sklearn(est))
    fam = KnnFamily(torch.device("cpu"))
    slab, slot = fam.place(model)
    out = fam.forward(slab, torch.zeros(1, slab.d), torch.tensor([slot]))
    predicted, neighbors = fam.answer(model, out.numpy())
    assert neighbors.labels.tolist() == [[3, 1]] and neighbors.distances.tolist() == [[1.0, 1.0]]
    assert predicted.tolist() == [1]  # 1 vote each: the smaller label


@pytest.mark.parametrize("decide", [decide_reference, knn_decide], ids=["reference", "op"])
def test_an_exact_match_outweighs_everything_with_distance_weights(decide):
    dist = torch.tensor([[0.0, 0.01, 0.02]])
    idx = torch.tensor([[0, 1, 2]])
    labels = torch.tensor([5.0, 1.0, 1.0])
    three = torch.tensor([3], dtype=torch.int32)
    for task in (1, 0):  # classifier, regressor: the exact match's label alone
        flags = torch.tensor([[1, 1, 0, task]], dtype=torch.int8)  # euclidean, distance weights
        assert decide(dist, idx, labels, three, flags)[0, 0].item() == 5.0
    uniform = torch.tensor([[1, 0, 0, 1]], dtype=torch.int8)
    assert decide(dist, idx, labels, three, uniform)[0, 0].item() == 1.0  # 2 votes to 1


# --- slots, bytes, tiers ---------------------------------------------------------------------
def test_slot_bytes_are_exact_and_a_model_reads_back_unchanged():
    x, y, _ = data(1000, 16, seed=0)
    model = compile_knn(from_sklearn(KNeighborsClassifier(10).fit(x, y)))
    fam = KnnFamily(torch.device("cpu"))
    # 1,000 points take a 1,024-point size class: 69,656 bytes against 64,000 of points
    assert fam.slot_bytes(model) == knn_slot_bytes(1024, 16) == 1024 * 17 * 4 + 24
    slab, slot = fam.place(model)
    back = fam.read_back(slab, slot, model.stripped())
    np.testing.assert_array_equal(back.points, model.points)
    np.testing.assert_array_equal(back.labels, model.labels)
    assert fam.stats()["models"] == 1
    fam.free(slab, slot)
    assert fam.stats() == {"models": 0, "slabs": 0, "reserved_bytes": 0}


def test_demoted_and_promoted_models_answer_the_same(host_factory, store):
    models = {f"m{i}": KNeighborsClassifier(3).fit(*data(200, 8, seed=i)[:2]) for i in range(6)}
    for name, m in models.items():
        from_sklearn(m).save(store / f"{name}.tar.gz")
    one = knn_slot_bytes(200, 8)
    host = host_factory(store=str(store), device_budget=2 * one)
    q = data(30, 8, seed=50)[0]
    for _ in range(2):  # the second round promotes what the first demoted
        for name, m in models.items():
            assert host.predict(f"{name}.tar.gz", q).tolist() == m.predict(q).tolist()
    assert host.stats()["evictions"]["device"] > 0


# --- conversion ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("estimator", "says"),
    [
        (KNeighborsClassifier(3, metric="manhattan"), "'manhattan'"),
        (KNeighborsClassifier(3, p=3), "minkowski"),
        (KNeighborsRegressor(3, weights=lambda d: d), "weights="),
        (RadiusNeighborsClassifier(1.0), "RadiusNeighborsClassifier"),
        (KNeighborsClassifier(30), "n_neighbors=30"),
    ],
)
def test_what_is_not_served_is_refused_by_name(estimator, says):
    x, y, _ = data(20, 3, seed=0)
    estimator.fit(x, y)
    with pytest.raises(UnsupportedModel, match=says):
        from_sklearn(estimator)


def test_the_artifact_round_trips_and_damage_is_refused(tmp_path):
    x, y, _ = data(50, 4, seed=0)
    named = np.array(list("abcd"))[y]
    art = from_sklearn(KNeighborsClassifier(5, weights="distance").fit(x, named))
    art.save(tmp_path / "m.tar.gz")
    back = read_artifact(tmp_path / "m.tar.gz")
    assert back.knn == art.knn and back.classes == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(back.params["points"], art.params["points"])
    art.params["labels"] = art.params["labels"] + 10  # not class indices
    art.save(tmp_path / "bad.tar.gz")
    with pytest.raises(ManifestError, match="class indices"):
        read_artifact(tmp_path / "bad.tar.gz")


def test_string_labels_over_http_json_verbose_csv_and_v2(serve, store):
    x, y, _ = data(80, 3, seed=5)
    names = np.array(["red", "green, dark", 'say "blue"', "y"])[y]
    model = KNeighborsClassifier(4).fit(x, names)
    from_sklearn(model).save(store / "colors.tar.gz")
    server = serve(store=str(store))
    q = data(6, 3, seed=6)[0]
    body = "".join(",".join(map(repr, r)) + "\n" for r in q.tolist()).encode()
    url = f"{server.url}/invocations"
    head = {"X-Amzn-SageMaker-Target-Model": "colors.tar.gz", "Content-Type": "text/csv"}
    verbose = httpx.post(
        url, content=body, headers={**head, "Accept": "application/json; verbose=true"}
    )
    preds = verbose.json()["predictions"]
    assert [p["predicted_label"] for p in preds] == model.predict(q).tolist()
    dist, idx = model.kneighbors(q)
    assert [p["labels"] for p in preds] == names[idx].tolist()
    np.testing.assert_allclose([p["distances"] for p in preds], dist, rtol=1e-5)
    text = httpx.post(url, content=body, headers={**head, "Accept": "text/csv"}).text
    assert [r[0] for r in csv.reader(text.splitlines())] == model.predict(q).tolist()
    v2 = httpx.post(
        f"{server.url}/v2/models/colors.tar.gz/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [6, 3], "datatype": "FP64", "data": q.ravel().tolist()}
            ]
        },
    ).json()
    out = {o["name"]: o for o in v2["outputs"]}
    assert out["predicted_label"]["datatype"] == "BYTES"
    assert out["predicted_label"]["data"] == model.predict(q).tolist()
    assert out["labels"]["shape"] == [6, 4]
    described = server.host.describe("colors.tar.gz")
    assert described["task"] == "classifier" and described["family"] == "knn"


# --- what review found -----------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_sorted_training_points_and_a_large_k_equal_the_reference(metric):
    # points ever closer to the query: nearly every point enters the top k (a heap keeps the
    # search O(n log k)); the answer must still equal the reference's, ties included
    points = torch.arange(20_000, dtype=torch.float32)[:, None].repeat(1, 4)
    ranges = torch.tensor([[0, 20_000]])
    x = torch.full((3, 4), 30_000.0)
    x[1] = 10_000.5
    from mmhost.kernels.knn import knn_forward, knn_reference

    for k in (1, 64, 1024):
        got = knn_forward(x, torch.zeros(3, dtype=torch.int64), points, ranges, k, metric)
        want = knn_reference(x, torch.zeros(3, dtype=torch.int64), points, ranges, k, metric)
        assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


def test_a_verbose_answer_past_the_limit_is_refused_before_it_is_built(serve, store):
    x, y, _ = data(300, 3, seed=0)
    from_sklearn(KNeighborsClassifier(200).fit(x, y)).save(store / "big.tar.gz")
    server = serve(store=str(store), max_response_bytes=100_000)
    body = "".join(",".join(map(repr, r)) + "\n" for r in data(200, 3, seed=1)[0].tolist())
    url = f"{server.url}/invocations"
    head = {"X-Amzn-SageMaker-Target-Model": "big.tar.gz", "Content-Type": "text/csv"}
    assert httpx.post(url, content=body, headers=head).status_code == 200  # labels only
    verbose = httpx.post(
        url, content=body, headers={**head, "Accept": "application/json; verbose=true"}
    )
    assert verbose.status_code == 413 and "200 rows x 401 values" in verbose.text
    q = data(200, 3, seed=1)[0]
    v2 = httpx.post(
        f"{server.url}/v2/models/big.tar.gz/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [200, 3], "datatype": "FP64", "data": q.ravel().tolist()}
            ]
        },
    )
    assert v2.status_code == 413


def test_a_query_whose_distances_overflow_is_a_400_not_a_wrong_label(serve, store):
    x = np.array([[0.0], [1e6], [2e6]])
    from_sklearn(KNeighborsClassifier(1).fit(x, [0, 1, 2])).save(store / "line.tar.gz")
    from_sklearn(KNeighborsRegressor(1, metric="cosine").fit(np.eye(2), [1.0, 2.0])).save(
        store / "cos.tar.gz"
    )
    server = serve(store=str(store))
    url = f"{server.url}/invocations"

    def post(target: str, body: str) -> httpx.Response:
        head = {"X-Amzn-SageMaker-Target-Model": target, "Content-Type": "text/csv"}
        return httpx.post(url, content=body, headers=head)

    reply = post("line.tar.gz", "2e19\n")
    assert reply.status_code == 400 and "not finite" in reply.text
    # a large row's norm is taken in float64: the direction survives
    assert post("cos.tar.gz", "3e19,1e19\n").json()["predictions"][0]["predicted_label"] == 1.0
    assert httpx.get(f"{server.url}/ping").status_code == 200


def test_labels_and_classes_are_checked_as_served(tmp_path):
    x, y, _ = data(20, 2, seed=0)
    from_sklearn(KNeighborsRegressor(3).fit(x, x[:, 0])).save(tmp_path / "inf")
    params = safetensors.numpy.load_file(tmp_path / "inf" / "params.safetensors")
    params["labels"] = np.where(np.arange(20) == 0, 1e39, 1.0)  # float64: inf in float32
    safetensors.numpy.save_file(params, tmp_path / "inf" / "params.safetensors")
    with pytest.raises(ManifestError, match="labels hold NaN or inf"):
        read_artifact(tmp_path / "inf")
    art = from_sklearn(KNeighborsClassifier(3).fit(x, y))
    art.classes = list(reversed(art.classes))
    art.save(tmp_path / "desc")
    with pytest.raises(ManifestError, match="ascending"):
        read_artifact(tmp_path / "desc")
