"""Batched training's one pass over the rows: each entity's second moments.

``entity_gram``: the rows of a table, encoded as the shared preprocessing encodes them, are
never materialized. Each row's augmented vector is ``a = [z | 1 | label]`` with ``width``
encoded features ``z``:

- a numeric column j puts ``x - shift[j]`` at feature ``num_pos[j]`` (0 where x is NaN: with
  the column's mean as its shift, that is the mean's fill, as the encoding fills it);
- a categorical column c puts 1 at feature ``cat_off[c] + code`` (its sorted category's index;
  nothing for code -1, an unknown category);
- every other feature is 0.

The label enters less ``label_shift`` (its training mean: a label far from zero, a timestamp,
loses nothing to cancellation in y'y). Segment s is the rows ``order[bounds[s, 0] :
bounds[s, 1]]`` (an entity's training or holdout rows) and its answer is ``sum_r a_r a_r'``
((width + 2) x (width + 2), float64): counts, sums, Z'Z, Z'y and y'y, everything a
least-squares fit and its RMSE need (``train/moments.py``). The scale of the standardization
is applied to the answer, not to the rows.

``column_moments``: count, mean and population variance of each column over rows ``order``,
NaN skipped.

``entity_logistic``: each segment's L2 logistic regression on the same encoded rows (numeric
columns also multiplied by ``scale`` after their shift), by Newton's method from zero with
each step halved until the objective does not rise: the objective, the normalization and the
stopping rule of ``train/solvers.logistic``, which is its oracle (on the rows padded into a
batch). An entity's rows are copied once into a buffer its iterations then stay in (the
caches' size for thousands of rows). A step is tried by one pass at the candidate (its
scores, the gradient and the Hessian's weights); the objective, convex, is summed only where
the gradient there does not show it fell. Where AVX2 runs, the Hessian's sums are float32
(taken again in float64 where the Cholesky factor's squared pivots span more than 1e5: float32
steps would slow the convergence there), and so are the passes while the gradient is above
1e-3, where an entity of 512 rows or more also sums its Hessian over every other block of
eight rows (if that is well conditioned). The passes near the optimum, and so the stopping
rule, are float64 over every row, so the optimum is the same. Not fitted there (iterations -1,
for the caller's batched torch solver): an entity with no rows or more than ``max_rows``, or a
Hessian singular to rounding (``solvers.solve_psd`` then takes the pseudo-inverse).

Dispatch: the C++ kernels (``csrc/gram.cpp``) on the CPU; ``gram_reference`` and
``moments_reference`` (plain torch, any device, the tests' oracles) elsewhere or where the
extension is not built; ``entity_logistic`` answers None there (the batched torch solver).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmhost.kernels import _native

Tensor = torch.Tensor
_ROWS = 1 << 15  # rows of one step of the reference (rows x D x D products in memory)


@dataclass(frozen=True)
class EncodedRows:
    """A table's columns as the kernels encode them (the module docstring): what
    ``entity_gram`` and ``entity_logistic`` read, never copied."""

    numeric: list[Tensor]  # (N,) float64 columns, as they are
    num_pos: list[int]
    shift: list[float]
    categorical: list[Tensor]  # (N,) int64 codes
    cat_off: list[int]
    cat_size: list[int]
    label: Tensor  # (N,) float64
    width: int
    label_shift: float = 0.0  # entity_gram's; entity_logistic reads the label as it is

    def native(self) -> tuple[Any, ...]:
        """The C++ kernels' leading arguments (and the references')."""
        longs = (
            torch.tensor(v, dtype=torch.int64) for v in (self.num_pos, self.cat_off, self.cat_size)
        )
        pos, off, size = longs
        shift = torch.tensor(self.shift, dtype=torch.float64)
        return (self.numeric, pos, shift, self.categorical, off, size, self.label)


def column_tensor(values: Any) -> Tensor:
    """A table's float64 column as a tensor, sharing its memory (the kernels only read it: a
    read-only array, as pandas hands them out, is taken as it is)."""
    array = np.ascontiguousarray(values, np.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(array)


def entity_gram(rows: EncodedRows, order: Tensor, bounds: Tensor) -> Tensor:
    """(S, width + 2, width + 2) float64 of the segments ``bounds`` (S, 2) of ``order``; see
    the module docstring."""
    args = (*rows.native(), order, bounds, rows.width, rows.label_shift)
    fn = _native.function("entity_gram", "gram") if rows.label.device.type == "cpu" else None
    return gram_reference(*args) if fn is None else fn(*args)


def entity_logistic(
    rows: EncodedRows,
    scale: Sequence[float],
    order: Tensor,
    bounds: Tensor,
    *,
    wd: float,
    fit_intercept: bool,
    normalize_data: bool,
    max_iter: int = 100,
    tol: float = 1e-10,
    max_rows: int = 1 << 20,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """(theta (S, width + 1) [weights | intercept], iterations (S,) (-1: not fitted), training
    accuracy (S,)), or None where the C++ kernel is not available; see the module docstring."""
    cpu = rows.label.device.type == "cpu"
    fn = _native.function("entity_logistic", "logistic") if cpu else None
    if fn is None:
        return None
    numeric, pos, shift, categorical, off, size, label = rows.native()
    return fn(
        numeric, pos, shift, torch.tensor(list(scale), dtype=torch.float64), categorical, off,
        size, label, order, bounds, rows.width, wd, fit_intercept, normalize_data, max_iter, tol,
        max_rows,
    )  # fmt: skip


def column_moments(columns: Sequence[Tensor], order: Tensor) -> Tensor:
    """(K, 3) float64 [count, mean, population variance] of each column over rows ``order``."""
    if not columns:
        return torch.empty(0, 3, dtype=torch.float64)
    cpu = all(c.device.type == "cpu" for c in columns) and order.device.type == "cpu"
    fn = _native.function("column_moments", "gram") if cpu else None
    return moments_reference(list(columns), order) if fn is None else fn(list(columns), order)


def gram_reference(
    numeric: list[Tensor],
    num_pos: Tensor,
    shift: Tensor,
    categorical: list[Tensor],
    cat_off: Tensor,
    cat_size: Tensor,
    label: Tensor,
    order: Tensor,
    bounds: Tensor,
    width: int,
    label_shift: float = 0.0,
) -> Tensor:
    """The oracle: each row's augmented vector built, its outer product added to its segment's."""
    n, d, dev = label.shape[0], width + 2, label.device
    if bool(((order < 0) | (order >= n)).any()):
        raise RuntimeError(f"entity_gram: an order entry is outside the table's {n} rows")
    if bounds.numel() and bool(
        ((bounds[:, 0] < 0) | (bounds[:, 0] > bounds[:, 1]) | (bounds[:, 1] > len(order))).any()
    ):
        raise RuntimeError("entity_gram: a run of bounds is outside order")
    segs = bounds.shape[0]
    out = torch.zeros(segs, d, d, dtype=torch.float64, device=dev)
    lengths = (bounds[:, 1] - bounds[:, 0]).to(dev)
    seg = torch.repeat_interleave(torch.arange(segs, device=dev), lengths)
    pos = torch.cat([torch.arange(int(a), int(b), device=dev) for a, b in bounds.tolist()] or
                    [torch.zeros(0, dtype=torch.int64, device=dev)])  # fmt: skip
    rows = order.to(dev)[pos]
    for at in range(0, len(rows), _ROWS):
        r, s = rows[at : at + _ROWS], seg[at : at + _ROWS]
        a = torch.zeros(len(r), d, dtype=torch.float64, device=dev)
        for j, col in enumerate(numeric):
            v = col.to(dev)[r] - shift[j].to(dev)
            a[:, int(num_pos[j])] = torch.nan_to_num(v, nan=0.0)
        for c, codes in enumerate(categorical):
            k = codes.to(dev)[r]
            if bool(((k < -1) | (k >= int(cat_size[c]))).any()):
                raise RuntimeError("entity_gram: a category code outside its column's categories")
            hit = k >= 0
            a[hit.nonzero()[:, 0], int(cat_off[c]) + k[hit]] = 1.0
        a[:, width] = 1.0
        a[:, width + 1] = label[r] - label_shift
        out.index_add_(0, s, a[:, :, None] * a[:, None, :])
    return out


def moments_reference(columns: list[Tensor], order: Tensor) -> Tensor:
    out = torch.empty(len(columns), 3, dtype=torch.float64)
    for c, col in enumerate(columns):
        v = col[order.to(col.device)]
        v = v[~torch.isnan(v)]
        out[c, 0] = len(v)
        out[c, 1] = v.mean() if len(v) else float("nan")
        d = v - v[0] if len(v) else v  # about a value of the column: no cancellation
        out[c, 2] = ((d - d.mean()) ** 2).mean() if len(v) else float("nan")
    return out
