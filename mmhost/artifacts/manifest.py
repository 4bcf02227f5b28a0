"""The artifact as Python objects, and its manifest (``mmhost.json``) with validation.

Preprocessing is stored in one canonical form that every supported scikit-learn step reduces
to: each output feature j is ``scale[j] * source_j + shift[j]``, where ``source_j`` is a numeric
input column (after imputation) or the 0/1 indicator of one category of a categorical input.
Scaling, imputation, one-hot encoding, column selection and passthrough are all of this form,
and so is any chain of them, which is what lets a pipeline fold into one linear model.

Size: the mmhost/1 format's dataclasses and their validation, together, so what is written
is what is checked.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "mmhost/1"
KINDS = ("model", "preprocessor")
ALGORITHMS = ("linear", "xgboost", "knn", "rcf")
RCF_TASK = "anomaly_detector"  # a Random Cut Forest's one task: its anomaly score
TASKS = ("regressor", "binary_classifier", "multiclass_classifier")
KNN_TASKS = ("classifier", "regressor")  # SageMaker k-NN's predictor_type
# how a k-NN model reports (and weighs) a neighbour's distance: faiss's squared L2 or inner
# product (SageMaker's), or scikit-learn's euclidean or cosine (1 - inner product of unit vectors)
KNN_DISTANCES = ("squared_l2", "euclidean", "inner_product", "cosine")
KNN_WEIGHTS = ("uniform", "distance")
MAX_K = 1024
# a k-NN model's points x dimensions (float32: 256 MiB), and points alone
MAX_KNN_VALUES = 2**26
MAX_KNN_POINTS = 2**24
COLUMN_TYPES = ("float", "category")
MAX_COLUMNS = 100_000
MAX_NAME = 256
# outputs x encoded input slots of the composed weight matrix (float32 on the device, float64
# while composing): 2**25 is 128 MiB / 256 MiB. The manifest alone sets both sizes (classes,
# categories), so a few kB of JSON must not make the loader allocate gigabytes.
MAX_WEIGHTS = 2**25
_F32_MAX = float(np.finfo(np.float32).max)


class ManifestError(ValueError):
    """The manifest or parameters are inconsistent; the loader turns it into BadArtifact."""


@dataclass(frozen=True)
class Column:
    """One raw input column. ``missing`` is the imputed value for NaN / empty (None: refused).
    A numeric column whose ``missing`` is NaN passes missing values through as NaN (tree
    models send them their default way); the manifest writes it as ``"NaN"``."""

    name: str
    type: str = "float"
    categories: tuple[str | float, ...] = ()
    unknown: str = "error"  # category columns: "error" or "ignore" (all indicators 0)
    missing: float | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.missing, float) and math.isnan(self.missing):
            # one NaN object: columns (and the encoders cached by them) compare and hash equal
            object.__setattr__(self, "missing", math.nan)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "category":
            out["categories"] = list(self.categories)
            out["unknown"] = self.unknown
        if isinstance(self.missing, float) and math.isnan(self.missing):
            out["missing"] = "NaN"
        elif self.missing is not None:
            out["missing"] = self.missing
        return out


@dataclass(frozen=True)
class Feature:
    """A preprocessing output feature's source: column index, and category index if one-hot."""

    column: int
    category: int | None = None


@dataclass
class Preprocessing:
    """Output feature j = scale[j] * source(features[j]) + shift[j]."""

    features: list[Feature]
    scale: np.ndarray  # (F,) float64
    shift: np.ndarray  # (F,) float64

    @property
    def n_features(self) -> int:
        return len(self.features)

    @classmethod
    def identity(cls, n: int) -> Preprocessing:
        return cls([Feature(i) for i in range(n)], np.ones(n), np.zeros(n))


@dataclass(frozen=True)
class KnnOptions:
    """How a k-NN model searches and votes. ``k`` may exceed the points (all of them are used);
    ``normalize``: queries (and, at training, the points) are scaled to unit length."""

    k: int
    distance: str = "squared_l2"
    weights: str = "uniform"
    normalize: bool = False

    @property
    def metric(self) -> str:
        """What the search ranks by: "l2" (ascending) or "inner_product" (descending)."""
        return "l2" if self.distance in ("squared_l2", "euclidean") else "inner_product"

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "distance": self.distance,
            "weights": self.weights,
            "normalize": self.normalize,
        }


