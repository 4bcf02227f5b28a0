"""SageMaker k-NN's model files (``mmhost/artifacts/knn.py``), written with faiss as the
training job writes them: read back exactly; each inconsistency refused naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmhost.artifacts.knn import read_knn
from mmhost.artifacts.manifest import ManifestError

faiss = pytest.importorskip("faiss")
CAP = 10_000_000


def files(n: int = 50, d: int = 8, metric: str = "l2", **params) -> dict[str, bytes]:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    index.add(x)
    doc = {
        "k": 5,
        "predictor_type": "classifier",
        "dimension_reduction": None,
        "normalize": False,
        "version": "1.0",
        **params,
    }
    return {
        "model_algo-1": faiss.serialize_index(index).tobytes(),
        "model_algo-1.labels": rng.integers(0, 3, n).astype("<f4").tobytes(),
        "model_algo-1.json": json.dumps(doc).encode(),
    }


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_the_three_files_read_back(metric):
    f = files(metric=metric, predictor_type="regressor", k=7, normalize=True)
    m = read_knn(f, CAP)
    assert (m.task, m.k, m.metric, m.normalize) == ("regressor", 7, metric, True)
    assert m.points.shape == (50, 8)
    np.testing.assert_array_equal(m.labels, np.frombuffer(f["model_algo-1.labels"], "<f4"))


def _damaged(**changes) -> dict[str, bytes]:
    f = files()
    f.update(changes)
    return f


DAMAGED = {
    "a label count that disagrees": (
        _damaged(**{"model_algo-1.labels": b"\0" * 4 * 49}),
        "holds 49 labels for 50 indexed vectors",
    ),
    "labels not whole floats": (_damaged(**{"model_algo-1.labels": b"\0" * 7}), "7 bytes"),
    "no labels": (
        {k: v for k, v in files().items() if k != "model_algo-1.labels"},
        "no model_algo-1.labels",
    ),
    "a truncated index": (
        _damaged(**{"model_algo-1": files()["model_algo-1"][:-10]}),
        "model_algo-1 is truncated",
    ),
    "an unknown predictor type": (
        _damaged(**{"model_algo-1.json": b'{"k": 3, "predictor_type": "ranker"}'}),
        "predictor_type 'ranker'",
    ),
    "a k that is not a count": (
        _damaged(**{"model_algo-1.json": b'{"k": 0, "predictor_type": "classifier"}'}),
        "k 0 is not",
    ),
    "a random projection": (
        _damaged(
            **{
                "model_algo-1.json": json.dumps(
                    {
                        "k": 3,
                        "predictor_type": "classifier",
                        "dimension_reduction": {"type": "fjlt", "seed": 1, "target_dim": 4},
                    }
                ).encode()
            }
        ),
        "dimension_reduction 'fjlt' is not served",
    ),
    "params that are not JSON": (_damaged(**{"model_algo-1.json": b"{"}), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(DAMAGED), ids=list(DAMAGED))
def test_inconsistent_files_are_refused_naming_the_file(case):
    f, why = DAMAGED[case]
    with pytest.raises(ManifestError) as info:
        read_knn(f, CAP)
    assert why in str(info.value), str(info.value)
