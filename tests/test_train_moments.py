"""A regressor fitted from each entity's moments (``mmhost/train/moments.py``): the RMSE it
reports from the moments equals the RMSE of its own predictions (rtol 1e-9); rows of an entity
scattered through the table fit as they do grouped (rtol 1e-9); missing numbers take the
training mean and unseen categories encode as all zeros, as the served model encodes them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmhost.errors import ValidationError
from mmhost.train import fit_table, train_linear_learner
from mmhost.train.data import Table


def _table(rng: np.random.Generator, sizes: list[int], shuffle: bool = False) -> Table:
    n = sum(sizes)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    x1 = rng.normal(size=n) * 4 + 100
    x2 = rng.normal(size=n)
    x2[rng.random(n) < 0.1] = np.nan
    color = rng.choice(["red", "green", "blue"], n).astype(object)
    y = 3 * np.nan_to_num(x1) - 2 * np.nan_to_num(x2) + (color == "red") * 5 + owner * 10
    y = y + rng.normal(size=n)
    order = rng.permutation(n) if shuffle else np.arange(n)
    names = np.array([f"e{i}" for i in owner], dtype=object)
    return Table(
        names[order], y[order], {"x1": x1[order], "x2": x2[order], "color": color[order]},
        np.zeros(n, bool), [("memory", 0, n)],
    )  # fmt: skip


def test_the_rmse_from_moments_is_the_rmse_of_the_predictions():
    rng = np.random.default_rng(0)
    table = _table(rng, [3, 40, 400, 2_000])
    # the last entity's own holdout rows (as a val/ folder gives them), one of them with a
    # category no training row has: encoded as no category at all
    table.holdout[-600:] = True
    table.features["color"][-1] = "violet"
    report = fit_table(table, wd=0.01, holdout_fraction=0.3, normalize_data=True)
    assert report.preprocessor is not None
    pre = report.preprocessor.preprocessing
    raw = np.stack([table.features["x1"], table.features["x2"]], axis=1)
    for r in report.entities:
        assert r.status == "trained" and r.holdout_rows == (
            600 if r.entity == "e3" else round(0.3 * r.rows)
        )
        rows = np.flatnonzero(table.entity == r.entity)
        # the served encoding: standardized numbers (a missing one: the mean), one-hot colors
        cats = report.preprocessor.inputs[2].categories
        z = np.zeros((len(rows), 2 + len(cats)))
        z[:, :2] = raw[rows] * pre.scale[:2] + pre.shift[:2]
        z[:, :2] = np.where(np.isnan(z[:, :2]), 0.0, z[:, :2])
        for k, c in enumerate(cats):
            z[:, 2 + k] = table.features["color"][rows] == c
        err = z @ r.coef[0] + r.intercept[0] - table.label[rows]
        total = np.sqrt(np.mean(err**2))
        train = r.train_metric**2 * r.train_rows
        held = (r.holdout_metric or 0.0) ** 2 * r.holdout_rows
        np.testing.assert_allclose(np.sqrt((train + held) / r.rows), total, rtol=1e-9)
    assert report.preprocessor.inputs[1].missing is not None  # x2 has NaN: the mean fills it
    assert "violet" not in report.preprocessor.inputs[2].categories


def test_rows_scattered_through_the_table_fit_as_grouped_rows_do():
    hp = {"wd": 0.05, "holdout_fraction": 0.0}
    grouped = fit_table(_table(np.random.default_rng(1), [5, 50, 500]), **hp)
    scattered = fit_table(_table(np.random.default_rng(1), [5, 50, 500], shuffle=True), **hp)
    for a, b in zip(grouped.entities, scattered.entities, strict=True):
        assert a.entity == b.entity and a.rows == b.rows
        np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a.intercept, b.intercept, rtol=1e-9)


def test_a_categorical_entity_column_is_taken_as_it_is():
    table = _table(np.random.default_rng(2), [30, 60])
    as_text = fit_table(table, wd=0.01, holdout_fraction=0.0)
    # a table reader's dictionary encoding, its categories in another order than sorted
    table.entity = pd.Categorical(table.entity, categories=["e1", "e0"])
    as_codes = fit_table(table, wd=0.01, holdout_fraction=0.0)
    assert [e.entity for e in as_codes.entities] == ["e0", "e1"]
    for a, b in zip(as_text.entities, as_codes.entities, strict=True):
        np.testing.assert_array_equal(a.coef, b.coef)


def test_a_table_of_categories_only_is_fitted():
    rng = np.random.default_rng(3)
    n = 600
    color = rng.choice(["red", "green", "blue"], n).astype(object)
    y = (color == "red") * 2.0 + rng.normal(size=n)
    entity = np.repeat(np.array(["a", "b"], dtype=object), n // 2)
    table = Table(entity, y, {"color": color}, np.zeros(n, bool), [("memory", 0, n)])
    for task, label in (("regressor", y), ("binary_classifier", (y > 1).astype(float))):
        table.label = label
        report = fit_table(table, predictor_type=task, wd=0.01, holdout_fraction=0.25)
        for r in report.entities:
            assert r.status == "trained" and r.coef is not None and r.coef.shape == (1, 3)
            assert r.holdout_metric is not None


def test_a_label_far_from_zero_keeps_its_rmse():
    # a timestamp-like label: its square sums would cancel to noise without the label's shift
    table = _table(np.random.default_rng(5), [50, 400])
    table.label = table.label + 1.7e9
    report = fit_table(table, wd=0.01, holdout_fraction=0.2, normalize_data=False)
    pre = report.preprocessor
    assert pre is not None
    raw = np.stack([table.features["x1"], table.features["x2"]], axis=1)
    for r in report.entities:
        rows = np.flatnonzero(table.entity == r.entity)
        cats = pre.inputs[2].categories
        z = np.zeros((len(rows), 2 + len(cats)))
        z[:, :2] = np.nan_to_num(
            raw[rows] * pre.preprocessing.scale[:2] + pre.preprocessing.shift[:2]
        )
        for k, c in enumerate(cats):
            z[:, 2 + k] = table.features["color"][rows] == c
        err = z @ r.coef[0] + r.intercept[0] - table.label[rows]
        train = r.train_metric**2 * r.train_rows + r.holdout_metric**2 * r.holdout_rows
        np.testing.assert_allclose(np.sqrt(train / r.rows), np.sqrt(np.mean(err**2)), rtol=1e-6)
        assert 0.5 < r.train_metric < 2  # the noise's deviation, 1


def test_a_number_missing_in_holdout_rows_only_gets_the_mean_fill():
    table = _table(np.random.default_rng(6), [200])
    table.features["x2"] = np.nan_to_num(table.features["x2"])  # complete...
    table.holdout[-20:] = True
    table.features["x1"][-3] = np.nan  # ...but for one holdout cell of x1
    report = fit_table(table, wd=0.01)
    inputs = {c.name: c for c in report.preprocessor.inputs}
    assert inputs["x1"].missing is not None and inputs["x2"].missing is None


def test_unused_entity_categories_are_no_entities_and_a_batch_of_none_is_refused():
    table = _table(np.random.default_rng(7), [30, 60])
    table.entity = pd.Categorical(table.entity, categories=["e0", "e1", "gone"])
    report = fit_table(table, wd=0.01, holdout_fraction=0.0)
    assert [e.entity for e in report.entities] == ["e0", "e1"]
    with pytest.raises(ValidationError, match="batch_entities must be >= 1, not 0"):
        fit_table(table, batch_entities=0)


def test_an_empty_entity_cell_is_named_by_its_row(tmp_path):
    (tmp_path / "t.csv").write_text("city,price,x\na,1.0,2.0\n,2.0,3.0\na,3.0,1.0\n")
    with pytest.raises(ValidationError, match="t.csv, row 2: the entity column has no value"):
        train_linear_learner(
            str(tmp_path / "t.csv"), str(tmp_path / "out"), entity_column="city",
            label_column="price",
        )  # fmt: skip
