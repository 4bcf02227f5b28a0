"""SageMaker Linear Learner artifacts (``mmhost/artifacts/linear_learner.py``, ``mxnet.py``),
written by ``tests/linear_learner.py`` in the documented layout (MXNet is not installable
here): served as the training job wrote them, through the Python Host and boto3; damaged
ones each fail their own load with a 424 naming the model.

Tolerance: mmhost scores in float32 (weights rounded to float32, float32 products summed over
d features) against a float64 reference: |error| <= 1e-5 + 2e-6 * d on scores and logits, and
probabilities are within that too (the links are 1-Lipschitz or less).
"""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest
from botocore.exceptions import ClientError
from conftest import runtime_client
from linear_learner import (
    V1,
    V2,
    V3,
    model_tar,
    module_zip,
    ndarray,
    ndarray_list,
    random_model,
    save,
    symbol,
)
from linear_learner import expected as ll_expected
from sklearn.linear_model import LinearRegression

from mmhost.artifacts import read_artifact_bytes
from mmhost.artifacts.manifest import ManifestError
from mmhost.convert import from_sklearn

TASKS = ("regressor", "binary_classifier", "multiclass_classifier")


def atol(d: int) -> float:
    return 1e-5 + 2e-6 * d


def rows(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("d", [1, 17, 500])
def test_answers_are_x_w_plus_b_and_the_link(task, d, store, host_factory):
    k = 4 if task == "multiclass_classifier" else 1
    w, b = random_model(d, k, seed=d)
    save(store / "city" / "model.tar.gz", w, b, task)
    h = host_factory(store=str(store))
    x = rows(50, d, seed=1)
    got = h.predict("city/model.tar.gz", x)
    np.testing.assert_allclose(got, ll_expected(x, w, b, task), rtol=0, atol=atol(d))


@pytest.mark.parametrize("version", [V1, V2, V3, None], ids=["v1", "v2", "v3", "legacy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_every_array_header_and_float_dtype(version, dtype, store, host_factory):
    w, b = random_model(9, 1, seed=3, dtype=dtype)
    save(store / "m" / "model.tar.gz", w, b, "regressor", version=version)
    h = host_factory(store=str(store))
    x = rows(20, 9, seed=2)
    np.testing.assert_allclose(
        h.predict("m/model.tar.gz", x), ll_expected(x, w, b, "regressor"), atol=atol(9)
    )


def test_the_artifact_is_found_by_content_not_name():
    w, b = random_model(3, 3, seed=0)
    art = read_artifact_bytes(model_tar(module_zip(w, b, "multiclass_classifier")))
    assert (art.algorithm, art.task, art.classes) == ("linear", "multiclass_classifier", [0, 1, 2])
    np.testing.assert_array_equal(art.params["coef"], w.T.astype(np.float64))
    assert [c.name for c in art.inputs] == ["f0", "f1", "f2"]


def test_a_folder_holding_model_algo_1_is_served_too(store, host_factory):
    w, b = random_model(4, 1, seed=5)
    (store / "folder").mkdir()
    (store / "folder" / "model_algo-1").write_bytes(module_zip(w, b, "regressor"))
    h = host_factory(store=str(store))
    x = rows(5, 4, seed=0)
    np.testing.assert_allclose(h.predict("folder", x), ll_expected(x, w, b, "regressor"), atol=1e-5)


def test_linear_learner_and_scikit_learn_models_share_one_fused_call(store, host_factory):
    x = rows(32, 5, seed=0)
    sk = LinearRegression().fit(x, x @ np.arange(1.0, 6.0))
    from_sklearn(sk).save(store / "sk")
    w, b = random_model(5, 1, seed=7)
    save(store / "ll" / "model.tar.gz", w, b, "regressor")
    h = host_factory(store=str(store))
    h.load("sk")
    h.load("ll/model.tar.gz")
    before = h.stats()["batches"]["calls"]
    outs = h.predict_many([("sk", x[:3]), ("ll/model.tar.gz", x[3:9]), ("sk", x[9:10])])
    assert h.stats()["batches"]["calls"] == before + 1
    np.testing.assert_allclose(outs[0], sk.predict(x[:3]), rtol=1e-5)
    np.testing.assert_allclose(outs[1], ll_expected(x[3:9], w, b, "regressor"), atol=1e-5)
    np.testing.assert_allclose(outs[2], sk.predict(x[9:10]), rtol=1e-5)


def test_boto3_answers_as_linear_learner_does(serve, store):
    d = 6
    models = {}
    for task, k, threshold in [
        ("regressor", 1, 0.5),
        ("binary_classifier", 1, 0.3),
        ("multiclass_classifier", 3, 0.5),
    ]:
        w, b = random_model(d, k, seed=k)
        models[task] = (w, b, threshold)
        save(store / task / "model.tar.gz", w, b, task, threshold=threshold)
    server = serve(store=str(store))
    client = runtime_client(server.url)
    x = rows(40, d, seed=9)
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in x)
    for task, (w, b, threshold) in models.items():
        r = client.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel=f"{task}/model.tar.gz",
            Body=body,
            ContentType="text/csv",
            Accept="application/json",
        )
        preds = json.loads(r["Body"].read())["predictions"]
        want = ll_expected(x, w, b, task)
        if task == "regressor":
            assert set(preds[0]) == {"score"}
            np.testing.assert_allclose([p["score"] for p in preds], want, atol=atol(d))
        elif task == "binary_classifier":
            np.testing.assert_allclose([p["score"] for p in preds], want, atol=atol(d))
            clear = np.abs(want - threshold) > 1e-4  # the stored threshold decides, not 0.5
            labels = np.array([p["predicted_label"] for p in preds])
            np.testing.assert_array_equal(labels[clear], (want[clear] > threshold).astype(int))
            assert ((want > 0.3) & (want <= 0.5)).any()  # some labels differ from 0.5's
        else:
            np.testing.assert_allclose([p["score"] for p in preds], want, atol=atol(d))
            assert [p["predicted_label"] for p in preds] == want.argmax(axis=1).tolist()


# --- damaged artifacts -------------------------------------------------------------------------
W, B = random_model(4, 1, seed=11)
GOOD_PARAMS = ndarray_list({"arg:fc0_weight": ndarray(W), "arg:fc0_bias": ndarray(B)})


def _sym_with(**change) -> dict:
    sym = symbol(4, 1, "regressor")
    for i, node in change.items():
        sym["nodes"][int(i[1:])].update(node)
    return sym


def _lying_count() -> bytes:
    return struct.pack("<QQQ", 0x112, 0, 2**60) + GOOD_PARAMS[24:]


def _lying_dims(rows: int) -> bytes:
    arr = bytearray(ndarray(W))
    arr[12:20] = struct.pack("<q", rows)  # the first dimension, past the bytes there
    return ndarray_list({"arg:fc0_weight": bytes(arr), "arg:fc0_bias": ndarray(B)})


def _lying_name_length() -> bytes:
    cut = GOOD_PARAMS.rindex(b"arg:fc0_bias") - 8
    return GOOD_PARAMS[:cut] + struct.pack("<Q", 2**62) + GOOD_PARAMS[cut + 8 :]


def _sparse() -> bytes:
    arr = bytearray(ndarray(W))
    arr[4:8] = struct.pack("<i", 2)  # csr
    return ndarray_list({"arg:fc0_weight": bytes(arr), "arg:fc0_bias": ndarray(B)})


DAMAGED = {
    "truncated params": ({"params": GOOD_PARAMS[:-30]}, "truncated"),
    "a count that lies": ({"params": _lying_count()}, "declares 1152921504606846976 arrays"),
    "dims that lie": ({"params": _lying_dims(2**20)}, "needs 4194304 bytes"),
    "dims past the cap": ({"params": _lying_dims(2**40)}, "over 268435456 values"),
    "a name length that lies": ({"params": _lying_name_length()}, "name 1 is"),
    "an unknown dtype": (
        {
            "params": ndarray_list(
                {"arg:fc0_weight": ndarray(W, flag=4), "arg:fc0_bias": ndarray(B)}
            )
        },
        "dtype flag 4 (int32)",
    ),
    "sparse storage": ({"params": _sparse()}, "csr storage"),
    "an unknown op": (
        {"sym": _sym_with(n2={"op": "Convolution"})},
        "op 'Convolution' (dot0) is not part of a linear model",
    ),
    "a weight shape the symbol disagrees with": (
        {"sym": _sym_with(n1={"attrs": {"__shape__": "(5, 1)"}})},
        "the symbol declares (5, 1)",
    ),
    "a missing weight": (
        {"params": ndarray_list({"arg:fc0_bias": ndarray(B)})},
        "holds no arg:fc0_weight",
    ),
    "an entry outside the zip": ({"extra": {"../escape.json": b"{}"}}, "unsafe path"),
}


@pytest.mark.parametrize("case", list(DAMAGED), ids=list(DAMAGED))
def test_a_damaged_artifact_is_a_424_naming_it_and_others_keep_serving(case, serve, store):
    change, why = DAMAGED[case]
    save(store / "bad" / "model.tar.gz", W, B, "regressor", **change)
    save(store / "good" / "model.tar.gz", W, B, "regressor")
    server = serve(store=str(store))
    client = runtime_client(server.url)
    body = "1,2,3,4"
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(
            EndpointName="mmhost", TargetModel="bad/model.tar.gz", Body=body, ContentType="text/csv"
        )
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "bad/model.tar.gz" in err["Error"]["Message"]
    assert why in err["Error"]["Message"], err["Error"]["Message"]
    r = client.invoke_endpoint(
        EndpointName="mmhost", TargetModel="good/model.tar.gz", Body=body, ContentType="text/csv"
    )
    want = ll_expected(np.array([[1, 2, 3, 4]], np.float32), W, B, "regressor")
    assert json.loads(r["Body"].read())["predictions"][0]["score"] == pytest.approx(
        want[0], abs=1e-5
    )
    assert httpx.get(server.url + "/ping").status_code == 200


def test_a_link_in_the_zip_is_refused():
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("manifest.json")
        info.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ManifestError, match="is a link"):
        read_artifact_bytes(model_tar(buf.getvalue()))


