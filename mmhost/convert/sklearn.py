"""scikit-learn estimators and pipelines -> mmhost artifacts.

The converter walks the fitted pipeline and tracks, for every intermediate feature, what it is
in terms of the raw input columns (see ``artifacts.manifest``: a scaled/shifted numeric column
or one-hot indicator). Every supported step maps that form to itself, so the result is the
canonical ``Preprocessing`` plus the final linear estimator's coefficients, stored unfolded.
Folding into one linear model happens at load (``families.linear``), where a shared
preprocessor can be composed in front too.

Size: one walker over every supported scikit-learn step; each step's rule is short and they
share the feature-tracking state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mmhost.artifacts import Artifact, Column, Feature, Preprocessing
from mmhost.artifacts.manifest import KnnOptions
from mmhost.artifacts.xgboost import read_xgboost
from mmhost.errors import UnsupportedModel

REGRESSORS = ("LinearRegression", "Ridge", "Lasso", "ElasticNet", "SGDRegressor")
CLASSIFIERS = ("LogisticRegression",)
XGBOOST = ("XGBRegressor", "XGBClassifier")  # XGBoost's scikit-learn wrappers: trees
KNN = ("KNeighborsClassifier", "KNeighborsRegressor")
RADIUS = ("RadiusNeighborsClassifier", "RadiusNeighborsRegressor")


@dataclass(frozen=True)
class _Feat:
    """An intermediate feature: raw value of a column (not yet typed), numeric a*x+c, or the
    a*indicator+c of one category."""

    column: int
    kind: str  # "raw" | "num" | "ind"
    scale: float = 1.0
    shift: float = 0.0
    category: Any = None


class _State:
    """Conversion state: raw columns (name, type, categories, fill) and current features."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.types: dict[int, str] = {}
        self.categories: dict[int, list[Any]] = {}
        self.unknown: dict[int, str] = {}
        self.missing: dict[int, Any] = {}

    def set_type(self, col: int, typ: str, step: str) -> None:
        if self.types.setdefault(col, typ) != typ:
            raise UnsupportedModel(
                f"column {self.names[col]!r} is used both as a number and as a category (at {step})"
            )


def from_sklearn(estimator: Any, columns: Sequence[str] | None = None) -> Artifact:
    """Convert a fitted estimator, pipeline or transformer to an mmhost artifact.

    ``columns`` names the raw input columns in order (defaults to the estimator's
    ``feature_names_in_``, else x0, x1, ...). A fitted transformer alone (e.g. a
    ColumnTransformer) becomes a *preprocessor* artifact.
    """
    names = _column_names(estimator, columns)
    state = _State(names)
    feats = [_Feat(i, "raw") for i in range(len(names))]
    steps = _flatten(estimator)
    final = steps[-1]
    is_model = _is_estimator(final)
    for step in steps[:-1] if is_model else steps:
        feats = _apply(step, feats, state)
    feats = [_finalize(f, state) for f in feats]

    inputs = []
    for i, name in enumerate(names):
        if state.types.get(i) == "category":
            cats = state.categories[i]
            inputs.append(
                Column(name, "category", tuple(cats), state.unknown[i], state.missing.get(i))
            )
        else:
            fill = state.missing.get(i)
            if fill is None and is_model and type(final).__name__ in XGBOOST:
                fill = math.nan  # trees take missing values: NaN goes each split's default way
            inputs.append(Column(name, "float", missing=None if fill is None else float(fill)))
    pre = Preprocessing(
        [
            Feature(
                f.column, None if f.kind == "num" else state.categories[f.column].index(f.category)
            )
            for f in feats
        ],
        np.array([f.scale for f in feats], np.float64),
        np.array([f.shift for f in feats], np.float64),
    )
    feature_names = [
        names[f.column] if f.kind == "num" else f"{names[f.column]}={f.category}" for f in feats
    ]
    if not is_model:
        return Artifact("preprocessor", inputs, pre, feature_names=feature_names)
    return _model_artifact(final, inputs, pre, feature_names)


