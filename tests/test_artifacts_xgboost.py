"""XGBoost model files -> TreeEnsemble: the reference prediction equals xgboost's own, and bad
or unsupported files fail with UnsupportedModel (MalformedModel when corrupt), nothing else."""

from __future__ import annotations

import io
import json
import pickle
import sys
import tarfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmhost.artifacts.xgboost import (
    MAX_DEPTH,
    OBJECTIVES,
    MalformedModel,
    TreeEnsemble,
    predict_reference,
    read_xgboost,
)
from mmhost.convert.xgboost import read_model
from mmhost.errors import UnsupportedModel

xgb = pytest.importorskip("xgboost")  # a dev dependency; mmhost itself reads files without it

# The reference repeats XGBoost's float32 arithmetic in XGBoost's order (base score first,
# then each tree's leaf in file order), so margins are expected bit for bit. Only the links
# differ: numpy's float32 exp against the C library's expf, an ulp or two apart. rtol 1e-5
# is ~80 float32 ulps; atol 1e-6 covers probabilities near 0, where relative error means
# nothing. Class ids (multi:softmax) must be equal.
RTOL, ATOL = 1e-5, 1e-6


def data(n: int, f: int, seed: int = 0, nan: float = 0.15) -> np.ndarray:
    """(n, f) float32 normal noise with a fraction ``nan`` of NaN (missing) values."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f)).astype(np.float32)
    X[rng.random(X.shape) < nan] = np.nan
    return X


def target(objective: str, X: np.ndarray, seed: int = 0) -> np.ndarray:
    """A learnable target whose missingness matters: NaN in x0 counts as +1."""
    rng = np.random.default_rng(seed)
    z = np.where(np.isnan(X[:, 0]), 1.0, X[:, 0]) + np.nan_to_num(X[:, -1]) / 2
    if objective.startswith("multi:"):
        return np.digitize(z, [-0.5, 0.5]).astype(float)
    if objective in ("count:poisson", "reg:tweedie"):
        return rng.poisson(np.exp(z / 2)).astype(float)
    if objective.startswith(("binary:", "reg:logistic")):
        return (z + rng.normal(scale=0.3, size=len(z)) > 0).astype(float)
    return 3 * z + 1


def train(objective: str, X: np.ndarray, rounds: int = 10, **params: Any) -> Any:
    p = {"objective": objective, "max_depth": 4, "nthread": 1, "seed": 0, **params}
    if objective.startswith("multi:"):
        p["num_class"] = 3
    return xgb.train(p, xgb.DMatrix(X, target(objective, X)), rounds)


def expect_same(ens: TreeEnsemble, booster: Any, X: np.ndarray) -> None:
    want = booster.predict(xgb.DMatrix(X))
    got = predict_reference(ens, X)
    assert got.shape == want.shape
    if ens.objective == "multi:softmax":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    margin = booster.predict(xgb.DMatrix(X), output_margin=True)
    np.testing.assert_array_equal(predict_reference(ens, X, output_margin=True), margin)


@cache
def small_model() -> tuple[bytes, bytes]:
    """(JSON, UBJSON) of a 3-tree, depth-2 regression model on 4 features, with NaN."""
    booster = train("reg:squarederror", data(200, 4), rounds=3, max_depth=2)
    return bytes(booster.save_raw(raw_format="json")), bytes(booster.save_raw(raw_format="ubj"))


def edited(change: Callable[[dict[str, Any]], None]) -> bytes:
    """The small model's JSON after ``change(doc)`` edits it in place."""
    doc = json.loads(small_model()[0])
    change(doc)
    return json.dumps(doc).encode()