@dataclass
class Artifact:
    """An mmhost artifact in memory. ``params`` holds the model's own arrays (coef, intercept)."""

    kind: str
    inputs: list[Column]
    preprocessing: Preprocessing
    algorithm: str | None = None
    task: str | None = None
    classes: list[Any] | None = None
    feature_names: list[str] | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    xgboost: bytes | None = None
    """algorithm "xgboost": the model file (XGBoost's JSON or UBJSON), parsed at load."""
    threshold: float = 0.5
    """A binary classifier's predicted label is the positive class where P > threshold."""
    knn: KnnOptions | None = None
    """algorithm "knn": k, distance, weights; ``params`` holds ``points`` (n, F) and ``labels``
    (n,): a classifier's as indices into ``classes``, a regressor's as values."""

    @property
    def n_outputs(self) -> int:
        """Width of the model's score vector (1 for regressors and binary classifiers)."""
        if self.kind == "preprocessor":
            return self.preprocessing.n_features
        if self.algorithm in ("knn", "rcf"):
            return 1
        if self.algorithm == "xgboost":
            return len(self.classes) if self.task == "multiclass_classifier" and self.classes else 1
        return int(self.params["coef"].shape[0])

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "algorithm": self.algorithm,
            "task": self.task,
            "inputs": [c.to_json() for c in self.inputs],
            "preprocessing": {
                "features": [
                    {"column": f.column}
                    if f.category is None
                    else {"column": f.column, "category": f.category}
                    for f in self.preprocessing.features
                ]
            },
            "outputs": {"classes": self.classes} if self.classes is not None else {},
        }
        if self.feature_names is not None:
            out["preprocessing"]["names"] = self.feature_names
        if self.kind == "model":
            out["outputs"]["n_outputs"] = self.n_outputs
        if self.threshold != 0.5:
            out["outputs"]["threshold"] = self.threshold
        if self.knn is not None:
            out["knn"] = self.knn.to_json()
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        """Every numeric array, as stored in params.safetensors (float32 for the model,
        float64 for preprocessing so folding loses nothing before the final cast)."""
        out = {
            "preprocessing.scale": np.ascontiguousarray(self.preprocessing.scale, np.float64),
            "preprocessing.shift": np.ascontiguousarray(self.preprocessing.shift, np.float64),
        }
        keep32 = self.algorithm in ("knn", "rcf")  # points, cuts and boxes stay float32
        for k, v in self.params.items():
            wide = keep32 and np.asarray(v).dtype == np.float32
            out[k] = np.ascontiguousarray(v, np.float32 if wide else np.float64)
        return out

    def save(self, path: str | os.PathLike[str], *, s3_endpoint_url: str | None = None) -> None:
        """Write a folder, a .tar.gz / .tgz when the path ends so, or upload to
        ``s3://bucket/key.tar.gz`` (boto3's credentials; the endpoint from ``s3_endpoint_url``
        or ``MMHOST_S3_ENDPOINT_URL``)."""
        from mmhost.artifacts.archive import write_artifact

        write_artifact(self, path, s3_endpoint_url=s3_endpoint_url)


