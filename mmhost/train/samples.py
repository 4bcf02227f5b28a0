"""``mmhost train knn`` and ``mmhost train rcf``: per-entity models that keep samples of their
rows, with the same data options and outputs as ``linear-learner``.

- k-NN (SageMaker's k-NN hyperparameters ``k``, ``sample_size``, ``predictor_type``
  classifier | regressor): each entity keeps up to ``sample_size`` of its rows (drawn by
  ``seed``), encoded by the shared preprocessing, and votes (or averages) its ``k`` nearest by
  squared L2 distance, as SageMaker's k-NN with a flat index does.
- Random Cut Forest (``num_trees``, ``num_samples_per_tree``): each entity's numeric rows
  streamed into a forest of AWS's library (``convert.fit_rcf``; ``pip install 'mmhost[rcf]'``).

Each model is written as it is done (``{entity}/{entity}.tar.gz``); ``resume`` skips those
already there; an entity with too few rows is reported and skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from mmhost.artifacts import Artifact
from mmhost.artifacts.archive import artifact_bytes
from mmhost.artifacts.manifest import KnnOptions
from mmhost.errors import ValidationError
from mmhost.train.data import Table, entity_path, read_table
from mmhost.train.encoding import Encoding
from mmhost.train.groups import Group, entity_groups
from mmhost.train.report import EntityResult, TrainReport, progress_bar

KNN_TYPES = ("classifier", "regressor")


def train_knn(
    data: str,
    out: str,
    *,
    k: int,
    sample_size: int,
    predictor_type: str = "classifier",
    seed: int = 0,
    **options: Any,
) -> TrainReport:
    """One k-NN model per entity of ``data``, written under ``out``; see the module docstring.
    ``options``: ``train_linear_learner``'s data and run options."""
    if predictor_type not in KNN_TYPES:
        raise ValidationError(f"a k-NN predictor_type is one of {', '.join(KNN_TYPES)}")
    if k < 1 or sample_size < 1:
        raise ValidationError("k and sample_size must be >= 1")
    table, rest = _table(data, options, labelled=True)
    classes = None
    if predictor_type == "classifier":
        classes = sorted({_plain(v) for v in table.label.tolist()})
    index = {c: i for i, c in enumerate(classes or [])}
    shared = Encoding.fit(table, np.arange(len(table.label)))

    def fit(g: Group, rng: np.random.Generator) -> Artifact:
        rows = g.train
        if len(rows) > sample_size:
            rows = np.sort(rng.choice(rows, sample_size, replace=False))
        points = shared.encode(table, rows)
        y = table.label[rows]
        labels = np.array([index[_plain(v)] for v in y.tolist()]) if classes else y
        return Artifact(
            "model", shared.columns, shared.preprocessing(), "knn", predictor_type, classes,
            shared.feature_names,
            {"points": points.astype(np.float32), "labels": labels.astype(np.float32)},
            knn=KnnOptions(k),
        )  # fmt: skip

    return _each(table, out, fit, min_rows=k, seed=seed, shared=shared.preprocessor(), **rest)


def train_rcf(
    data: str,
    out: str,
    *,
    num_trees: int = 100,
    num_samples_per_tree: int = 256,
    seed: int = 0,
    **options: Any,
) -> TrainReport:
    """One Random Cut Forest per entity of ``data`` (numeric columns), written under ``out``."""
    from mmhost.convert.rcf import fit_rcf

    table, rest = _table(data, options, labelled=False)
    names = list(table.features)
    for name, values in table.features.items():
        if values.dtype == object:
            raise ValidationError(f"column {name!r} is not numeric: a forest takes numbers only")
        if np.isnan(values).any():
            raise ValidationError(f"column {name!r} has missing values: a forest takes none")

    def fit(g: Group, rng: np.random.Generator) -> Artifact:
        X = np.stack([table.features[n][g.train] for n in names], axis=1)
        return fit_rcf(X, num_trees, num_samples_per_tree, int(rng.integers(2**31)), names)

    return _each(table, out, fit, min_rows=1, seed=seed, shared=None, **rest)


_DATA = ("entity_column", "label_column", "feature_columns", "categorical_columns",
         "feature_names", "s3_endpoint_url")  # fmt: skip


def _table(data: str, options: dict[str, Any], labelled: bool) -> tuple[Table, dict[str, Any]]:
    args = {k: options.pop(k, None) for k in _DATA}
    table = read_table(data, labelled=labelled, **args)
    return table, {"s3_endpoint_url": args["s3_endpoint_url"], **options}


def _each(
    table: Table,
    out: str,
    fit: Callable[[Group, np.random.Generator], Artifact],
    *,
    min_rows: int,
    seed: int,
    shared: Artifact | None,
    resume: bool = False,
    progress: bool = False,
    s3_endpoint_url: str | None = None,
    err: TextIO = sys.stderr,
) -> TrainReport:
    """Fit and write every entity's model, one at a time."""
    from mmhost.convert.bulk import Location

    target = Location(out, s3_endpoint_url)
    if shared is not None:
        target.write("preprocessor.tar.gz", artifact_bytes(shared))
    least = max(min_rows, 1)
    groups = entity_groups(table, 0.0, seed)
    start = progress_bar(progress, err)
    bar = start(len(groups)) if start is not None else None
    results = []
    for name, g in groups.items():
        r = EntityResult(name, g.rows, len(g.train))
        results.append(r)
        if len(g.train) < least:
            r.status, r.reason = "skipped", f"{len(g.train)} rows (fewer than {least})"
        elif resume and target.exists(entity_path(name)):
            r.status = "resumed"
        else:
            rng = np.random.default_rng([seed, len(results)])
            target.write(entity_path(name), artifact_bytes(fit(g, rng)))
        if bar is not None:
            bar(1)
    return TrainReport("none", results, shared)


def _plain(v: float) -> float | int:
    """A label as a class value: 2.0 -> 2 (SageMaker's k-NN labels are numbers)."""
    return int(v) if float(v).is_integer() else float(v)
