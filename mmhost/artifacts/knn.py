"""SageMaker k-NN's model, as its training jobs write it: three files in ``model.tar.gz``.

    model_algo-1         the faiss index (``artifacts.faiss``: flat L2 or inner product only)
    model_algo-1.labels  one little-endian float32 label per indexed vector
    model_algo-1.json    {"k": ..., "predictor_type": "classifier" | "regressor",
                          "dimension_reduction": null | {"type": "sign" | "fjlt", ...},
                          "normalize": bool, ...}

``read_knn`` checks the three against each other (a label per vector, k within the points) and
returns what an exact search needs. A random projection (``dimension_reduction``) is refused:
its matrix is drawn at training time from a seed by code that is not published, so queries
could not be projected as the training job did.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmhost.artifacts.faiss import read_flat_index
from mmhost.artifacts.manifest import (
    MAX_K,
    Artifact,
    Column,
    KnnOptions,
    ManifestError,
    Preprocessing,
    check_knn,
)

INDEX = "model_algo-1"
LABELS = "model_algo-1.labels"
PARAMS = "model_algo-1.json"
FILES = (INDEX, LABELS, PARAMS)
PREDICTOR_TYPES = ("classifier", "regressor")


@dataclass(frozen=True)
class KnnModelFile:
    """An exact k-NN model: ``points`` (n, d) float32 with a label each, searched under
    ``metric`` ("l2" or "inner_product"); ``normalize``: queries are scaled to unit length."""

    task: str  # "classifier" or "regressor"
    k: int
    metric: str
    normalize: bool
    points: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) float32


def read_knn(files: dict[str, bytes], max_values: int) -> KnnModelFile:
    """The model of SageMaker's k-NN layout (ManifestError names the file and the field)."""
    params = _params(files[PARAMS])
    if LABELS not in files:
        raise ManifestError(f"the k-NN model has no {LABELS}")
    index = read_flat_index(files[INDEX], max_values, INDEX)
    raw = files[LABELS]
    if len(raw) % 4:
        raise ManifestError(f"{LABELS} is {len(raw)} bytes, not a whole number of float32")
    n = len(index.vectors)
    if n == 0:
        raise ManifestError(f"{INDEX} holds no vectors")
    if len(raw) // 4 != n:
        raise ManifestError(f"{LABELS} holds {len(raw) // 4} labels for {n} indexed vectors")
    labels = np.frombuffer(raw, "<f4").astype(np.float32)
    if not np.isfinite(labels).all():
        raise ManifestError(f"{LABELS} holds NaN or infinite labels")
    return KnnModelFile(
        params["predictor_type"],
        params["k"],
        index.metric,
        params["normalize"],
        index.vectors,
        labels,
    )


def read_sagemaker_knn(files: dict[str, bytes], max_bytes: int) -> Artifact:
    """SageMaker's k-NN ``model.tar.gz`` files as an artifact: F numeric inputs (f0, f1, ...),
    faiss's distances (squared L2 or inner product) reported as faiss reports them, a
    classifier's classes the distinct labels in ascending order (the smallest wins a tie)."""
    model = read_knn(files, max_bytes // 4)
    n, d = model.points.shape
    options = KnnOptions(
        model.k,
        "squared_l2" if model.metric == "l2" else "inner_product",
        "uniform",
        model.normalize,
    )
    classes: list[Any] | None = None
    labels = model.labels
    if model.task == "classifier":
        values, codes = np.unique(labels, return_inverse=True)
        classes = [float(v) for v in values]
        labels = codes.astype(np.float32)
    check_knn(model.task, options, model.points, labels, classes, d)
    return Artifact(
        "model",
        [Column(f"f{i}") for i in range(d)],
        Preprocessing.identity(d),
        algorithm="knn",
        task=model.task,
        classes=classes,
        params={"points": model.points, "labels": labels},
        knn=options,
    )


def _params(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{PARAMS} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{PARAMS} is not a JSON object")
    task = doc.get("predictor_type")
    if task not in PREDICTOR_TYPES:
        raise ManifestError(f"{PARAMS}: predictor_type {task!r} is not one of {PREDICTOR_TYPES}")
    k = doc.get("k")
    if isinstance(k, float) and math.isfinite(k) and k == int(k):
        k = int(k)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ManifestError(f"{PARAMS}: k {k!r} is not a whole number in 1..{MAX_K}")
    reduction = doc.get("dimension_reduction")
    if reduction not in (None, {}, "None"):
        kind = reduction.get("type") if isinstance(reduction, dict) else reduction
        raise ManifestError(
            f"{PARAMS}: dimension_reduction {kind!r} is not served: its random projection "
            "is drawn at training time and cannot be reproduced exactly"
        )
    normalize = doc.get("normalize", False)
    if normalize in ("true", "True"):
        normalize = True
    elif normalize in ("false", "False"):
        normalize = False
    if not isinstance(normalize, bool):
        raise ManifestError(f"{PARAMS}: normalize {normalize!r} is not true or false")
    return {"predictor_type": task, "k": k, "normalize": normalize}
