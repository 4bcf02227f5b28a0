"""``mmhost train linear-learner``: one linear model per entity, every entity fitted in one
batched solve (``solvers``), each written to the store as it is done.

The flow: read the table (``data``) -> group its rows by entity and split each entity's
holdout rows (``groups``) -> fit the shared preprocessor on the training rows (numbers
standardized as ``StandardScaler`` does, a missing number filled with its column's mean;
categories one-hot as ``OneHotEncoder(handle_unknown="ignore")``; or per entity) -> fit:
regressors from each entity's moments and binary classifiers by the C++ Newton kernel, on the
table's own columns (``moments``); multiclass classifiers, per-entity preprocessing and what
the kernels leave in padded batches of entities of similar size (``fit``): normalize
(``normalize_data``, ``normalize_label``), solve, fold the normalization back into the weights
-> write ``{entity}/{entity}.tar.gz``, self-contained (the preprocessing travels with it; the
linear family composes it away at load) -> the report.

Hyperparameters are named and defaulted as SageMaker's Linear Learner where they apply
(``predictor_type``, ``num_classes``, ``wd``, ``l1``, ``normalize_data``, ``normalize_label``,
``fit_intercept``); the objective each minimizes is in ``solvers``. An entity too small to fit
(fewer than ``min_rows`` training rows) or a classifier's entity with one label only is
reported and skipped.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import torch

from mmhost.artifacts import Artifact
from mmhost.artifacts.archive import artifact_bytes
from mmhost.errors import ValidationError
from mmhost.train import moments
from mmhost.train.data import Table, entity_path, read_table
from mmhost.train.encoding import Encoding
from mmhost.train.fit import Solved, batches, solve_batch
from mmhost.train.groups import Groups, entity_groups
from mmhost.train.report import EntityResult, TrainReport, progress_bar

PREDICTOR_TYPES = ("regressor", "binary_classifier", "multiclass_classifier")
PREPROCESSOR_KEY = "preprocessor.tar.gz"
_METRICS = ("rmse", "accuracy")  # a regressor's, a classifier's
# labels checked a run of rows at a time: a whole column's temporaries (16 MB for 2 M rows) each
# cost more in fresh pages than the comparisons
CHECK_ROWS = 1 << 16


@dataclass(frozen=True)
class Hyperparameters:
    predictor_type: str = "regressor"
    num_classes: int | None = None
    wd: float = 0.0
    l1: float = 0.0
    normalize_data: bool = True
    normalize_label: bool | None = None  # None: "auto", true for a regressor
    fit_intercept: bool = True
    holdout_fraction: float = 0.2
    min_rows: int = 1
    seed: int = 0

    def check(self) -> None:
        if self.predictor_type not in PREDICTOR_TYPES:
            raise ValidationError(f"predictor_type must be one of {', '.join(PREDICTOR_TYPES)}")
        if self.predictor_type == "multiclass_classifier" and (self.num_classes or 0) < 3:
            raise ValidationError("a multiclass_classifier needs num_classes >= 3")
        if self.wd < 0 or self.l1 < 0:
            raise ValidationError("wd and l1 must be >= 0")
        if self.l1 > 0 and self.predictor_type != "regressor":
            raise ValidationError("l1 is supported for regressors only (use wd for classifiers)")
        if not 0 <= self.holdout_fraction < 1:
            raise ValidationError("holdout_fraction must be in [0, 1)")
        if self.min_rows < 1:
            raise ValidationError("min_rows must be >= 1")

    @property
    def scales_label(self) -> bool:
        if self.predictor_type != "regressor":
            return False
        return True if self.normalize_label is None else self.normalize_label


def train_linear_learner(
    data: str,
    out: str,
    *,
    entity_column: str | None = None,
    label_column: str | None = None,
    feature_columns: list[str] | None = None,
    categorical_columns: list[str] | None = None,
    feature_names: list[str] | None = None,
    per_entity_preprocessing: bool = False,
    resume: bool = False,
    device: str = "auto",
    batch_entities: int | None = None,
    progress: bool = False,
    s3_endpoint_url: str | None = None,
    err: TextIO = sys.stderr,
    **hyperparameters: Any,
) -> TrainReport:
    """Fit every entity's model of ``data`` and write them under ``out`` (a folder or an S3
    prefix); see the module docstring. The report's entities keep the fitted weights.
    ``batch_entities`` caps the entities solved (and written) per batch."""
    from mmhost.convert.bulk import Location

    hp = Hyperparameters(**hyperparameters)
    hp.check()
    table = read_table(
        data, entity_column, label_column, feature_columns, categorical_columns, feature_names,
        s3_endpoint_url,
    )  # fmt: skip
    target = Location(out, s3_endpoint_url)

    def write(r: EntityResult, art: Artifact) -> None:
        target.write(entity_path(r.entity), artifact_bytes(art))

    def shared(art: Artifact) -> None:
        target.write(PREPROCESSOR_KEY, artifact_bytes(art))

    done = (lambda name: target.exists(entity_path(name))) if resume else None
    return _fit(
        table, hp, per_entity_preprocessing, _device(device), batch_entities, done, write,
        None if per_entity_preprocessing else shared, progress_bar(progress, err),
    )  # fmt: skip


def fit_table(
    table: Table,
    *,
    per_entity_preprocessing: bool = False,
    device: str = "auto",
    batch_entities: int | None = None,
    **hyperparameters: Any,
) -> TrainReport:
    """Every entity's model of an in-memory ``Table`` (``data.read_table``), written nowhere:
    the report's entities hold the weights."""
    hp = Hyperparameters(**hyperparameters)
    hp.check()
    return _fit(
        table, hp, per_entity_preprocessing, _device(device), batch_entities, None, None, None,
        None,
    )  # fmt: skip


