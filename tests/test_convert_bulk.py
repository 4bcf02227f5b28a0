"""``mmhost convert`` and ``mmhost store ls`` as users run them (the CLI, a folder and a real
S3-compatible server on loopback), and ``Artifact.save("s3://...")``."""

from __future__ import annotations

import pickle
import socket

import boto3
import httpx
import joblib
import numpy as np
import pytest
import xgboost as xgb
from conftest import RTOL_PRICE, house_classifier, house_pipeline
from linear_learner import random_model
from linear_learner import save as save_linear_learner
from sklearn.ensemble import RandomForestRegressor

from mmhost import Host
from mmhost.cli import main
from mmhost.convert import from_sklearn, save_xgboost
from mmhost.convert.bulk import output_key
from mmhost.tools.houses import COLUMNS, houses

ROWS = [[1992, 1531, 6, 3.0, 0.68, 1, "y", "n"], [1971, 2728, 4, 2.0, 0.3, 0, "n", "y"]]


def _booster(seed: int = 0) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 4))
    return xgb.train(
        {"objective": "reg:squarederror", "max_depth": 3},
        xgb.DMatrix(x, label=x @ [1.0, -2.0, 0.5, 3.0]),
        num_boost_round=10,
    )


@pytest.fixture
def models(tmp_path):
    """A folder of what users have: joblib and pickle pipelines, XGBoost files, SageMaker
    archives, and two that can't be converted."""
    src = tmp_path / "src"
    (src / "Chicago_IL").mkdir(parents=True)
    (src / "Houston_TX").mkdir()
    joblib.dump(house_pipeline(0), src / "Chicago_IL" / "model.joblib")
    (src / "Houston_TX" / "model.pkl").write_bytes(pickle.dumps(house_classifier(1)))
    (src / "trees").mkdir()
    _booster().save_model(src / "trees" / "model.json")
    save_xgboost(_booster(1), src / "trees" / "sagemaker" / "model.tar.gz")
    w, b = random_model(5, 1, seed=3)
    save_linear_learner(src / "ll" / "model.tar.gz", w, b, "regressor")
    x, y = houses(50, 0)
    forest = RandomForestRegressor(n_estimators=2).fit(x[:, :6].astype(float), y)
    joblib.dump(forest, src / "forest.joblib")  # no linear model, no trees mmhost serves
    (src / "broken.pkl").write_bytes(b"not a pickle at all")
    (src / "notes.txt").write_text("not a model: skipped")
    return src


def test_output_keys_keep_the_key():
    assert output_key("Chicago_IL/model.joblib") == "Chicago_IL/model.tar.gz"
    assert output_key("a/b/xgboost-model") == "a/b/xgboost-model.tar.gz"
    assert output_key("ll/model.tar.gz") == "ll/model.tar.gz"
    assert output_key("m.ubj") == "m.tar.gz"