def _model_artifact(
    est: Any, inputs: list[Column], pre: Preprocessing, feature_names: list[str]
) -> Artifact:
    kind = type(est).__name__
    if kind in XGBOOST:
        return _xgboost_artifact(est, inputs, pre, feature_names)
    if kind in KNN:
        return _knn_artifact(est, inputs, pre, feature_names)
    coef = np.atleast_2d(np.asarray(est.coef_, np.float64))
    intercept = np.atleast_1d(np.asarray(est.intercept_, np.float64))
    if coef.shape[1] != pre.n_features:
        raise UnsupportedModel(
            f"{kind} expects {coef.shape[1]} features but the steps in front "
            f"of it produce {pre.n_features}"
        )
    if kind in REGRESSORS:
        if coef.shape[0] != 1:
            raise UnsupportedModel(
                f"{kind} with {coef.shape[0]} targets: only single-target regression is supported"
            )
        return Artifact(
            "model",
            inputs,
            pre,
            "linear",
            "regressor",
            None,
            feature_names,
            {"coef": coef, "intercept": intercept[:1]},
        )
    classes = _labels(est)
    if len(classes) > 2:
        mc = getattr(est, "multi_class", "auto")
        if mc == "ovr" or (mc == "auto" and getattr(est, "solver", "") == "liblinear"):
            raise UnsupportedModel(
                "LogisticRegression with one-vs-rest multiclass is not "
                "supported; fit it multinomial (the default)"
            )
        task = "multiclass_classifier"
    else:
        task = "binary_classifier"
    return Artifact(
        "model",
        inputs,
        pre,
        "linear",
        task,
        classes,
        feature_names,
        {"coef": coef, "intercept": intercept},
    )


def _xgboost_artifact(
    est: Any, inputs: list[Column], pre: Preprocessing, feature_names: list[str]
) -> Artifact:
    """An XGBRegressor / XGBClassifier behind the steps: the model file as XGBoost saves it
    (UBJSON), checked now so an unsupported model fails at conversion, not at load."""
    kind = type(est).__name__
    missing = getattr(est, "missing", math.nan)
    if not (isinstance(missing, float) and math.isnan(missing)):
        raise UnsupportedModel(
            f"{kind}(missing={missing!r}): only NaN as the missing value is supported"
        )
    blob = bytes(est.get_booster().save_raw(raw_format="ubj"))
    ens = read_xgboost(blob)  # UnsupportedModel for dart, categorical splits, objectives...
    if ens.num_feature != pre.n_features:
        raise UnsupportedModel(
            f"{kind} expects {ens.num_feature} features but the steps in front "
            f"of it produce {pre.n_features}"
        )
    task, classes = "regressor", None
    if kind == "XGBClassifier":
        classes = _labels(est)
        task = "binary_classifier" if len(classes) == 2 else "multiclass_classifier"
        want = "binary:logistic" if len(classes) == 2 else "multi:softprob"
        if ens.objective != want:
            raise UnsupportedModel(
                f"XGBClassifier with {len(classes)} classes and objective {ens.objective}: "
                f"mmhost serves its probabilities from {want}"
            )
    elif ens.num_class != 1 or ens.link == "softmax":
        raise UnsupportedModel(
            f"XGBRegressor with {ens.num_class} outputs ({ens.objective}): only one is supported"
        )
    return Artifact("model", inputs, pre, "xgboost", task, classes, feature_names, {}, xgboost=blob)