def _fit(
    table: Table,
    hp: Hyperparameters,
    per_entity: bool,
    dev: torch.device,
    batch_entities: int | None,
    done: Callable[[str], bool] | None,
    write: Callable[[EntityResult, Artifact], None] | None,
    write_shared: Callable[[Artifact], None] | None,
    progress: Callable[[int], Callable[[int], None]] | None,
) -> TrainReport:
    if batch_entities is not None and batch_entities < 1:
        raise ValidationError(f"batch_entities must be >= 1, not {batch_entities}")
    classes = _classes(table.label, hp)
    groups = entity_groups(table, hp.holdout_fraction, hp.seed)
    from_moments = hp.predictor_type != "multiclass_classifier" and not per_entity
    regressor = hp.predictor_type == "regressor"
    layout = moments.Layout.fit(table, groups, regressor) if from_moments else None
    if layout is not None:
        shared = layout.encoding
    else:
        shared = Encoding.fit(table, groups.train_order)
    pre_art = None if per_entity else shared.preprocessor()
    if pre_art is not None and write_shared is not None:
        write_shared(pre_art)
    with _collector_paused():
        return _fit_entities(
            table, hp, groups, layout, shared, per_entity, dev, batch_entities, done, write,
            progress, classes, pre_art,
        )  # fmt: skip


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Every object the process holds when a run starts (torch's, pandas', the table's) set
    aside from Python's cycle collector for the run: its full passes over all of them cost
    ~0.1 s each, more than fitting 10,000 entities, and the run's own objects (one result per
    entity) would trigger several. What the run makes is still collected."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _fit_entities(
    table: Table,
    hp: Hyperparameters,
    groups: Groups,
    layout: moments.Layout | None,
    shared: Encoding,
    per_entity: bool,
    dev: torch.device,
    batch_entities: int | None,
    done: Callable[[str], bool] | None,
    write: Callable[[EntityResult, Artifact], None] | None,
    progress: Callable[[int], Callable[[int], None]] | None,
    classes: list[Any] | None,
    pre_art: Artifact | None,
) -> TrainReport:
    train, held = groups.train_counts.tolist(), groups.holdout_counts.tolist()
    results = [
        EntityResult(name, t + h, t, h)
        for name, t, h in zip(groups.names, train, held, strict=True)
    ]
    one_label = _one_label(table, groups) if classes else np.zeros(len(results), bool)
    todo = []
    for e, r in enumerate(results):
        if train[e] < hp.min_rows:
            r.status = "skipped"
            r.reason = f"{train[e]} training rows (fewer than min_rows={hp.min_rows})"
        elif one_label[e]:
            r.status, r.reason = "skipped", "one label only: a classifier needs two"
        elif done is not None and done(r.entity):
            r.status = "resumed"
        else:
            todo.append(e)
    bar = progress(len(todo)) if progress is not None else None
    width = len(shared.feature_names)

    def padded(entities: list[int]) -> None:
        """The batched torch solver, on batches of similar sizes (they pad least)."""
        entities = sorted(entities, key=lambda e: train[e])
        for batch in batches([(e, groups.group(e)) for e in entities], width, batch_entities):
            encodings = [
                Encoding.fit(table, g.train, shared) if per_entity else shared for _, g in batch
            ]
            solved = solve_batch(table, batch, encodings, hp, dev)
            _keep(results, [e for e, _ in batch], solved, encodings, hp, classes, write)
            if bar is not None:
                bar(len(batch))

    if layout is None:
        padded(todo)
        return TrainReport(_METRICS[hp.predictor_type != "regressor"], results, pre_art)
    for run in moments.batches(np.array(todo, np.int64), width, batch_entities):
        fitted: moments.Fitted | None = None
        left = run[:0]
        if hp.predictor_type == "regressor":
            fitted = layout.fit_entities(groups, run, hp, dev)
        else:  # a binary classifier: the C++ Newton kernel, where there is one
            got = layout.fit_logistic(table, groups, run, hp) if dev.type == "cpu" else None
            fitted, left = got if got is not None else (None, run)
        if fitted is not None:
            kept = np.setdiff1d(run, left, assume_unique=True).tolist()
            _keep(results, kept, fitted, [shared] * len(kept), hp, classes, write)
            if bar is not None:
                bar(len(kept))
        if len(left):
            padded(left.tolist())
    return TrainReport(_METRICS[hp.predictor_type != "regressor"], results, pre_art)


