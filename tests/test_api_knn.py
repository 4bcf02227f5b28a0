"""SageMaker k-NN models, dropped into the store as its training jobs write them, over every
route with real clients against a real server on 127.0.0.1.

The model files are written with faiss (``faiss.serialize_index`` of a flat index, as the
training job does), the labels as little-endian float32 and the params JSON beside them.
Oracle: faiss's own ``search`` on the same index; the predicted label is the most frequent of
the k labels (the smallest on a tie) for a classifier, their mean for a regressor.
Tolerance: distances rtol 1e-4 (faiss may expand |x|^2 - 2x.p + |p|^2); neighbours equal (the
data are continuous: no equidistant points).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import httpx
import numpy as np
import pytest
import tritonclient.http as v2client
from botocore.exceptions import ClientError
from conftest import runtime_client
from sagemaker.amazon.common import RecordDeserializer, RecordSerializer

faiss = pytest.importorskip("faiss")

D = 8
RECORDIO = "application/x-recordio-protobuf"


def knn_files(
    n: int, seed: int, metric: str, task: str, k: int, normalize: bool = False
) -> tuple[dict[str, bytes], object, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatL2(D) if metric == "l2" else faiss.IndexFlatIP(D)
    index.add(x)
    labels = (
        rng.integers(0, 4, n).astype(np.float32)
        if task == "classifier"
        else rng.normal(size=n).astype(np.float32)
    )
    params = {
        "k": k,
        "predictor_type": task,
        "dimension_reduction": None,
        "normalize": normalize,
        "version": "1.0",
    }
    files = {
        "model_algo-1": faiss.serialize_index(index).tobytes(),
        "model_algo-1.labels": labels.astype("<f4").tobytes(),
        "model_algo-1.json": json.dumps(params).encode(),
    }
    return files, index, labels


def write_tar(path, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


MODELS = {
    "knn/l2-classifier/model.tar.gz": dict(n=500, seed=1, metric="l2", task="classifier", k=7),
    "knn/ip-regressor/model.tar.gz": dict(n=300, seed=2, metric="ip", task="regressor", k=5),
    "knn/cosine/model.tar.gz": dict(
        n=200, seed=3, metric="ip", task="classifier", k=4, normalize=True
    ),
}


@pytest.fixture
def server(serve, store):
    oracles = {}
    for name, spec in MODELS.items():
        files, index, labels = knn_files(**spec)
        write_tar(store / name, files)
        oracles[name] = (index, labels, spec)
    s = serve(store=str(store))
    s.oracles = oracles
    return s


def expected(oracle, q: np.ndarray):
    index, labels, spec = oracle
    if spec.get("normalize"):
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    dist, idx = index.search(q, spec["k"])
    neigh = labels[idx]
    if spec["task"] == "classifier":
        predicted = []
        for row in neigh:
            counts = Counter(row.tolist())
            most = max(counts.values())
            predicted.append(min(v for v, c in counts.items() if c == most))
    else:
        predicted = neigh.mean(axis=1).tolist()
    return np.array(predicted), dist, neigh


def queries(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


def csv_body(q: np.ndarray) -> bytes:
    return "".join(",".join(map(repr, r)) + "\n" for r in q.tolist()).encode()


def invoke(
    client,
    target: str,
    body: bytes,
    content_type: str = "text/csv",
    accept: str = "application/json",
):
    return client.invoke_endpoint(
        EndpointName="mmhost",
        TargetModel=target,
        ContentType=content_type,
        Accept=accept,
        Body=body,
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_boto3_answers_and_verbose_neighbours_equal_faiss(server, name):
    client = runtime_client(server.url)
    q = queries(40, 7)
    predicted, dist, neigh = expected(server.oracles[name], q)
    reply = json.loads(invoke(client, name, csv_body(q))["Body"].read())
    got = [p["predicted_label"] for p in reply["predictions"]]
    assert all(set(p) == {"predicted_label"} for p in reply["predictions"])
    np.testing.assert_allclose(got, predicted, rtol=1e-5, atol=1e-6)
    verbose = invoke(client, name, csv_body(q), accept="application/json; verbose=true")
    preds = json.loads(verbose["Body"].read())["predictions"]
    np.testing.assert_allclose([p["distances"] for p in preds], dist, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal([p["labels"] for p in preds], neigh)


def test_csv_jsonlines_and_recordio_answers(server):
    client = runtime_client(server.url)
    name = "knn/l2-classifier/model.tar.gz"
    q = queries(12, 8)
    predicted, dist, neigh = expected(server.oracles[name], q)
    text = invoke(client, name, csv_body(q), accept="text/csv")["Body"].read().decode()
    assert [float(v) for v in text.splitlines()] == predicted.tolist()
    lines = invoke(client, name, csv_body(q), accept="application/jsonlines")["Body"].read()
    assert [json.loads(v)["predicted_label"] for v in lines.splitlines()] == predicted.tolist()
    body = RecordSerializer().serialize(q).getvalue()
    reply = invoke(client, name, body, RECORDIO, f"{RECORDIO}; verbose=true")
    records = RecordDeserializer().deserialize(reply["Body"], RECORDIO)
    assert [
        r.label["predicted_label"].float32_tensor.values[0] for r in records
    ] == predicted.tolist()
    np.testing.assert_array_equal(
        [list(r.label["labels"].float32_tensor.values) for r in records], neigh
    )
    np.testing.assert_allclose(
        [list(r.label["distances"].float32_tensor.values) for r in records], dist, rtol=1e-4
    )


def test_tritonclient_v2_tensors(server):
    client = v2client.InferenceServerClient(server.url.removeprefix("http://"))
    name = "knn/ip-regressor/model.tar.gz"
    q = queries(6, 9)
    predicted, dist, neigh = expected(server.oracles[name], q)
    inp = v2client.InferInput("x", list(q.shape), "FP32")
    inp.set_data_from_numpy(q, binary_data=True)
    res = client.infer(name, [inp])
    np.testing.assert_allclose(res.as_numpy("predicted_label"), predicted, rtol=1e-5)
    np.testing.assert_array_equal(res.as_numpy("labels"), neigh)
    np.testing.assert_allclose(res.as_numpy("distances"), dist, rtol=1e-4)
    meta = client.get_model_metadata(name)
    assert [o["name"] for o in meta["outputs"]] == ["predicted_label", "labels", "distances"]
    assert len(meta["inputs"]) == D


def _index_bytes(n: int = 50) -> bytes:
    return knn_files(n, 0, "l2", "classifier", 3)[0]["model_algo-1"]


def _ivf() -> bytes:
    quantizer = faiss.IndexFlatL2(D)
    ivf = faiss.IndexIVFFlat(quantizer, D, 4)
    x = queries(200, 1)
    ivf.train(x)
    ivf.add(x)
    return faiss.serialize_index(ivf).tobytes()


def _lying_count() -> bytes:
    raw = bytearray(_index_bytes())
    raw[8:16] = (10**6).to_bytes(8, "little")  # ntotal: a million vectors in 50 vectors' bytes
    return bytes(raw)


DAMAGED = {
    "truncated": {"model_algo-1": _index_bytes()[:-100]},
    "lying-count": {"model_algo-1": _lying_count()},
    "unknown-type": {"model_algo-1": b"XxXx" + _index_bytes()[4:]},
    "ivf": {"model_algo-1": _ivf()},
    "labels-count": {"model_algo-1.labels": b"\0" * 4 * 49},
    "projection": {
        "model_algo-1.json": json.dumps(
            {"k": 3, "predictor_type": "classifier", "dimension_reduction": {"type": "fjlt"}}
        ).encode()
    },
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_model_is_a_424_naming_it_and_others_keep_serving(server, store, case):
    files = knn_files(50, 0, "l2", "classifier", 3)[0]
    files.update(DAMAGED[case])
    write_tar(store / "bad" / case / "model.tar.gz", files)
    client = runtime_client(server.url)
    target = f"bad/{case}/model.tar.gz"
    with pytest.raises(ClientError) as err:
        invoke(client, target, csv_body(queries(2, 0)))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    message = err.value.response["Error"]["Message"]
    assert target in message
    good = "knn/l2-classifier/model.tar.gz"
    reply = json.loads(invoke(client, good, csv_body(queries(3, 1)))["Body"].read())
    assert len(reply["predictions"]) == 3
    assert httpx.get(f"{server.url}/ping").status_code == 200
