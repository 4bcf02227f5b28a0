"""scikit-learn -> artifact: every supported step, and clear errors for the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import ATOL_PROBA, RTOL_PRICE, house_pipeline
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDRegressor,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from mmhost.artifacts import read_artifact
from mmhost.convert import from_sklearn
from mmhost.errors import UnsupportedModel
from mmhost.tools.houses import CATEGORICAL, COLUMNS, NUMERIC, houses

REGRESSORS = [
    LinearRegression(),
    Ridge(alpha=0.5),
    Lasso(alpha=10.0),
    ElasticNet(alpha=0.1),
    SGDRegressor(max_iter=2000, random_state=0),
]


def frame(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    X, y = houses(n, seed)
    df = pd.DataFrame(X, columns=COLUMNS)
    df[NUMERIC] = df[NUMERIC].astype(float)
    return df, y


def predict_via_artifact(host_factory, tmp_path, estimator, rows, columns=None, name="m"):
    from_sklearn(estimator, columns).save(tmp_path / "store" / f"{name}.tar.gz")
    h = host_factory(store=str(tmp_path / "store"))
    return h.predict(f"{name}.tar.gz", rows)


@pytest.mark.parametrize("reg", REGRESSORS, ids=lambda r: type(r).__name__)
def test_regressors_behind_a_pandas_pipeline(reg, host_factory, tmp_path):
    df, y = frame()
    pre = ColumnTransformer(
        [("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(), CATEGORICAL)]
    )
    pipe = Pipeline([("pre", pre), ("reg", reg)]).fit(df, y / 1e5)
    got = predict_via_artifact(host_factory, tmp_path, pipe, df.values.tolist()[:50])
    np.testing.assert_allclose(got, pipe.predict(df.iloc[:50]), rtol=RTOL_PRICE, atol=1e-5)


def test_binary_and_multinomial_logistic(host_factory, tmp_path):
    df, y = frame(400)
    pre = ColumnTransformer(
        [("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(), CATEGORICAL)]
    )
    for k in (2, 4):
        labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, k + 1)[1:-1]))
        classes = np.array(["low", "mid", "high", "top"])[:k][labels]
        pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=2000))]).fit(df, classes)
        got = predict_via_artifact(host_factory, tmp_path, pipe, df.values.tolist(), name=f"c{k}")
        want = pipe.predict_proba(df)
        want = want[:, 1] if k == 2 else want
        np.testing.assert_allclose(got, want, atol=ATOL_PROBA)


def test_artifact_records_schema_and_classes(tmp_path):
    df, y = frame()
    pipe = make_pipeline(
        ColumnTransformer(
            [("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(), CATEGORICAL)]
        ),
        LogisticRegression(),
    ).fit(df, y > y.mean())
    from_sklearn(pipe).save(tmp_path / "a")
    art = read_artifact(tmp_path / "a")
    assert [c.name for c in art.inputs] == COLUMNS
    assert art.inputs[6].type == "category" and art.inputs[6].categories == ("n", "y")
    assert art.task == "binary_classifier" and art.classes == [False, True]
    assert art.preprocessing.n_features == 10


@pytest.mark.filterwarnings("ignore:Found unknown categories")
def test_imputer_explicit_categories_ignore_and_drop(host_factory, tmp_path):
    df, y = frame(300)
    df.loc[::7, "square_feet"] = np.nan
    df.loc[::5, "deck"] = np.nan
    num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    cat = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="n"),
        OneHotEncoder(
            categories=[["n", "y"], ["n", "y", "x"]], handle_unknown="ignore", drop="first"
        ),
    )
    pipe = Pipeline(
        [
            ("pre", ColumnTransformer([("num", num, NUMERIC), ("cat", cat, CATEGORICAL)])),
            ("reg", Ridge()),
        ]
    ).fit(df, y)
    rows = df.values.tolist()
    rows[0][7] = "never-seen"  # handle_unknown=ignore: all indicators off
    test = pd.DataFrame(rows, columns=COLUMNS)
    got = predict_via_artifact(host_factory, tmp_path, pipe, rows)
    np.testing.assert_allclose(got, pipe.predict(test), rtol=RTOL_PRICE)


def test_imputer_mean_and_passthrough_remainder(host_factory, tmp_path):
    X = np.random.default_rng(1).normal(size=(100, 4))
    y = X @ [1.0, 2.0, -1.0, 0.5] + 3
    X[::3, 1] = np.nan
    pipe = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [("imp", SimpleImputer(strategy="mean"), [1])], remainder="passthrough"
                ),
            ),
            ("reg", LinearRegression()),
        ]
    ).fit(X, y)
    got = predict_via_artifact(host_factory, tmp_path, pipe, X)
    np.testing.assert_allclose(got, pipe.predict(X), rtol=1e-5, atol=1e-4)


def test_bare_estimator_on_numeric_columns(host_factory, tmp_path):
    X = np.random.default_rng(2).normal(size=(64, 7))
    reg = LinearRegression().fit(X, X @ np.arange(7.0) - 2)
    got = predict_via_artifact(host_factory, tmp_path, reg, X)
    np.testing.assert_allclose(got, reg.predict(X), rtol=1e-5, atol=1e-4)


def test_fitted_transformer_is_a_preprocessor_artifact(tmp_path):
    pipe = house_pipeline()
    art = from_sklearn(pipe.named_steps["pre"])
    assert art.kind == "preprocessor" and art.preprocessing.n_features == 10
    art.save(tmp_path / "pre.tar.gz")
    assert read_artifact(tmp_path / "pre.tar.gz").kind == "preprocessor"


@pytest.mark.parametrize(
    "step,name",
    [
        (MinMaxScaler(), "MinMaxScaler"),
        (RandomForestRegressor(n_estimators=2), "RandomForestRegressor"),
    ],
)
def test_unsupported_step_is_named(step, name):
    X = np.random.default_rng(0).normal(size=(20, 3))
    pipe = make_pipeline(step, LinearRegression()) if name != "RandomForestRegressor" else step
    pipe.fit(X, X[:, 0])
    with pytest.raises(UnsupportedModel, match=name):
        from_sklearn(pipe)


def test_multi_target_regression_is_refused():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(UnsupportedModel, match="targets"):
        from_sklearn(LinearRegression().fit(X, X[:, :2]))


def test_columns_must_match_fit():
    with pytest.raises(UnsupportedModel, match="3 columns given"):
        from_sklearn(house_pipeline(), ["a", "b", "c"])