def _knn_artifact(
    est: Any, inputs: list[Column], pre: Preprocessing, feature_names: list[str]
) -> Artifact:
    """A KNeighborsClassifier / KNeighborsRegressor behind the steps: its fitted points (the
    encoded training rows, ``_fit_X``) and labels (``_y``: class indices, or values)."""
    kind = type(est).__name__
    weights = est.weights
    if callable(weights) or weights not in ("uniform", "distance"):
        raise UnsupportedModel(
            f"{kind}(weights={weights!r}): mmhost serves 'uniform' and 'distance' weights"
        )
    metric = est.effective_metric_
    if metric in ("euclidean", "l2") and not est.effective_metric_params_:
        distance = "euclidean"
    elif metric == "cosine":
        distance = "cosine"
    else:
        shown = f"{metric!r}" + (
            f" with {est.effective_metric_params_}" if est.effective_metric_params_ else ""
        )
        raise UnsupportedModel(
            f"{kind}(metric={est.metric!r}) searches by {shown}: mmhost serves euclidean "
            "(minkowski with p=2) and cosine"
        )
    fit_x = est._fit_X
    if not isinstance(fit_x, np.ndarray):
        raise UnsupportedModel(f"{kind} was fitted on {type(fit_x).__name__}; fit it on dense rows")
    points = np.asarray(fit_x, np.float64)
    y = np.asarray(est._y)
    if y.ndim != 1:
        raise UnsupportedModel(f"{kind} with {y.shape[1]} outputs: only one target is supported")
    if points.shape[1] != pre.n_features:
        raise UnsupportedModel(
            f"{kind} expects {points.shape[1]} features but the steps in front "
            f"of it produce {pre.n_features}"
        )
    if est.n_neighbors > len(points):
        raise UnsupportedModel(
            f"{kind}(n_neighbors={est.n_neighbors}) was fitted on {len(points)} rows: "
            "scikit-learn cannot predict with it either"
        )
    if distance == "cosine":  # unit points; queries are normalized as they arrive
        norms = np.linalg.norm(points, axis=1, keepdims=True)
        points = np.divide(points, norms, out=np.zeros_like(points), where=norms > 0)
    task, classes = "regressor", None
    if kind == "KNeighborsClassifier":
        task, classes = "classifier", _labels(est)
    options = KnnOptions(int(est.n_neighbors), distance, weights, distance == "cosine")
    return Artifact(
        "model",
        inputs,
        pre,
        "knn",
        task,
        classes,
        feature_names,
        {"points": points.astype(np.float32), "labels": y.astype(np.float32)},
        knn=options,
    )


def _labels(est: Any) -> list[Any]:
    """A classifier's class labels as plain Python values (numpy scalars unwrapped)."""
    return [c.item() if hasattr(c, "item") else c for c in est.classes_]


def _apply(step: Any, feats: list[_Feat], state: _State) -> list[_Feat]:
    kind = type(step).__name__
    if isinstance(step, str):
        if step == "passthrough":
            return feats
        if step == "drop":
            return []
        raise UnsupportedModel(f"unsupported step {step!r}")
    if step is None:
        return feats
    if kind == "ColumnTransformer":
        return _column_transformer(step, feats, state)
    if kind == "Pipeline":
        for _name, sub in step.steps:
            feats = _apply(sub, feats, state)
        return feats
    if kind == "StandardScaler":
        n = len(feats)
        mean = step.mean_ if step.with_mean else np.zeros(n)
        scale = step.scale_ if step.with_std else np.ones(n)
        out = []
        for f, mu, sd in zip(
            feats, np.broadcast_to(mean, n), np.broadcast_to(scale, n), strict=True
        ):
            f = _as_number(f, state, kind)
            out.append(replace(f, scale=f.scale / sd, shift=(f.shift - mu) / sd))
        return out
    if kind == "FunctionTransformer" and step.func is None:
        return feats  # how a fitted ColumnTransformer spells remainder="passthrough"
    if kind == "SimpleImputer":
        return _imputer(step, feats, state)
    if kind == "OneHotEncoder":
        return _one_hot(step, feats, state)
    raise UnsupportedModel(
        f"unsupported step {kind}: mmhost converts StandardScaler, "
        "OneHotEncoder, SimpleImputer, ColumnTransformer and passthrough in "
        f"front of {', '.join(REGRESSORS + CLASSIFIERS)}"
    )


def _column_transformer(ct: Any, feats: list[_Feat], state: _State) -> list[_Feat]:
    out: list[_Feat] = []
    for name, trans, cols in ct.transformers_:
        picked = [feats[i] for i in _indices(cols, feats, state, name)]
        if not picked:
            continue
        out.extend(_apply(trans, picked, state))
    return out


def _indices(cols: Any, feats: list[_Feat], state: _State, where: str) -> list[int]:
    n = len(feats)
    if callable(cols):
        raise UnsupportedModel(f"column selector of {where!r} is a callable; use names or indices")
    if isinstance(cols, slice):
        return list(range(n))[cols]
    arr = np.atleast_1d(np.asarray(cols))
    if arr.dtype == bool:
        return [int(i) for i in np.flatnonzero(arr)]
    if arr.dtype.kind in "iu":
        return [int(i) % n for i in arr]
    names = [state.names[f.column] if f.kind == "raw" else None for f in feats]
    out = []
    for c in arr.tolist():
        if c not in names:
            raise UnsupportedModel(
                f"column {c!r} of {where!r} is not an input column ({[n for n in names if n]})"
            )
        out.append(names.index(c))
    return out