def _keep(
    results: list[EntityResult],
    entities: list[int],
    solved: Solved | moments.Fitted,
    encodings: list[Encoding],
    hp: Hyperparameters,
    classes: list[Any] | None,
    write: Callable[[EntityResult, Artifact], None] | None,
) -> None:
    """A batch's weights and metrics into its entities' results, and each model written."""
    each = zip(
        entities, encodings, solved.coef, solved.intercept, solved.train_metric.tolist(),
        solved.holdout_metric.tolist(), strict=True,
    )  # fmt: skip
    for e, enc, coef, intercept, train, hold in each:
        r = results[e]
        r.coef, r.intercept, r.train_metric = coef, intercept, train
        if hold == hold:  # not NaN: the entity has holdout rows
            r.holdout_metric = hold
        if write is not None:
            write(r, enc.model(r.coef, r.intercept, hp.predictor_type, classes))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- the table's entities -------------------------------------------------------------------
def _classes(label: np.ndarray, hp: Hyperparameters) -> list[Any] | None:
    if hp.predictor_type == "regressor":
        return None
    k = 2 if hp.predictor_type == "binary_classifier" else int(hp.num_classes or 0)
    allowed = np.arange(k)
    for i in range(0, len(label), CHECK_ROWS):
        bad = ~np.isin(label[i : i + CHECK_ROWS], allowed)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValidationError(
                f"row {i + j + 1}: a {hp.predictor_type}'s label must be one of 0..{k - 1} (as "
                f"Linear Learner reads it), not {label[i + j]!r}"
            )
    return list(range(k))


def _one_label(table: Table, groups: Groups) -> np.ndarray:
    """Whether each entity's training rows have one label only (or none)."""
    counts = groups.train_counts
    y = table.label if groups.in_place else table.label[groups.train_order]
    lo, hi = np.zeros(len(counts)), np.zeros(len(counts))
    some = np.flatnonzero(counts > 0)
    if len(some):
        starts = groups.train_starts[some]
        lo[some] = np.minimum.reduceat(y, starts)
        hi[some] = np.maximum.reduceat(y, starts)
    return lo == hi