def tree0(doc: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = doc["learner"]["gradient_booster"]["model"]["trees"][0]
    return tree


def set_tree(doc: dict[str, Any], left: list[int], right: list[int], feature: list[int]) -> None:
    """Replace tree 0's shape; split thresholds 0, leaf values 1."""
    n = len(left)
    tree0(doc).update(
        left_children=left,
        right_children=right,
        split_indices=feature,
        split_conditions=[0.0 if c >= 0 else 1.0 for c in left],
        default_left=[0] * n,
        split_type=[0] * n,
        tree_param={"num_deleted": "0", "num_feature": "4", "num_nodes": str(n)},
    )


# --- agreement with xgboost -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "ubj"])
@pytest.mark.parametrize("objective", [o for o in OBJECTIVES if o != "reg:linear"])
def test_every_objective_predicts_like_xgboost(objective: str, fmt: str) -> None:
    X = data(300, 5)
    booster = train(objective, X)
    ens = read_xgboost(bytes(booster.save_raw(raw_format=fmt)))
    assert ens.objective == objective
    assert ens.num_class == (3 if objective.startswith("multi:") else 1)
    splits = ens.feature >= 0
    # trained with NaN, so both default directions occur and the NaN rows below test them
    assert ens.default_left[splits].any() and not ens.default_left[splits].all()
    expect_same(ens, booster, data(500, 5, seed=1))


def test_reg_linear_is_squarederror_by_its_old_name() -> None:
    X = data(200, 4)
    booster = train("reg:squarederror", X)
    doc = json.loads(bytes(booster.save_raw(raw_format="json")))
    doc["learner"]["objective"]["name"] = "reg:linear"  # as XGBoost < 1.0 named it
    ens = read_xgboost(json.dumps(doc).encode())
    assert ens.objective == "reg:linear" and ens.link == "identity"
    expect_same(ens, booster, X)


@pytest.mark.parametrize(
    ("depth", "trees", "features"),
    [(1, 1, 1), (2, 500, 7), (10, 20, 300), (6, 100, 33)],
)
def test_sizes_predict_like_xgboost(depth: int, trees: int, features: int) -> None:
    X = data(1000, features, seed=depth)
    # max_bin 32 (default 256) keeps the depth-10, 300-feature histograms quick to build
    booster = train(
        "reg:squarederror", X, rounds=trees, max_depth=depth, min_child_weight=0, max_bin=32
    )
    ens = read_model(booster)
    assert ens.num_trees == trees and ens.num_feature == features
    assert 1 <= ens.max_depth <= depth
    if depth <= 6:  # 1000 rows fill shallow trees to their full depth
        assert ens.max_depth == depth
    expect_same(ens, booster, data(300, features, seed=99))


def test_missing_values_take_the_default_direction() -> None:
    X = data(400, 3, nan=0.0)
    X[:200, 0] = np.nan  # x0 missing <=> target high: the root learns NaN -> right
    y = np.where(np.isnan(X[:, 0]), 5.0, -5.0)
    booster = xgb.train({"max_depth": 1, "nthread": 1}, xgb.DMatrix(X, y), 1)
    ens = read_xgboost(bytes(booster.save_raw(raw_format="ubj")))
    assert ens.feature[0] == 0 and not ens.default_left[0]
    rows = np.array([[np.nan, 0, 0], [ens.threshold[0], 0, 0], [-10, 0, 0]], np.float32)
    high, low = ens.value[ens.right[0]], ens.value[ens.left[0]]
    base = ens.base_score[0]
    # NaN goes right (default); x == threshold goes right (x < t is false); below goes left
    np.testing.assert_array_equal(
        predict_reference(ens, rows), [base + high, base + high, base + low]
    )
    expect_same(ens, booster, rows)


def test_multi_target_regression_gives_one_column_per_target() -> None:
    X = data(300, 4)
    Y = np.stack([np.nan_to_num(X[:, 0]), 2 * np.nan_to_num(X[:, 1])], axis=1)
    booster = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(X, Y), 5)
    ens = read_xgboost(bytes(booster.save_raw(raw_format="json")))
    assert ens.num_class == 2 and set(ens.tree_group.tolist()) == {0, 1}
    expect_same(ens, booster, data(100, 4, seed=3))


def test_random_forest_sums_parallel_trees() -> None:
    X = data(300, 4)
    booster = train("binary:logistic", X, rounds=2, num_parallel_tree=4, subsample=0.5)
    ens = read_model(booster)
    assert ens.num_trees == 8
    expect_same(ens, booster, X)