def parse_manifest(raw: bytes, tensors: dict[str, np.ndarray]) -> Artifact:
    """Validate ``mmhost.json`` and the arrays against each other; ManifestError says what's off."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"mmhost.json is not valid JSON: {exc}") from None
    _expect(isinstance(doc, dict), "mmhost.json must be a JSON object")
    _expect(doc.get("format") == FORMAT, f"format must be {FORMAT!r}, got {doc.get('format')!r}")
    kind = doc.get("kind")
    _expect(kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}")
    inputs = _parse_inputs(doc.get("inputs"))
    pre = _parse_preprocessing(doc.get("preprocessing"), inputs, tensors)
    names = (doc.get("preprocessing") or {}).get("names")
    if names is not None:
        _expect(
            isinstance(names, list)
            and len(names) == pre.n_features
            and all(isinstance(n, str) for n in names),
            f"preprocessing.names must be {pre.n_features} strings",
        )
    outputs = doc.get("outputs") or {}
    _expect(isinstance(outputs, dict), "outputs must be an object")
    art = Artifact(kind=kind, inputs=inputs, preprocessing=pre, feature_names=names)
    if kind == "preprocessor":
        return art
    art.algorithm = doc.get("algorithm")
    _expect(art.algorithm in ALGORITHMS, f"algorithm must be one of {ALGORITHMS}")
    art.task = doc.get("task")
    if art.algorithm == "knn":
        return _parse_knn(art, doc.get("knn"), outputs.get("classes"), tensors)
    if art.algorithm == "rcf":
        from mmhost.artifacts.rcf import forest_from_params

        _expect(art.task == RCF_TASK, f"an rcf model's task is {RCF_TASK!r}, not {art.task!r}")
        _expect(
            all(c.type == "float" and c.missing is None for c in inputs),
            "an rcf model takes numeric columns without fill values",
        )
        forest = forest_from_params(tensors, pre.n_features)
        art.params = forest.params()
        return art
    _expect(art.task in TASKS, f"task must be one of {TASKS}, got {art.task!r}")
    if art.algorithm == "xgboost":  # the trees are checked when the model file is parsed
        art.classes = _parse_classes(art.task, outputs.get("classes"), outputs.get("n_outputs"))
        return art
    coef, intercept = tensors.get("coef"), tensors.get("intercept")
    _expect(coef is not None and intercept is not None, "params must hold 'coef' and 'intercept'")
    assert coef is not None and intercept is not None
    k = outputs.get("n_outputs")
    _expect(
        coef.ndim == 2 and coef.shape == (k, pre.n_features),
        f"coef has shape {coef.shape}; the manifest says ({k}, {pre.n_features})",
    )
    check_linear(coef, intercept, inputs, pre)
    art.classes = _parse_classes(art.task, outputs.get("classes"), k)
    art.threshold = _parse_threshold(art.task, outputs.get("threshold", 0.5))
    art.params = {"coef": coef, "intercept": intercept}
    return art


def _parse_knn(art: Artifact, raw: Any, classes: Any, tensors: dict[str, np.ndarray]) -> Artifact:
    _expect(isinstance(raw, dict), "a knn artifact needs its knn options (k, distance, ...)")
    assert isinstance(raw, dict)
    k, normalize = raw.get("k"), raw.get("normalize", False)
    _expect(
        isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_K,
        f"knn.k must be a whole number in 1..{MAX_K}, got {k!r}",
    )
    _expect(isinstance(normalize, bool), f"knn.normalize must be true or false, not {normalize!r}")
    assert isinstance(k, int)
    options = KnnOptions(k, str(raw.get("distance")), str(raw.get("weights", "uniform")), normalize)
    if classes is not None:
        _expect(
            isinstance(classes, list)
            and all(isinstance(c, (str, int, float, bool)) for c in classes),
            "outputs.classes must be a list of strings or numbers",
        )
    points, labels = tensors.get("points"), tensors.get("labels")
    _expect(points is not None and labels is not None, "params must hold 'points' and 'labels'")
    assert points is not None and labels is not None
    with np.errstate(over="ignore"):  # checked as served: float32 (a float64 1e39 is inf)
        points, labels = points.astype(np.float32), labels.astype(np.float32)
    check_knn(art.task, options, points, labels, classes, art.preprocessing.n_features)
    art.knn, art.classes = options, classes
    art.params = {"points": points, "labels": labels}
    return art


def check_knn(
    task: Any,
    options: KnnOptions,
    points: np.ndarray,
    labels: np.ndarray,
    classes: list[Any] | None,
    features: int,
) -> None:
    """A k-NN model's options, (n, F) points and (n,) labels against each other and the caps
    (ManifestError if not)."""
    _expect(task in KNN_TASKS, f"a knn model's task is one of {KNN_TASKS}, got {task!r}")
    _expect(
        options.distance in KNN_DISTANCES,
        f"knn.distance must be one of {KNN_DISTANCES}, got {options.distance!r}",
    )
    _expect(
        options.weights in KNN_WEIGHTS,
        f"knn.weights must be one of {KNN_WEIGHTS}, got {options.weights!r}",
    )
    _expect(
        options.weights == "uniform" or options.distance in ("euclidean", "cosine"),
        f"distance weights need euclidean or cosine distances, not {options.distance}",
    )
    _expect(
        points.ndim == 2 and points.shape[1] == features,
        f"points has shape {points.shape}; the preprocessing produces {features} features",
    )
    n = points.shape[0]
    _expect(
        0 < n <= MAX_KNN_POINTS and points.size <= MAX_KNN_VALUES,
        f"{n} points x {features} features: a knn model holds 1..{MAX_KNN_POINTS} points and "
        f"up to {MAX_KNN_VALUES} values",
    )
    _expect(labels.shape == (n,), f"labels has shape {labels.shape}; expected ({n},)")
    _expect(bool(np.isfinite(points).all()), "points hold NaN or inf")
    _expect(bool(np.isfinite(labels).all()), "labels hold NaN or inf")
    with np.errstate(over="ignore", invalid="ignore"):
        reach = float(np.abs(points).max(initial=0.0))
    _expect(reach <= 1e15, f"points reach {reach:g}: their squared distances pass float32")
    if task == "classifier":
        _expect(
            classes is not None and len(classes) >= 1,
            "a knn classifier needs its classes (outputs.classes)",
        )
        assert classes is not None
        try:
            ascending = all(a < b for a, b in zip(classes, classes[1:], strict=False))
        except TypeError:  # strings beside numbers
            ascending = False
        _expect(
            ascending,
            "a knn classifier's classes must be unique and ascending (a tie goes to the first)",
        )
        _expect(
            bool(((labels >= 0) & (labels < len(classes)) & (labels == np.floor(labels))).all()),
            f"a knn classifier's labels must be class indices in 0..{len(classes) - 1}",
        )
    else:
        _expect(classes is None, "a knn regressor has no classes")


def check_linear(
    coef: np.ndarray, intercept: np.ndarray, inputs: list[Column], pre: Preprocessing
) -> None:
    """A linear model's (K, F) coef and (K,) intercept: sizes within the caps, finite, and
    within float32's range once composed with the preprocessing (ManifestError if not)."""
    k = coef.shape[0]
    width = sum(len(c.categories) if c.type == "category" else 1 for c in inputs)
    _expect(
        k * width <= MAX_WEIGHTS,
        f"{k} outputs x {width} encoded inputs is over {MAX_WEIGHTS} weights",
    )
    _expect(intercept.shape == (k,), f"intercept has shape {intercept.shape}; expected ({k},)")
    _expect(
        bool(np.isfinite(coef).all() and np.isfinite(intercept).all()),
        "coef/intercept hold NaN or inf",
    )
    # the composed float32 model: |weight| <= |coef| @ |scale|, |bias| <= |intercept| +
    # |coef| @ |shift|; past float32's range they would be inf on the device
    with np.errstate(over="ignore", invalid="ignore"):
        reach = max(
            float((np.abs(coef) @ np.abs(pre.scale)).max(initial=0.0)),
            float((np.abs(intercept) + np.abs(coef) @ np.abs(pre.shift)).max(initial=0.0)),
        )
    _expect(
        reach <= _F32_MAX,
        f"coef with preprocessing.scale/shift reaches {reach:g}, past float32's range",
    )


