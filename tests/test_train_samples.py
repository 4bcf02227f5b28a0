"""``mmhost train knn`` and ``mmhost train rcf``: each entity's model equal to what
scikit-learn's k-NN and AWS's RCF library (krcf) make of the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mmhost import Host
from mmhost.artifacts import read_artifact
from mmhost.cli import main
from mmhost.convert import fit_rcf
from mmhost.errors import ValidationError
from mmhost.train import train_knn, train_rcf


def _frame(sizes: list[int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for e, n in enumerate(sizes):
        x = rng.normal(size=(n, 2)) * [1.0, 4.0]
        porch = rng.choice(["y", "n"], n)
        label = ((x[:, 0] > 0) + (porch == "y")).astype(float)
        parts.append(pd.DataFrame({"city": f"c{e}", "label": label, "a": x[:, 0], "b": x[:, 1],
                                   "porch": porch}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("predictor_type", ["classifier", "regressor"])
def test_knn_entities_answer_as_scikit_learns_k_neighbors(tmp_path, predictor_type):
    df = _frame([40, 300, 3])
    df.to_csv(tmp_path / "t.csv", index=False)
    report = train_knn(
        str(tmp_path / "t.csv"), str(tmp_path / "out"), k=5, sample_size=100,
        predictor_type=predictor_type, entity_column="city", label_column="label",
    )  # fmt: skip
    got = report.by_entity()
    assert got["c2"].status == "skipped" and "fewer than 5" in got["c2"].reason
    pre = ColumnTransformer(
        [("n", StandardScaler(), ["a", "b"]), ("c", OneHotEncoder(), ["porch"])]
    )
    Z = pre.fit_transform(df)
    queries = _frame([50], seed=9)
    Zq = pre.transform(queries)
    with Host(store=str(tmp_path / "out")) as host:
        for city in ("c0", "c1"):
            art = read_artifact(tmp_path / "out" / city / f"{city}.tar.gz")
            points = art.params["points"].astype(np.float64)
            assert len(points) == min(100, (df.city == city).sum())
            m = (df.city == city).to_numpy()
            gap = np.abs(points[:, None, :] - Z[m][None, :, :]).max(2).min(1)
            assert gap.max() < 1e-5  # every point is one of the entity's rows
            labels = art.params["labels"].astype(np.float64)
            if predictor_type == "classifier":
                labels = np.array(art.classes, float)[labels.astype(int)]
                est = KNeighborsClassifier(5).fit(points, labels)
            else:
                est = KNeighborsRegressor(5).fit(points, labels)
            x = queries[["a", "b", "porch"]].to_numpy(object)
            got = np.asarray(host.predict(f"{city}/{city}.tar.gz", x), np.float64)
            np.testing.assert_allclose(got, est.predict(Zq), rtol=1e-5)


def test_rcf_entities_score_as_the_library_does(tmp_path):
    df = _frame([64, 200])
    df.to_csv(tmp_path / "t.csv", index=False)
    argv = ["train", "rcf", "--data", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out"),
            "--entity-column", "city", "--label-column", "label", "--feature-columns", "a,b",
            "--num-trees", "20", "--num-samples-per-tree", "32", "--seed", "3",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    queries = np.array([[0.0, 0.0], [5.0, -30.0], [0.5, 2.0]])
    with Host(store=str(tmp_path / "out")) as host:
        for city in ("c0", "c1"):
            got = host.predict(f"{city}/{city}.tar.gz", queries)
            art = read_artifact(tmp_path / "out" / city / f"{city}.tar.gz")
            assert art.algorithm == "rcf" and [c.name for c in art.inputs] == ["a", "b"]
            assert got[1] > got[0]  # far outside the data: more anomalous
    # the same rows and seed through the library's own path give the same forest
    rows = df[df.city == "c0"][["a", "b"]].to_numpy()
    again = fit_rcf(rows, 20, 32, int(np.random.default_rng([3, 1]).integers(2**31)), ["a", "b"])
    mine = read_artifact(tmp_path / "out" / "c0" / "c0.tar.gz")
    for name, value in again.params.items():
        np.testing.assert_array_equal(mine.params[name], value)


def test_rcf_refuses_a_categorical_column(tmp_path):
    df = _frame([64])
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValidationError, match="column 'porch' is not numeric"):
        train_rcf(str(tmp_path / "t.csv"), str(tmp_path / "o"), entity_column="city")