def test_sklearn_wrappers_paths_and_bytes(tmp_path: Path) -> None:
    X = data(300, 4)
    reg = xgb.XGBRegressor(n_estimators=5, max_depth=3, n_jobs=1)
    reg.fit(X, target("reg:squarederror", X))
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=1)
    clf.fit(X, target("binary:logistic", X).astype(int))
    np.testing.assert_allclose(predict_reference(read_model(reg), X), reg.predict(X), RTOL, ATOL)
    proba = predict_reference(read_model(clf), X)
    np.testing.assert_allclose(proba, clf.predict_proba(X)[:, 1], RTOL, ATOL)

    for name in ("m.json", "m.ubj"):
        reg.save_model(tmp_path / name)
        for source in (tmp_path / name, str(tmp_path / name), (tmp_path / name).read_bytes()):
            np.testing.assert_allclose(
                predict_reference(read_model(source), X), reg.predict(X), RTOL, ATOL
            )
    with pytest.raises(TypeError, match="list"):
        read_model([1, 2])


@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_sagemaker_model_tar_gz(tmp_path: Path, fmt: str) -> None:
    X = data(200, 4)
    booster = train("binary:logistic", X)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        raw = bytes(booster.save_raw(raw_format=fmt))
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with tarfile.open(archive) as tar:
        member = tar.extractfile("xgboost-model")
        assert member is not None
        expect_same(read_xgboost(member.read()), booster, X)


# A binary:logistic model as XGBoost 1.7.6 writes it (trimmed of fields mmhost does not read:
# loss_changes, sum_hessian, parents, base_weights): base_score as a scalar string, no
# iteration_indptr, and in each tree two pruned nodes (11, 12) left in the file, unreachable,
# with split index 2**31 - 1.
XGBOOST_1_7_MODEL = """{"learner":{"attributes":{},"feature_names":[],"feature_types":[],
"gradient_booster":{"model":{"gbtree_model_param":{"num_parallel_tree":"1","num_trees":"2",
"size_leaf_vector":"0"},"tree_info":[0,0],"trees":[{"categories":[],"categories_nodes":[],
"categories_segments":[],"categories_sizes":[],"default_left":[0,0,1,0,0,0,1,0,0,0,0,1,1],
"id":0,"left_children":[1,3,5,-1,7,9,-1,-1,-1,-1,-1,-1,-1],
"right_children":[2,4,6,-1,8,10,-1,-1,-1,-1,-1,-1,-1],"split_conditions":[-2.1484093E-1,
-6.682965E-1,1.6317706E-1,-5.4146343E-1,1.508699E-1,-1.6259989E-1,5.3924054E-1,-0E0,
-3.818182E-1,-9.4736844E-2,1.7647061E-1,5.5200005E-1,1.5E-1],
"split_indices":[0,0,0,0,1,1,2,0,0,0,0,2147483647,2147483647],
"split_type":[0,0,0,0,0,0,0,0,0,0,0,0,0],"tree_param":{"num_deleted":"2","num_feature":"3",
"num_nodes":"13","size_leaf_vector":"0"}},{"categories":[],"categories_nodes":[],
"categories_segments":[],"categories_sizes":[],"default_left":[0,0,1,0,0,1,1,0,0,0,0,1,1],
"id":1,"left_children":[1,3,5,-1,7,9,-1,-1,-1,-1,-1,-1,-1],
"right_children":[2,4,6,-1,8,10,-1,-1,-1,-1,-1,-1,-1],"split_conditions":[-2.1484093E-1,
-6.682965E-1,1.6317706E-1,-4.251542E-1,1.508699E-1,-4.951426E-2,4.1669527E-1,-0E0,
-2.97893E-1,1.331863E-1,-1.4313768E-1,4.3012846E-1,1.16738E-1],
"split_indices":[0,0,0,0,1,0,2,0,0,0,0,2147483647,2147483647],
"split_type":[0,0,0,0,0,0,0,0,0,0,0,0,0],"tree_param":{"num_deleted":"2","num_feature":"3",
"num_nodes":"13","size_leaf_vector":"0"}}]},"name":"gbtree"},
"learner_model_param":{"base_score":"5E-1","boost_from_average":"1","num_class":"0",
"num_feature":"3","num_target":"1"},"objective":{"name":"binary:logistic",
"reg_loss_param":{"scale_pos_weight":"1"}}},"version":[1,7,6]}"""