def test_a_model_algo_1_that_is_not_a_zip_says_what_it_is_not():
    with pytest.raises(ManifestError, match="not a Linear Learner module"):
        read_artifact_bytes(model_tar(b"IxFl" + bytes(64)))  # a faiss index's first bytes


def test_linear_learners_json_and_jsonlines_requests(serve, store):
    w, b = random_model(3, 1, seed=2)
    save(store / "bin" / "model.tar.gz", w, b, "binary_classifier")
    server = serve(store=str(store))
    x = rows(4, 3, seed=3)
    want = ll_expected(x, w, b, "binary_classifier")
    headers = {"X-Amzn-SageMaker-Target-Model": "bin/model.tar.gz"}
    doc = {"instances": [{"data": {"features": {"values": r.tolist()}}} for r in x]}
    r = httpx.post(
        server.url + "/invocations", json=doc, headers={**headers, "Accept": "application/json"}
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    np.testing.assert_allclose([p["score"] for p in preds], want, atol=1e-5)
    assert all(p["predicted_label"] in (0, 1) for p in preds)
    lines = "\n".join(json.dumps({"features": r.tolist()}) for r in x)
    r = httpx.post(
        server.url + "/invocations",
        content=lines,
        headers={
            **headers,
            "Content-Type": "application/jsonlines",
            "Accept": "application/jsonlines",
        },
    )
    assert r.status_code == 200, r.text
    got = [json.loads(line) for line in r.text.splitlines()]
    np.testing.assert_allclose([g["score"] for g in got], want, atol=1e-5)