def test_convert_a_folder_reports_each_failure_and_goes_on(models, tmp_path, capsys):
    dst = tmp_path / "dst"
    assert main(["convert", str(models), str(dst), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "forest.joblib: UnsupportedModel" in err
    assert "broken.pkl: ValueError: not a readable joblib/pickle file" in err
    assert "5 of 7 model(s) converted" in err and "2 failed" in err
    assert main(["store", "ls", "--store", str(dst)]) == 0
    keys = capsys.readouterr().out.split()
    assert keys == [
        "Chicago_IL/model.tar.gz",
        "Houston_TX/model.tar.gz",
        "ll/model.tar.gz",
        "trees/model.tar.gz",
        "trees/sagemaker/model.tar.gz",
    ]
    assert main(["store", "ls", "trees/", "--store", str(dst)]) == 0
    assert capsys.readouterr().out.split() == keys[3:]

    with Host(store=str(dst)) as host:
        rows = np.array(ROWS, dtype=object)
        got = host.predict("Chicago_IL/model.tar.gz", ROWS)
        np.testing.assert_allclose(got, house_pipeline(0).predict(rows), rtol=RTOL_PRICE)
        got = host.predict("Houston_TX/model.tar.gz", ROWS)
        np.testing.assert_allclose(got, house_classifier(1).predict_proba(rows)[:, 1], atol=1e-5)
        x = np.random.default_rng(9).normal(size=(6, 4)).astype(np.float32)
        for key, seed in (("trees/model.tar.gz", 0), ("trees/sagemaker/model.tar.gz", 1)):
            want = _booster(seed).predict(xgb.DMatrix(x))
            np.testing.assert_allclose(host.predict(key, x), want, rtol=1e-5, atol=1e-5)
        w, b = random_model(5, 1, seed=3)
        x5 = x[:, :4].repeat(2, axis=1)[:, :5]
        np.testing.assert_allclose(
            host.predict("ll/model.tar.gz", x5), (x5 @ w + b)[:, 0], rtol=1e-5
        )


def test_a_source_that_is_not_there_exits_2(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "dst")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    httpx.post(url + "/moto-api/reset")
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="models")
    yield url, client
    server.stop()


def test_convert_from_s3_to_s3_and_list_it(s3, tmp_path, capsys):
    url, client = s3
    client.put_object(Bucket="models", Key="raw/NY/model.joblib", Body=_joblib(house_pipeline(2)))
    client.put_object(Bucket="models", Key="raw/LA/model.joblib", Body=_joblib(house_pipeline(3)))
    args = ["--s3-endpoint-url", url]
    assert main(["convert", "s3://models/raw/", "s3://models/served/", *args]) == 0
    assert "2 of 2 model(s) converted" in capsys.readouterr().err
    assert main(["store", "ls", "--store", "s3://models/served/", *args]) == 0
    assert capsys.readouterr().out.split() == ["LA/model.tar.gz", "NY/model.tar.gz"]
    with Host(store="s3://models/served/", s3_endpoint_url=url) as host:
        got = host.predict("NY/model.tar.gz", ROWS)
    want = house_pipeline(2).predict(np.array(ROWS, dtype=object))
    np.testing.assert_allclose(got, want, rtol=RTOL_PRICE)


def _joblib(model) -> bytes:
    import io

    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def test_artifact_save_uploads_to_s3(s3, monkeypatch, tmp_path):
    url, client = s3
    monkeypatch.chdir(tmp_path)
    art = from_sklearn(house_pipeline(4), COLUMNS)
    art.save("s3://models/prod/Boston_MA/model.tar.gz", s3_endpoint_url=url)
    monkeypatch.setenv("MMHOST_S3_ENDPOINT_URL", url)
    art.save("s3://models/prod/Denver_CO/model.tar.gz")  # the endpoint from the environment
    assert not (tmp_path / "s3:").exists()  # not a local folder named "s3:"
    with Host(store="s3://models/prod/", s3_endpoint_url=url) as host:
        assert host.store.list() == ["Boston_MA/model.tar.gz", "Denver_CO/model.tar.gz"]
        got = host.predict("Denver_CO/model.tar.gz", ROWS)
    want = house_pipeline(4).predict(np.array(ROWS, dtype=object))
    np.testing.assert_allclose(got, want, rtol=RTOL_PRICE)
    with pytest.raises(ValueError, match="end 's3://models/prod/folder' with .tar.gz"):
        art.save("s3://models/prod/folder")


def test_an_s3_object_past_the_cap_is_refused_before_it_is_read(s3, monkeypatch, capsys):
    from mmhost.convert import bulk

    url, client = s3
    client.put_object(Bucket="models", Key="raw/big.joblib", Body=_joblib(house_pipeline(1)))
    monkeypatch.setattr(bulk, "MAX_BYTES", 100)
    args = ["convert", "s3://models/raw/", "s3://models/out/", "--s3-endpoint-url", url]
    assert main(args) == 1
    assert "bytes, over the 100-byte cap" in capsys.readouterr().err