def test_xgboost_1_7_file_with_pruned_nodes() -> None:
    ens = read_xgboost(XGBOOST_1_7_MODEL.encode())
    assert ens.tree_offsets.tolist() == [0, 11, 22]  # 13 nodes each, 2 deleted
    assert ens.base_score.tolist() == [0.0]  # logit(0.5)
    rows = [[0.5, np.nan, 1], [-1, 0, 0], [np.nan, 2, -2], [0.1, -0.3, 0.7], [3, 3, 3]]
    X = np.array(rows, dtype=np.float32)
    # what xgboost 1.7.6 predicted for these rows when it wrote the file
    want = [0.72230732, 0.27555519, 0.57680154, 0.44081023, 0.72230732]
    np.testing.assert_allclose(predict_reference(ens, X), want, RTOL, ATOL)


@pytest.mark.parametrize(
    ("objective", "stored", "margin"),
    [
        ("binary:logistic", "5E-1", [0.0]),
        ("binary:logistic", "[2E-1]", [np.log(0.25)]),
        ("reg:logistic", 0.8, [np.log(4.0)]),
        ("binary:logitraw", "[3E-1]", [0.3]),
        ("count:poisson", "2E0", [np.log(2.0)]),
        ("reg:tweedie", "[5E-1]", [np.log(0.5)]),
        ("reg:squarederror", "-1.5", [-1.5]),
        ("multi:softprob", "5E-1", [0.5, 0.5, 0.5]),
        ("multi:softprob", "[1E-1,-2E-1,3E-1]", [0.1, -0.2, 0.3]),
    ],
)
def test_base_score_forms_become_margins(objective: str, stored: Any, margin: list[float]) -> None:
    X = data(200, 4)
    booster = train(objective, X, rounds=2)
    doc = json.loads(bytes(booster.save_raw(raw_format="json")))
    doc["learner"]["learner_model_param"]["base_score"] = stored
    raw = json.dumps(doc).encode()
    ens = read_xgboost(raw)
    np.testing.assert_allclose(ens.base_score, margin, rtol=1e-6, atol=1e-7)
    if isinstance(stored, str):  # xgboost itself reads the string forms: it agrees
        expect_same(ens, xgb.Booster(model_file=bytearray(raw)), X)


def test_layout() -> None:
    ens = read_xgboost(small_model()[1])
    for name, dtype in [
        ("feature", np.int32),
        ("threshold", np.float32),
        ("left", np.int32),
        ("right", np.int32),
        ("default_left", np.bool_),
        ("value", np.float32),
        ("tree_offsets", np.int64),
        ("tree_group", np.int32),
        ("base_score", np.float32),
    ]:
        assert getattr(ens, name).dtype == dtype, name
    m = len(ens.feature)
    assert ens.tree_offsets[0] == 0 and ens.tree_offsets[-1] == m
    size = np.repeat(np.diff(ens.tree_offsets), np.diff(ens.tree_offsets))  # (M,) tree size
    leaf = ens.feature < 0
    assert (ens.left[leaf] == -1).all() and (ens.right[leaf] == -1).all()
    assert ((ens.left[~leaf] > 0) & (ens.left[~leaf] < size[~leaf])).all()
    assert (ens.value[~leaf] == 0).all() and (ens.threshold[leaf] == 0).all()
    assert ens.nbytes == 21 * m + 8 * (ens.num_trees + 1) + 4 * ens.num_trees + 4


