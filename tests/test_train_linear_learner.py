"""``mmhost train linear-learner``: every entity's model equal to scikit-learn's fit of that
entity alone with the matching penalty (``mmhost/train/solvers.py`` states the mapping), from
every data layout, resumable after a killed run, and served end to end.

Tolerances: regressors (closed form, coordinate descent to 1e-12) rtol 1e-6 / atol 1e-8 on the
coefficients; classifiers (scikit-learn's lbfgs stops at its own tolerance) atol 1e-5 on the
coefficients and 1e-6 on the probabilities.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import runtime_client
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mmhost import Host
from mmhost.artifacts import read_artifact
from mmhost.cli import main
from mmhost.errors import ValidationError
from mmhost.train import train_linear_learner

NUMERIC, CATEGORICAL = ["x1", "x2", "x3"], ["porch"]
SIZES = [1, 2, 5, 50, 500, 10_000]


def _frame(sizes: list[int], task: str = "regressor", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for e, n in enumerate(sizes):
        x = rng.normal(size=(n, 3)) * [1.0, 3.0, 0.5] + [0.0, 1.0, -2.0]
        porch = rng.choice(["y", "n", "maybe"], n)
        s = x @ rng.normal(size=3) + (porch == "y") * 1.5 + rng.normal(size=n) * 0.3 + e
        if task == "binary_classifier":
            label = (s > np.median(s)).astype(int) if n > 1 else np.zeros(n, int)
        elif task == "multiclass_classifier":
            label = np.digitize(s, np.quantile(s, [1 / 3, 2 / 3])) if n > 2 else np.zeros(n, int)
        else:
            label = 1000 * s
        parts.append(
            pd.DataFrame(
                {"city": f"c{e:02d}", "price": label, "x1": x[:, 0], "x2": x[:, 1],
                 "x3": x[:, 2], "porch": porch}
            )
        )  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def _encoded(df: pd.DataFrame) -> np.ndarray:
    """The shared preprocessing, as scikit-learn computes it (fitted on every row)."""
    pre = ColumnTransformer(
        [("n", StandardScaler(), NUMERIC), ("c", OneHotEncoder(), CATEGORICAL)]
    ).fit(df)
    return pre.transform(df)


def _train(df: pd.DataFrame, tmp_path, **hp) -> dict:
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    hp.setdefault("holdout_fraction", 0.0)
    report = train_linear_learner(
        str(path), str(tmp_path / "out"), entity_column="city", label_column="price", **hp
    )
    return report.by_entity()


def _sklearn_regressor(Z: np.ndarray, y: np.ndarray, hp: dict) -> tuple[np.ndarray, float]:
    n, wd, l1 = len(y), hp.get("wd", 0.0), hp.get("l1", 0.0)
    fit_intercept = hp.get("fit_intercept", True)
    mu = Z.mean(0) if fit_intercept else np.zeros(Z.shape[1])
    sd = np.ones(Z.shape[1])
    if hp.get("normalize_data"):
        sd = np.sqrt(((Z - mu) ** 2).mean(0))
        sd[sd == 0] = 1
    Zn = (Z - mu) / sd
    ymu, ysd = (y.mean() if fit_intercept else 0.0), 1.0
    if hp.get("normalize_label"):
        ysd = float(np.sqrt(((y - ymu) ** 2).mean())) or 1.0
    yn = (y - ymu) / ysd
    if l1 and wd:
        a = wd + l1 / 2
        est = ElasticNet(alpha=a, l1_ratio=(l1 / 2) / a, fit_intercept=fit_intercept,
                         tol=1e-14, max_iter=200_000)  # fmt: skip
    elif l1:
        est = Lasso(alpha=l1 / 2, fit_intercept=fit_intercept, tol=1e-14, max_iter=200_000)
    elif wd:
        est = Ridge(alpha=n * wd, fit_intercept=fit_intercept)
    else:
        est = LinearRegression(fit_intercept=fit_intercept)
    est.fit(Zn, yn)
    w = est.coef_ * ysd / sd
    b = (est.intercept_ * ysd + ymu) - w @ mu
    return w, float(b)


REGRESSORS = {
    "ridge": {"wd": 0.01},
    "ridge, no intercept": {"wd": 0.01, "fit_intercept": False},
    "ridge, normalize_data": {"wd": 0.05, "normalize_data": True},
    "ridge, normalize_label": {"wd": 0.05, "normalize_label": True},
    "lasso": {"l1": 0.2},
    "lasso, normalize_data and label": {
        "l1": 0.02,
        "normalize_data": True,
        "normalize_label": True,
    },
    "elastic net": {"wd": 0.01, "l1": 0.1},
    "least squares": {},
}


@pytest.mark.parametrize("case", REGRESSORS, ids=list(REGRESSORS))
def test_regressors_equal_scikit_learn_per_entity(case, tmp_path):
    hp = {"normalize_data": False, "normalize_label": False, **REGRESSORS[case]}
    df = _frame(SIZES)
    got = _train(df, tmp_path, **hp)
    Z = _encoded(df)
    for city, r in got.items():
        m = (df.city == city).to_numpy()
        w, b = _sklearn_regressor(Z[m], df.price.to_numpy()[m], hp)
        assert r.status == "trained" and r.rows == m.sum()
        np.testing.assert_allclose(r.coef[0], w, rtol=1e-6, atol=1e-8 * max(1, abs(b)))
        np.testing.assert_allclose(r.intercept[0], b, rtol=1e-6, atol=1e-6)


def test_a_rank_deficient_entity_gets_the_minimum_norm_least_squares_fit(tmp_path):
    df = _frame([40, 60])
    df.loc[df.city == "c01", "x2"] = 7.0  # a constant column: its Gram matrix is singular
    df.loc[df.city == "c01", "x3"] = 2 * df.loc[df.city == "c01", "x1"]  # and a collinear one
    got = _train(df, tmp_path, normalize_data=False, normalize_label=False)
    Z = _encoded(df)
    m = (df.city == "c01").to_numpy()
    want = LinearRegression().fit(Z[m], df.price[m])  # scipy's lstsq: the minimum norm
    np.testing.assert_allclose(got["c01"].coef[0], want.coef_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["c01"].intercept[0], want.intercept_, rtol=1e-9)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


CLASSIFIERS = [
    ("binary_classifier", {"wd": 0.01}),
    ("binary_classifier", {"wd": 0.002, "fit_intercept": False}),
    ("binary_classifier", {"wd": 0.01, "normalize_data": True}),
    ("multiclass_classifier", {"wd": 0.01}),
    ("multiclass_classifier", {"wd": 0.005, "normalize_data": True}),
]


@pytest.mark.parametrize(("task", "extra"), CLASSIFIERS)
def test_classifiers_equal_scikit_learns_logistic_regression(task, extra, tmp_path):
    hp = {"normalize_data": False, "predictor_type": task, **extra}
    if task == "multiclass_classifier":
        hp["num_classes"] = 3
    df = _frame([12, 60, 400, 3_000], task)
    got = _train(df, tmp_path, **hp)
    Z = _encoded(df)
    for city, r in got.items():
        m = (df.city == city).to_numpy()
        Zm, y = Z[m], df.price.to_numpy()[m]
        mu, sd = np.zeros(Z.shape[1]), np.ones(Z.shape[1])
        fit_intercept = hp.get("fit_intercept", True)
        if hp.get("normalize_data"):
            mu = Zm.mean(0)
            sd = Zm.std(0)
            sd[sd == 0] = 1
        est = LogisticRegression(
            C=1 / (2 * len(y) * hp["wd"]), fit_intercept=fit_intercept, tol=1e-12, max_iter=20_000
        ).fit((Zm - mu) / sd, y)
        w = est.coef_ / sd
        b = est.intercept_ - w @ mu
        np.testing.assert_allclose(r.coef, w, atol=1e-5)
        np.testing.assert_allclose(r.intercept, b, atol=1e-5)
        s = Zm @ r.coef.T + r.intercept
        p = _softmax(s) if task == "multiclass_classifier" else 1 / (1 + np.exp(-s[:, 0]))
        want = est.predict_proba((Zm - mu) / sd)
        np.testing.assert_allclose(p, want if p.ndim == 2 else want[:, 1], atol=1e-6)


def test_the_trained_store_serves_the_fitted_models_over_boto3(serve, tmp_path):
    df = _frame([30, 200, 800])
    got = _train(df, tmp_path, wd=0.01)
    server = serve(store=str(tmp_path / "out"))
    client = runtime_client(server.url)
    Z = _encoded(df)
    for city, r in got.items():
        m = (df.city == city).to_numpy()
        rows = df[m][NUMERIC + CATEGORICAL]
        body = "".join(",".join(str(v) for v in row) + "\n" for row in rows.itertuples(False))
        reply = client.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel=f"{city}/{city}.tar.gz",
            ContentType="text/csv",
            Accept="application/json",
            Body=body,
        )
        scores = [p["score"] for p in json.loads(reply["Body"].read())["predictions"]]
        np.testing.assert_allclose(scores, Z[m] @ r.coef[0] + r.intercept[0], rtol=1e-5)
        assert r.train_rows == m.sum() and r.train_metric is not None
    pre = read_artifact(tmp_path / "out" / "preprocessor.tar.gz")  # the shared one alone, too
    assert pre.kind == "preprocessor" and [c.name for c in pre.inputs] == NUMERIC + CATEGORICAL


def test_per_entity_csv_files_with_validation_folders(tmp_path):
    df = _frame([80, 120])
    root = tmp_path / "data"
    for city, part in df.groupby("city"):
        cols = ["price", *NUMERIC, *CATEGORICAL]  # the label first, no header
        (root / city / "train").mkdir(parents=True)
        (root / city / "val").mkdir()
        part[cols].iloc[:60].to_csv(root / city / "train" / "part.csv", header=False, index=False)
        part[cols].iloc[60:].to_csv(root / city / "val" / "part.csv", header=False, index=False)
    names = ",".join(NUMERIC + CATEGORICAL)
    out = tmp_path / "out"
    assert main(["train", "linear-learner", "--data", str(root), "--out", str(out),
                 "--feature-names", names, "--wd", "0.01", "--no-progress"]) == 0  # fmt: skip
    report = pd.read_csv(out / "report.csv")
    assert report.train_rows.tolist() == [60, 60] and report.holdout_rows.tolist() == [20, 60]
    assert report.holdout_rmse.notna().all() and (report.status == "trained").all()
    assert (out / "report.png").exists() and (out / "preprocessor.tar.gz").exists()
    with Host(store=str(out)) as host:
        assert host.load("c00/c00.tar.gz")["inputs"][0]["name"] == "x1"


def test_parquet_and_an_s3_prefix_on_moto(tmp_path, s3):
    url, client = s3
    df = _frame([50, 70])
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    client.put_object(Bucket="models", Key="data/t.parquet", Body=path.read_bytes())
    local = _train(df, tmp_path, wd=0.01)
    report = train_linear_learner(
        "s3://models/data/t.parquet", "s3://models/served/", entity_column="city",
        label_column="price", wd=0.01, holdout_fraction=0.0, s3_endpoint_url=url,
    )  # fmt: skip
    for city, r in report.by_entity().items():
        np.testing.assert_allclose(r.coef, local[city].coef, rtol=1e-12)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="models")["Contents"])
    assert "served/c00/c00.tar.gz" in keys and "served/preprocessor.tar.gz" in keys
    with Host(store="s3://models/served/", s3_endpoint_url=url) as host:
        assert host.load("c01/c01.tar.gz")["task"] == "regressor"


@pytest.fixture
def s3(monkeypatch):
    import socket

    import boto3
    import httpx
    from moto.server import ThreadedMotoServer

    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    httpx.post(url + "/moto-api/reset")
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="models")
    yield url, client
    server.stop()


def test_resume_after_a_killed_run_skips_what_is_done(tmp_path):
    df = _frame([30] * 400)
    df.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mmhost", "train", "linear-learner", "--data",
            str(tmp_path / "t.csv"), "--out", str(out), "--entity-column", "city",
            "--label-column", "price", "--batch-entities", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/*.tar.gz"))) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/*.tar.gz")}
    assert 5 <= len(done) < 400
    assert main([*argv[3:], "--resume"]) == 0
    report = pd.read_csv(out / "report.csv")
    assert set(report.entity[report.status == "resumed"]) == set(done)
    assert (report.status == "trained").sum() == 400 - len(done)
    for city, mtime in done.items():  # untouched
        assert (out / city / f"{city}.tar.gz").stat().st_mtime_ns == mtime
    assert len(list(out.glob("*/*.tar.gz"))) == 400
    assert not list(out.glob("*/*.tmp"))


def test_too_small_and_one_label_entities_are_reported_and_skipped(tmp_path):
    df = _frame([1, 3, 200], "binary_classifier")
    got = _train(df, tmp_path, predictor_type="binary_classifier", wd=0.01, min_rows=2)
    assert got["c00"].status == "skipped" and "min_rows=2" in got["c00"].reason
    assert got["c01"].status == "trained" or "one label" in got["c01"].reason
    assert got["c02"].status == "trained"
    assert not (tmp_path / "out" / "c00").exists()


def _set(column: str, row: int, value: str):
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({column: object})
        df.loc[row, column] = value
        return df

    return change


BAD = {
    "a missing label": (_set("price", 4, ""), "table.csv, row 5: the label price is missing"),
    "a word in a numeric column": (
        _set("x1", 7, "lots"),
        "table.csv, row 8: column 'x1' is numeric, but 'lots' is not a number",
    ),
    "a word as a label": (
        _set("price", 2, "cheap"),
        "table.csv, row 3: the label price 'cheap' is not a number",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_data_is_named_by_file_row_and_column(case, tmp_path):
    change, message = BAD[case]
    with pytest.raises(ValidationError) as info:
        _train(change(_frame([20, 20])), tmp_path)
    assert info.value.message.startswith(message)


def test_an_unknown_entity_column_and_a_bad_class_label_are_refused(tmp_path, capsys):
    df = _frame([20])
    df.to_csv(tmp_path / "t.csv", index=False)
    argv = ["train", "linear-learner", "--data", str(tmp_path / "t.csv"), "--out",
            str(tmp_path / "o"), "--entity-column", "town", "--label-column", "price"]  # fmt: skip
    assert main(argv) == 2
    assert "no entity column 'town'; its columns are" in capsys.readouterr().err
    argv[argv.index("town")] = "city"
    assert main([*argv, "--predictor-type", "binary_classifier"]) == 2
    assert "a binary_classifier's label must be one of 0..1" in capsys.readouterr().err


def test_per_entity_preprocessing_standardizes_each_entity_by_its_own_rows(tmp_path):
    df = _frame([40, 300])
    got = _train(df, tmp_path, wd=0.02, normalize_data=False, normalize_label=False,
                 per_entity_preprocessing=True)  # fmt: skip
    onehot = OneHotEncoder().fit(df[CATEGORICAL])  # the categories stay the table's
    assert not (tmp_path / "out" / "preprocessor.tar.gz").exists()
    with Host(store=str(tmp_path / "out")) as host:
        for city, r in got.items():
            m = (df.city == city).to_numpy()
            part = df[m]
            Z = np.hstack(
                [
                    StandardScaler().fit_transform(part[NUMERIC]),
                    onehot.transform(part[CATEGORICAL]).toarray(),
                ]
            )
            want = Ridge(alpha=m.sum() * 0.02).fit(Z, part.price)
            np.testing.assert_allclose(r.coef[0], want.coef_, rtol=1e-6, atol=1e-6)
            rows = part[NUMERIC + CATEGORICAL].to_numpy(object)
            got_prices = host.predict(f"{city}/{city}.tar.gz", rows)
            np.testing.assert_allclose(got_prices, want.predict(Z), rtol=1e-5)


def test_a_bad_class_label_past_the_first_run_of_rows_is_named_by_its_row():
    from mmhost.train.linear_learner import CHECK_ROWS, Hyperparameters, _classes

    label = np.zeros(3 * CHECK_ROWS)
    label[CHECK_ROWS + 4] = 0.5  # in the second run the check reads
    with pytest.raises(ValidationError) as info:
        _classes(label, Hyperparameters(predictor_type="binary_classifier"))
    assert info.value.message.startswith(f"row {CHECK_ROWS + 5}: a binary_classifier's label")
    label[CHECK_ROWS + 4] = 1.0
    assert _classes(label, Hyperparameters(predictor_type="binary_classifier")) == [0, 1]
