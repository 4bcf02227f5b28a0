"""A regressor's fit from each entity's moments: two passes over the table's own columns, no
encoded copy, no padding.

With the shared preprocessing, everything a regressor's fit needs of an entity's rows is the
Gram matrix ``A = sum a a'`` of its augmented encoded rows ``a = [z | 1 | y]``
(``kernels.gram.entity_gram``): the count, the sums, Z'Z, Z'y and y'y. From it, for every
entity at once (``solve``):

- the intercept's centering: ``G = Z'Z/n - m m'``, ``c = Z'y/n - m ybar`` (as
  ``solvers.centered``);
- ``normalize_data``: each feature's deviation about the mean (with an intercept) or zero
  (without) is the square root of G's diagonal; ``normalize_label`` likewise from y'y;
- the ridge (Cholesky) or lasso (coordinate descent) solve of ``solvers``, and the
  normalizations folded back into the weights;
- the RMSE of the fitted model on those rows: ``theta' A theta / n`` with
  ``theta = [w | b | -1]`` (a sum of squared residuals, taken from the moments: its absolute
  error is of the order of 1e-16 times the sum of squared labels).

The first pass (``kernels.gram.column_moments``) is the shared standardization's: each numeric
column's mean and deviation over the training rows (as ``StandardScaler``); the second the
Grams, with each numeric column shifted by its mean (a missing value then adds 0: the mean's
fill) and scaled afterwards, on the D x D answer. Holdout rows give their own Gram, hence
their RMSE, the same way.

A binary classifier takes the same layout to the C++ Newton kernel
(``kernels.gram.entity_logistic``, ``Layout.fit_logistic``): its iterations need every row each
time, so there is no moment to keep, but each entity's rows are read from the table once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmhost.kernels.gram import (
    EncodedRows,
    column_moments,
    column_tensor,
    entity_gram,
    entity_logistic,
)
from mmhost.train import solvers
from mmhost.train.data import Table
from mmhost.train.encoding import Encoding
from mmhost.train.fit import encoded_rows, metric
from mmhost.train.groups import Groups

if TYPE_CHECKING:
    from mmhost.train.linear_learner import Hyperparameters

Tensor = torch.Tensor
VARIANCE_FLOOR = 1e-12  # a variance below this share of the mean square: a constant feature
GRAM_BYTES = 1 << 26  # the Grams of one solve batch
NEWTON_CELLS = 1 << 24  # rows x features of an entity the Newton kernel holds (12-20 B each)
NEWTON_WIDTH = 1 << 11  # features the Newton kernel takes (a Hessian a thread: k^2 float64)


@dataclass
class Fitted:
    """A batch's weights in the encoded space, (B, 1, F) and (B, 1), and each entity's metric
    (RMSE, or a classifier's accuracy) on its training and its holdout rows (NaN: none)."""

    coef: np.ndarray
    intercept: np.ndarray
    train_metric: np.ndarray
    holdout_metric: np.ndarray


@dataclass
class Layout:
    """The shared encoding, and where each column lands in the augmented rows: what the
    kernel takes."""

    encoding: Encoding
    rows: EncodedRows  # numeric columns shifted by their mean; codes -1: not a training category
    scale: Tensor  # (F + 2,) float64: 1 / deviation at a numeric feature, else 1
    num_scale: list[float]  # 1 / deviation of each numeric column

    @classmethod
    def fit(cls, table: Table, groups: Groups, regressor: bool = True) -> Layout:
        """The shared preprocessing fitted on the training rows (``Encoding.fit``) and the
        kernels' inputs; a regressor's label shifted by its mean (a classifier's is read as it
        is)."""
        enc = Encoding.fit(table, groups.train_order)
        mean, std = enc.mean, enc.std
        numeric = [c.name for c in enc.columns if c.type != "category"]
        cols = [column_tensor(table.features[n]) for n in numeric]
        label = column_tensor(table.label)
        train = torch.from_numpy(groups.train_order)
        label_mean = 0.0
        if regressor and len(train):
            label_mean = float(column_moments([label], train)[0, 1])
        codes = {c.name: torch.from_numpy(enc.codes(table, c.name)) for c in enc.columns
                 if c.type == "category"}  # fmt: skip
        num_pos, cat_off, cat_size, scale, cat_cols, j = [], [], [], [], [], 0
        for c in enc.columns:
            if c.type == "category":
                cat_cols.append(codes[c.name])
                cat_off.append(j)
                cat_size.append(len(c.categories))
                scale += [1.0] * len(c.categories)
                j += len(c.categories)
            else:
                num_pos.append(j)
                scale.append(1 / std[c.name])
                j += 1
        rows = EncodedRows(
            cols, num_pos, [mean[n] for n in numeric], cat_cols, cat_off, cat_size, label, j,
            label_mean,
        )  # fmt: skip
        scales = torch.tensor([*scale, 1.0, 1.0], dtype=torch.float64)
        return cls(enc, rows, scales, [1 / std[n] for n in numeric])

    def grams(self, order: np.ndarray, starts: np.ndarray, entities: np.ndarray) -> Tensor:
        """(B, F + 2, F + 2) Grams of the encoded rows ``order[starts[e] : starts[e + 1]]`` of
        each of ``entities``."""
        bounds = torch.from_numpy(np.stack([starts[entities], starts[entities + 1]], axis=1))
        A = entity_gram(self.rows, torch.from_numpy(order), bounds)
        return A * self.scale[:, None] * self.scale[None, :]

    def fit_entities(
        self, groups: Groups, entities: np.ndarray, hp: Hyperparameters, dev: torch.device
    ) -> Fitted:
        """Every one of ``entities`` (indices into ``groups``) fitted."""
        A = self.grams(groups.train_order, groups.train_starts, entities).to(dev)
        shift = self.rows.label_shift
        W, b = solve(A, hp, shift)
        # the residual z W + b - y, in the Grams' terms: z W + (b - shift) - (y - shift)
        theta = torch.cat([W, (b - shift)[:, None], -torch.ones_like(b)[:, None]], dim=1)
        holdout = np.full(len(entities), np.nan)
        if len(groups.holdout_order):
            H = self.grams(groups.holdout_order, groups.holdout_starts, entities).to(dev)
            holdout = rmse(H, theta).cpu().numpy()
        return Fitted(
            W[:, None, :].cpu().numpy(), b[:, None].cpu().numpy(), rmse(A, theta).cpu().numpy(),
            holdout,
        )  # fmt: skip

    def fit_logistic(
        self, table: Table, groups: Groups, entities: np.ndarray, hp: Hyperparameters
    ) -> tuple[Fitted, np.ndarray] | None:
        """Every one of ``entities`` a binary classifier by the C++ Newton kernel: the fits and
        which of ``entities`` the kernel left (for the batched torch solver); None without the
        kernel, or for features too many for it."""
        if self.rows.width >= NEWTON_WIDTH:
            return None  # its k x k Hessians and their factoring: the torch solver's
        bounds = np.stack([groups.train_starts[entities], groups.train_starts[entities + 1]], 1)
        most = max(1, NEWTON_CELLS // (self.rows.width + 1))  # larger: the torch solver's
        got = entity_logistic(
            self.rows, self.num_scale, torch.from_numpy(groups.train_order),
            torch.from_numpy(bounds), wd=hp.wd, fit_intercept=hp.fit_intercept,
            normalize_data=hp.normalize_data, max_rows=most,
        )  # fmt: skip
        if got is None:
            return None
        theta, iterations, accuracy = (t.numpy() for t in got)
        done = iterations >= 0
        W, b = theta[done, None, : self.rows.width], theta[done, self.rows.width :]
        holdout = np.full(int(done.sum()), np.nan)
        fitted = entities[done]
        h0, h1 = groups.holdout_starts[fitted], groups.holdout_starts[fitted + 1]
        if (h1 > h0).any():  # accuracy on the holdout rows, from their encoded rows
            rows = [groups.holdout_order[a:z] for a, z in zip(h0, h1, strict=True)]
            Zh, flat, seg = encoded_rows(table, rows, [self.encoding] * len(rows))
            holdout = metric(Zh, table.label[flat], seg, W, b, hp)
        return Fitted(W, b, accuracy[done], holdout), entities[~done]


def batches(entities: np.ndarray, width: int, most: int | None) -> list[np.ndarray]:
    """``entities`` in runs whose Grams stay under GRAM_BYTES (and ``most`` entities)."""
    size = max(1, GRAM_BYTES // (8 * (width + 2) ** 2))
    if most is not None:
        size = min(size, most)
    return [entities[i : i + size] for i in range(0, len(entities), size)]


def rmse(A: Tensor, theta: Tensor) -> Tensor:
    """sqrt(theta' A theta / n) per entity; NaN where an entity has no rows."""
    n = A[:, -2, -2]
    sse = torch.einsum("bi,bij,bj->b", theta, A, theta).clamp(min=0)
    return torch.where(n > 0, (sse / n.clamp(min=1)).sqrt(), torch.full_like(n, float("nan")))


def solve(A: Tensor, hp: Hyperparameters, label_shift: float = 0.0) -> tuple[Tensor, Tensor]:
    """(w (B, F), b (B,)) of each entity's regressor from its Gram ``A`` (B, F + 2, F + 2) of
    rows whose label is less ``label_shift``; the objective, normalizations and folding back of
    ``fit.solve_batch``, except that a feature whose variance is below VARIANCE_FLOOR of its
    mean square counts as constant (moments leave rounding noise where the rows give 0)."""
    F = A.shape[1] - 2
    if not hp.fit_intercept and label_shift:  # no intercept to take the shift: the label's own
        T = torch.eye(F + 2, dtype=A.dtype, device=A.device)
        T[F + 1, F] = label_shift  # y = (y - shift) + shift * 1
        A, label_shift = T @ A @ T.T, 0.0
    n = A[:, F, F].clamp(min=1)
    Szz, Szy = A[:, :F, :F] / n[:, None, None], A[:, :F, F + 1] / n[:, None]
    syy = A[:, F + 1, F + 1] / n
    if hp.fit_intercept:
        zm, ym = A[:, :F, F] / n[:, None], A[:, F, F + 1] / n
        G = Szz - zm[:, :, None] * zm[:, None, :]
        c = Szy - zm * ym[:, None]
    else:
        zm, ym = A.new_zeros(A.shape[0], F), A.new_zeros(A.shape[0])
        G, c = Szz, Szy
    ones = torch.ones_like(zm)
    if hp.normalize_data:  # about the mean with an intercept, about 0 without: G's diagonal
        mu = zm
        sd = _deviation(torch.diagonal(G, dim1=1, dim2=2), torch.diagonal(Szz, dim1=1, dim2=2))
    else:
        mu, sd = torch.zeros_like(zm), ones
    ymu, ysd = torch.zeros_like(ym), torch.ones_like(ym)
    if hp.scales_label:
        ymu = ym
        ysd = _deviation(syy - ym * ym, syy)
    Gn = G / (sd[:, :, None] * sd[:, None, :])
    cn = c / sd / ysd[:, None]
    w = solvers.lasso(Gn, cn, hp.wd, hp.l1) if hp.l1 > 0 else solvers.ridge(Gn, cn, hp.wd)
    b = A.new_zeros(A.shape[0])
    if hp.fit_intercept:  # the means of the normalized rows and labels
        b = (ym - ymu) / ysd - (((zm - mu) / sd) * w).sum(1)
    w, b = w * ysd[:, None], b * ysd + ymu + label_shift  # back to the label's units
    W = w / sd  # and to the features'
    return W, b - (W * mu).sum(1)


def _deviation(var: Tensor, square: Tensor) -> Tensor:
    """sqrt(var), or 1 where the variance is zero: at most VARIANCE_FLOOR of the mean square
    (moments leave rounding noise, ~1e-16 of it, where the rows' own sums would give 0)."""
    constant = var <= VARIANCE_FLOOR * square.clamp(min=0)
    return torch.where(constant | (var <= 0), torch.ones_like(var), var.clamp(min=0).sqrt())