def _imputer(step: Any, feats: list[_Feat], state: _State) -> list[_Feat]:
    missing = step.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)) and missing is not None:
        raise UnsupportedModel(f"SimpleImputer(missing_values={missing!r}): only NaN/None")
    if getattr(step, "add_indicator", False):
        raise UnsupportedModel("SimpleImputer(add_indicator=True) is not supported")
    if step.strategy not in ("mean", "median", "constant", "most_frequent"):
        raise UnsupportedModel(f"SimpleImputer(strategy={step.strategy!r}) is not supported")
    stats = list(step.statistics_)
    if len(stats) != len(feats):
        raise UnsupportedModel("SimpleImputer dropped all-missing columns (keep_empty_features)")
    for f, stat in zip(feats, stats, strict=True):
        if f.kind == "ind":
            raise UnsupportedModel("SimpleImputer after OneHotEncoder is not supported")
        if f.column in state.missing:
            continue  # an earlier imputer already filled this column: NaN never gets here
        value = stat.item() if hasattr(stat, "item") else stat
        if f.kind == "num":
            value = (float(value) - f.shift) / f.scale
        state.missing[f.column] = value
    return feats


def _one_hot(step: Any, feats: list[_Feat], state: _State) -> list[_Feat]:
    if step.handle_unknown not in ("error", "ignore"):
        raise UnsupportedModel(
            f"OneHotEncoder(handle_unknown={step.handle_unknown!r}) is not "
            "supported; use 'error' or 'ignore'"
        )
    if getattr(step, "_infrequent_enabled", False):
        raise UnsupportedModel("OneHotEncoder with infrequent categories is not supported")
    drop = getattr(step, "drop_idx_", None)
    out: list[_Feat] = []
    for i, (f, cats) in enumerate(zip(feats, step.categories_, strict=True)):
        if f.kind != "raw":
            raise UnsupportedModel(
                f"OneHotEncoder on a transformed column "
                f"({state.names[f.column]!r}) is not supported"
            )
        values = [c.item() if hasattr(c, "item") else c for c in cats]
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
            raise UnsupportedModel(
                f"OneHotEncoder learned a missing-value category for "
                f"{state.names[f.column]!r}; impute it first"
            )
        state.set_type(f.column, "category", "OneHotEncoder")
        state.categories[f.column] = values
        state.unknown[f.column] = step.handle_unknown
        dropped = None if drop is None or drop[i] is None else int(drop[i])
        out.extend(_Feat(f.column, "ind", category=v) for j, v in enumerate(values) if j != dropped)
    return out


def _as_number(f: _Feat, state: _State, step: str) -> _Feat:
    if f.kind == "raw":
        state.set_type(f.column, "float", step)
        return replace(f, kind="num")
    return f


def _finalize(f: _Feat, state: _State) -> _Feat:
    return _as_number(f, state, "passthrough") if f.kind == "raw" else f


def _flatten(est: Any) -> list[Any]:
    if type(est).__name__ == "Pipeline":
        return [s for _name, s in est.steps if s is not None and s != "passthrough"]
    return [est]


def _is_estimator(step: Any) -> bool:
    kind = type(step).__name__
    if kind in REGRESSORS + CLASSIFIERS + XGBOOST + KNN:
        return True
    if kind in RADIUS:
        raise UnsupportedModel(f"{kind} is not served: radius searches are not; use KNeighbors*")
    if hasattr(step, "predict") and not hasattr(step, "transform"):
        known = ", ".join(REGRESSORS + CLASSIFIERS + XGBOOST + KNN)
        raise UnsupportedModel(f"unsupported estimator {kind}: mmhost converts {known}")
    return False


def _column_names(est: Any, columns: Sequence[str] | None) -> list[str]:
    first = _flatten(est)[0]
    learned = getattr(first, "feature_names_in_", None)
    n = getattr(first, "n_features_in_", None)
    if columns is not None:
        names = [str(c) for c in columns]
        if learned is not None and list(learned) != names:
            raise UnsupportedModel(f"columns {names} differ from the fitted names {list(learned)}")
        if n is not None and n != len(names):
            raise UnsupportedModel(f"{len(names)} columns given; the estimator was fitted on {n}")
        return names
    if learned is not None:
        return [str(c) for c in learned]
    if n is None:
        raise UnsupportedModel(f"{type(first).__name__} is not fitted (no n_features_in_)")
    return [f"x{i}" for i in range(n)]