def test_predict_reference_follows_its_semantics_loop() -> None:
    """The vectorized walk equals the docstring's one-row loop."""
    booster = train("multi:softprob", data(300, 5), rounds=4)
    ens = read_model(booster)
    X = data(40, 5, seed=7)
    margin = np.tile(ens.base_score, (len(X), 1))
    for i, x in enumerate(X):
        for t in range(ens.num_trees):
            o, n = ens.tree_offsets[t], 0
            while ens.feature[o + n] >= 0:
                v = x[ens.feature[o + n]]
                go_left = ens.default_left[o + n] if np.isnan(v) else v < ens.threshold[o + n]
                n = ens.left[o + n] if go_left else ens.right[o + n]
            margin[i, ens.tree_group[t]] += ens.value[o + n]
    np.testing.assert_array_equal(predict_reference(ens, X, output_margin=True), margin)


# --- bad and unsupported files --------------------------------------------------------------


def test_truncated_json_is_malformed() -> None:
    raw = small_model()[0]
    for cut in range(1, len(raw), 7):
        with pytest.raises(MalformedModel, match="does not parse"):
            read_xgboost(raw[:cut])


def test_truncated_ubjson_is_malformed_at_every_cut() -> None:
    raw = small_model()[1]
    for cut in range(2, len(raw)):
        with pytest.raises(MalformedModel, match="UBJSON"):
            read_xgboost(raw[:cut])
    with pytest.raises(MalformedModel, match="trailing|follow the end"):
        read_xgboost(raw + b"Z")


def test_lying_ubjson_lengths_are_caught_before_allocating() -> None:
    raw = small_model()[1]
    at = raw.index(b"left_children") + len(b"left_children")
    assert raw[at : at + 5] == b"[$l#L"  # a typed int32 array; its int64 count follows
    huge = raw[: at + 5] + (2**62).to_bytes(8, "big") + raw[at + 13 :]
    with pytest.raises(MalformedModel, match="runs past the end"):
        read_xgboost(huge)
    negative = raw[: at + 5] + (-1).to_bytes(8, "big", signed=True) + raw[at + 13 :]
    with pytest.raises(MalformedModel, match="negative"):
        read_xgboost(negative)
    with pytest.raises(MalformedModel, match="nest deeper"):
        read_xgboost(b"{L" + (1).to_bytes(8, "big") + b"a" + b"[" * 100_000)


def test_json_nested_too_deep_is_malformed() -> None:
    with pytest.raises(MalformedModel):
        read_xgboost(b"{" + b'"a":[' * 100_000)


def test_cycle_through_the_root() -> None:
    def change(doc: dict[str, Any]) -> None:
        tree0(doc)["right_children"][1] = 0

    with pytest.raises(MalformedModel, match=r"tree 0: the root is a child of node 1"):
        read_xgboost(edited(change))


def test_node_with_two_parents() -> None:
    def change(doc: dict[str, Any]) -> None:
        tree0(doc)["left_children"][2] = tree0(doc)["left_children"][1]

    with pytest.raises(MalformedModel, match=r"tree 0: node \d+ is a child of nodes \[1, 2\]"):
        read_xgboost(edited(change))


def test_cycle_away_from_the_root() -> None:
    # 0 -> (3, 4) leaves; 1 -> (2, 5) and 2 -> (1, 6) loop, so every node has one parent
    def change(doc: dict[str, Any]) -> None:
        set_tree(doc, [3, 2, 1, -1, -1, -1, -1], [4, 5, 6, -1, -1, -1, -1], [0] * 7)

    with pytest.raises(MalformedModel, match="tree 0: 4 nodes .* not reachable from the root"):
        read_xgboost(edited(change))


def test_child_out_of_range() -> None:
    def change(doc: dict[str, Any]) -> None:
        tree0(doc)["right_children"][0] = 99

    n = len(tree0(json.loads(small_model()[0]))["left_children"])
    match = rf"tree 0, node 0: right child 99 is out of range \(the tree has {n} nodes\)"
    with pytest.raises(MalformedModel, match=match):
        read_xgboost(edited(change))


def test_leaf_with_one_child() -> None:
    def change(doc: dict[str, Any]) -> None:
        tree = tree0(doc)
        leaf = tree["left_children"].index(-1)
        tree["right_children"][leaf] = 1

    with pytest.raises(MalformedModel, match="right child 1 is not -1 at a leaf"):
        read_xgboost(edited(change))


