"""One batch of entities solved at once: their rows padded into (B, n, F), normalized as the
hyperparameters say, handed to ``solvers``, and the normalization folded back into each
entity's weights (in the encoded feature space); and a fitted model's metric."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmhost.train import solvers
from mmhost.train.data import Table
from mmhost.train.encoding import Encoding

if TYPE_CHECKING:
    from mmhost.train.linear_learner import Hyperparameters

BATCH_CELLS = 1 << 22  # padded rows x features per solve batch


def batches(todo: list[Any], width: int, most: int | None) -> Iterator[list[Any]]:
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


@dataclass
class Solved:
    """A batch's weights in the encoded space, (B, K, F) and (B, K), and each entity's metric
    on its training and its holdout rows (NaN: no holdout rows)."""

    coef: np.ndarray
    intercept: np.ndarray
    train_metric: np.ndarray
    holdout_metric: np.ndarray


def encoded_rows(
    table: Table, rows: list[np.ndarray], encodings: list[Encoding]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Z, flat row indices, each row's entity in the batch) of every entity's ``rows``: one
    encode call for a shared encoding, one per entity otherwise."""
    flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    seg = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    if all(e is encodings[0] for e in encodings):
        return encodings[0].encode(table, flat), flat, seg
    parts = [e.encode(table, r) for e, r in zip(encodings, rows, strict=True)]
    return np.concatenate(parts), flat, seg


def solve_batch(
    table: Table,
    batch: list[Any],
    encodings: list[Encoding],
    hp: Hyperparameters,
    dev: torch.device,
) -> Solved:
    B = len(batch)
    lengths = np.array([len(g.train) for _, g in batch])
    n_max = int(lengths.max())
    F = len(encodings[0].feature_names)
    Zf, flat, seg = encoded_rows(table, [g.train for _, g in batch], encodings)
    pos = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    Z = np.zeros((B, n_max, F))
    y = np.zeros((B, n_max))
    mask = np.zeros((B, n_max))
    Z[seg, pos] = Zf
    y[seg, pos] = table.label[flat]
    mask[seg, pos] = 1.0
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
    train = _padded_metric(np.matmul(Z, Wn.transpose(0, 2, 1)) + bn[:, None, :], y, mask, hp)
    hold = [g.holdout for _, g in batch]
    holdout = np.full(B, np.nan)
    if any(len(h) for h in hold):
        Zh, hflat, hseg = encoded_rows(table, hold, encodings)
        holdout = metric(Zh, table.label[hflat], hseg, Wn, bn, hp)
    return Solved(Wn, bn, train, holdout)


def _padded_metric(
    scores: np.ndarray, y: np.ndarray, mask: np.ndarray, hp: Hyperparameters
) -> np.ndarray:
    """``metric`` over a padded batch: scores (B, n, K), labels and mask (B, n)."""
    if hp.predictor_type == "regressor":
        per_row = (scores[..., 0] - y) ** 2
    else:
        pred = scores[..., 0] > 0 if scores.shape[2] == 1 else scores.argmax(2)
        per_row = (pred == y).astype(np.float64)
    mean = (per_row * mask).sum(1) / np.maximum(mask.sum(1), 1)
    return np.sqrt(mean) if hp.predictor_type == "regressor" else mean


def metric(
    Z: np.ndarray, y: np.ndarray, seg: np.ndarray, W: np.ndarray, b: np.ndarray, hp: Hyperparameters
) -> np.ndarray:
    """Each entity's RMSE (a regressor) or accuracy (a classifier) on its rows: ``Z`` and ``y``
    the rows, ``seg`` each row's entity; NaN for an entity with no rows."""
    if W.shape[1] == 1:
        scores = (np.einsum("nf,nf->n", Z, W[seg, 0]) + b[seg, 0])[:, None]
    else:
        scores = np.einsum("nf,nkf->nk", Z, W[seg]) + b[seg]  # (n, K)
    if hp.predictor_type == "regressor":
        per_row = (scores[:, 0] - y) ** 2
    else:
        pred = scores[:, 0] > 0 if scores.shape[1] == 1 else scores.argmax(1)
        per_row = (pred == y).astype(np.float64)
    count = np.bincount(seg, minlength=len(W)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(seg, weights=per_row, minlength=len(W)) / count
    return np.sqrt(mean) if hp.predictor_type == "regressor" else mean