def _parse_threshold(task: str, raw: Any) -> float:
    """A binary classifier's decision threshold on P(positive) (0.5 unless stated)."""
    _expect(
        isinstance(raw, (int, float)) and not isinstance(raw, bool) and 0.0 <= raw <= 1.0,
        f"outputs.threshold must be a number in [0, 1], got {raw!r}",
    )
    _expect(
        task == "binary_classifier" or raw == 0.5,
        "outputs.threshold applies to binary classifiers only",
    )
    return float(raw)


def _parse_classes(task: str, classes: Any, k: Any) -> list[Any] | None:
    """The class labels of a classifier, checked against the task and its output count."""
    if task == "regressor":
        _expect(k == 1, f"a regressor has 1 output, the manifest says {k}")
        return None
    _expect(isinstance(classes, list) and len(classes) >= 2, "a classifier needs >= 2 classes")
    assert isinstance(classes, list)
    want = 1 if task == "binary_classifier" else len(classes)
    _expect(
        k == want and (len(classes) == 2) == (task == "binary_classifier"),
        f"{task} with {len(classes)} classes cannot have {k} outputs",
    )
    _expect(
        all(isinstance(c, (str, int, float, bool)) for c in classes),
        "classes must be strings or numbers",
    )
    return classes


def _parse_inputs(raw: Any) -> list[Column]:
    _expect(
        isinstance(raw, list) and 0 < len(raw) <= MAX_COLUMNS,
        f"inputs must be a list of 1..{MAX_COLUMNS} columns",
    )
    cols = []
    seen: set[str] = set()
    for i, c in enumerate(raw):
        _expect(isinstance(c, dict), f"inputs[{i}] must be an object")
        name, typ = c.get("name"), c.get("type", "float")
        _expect(
            isinstance(name, str) and 0 < len(name) <= MAX_NAME and name not in seen,
            f"inputs[{i}].name must be a unique non-empty string",
        )
        seen.add(name)
        _expect(typ in COLUMN_TYPES, f"inputs[{i}].type must be one of {COLUMN_TYPES}")
        missing = c.get("missing")
        if typ == "float":
            if missing == "NaN":  # passed through to the model as NaN
                cols.append(Column(name, "float", missing=math.nan))
                continue
            _expect(
                missing is None or (isinstance(missing, (int, float)) and math.isfinite(missing)),
                f'inputs[{i}].missing must be a finite number or "NaN"',
            )
            cols.append(Column(name, "float", missing=None if missing is None else float(missing)))
            continue
        cats = c.get("categories")
        _expect(
            isinstance(cats, list)
            and 0 < len(cats) <= MAX_COLUMNS
            and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in cats)
            and len(set(cats)) == len(cats),
            f"inputs[{i}].categories must be a list of unique strings or numbers",
        )
        unknown = c.get("unknown", "error")
        _expect(unknown in ("error", "ignore"), f"inputs[{i}].unknown must be error or ignore")
        _expect(
            missing is None or isinstance(missing, (str, int, float)),
            f"inputs[{i}].missing must be a category value",
        )
        cols.append(Column(name, "category", tuple(cats), unknown, missing))
    return cols