def test_split_feature_out_of_range() -> None:
    def change(doc: dict[str, Any]) -> None:
        tree0(doc)["split_indices"][0] = 4

    match = r"tree 0, node 0: split feature 4 is out of range \(the model has 4 features\)"
    with pytest.raises(MalformedModel, match=match):
        read_xgboost(edited(change))


def test_nan_threshold() -> None:
    def change(doc: dict[str, Any]) -> None:
        tree0(doc)["split_conditions"][0] = float("nan")

    with pytest.raises(MalformedModel, match="tree 0, node 0: the split threshold is NaN"):
        read_xgboost(edited(change))


def test_array_length_mismatch() -> None:
    def change(doc: dict[str, Any]) -> None:
        tree0(doc)["default_left"].pop()

    with pytest.raises(MalformedModel, match="tree 0: default_left has .* entries"):
        read_xgboost(edited(change))


def test_wrong_field_types() -> None:
    def strings(doc: dict[str, Any]) -> None:
        tree0(doc)["left_children"] = ["1", "2"]

    def trees(doc: dict[str, Any]) -> None:
        doc["learner"]["gradient_booster"]["model"]["trees"] = {}

    def count(doc: dict[str, Any]) -> None:
        doc["learner"]["learner_model_param"]["num_feature"] = "-3"

    for change, match in [
        (strings, "left_children is not a flat list of numbers"),
        (trees, "trees is a dict, not a list"),
        (count, "num_feature is '-3', not a count"),
    ]:
        with pytest.raises(MalformedModel, match=match):
            read_xgboost(edited(change))


def test_tree_deeper_than_the_limit() -> None:
    depth = MAX_DEPTH + 1  # a chain: split i -> (split i + 1, leaf depth + 1 + i)
    n = 2 * depth + 1

    def change(doc: dict[str, Any]) -> None:
        left = [i + 1 for i in range(depth)] + [-1] * (depth + 1)
        right = [depth + 1 + i for i in range(depth)] + [-1] * (depth + 1)
        set_tree(doc, left, right, [0] * n)

    with pytest.raises(UnsupportedModel, match=f"tree 0 is deeper than {MAX_DEPTH} levels"):
        read_xgboost(edited(change))


def test_categorical_features_are_unsupported() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"a": rng.normal(size=200), "c": pd.Categorical(rng.choice(["x", "y", "z"], 200))}
    )
    y = (df["c"] == "y") + df["a"]
    dtrain = xgb.DMatrix(df, y, enable_categorical=True)
    raw = bytes(xgb.train({"max_depth": 2, "nthread": 1}, dtrain, 2).save_raw(raw_format="json"))
    with pytest.raises(UnsupportedModel, match="feature 1 is categorical"):
        read_xgboost(raw)
    doc = json.loads(raw)
    doc["learner"]["feature_types"] = []  # the splits alone are refused too
    with pytest.raises(UnsupportedModel, match=r"tree \d+ has categorical splits"):
        read_xgboost(json.dumps(doc).encode())


@pytest.mark.parametrize("booster", ["dart", "gblinear"])
def test_dart_and_gblinear_are_unsupported(booster: str) -> None:
    X = data(100, 3, nan=0)
    model = xgb.train({"booster": booster, "nthread": 1}, xgb.DMatrix(X, X[:, 1]), 2)
    with pytest.raises(UnsupportedModel, match=f"booster '{booster}' is not supported"):
        read_xgboost(bytes(model.save_raw(raw_format="ubj")))


@pytest.mark.parametrize("objective", ["reg:pseudohubererror", "rank:pairwise", "reg:gamma"])
def test_unsupported_objective_is_named(objective: str) -> None:
    X = data(100, 3, nan=0)
    dtrain = xgb.DMatrix(X, np.abs(X[:, 0]) + 0.1)
    if objective.startswith("rank:"):
        dtrain.set_group([50, 50])
    model = xgb.train({"objective": objective, "nthread": 1}, dtrain, 2)
    with pytest.raises(UnsupportedModel, match=f"objective '{objective}' is not supported"):
        read_xgboost(bytes(model.save_raw(raw_format="json")))


