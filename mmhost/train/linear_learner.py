"""``mmhost train linear-learner``: one linear model per entity, every entity fitted in one
batched solve (``solvers``), each written to the store as it is done.

The flow: read the table (``data``) -> fit the shared preprocessor on the training rows
(numbers standardized as ``StandardScaler`` does, a missing number filled with its column's
mean; categories one-hot as ``OneHotEncoder(handle_unknown="ignore")``; or per entity) ->
split each entity's holdout rows -> for batches of entities of similar size: pad, normalize
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

import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch

from mmhost.artifacts import Artifact
from mmhost.artifacts.archive import artifact_bytes
from mmhost.errors import ValidationError
from mmhost.train import solvers
from mmhost.train.data import Table, entity_path, read_table
from mmhost.train.encoding import Encoding

PREDICTOR_TYPES = ("regressor", "binary_classifier", "multiclass_classifier")
PREPROCESSOR_KEY = "preprocessor.tar.gz"
BATCH_CELLS = 1 << 22  # padded rows x features per solve batch


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


@dataclass
class EntityResult:
    entity: str
    rows: int
    train_rows: int = 0
    holdout_rows: int = 0
    status: str = "trained"  # trained | skipped | resumed
    reason: str = ""
    train_metric: float | None = None
    holdout_metric: float | None = None
    coef: np.ndarray | None = field(default=None, repr=False)  # (K, F) in the encoded space
    intercept: np.ndarray | None = field(default=None, repr=False)


@dataclass
class TrainReport:
    metric: str  # rmse | accuracy
    entities: list[EntityResult]
    preprocessor: Artifact | None

    def by_entity(self) -> dict[str, EntityResult]:
        return {e.entity: e for e in self.entities}


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
    classes = _classes(table.label, hp)
    target = Location(out, s3_endpoint_url)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))  # fmt: skip
    groups = _groups(table, hp)
    shared = Encoding.fit(table, np.concatenate([g.train for g in groups.values()]))
    pre_art = None if per_entity_preprocessing else shared.preprocessor()
    if pre_art is not None:
        target.write(PREPROCESSOR_KEY, artifact_bytes(pre_art))
    results, todo = [], []
    for name, g in groups.items():
        r = EntityResult(name, g.rows, len(g.train), len(g.holdout))
        results.append(r)
        why = _skip_reason(table, g, hp)
        if why:
            r.status, r.reason = "skipped", why
        elif resume and target.exists(entity_path(name)):
            r.status = "resumed"
        else:
            todo.append((r, g))
    todo.sort(key=lambda rg: len(rg[1].train))
    bar = _progress(len(todo), progress, err)
    for batch in _batches(todo, len(shared.feature_names), batch_entities):
        encodings = [
            Encoding.fit(table, g.train, shared) if per_entity_preprocessing else shared
            for _, g in batch
        ]
        coef, intercept = _solve(table, batch, encodings, hp, dev)
        for (r, g), enc, w, b in zip(batch, encodings, coef, intercept, strict=True):
            r.coef, r.intercept = w, b
            r.train_metric = _metric(table, g.train, enc, w, b, hp)
            if len(g.holdout):
                r.holdout_metric = _metric(table, g.holdout, enc, w, b, hp)
            art = enc.model(w, b, hp.predictor_type, classes)
            target.write(entity_path(r.entity), artifact_bytes(art))
        bar(len(batch))
    return TrainReport("rmse" if hp.predictor_type == "regressor" else "accuracy", results, pre_art)


# --- the table's entities -------------------------------------------------------------------
@dataclass
class _Group:
    rows: int
    train: np.ndarray  # row indices
    holdout: np.ndarray


def _groups(table: Table, hp: Hyperparameters) -> dict[str, _Group]:
    order = np.argsort(table.entity, kind="stable")
    names, starts = np.unique(table.entity[order], return_index=True)
    bounds = [*starts[1:], len(order)]
    out = {}
    for name, a, b in zip(names.tolist(), starts, bounds, strict=True):
        idx = order[a:b]
        given = table.holdout[idx]
        if given.any():
            train, hold = idx[~given], idx[given]
        else:
            rng = np.random.default_rng([hp.seed, zlib.crc32(str(name).encode())])
            k = int(round(hp.holdout_fraction * len(idx)))
            k = min(k, len(idx) - 1)
            pick = rng.permutation(len(idx))
            hold, train = np.sort(idx[pick[:k]]), np.sort(idx[pick[k:]])
        out[str(name)] = _Group(len(idx), train, hold)
    return out


def _classes(label: np.ndarray, hp: Hyperparameters) -> list[Any] | None:
    if hp.predictor_type == "regressor":
        return None
    k = 2 if hp.predictor_type == "binary_classifier" else int(hp.num_classes or 0)
    bad = ~np.isin(label, np.arange(k))
    if bad.any():
        raise ValidationError(
            f"row {int(np.flatnonzero(bad)[0]) + 1}: a {hp.predictor_type}'s label must be one of "
            f"0..{k - 1} (as Linear Learner reads it), not {label[bad][0]!r}"
        )
    return list(range(k))


def _skip_reason(table: Table, g: _Group, hp: Hyperparameters) -> str:
    if len(g.train) < hp.min_rows:
        return f"{len(g.train)} training rows (fewer than min_rows={hp.min_rows})"
    if hp.predictor_type != "regressor" and len(np.unique(table.label[g.train])) < 2:
        return "one label only: a classifier needs two"
    return ""


# --- solving --------------------------------------------------------------------------------
def _batches(todo: list[Any], width: int, most: int | None) -> Iterator[list[Any]]:
    """Runs of entities (sorted by rows) whose padded batch stays under BATCH_CELLS (and
    ``most`` entities)."""
    batch: list[Any] = []
    for item in todo:
        longest = max(len(item[1].train), 1)
        full = most is not None and len(batch) >= most
        if batch and (full or (len(batch) + 1) * longest * max(width, 1) > BATCH_CELLS):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _solve(
    table: Table,
    batch: list[Any],
    encodings: list[Encoding],
    hp: Hyperparameters,
    dev: torch.device,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    B = len(batch)
    n_max = max(len(g.train) for _, g in batch)
    F = len(encodings[0].feature_names)
    Z = np.zeros((B, n_max, F))
    y = np.zeros((B, n_max))
    mask = np.zeros((B, n_max))
    for i, ((_, g), enc) in enumerate(zip(batch, encodings, strict=True)):
        n = len(g.train)
        Z[i, :n] = enc.encode(table, g.train)
        y[i, :n] = table.label[g.train]
        mask[i, :n] = 1.0
    Zt, yt, mt = (torch.from_numpy(a).to(dev) for a in (Z, y, mask))
    # normalize_data: each entity's features to mean 0 (with an intercept) and std 1
    count = mt.sum(1).clamp(min=1)
    if hp.normalize_data:
        mu = (
            (Zt * mt[..., None]).sum(1) / count[:, None] if hp.fit_intercept else Zt.new_zeros(B, F)
        )
        var = (((Zt - mu[:, None]) ** 2) * mt[..., None]).sum(1) / count[:, None]
        sd = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
        Zt = (Zt - mu[:, None]) / sd[:, None] * mt[..., None]
    else:
        mu, sd = Zt.new_zeros(B, F), Zt.new_ones(B, F)
    if hp.predictor_type == "regressor":
        ymu, ysd = Zt.new_zeros(B), Zt.new_ones(B)
        if hp.scales_label:
            if hp.fit_intercept:
                ymu = (yt * mt).sum(1) / count
            v = (((yt - ymu[:, None]) ** 2) * mt).sum(1) / count
            ysd = torch.where(v > 0, v.sqrt(), torch.ones_like(v))
            yt = (yt - ymu[:, None]) / ysd[:, None] * mt
        G, c, zm, ym = solvers.centered(Zt, yt, mt, hp.fit_intercept)
        w = solvers.lasso(G, c, hp.wd, hp.l1) if hp.l1 > 0 else solvers.ridge(G, c, hp.wd)
        b = ym - (zm * w).sum(1)
        w, b = w * ysd[:, None], b * ysd + ymu  # back to the label's units
        W, bias = w[:, None, :], b[:, None]
    elif hp.predictor_type == "binary_classifier":
        w, b = solvers.logistic(Zt, yt, mt, hp.wd, hp.fit_intercept)
        W, bias = w[:, None, :], b[:, None]
    else:
        W, bias = solvers.softmax(Zt, yt, mt, int(hp.num_classes or 0), hp.wd, hp.fit_intercept)
    # fold normalize_data back: w z' + b with z' = (z - mu) / sd
    W = W / sd[:, None, :]
    bias = bias - (W * mu[:, None, :]).sum(2)
    Wn, bn = W.cpu().numpy(), bias.cpu().numpy()
    return [Wn[i] for i in range(B)], [bn[i] for i in range(B)]


def _metric(
    table: Table,
    rows: np.ndarray,
    enc: Encoding,
    w: np.ndarray,
    b: np.ndarray,
    hp: Hyperparameters,
) -> float:
    """RMSE (a regressor) or accuracy (a classifier) of the model on ``rows``."""
    s = enc.encode(table, rows) @ w.T + b  # (n, K)
    y = table.label[rows]
    if hp.predictor_type == "regressor":
        return float(np.sqrt(np.mean((s[:, 0] - y) ** 2)))
    pred = (s[:, 0] > 0).astype(float) if s.shape[1] == 1 else s.argmax(1).astype(float)
    return float(np.mean(pred == y))


def _progress(total: int, show: bool, err: TextIO) -> Any:
    if not show:
        return lambda n: None
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        done = [0]

        def count(n: int) -> None:
            done[0] += n
            print(f"mmhost train: {done[0]}/{total} entities", file=err)

        return count
    bar = tqdm(total=total, desc="mmhost train", unit="entity", file=err)
    return bar.update