def _parse_preprocessing(
    raw: Any, inputs: list[Column], tensors: dict[str, np.ndarray]
) -> Preprocessing:
    _expect(
        isinstance(raw, dict) and isinstance(raw.get("features"), list),
        "preprocessing.features must be a list",
    )
    assert isinstance(raw, dict)
    feats = []
    for j, f in enumerate(raw["features"]):
        _expect(isinstance(f, dict), f"preprocessing.features[{j}] must be an object")
        col, cat = f.get("column"), f.get("category")
        _expect(
            isinstance(col, int) and 0 <= col < len(inputs),
            f"preprocessing.features[{j}].column must index inputs (0..{len(inputs) - 1})",
        )
        column = inputs[col]
        if column.type == "category":
            _expect(
                isinstance(cat, int) and 0 <= cat < len(column.categories),
                f"preprocessing.features[{j}].category must index {column.name}'s categories",
            )
        else:
            _expect(cat is None, f"preprocessing.features[{j}]: {column.name} is not categorical")
        feats.append(Feature(col, cat))
    scale, shift = tensors.get("preprocessing.scale"), tensors.get("preprocessing.shift")
    _expect(
        scale is not None and shift is not None,
        "params must hold preprocessing.scale and preprocessing.shift",
    )
    assert scale is not None and shift is not None
    n = len(feats)
    _expect(
        scale.shape == (n,) and shift.shape == (n,),
        f"preprocessing.scale/shift have shapes {scale.shape}/{shift.shape}; "
        f"the manifest lists {n} features",
    )
    _expect(
        bool(np.isfinite(scale).all() and np.isfinite(shift).all()),
        "preprocessing.scale/shift hold NaN or inf",
    )
    return Preprocessing(feats, scale.astype(np.float64), shift.astype(np.float64))


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)