def test_vector_leaf_trees_are_unsupported() -> None:
    X = data(100, 3, nan=0)
    Y = np.stack([X[:, 0], X[:, 1]], axis=1)
    params = {"multi_strategy": "multi_output_tree", "tree_method": "hist", "nthread": 1}
    model = xgb.train(params, xgb.DMatrix(X, Y), 2)
    with pytest.raises(UnsupportedModel, match="tree 0 has vector leaves"):
        read_xgboost(bytes(model.save_raw(raw_format="ubj")))


def test_a_model_without_trees_is_unsupported() -> None:
    X = data(50, 3)
    booster = train("binary:logistic", X, rounds=0)
    with pytest.raises(UnsupportedModel, match="has no trees"):
        read_model(booster)


def test_pickles_are_refused_unread() -> None:
    booster = train("reg:squarederror", data(50, 3), rounds=1)
    with pytest.raises(UnsupportedModel, match="pickle; mmhost never unpickles"):
        read_xgboost(pickle.dumps(booster))


def test_legacy_binary_is_refused_unread_and_converted_offline_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    legacy = b"binf" + bytes(200)  # the header of XGBoost's removed binary format
    with pytest.raises(UnsupportedModel, match="convert it offline"):
        read_xgboost(legacy)  # what the server reads with: never native code
    with pytest.raises(UnsupportedModel, match=f"xgboost {xgb.__version__} cannot read it"):
        read_model(legacy)
    monkeypatch.setitem(sys.modules, "xgboost", None)  # as if xgboost were not installed
    with pytest.raises(UnsupportedModel, match="install xgboost"):
        read_model(legacy)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10**6),
)
def test_fuzz_ubjson_mutations(edits: list[tuple[int, int]], cut: int | None) -> None:
    """Mutated bytes of a real model parse to a usable ensemble or raise UnsupportedModel."""
    raw = bytearray(small_model()[1])
    for at, byte in edits:
        raw[at % len(raw)] = byte
    if cut is not None:
        raw = raw[: cut % len(raw)]
    try:
        ens = read_xgboost(bytes(raw))
    except UnsupportedModel:
        return
    out = predict_reference(ens, data(8, ens.num_feature))
    assert out.shape[0] == 8


@pytest.mark.parametrize("p", [0.27255628, 0.41557786, 0.70846814])
def test_base_margins_round_as_xgboosts_logf(p):
    """-logf(1/p - 1) rounds differently from a correctly rounded log at these base scores (each
    fails without libm), so margins stay bit-identical only with the C library's logf."""
    import xgboost as xgb

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(float)
    params = {"objective": "binary:logistic", "base_score": p, "max_depth": 2, "nthread": 1}
    bst = xgb.train(params, xgb.DMatrix(x, y), 2)
    ens = read_model(bst)
    want = bst.predict(xgb.DMatrix(x), output_margin=True)
    np.testing.assert_array_equal(predict_reference(ens, x, output_margin=True).ravel(), want)


def test_from_xgboost_is_an_artifact_that_saves_and_serves(tmp_path: Path) -> None:
    """``mmhost.convert.from_xgboost`` returns an mmhost/1 ``Artifact``: its columns named as the
    model was trained, NaN missing, the objective's task; saved, a Host serves XGBoost's answers."""
    from mmhost import Host
    from mmhost.convert import from_xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    clf = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(
        pd.DataFrame(X, columns=["a", "b", "c"]), y
    )
    art = from_xgboost(clf)
    assert (art.task, art.classes, [c.name for c in art.inputs]) == (
        "binary_classifier",
        [0, 1],
        ["a", "b", "c"],
    )
    art.save(tmp_path / "store" / "m.tar.gz")
    X[::7, 1] = np.nan
    with Host(store=str(tmp_path / "store")) as h:
        got = h.predict("m.tar.gz", X)
    np.testing.assert_allclose(
        got, clf.predict_proba(pd.DataFrame(X, columns=["a", "b", "c"]))[:, 1], rtol=1e-5, atol=1e-6
    )
