"""The k-NN op's semantics, in plain torch: each row's k nearest points among its own model's.

Layout (one slab of many models): ``points`` (P, D) float32 holds every resident model's points,
slot s owning rows ``model_points[s, 0] : model_points[s, 1]``; ``x`` (N, D) are the encoded
queries and ``row_model`` (N,) the slot of each. The answer for row i is its ``k`` nearest
points of model ``row_model[i]``, nearest first:

- ``metric`` "l2": squared Euclidean distance ``sum((x - p)**2)`` (what faiss's IndexFlatL2
  reports), ascending;
- ``metric`` "inner_product": the score ``x . p``, descending (faiss's IndexFlatIP; cosine is
  inner product over unit vectors, normalized at load and at encoding).

Equidistant points keep their order in the model (the lower point first), so the answer is
deterministic. A model with fewer than k points pads with index -1 and distance +inf (L2) or
-inf (inner product). Indices are global rows of ``points``.

This reference computes differences directly (no ``|x|^2 - 2 x.p + |p|^2`` expansion), so its
distances are the float32 sums themselves, and an exact match is exactly 0. The fused kernels do
the same; they sum the dimensions in another order, so their distances agree with the
reference's to float32 rounding, and are equal (ties included) where every partial sum is exact.

What the neighbours decide (``knn_decide``; ``decide_reference`` is its oracle), per row, for
rows of mixed models in one call:

- the model's k first neighbours (equidistant points in the model's point order);
- each neighbour's reported distance: faiss's squared L2 or inner product (SageMaker's models),
  scikit-learn's euclidean (the square root) or cosine (1 - inner product of unit vectors,
  clipped to [0, 2]);
- weights: uniform, or 1/distance as scikit-learn's ``weights="distance"``, where a row with a
  neighbour at distance 0 weighs those neighbours 1 and the others 0 (an exact match wins);
- classifier: the label with the most weight; a tie goes to the smallest label (class index,
  and classes are in ascending order, as scikit-learn's ``classes_`` and SageMaker's labels);
  regressor: the weighted mean of the labels.

Dispatch: ``torch.ops.mmhost.knn`` is registered with torch.library; the CPU kernel is the C++
op ``mmhost._C.knn_forward`` (the reference, with one warning, when the extension is not built
or predates this op); the CUDA kernel is the Triton kernel in ``knn_triton.py``. What the
neighbours decide (votes, means) is the family's (``families/knn.py``), not the op's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmhost.artifacts.manifest import KNN_DISTANCES, KNN_WEIGHTS
from mmhost.kernels import _native

METRICS = ("l2", "inner_product")
METRIC_CODES = {"l2": 0, "inner_product": 1}
SQUARED_L2, EUCLIDEAN, INNER_PRODUCT, COSINE = (KNN_DISTANCES.index(d) for d in KNN_DISTANCES)
UNIFORM, DISTANCE = (KNN_WEIGHTS.index(w) for w in KNN_WEIGHTS)
REGRESSOR, CLASSIFIER = 0, 1
_CELLS = 1 << 24  # query x point x dimension cells of one pass of the reference


def check_inputs(
    x: torch.Tensor,
    row_model: torch.Tensor,
    points: torch.Tensor,
    model_points: torch.Tensor,
    k: int,
    metric: str,
) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    if x.dim() != 2 or points.dim() != 2 or x.shape[1] != points.shape[1]:
        raise ValueError(
            f"x {tuple(x.shape)} and points {tuple(points.shape)} must be (N, D), (P, D)"
        )
    if row_model.shape != (x.shape[0],):
        raise ValueError(f"row_model has shape {tuple(row_model.shape)}; expected ({x.shape[0]},)")
    if model_points.dim() != 2 or model_points.shape[1] != 2:
        raise ValueError(f"model_points has shape {tuple(model_points.shape)}; expected (S, 2)")
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    if x.dtype != torch.float32 or points.dtype != torch.float32:
        raise ValueError(f"x and points must be float32, got {x.dtype}, {points.dtype}")
    if row_model.dtype != torch.int64 or model_points.dtype != torch.int64:
        raise ValueError("row_model and model_points must be int64")
    devices = {t.device for t in (x, row_model, points, model_points)}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")


def knn_reference(
    x: torch.Tensor,
    row_model: torch.Tensor,
    points: torch.Tensor,
    model_points: torch.Tensor,
    k: int,
    metric: str = "l2",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) distances (or inner products) and (N, k) int64 point indices, nearest first."""
    check_inputs(x, row_model, points, model_points, k, metric)
    n = x.shape[0]
    worst = float("inf") if metric == "l2" else float("-inf")
    dist = torch.full((n, k), worst, dtype=torch.float32, device=x.device)
    idx = torch.full((n, k), -1, dtype=torch.int64, device=x.device)
    for s in torch.unique(row_model).tolist():
        rows = (row_model == s).nonzero().squeeze(1)  # (R,)
        start, end = (int(v) for v in model_points[s])
        mine = points[start:end]  # (M, D)
        take = min(k, end - start)
        if take == 0:
            continue
        step = max(1, _CELLS // max(1, mine.numel()))  # rows per pass: R x M x D bounded
        for at in range(0, len(rows), step):
            part = rows[at : at + step]
            q = x.index_select(0, part)  # (R, D)
            if metric == "l2":
                d = ((q[:, None, :] - mine[None, :, :]) ** 2).sum(dim=2)  # (R, M)
                order = torch.sort(d, dim=1, stable=True)
            else:
                d = q @ mine.T  # (R, M)
                order = torch.sort(d, dim=1, descending=True, stable=True)
            dist[part, :take] = order.values[:, :take]
            idx[part, :take] = order.indices[:, :take] + start
    return dist, idx


def decide_reference(
    dist: torch.Tensor,
    idx: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    flags: torch.Tensor,
) -> torch.Tensor:
    """(N, K) search results -> (N, 1 + 2K) [prediction, reported distances, labels], 0 past a
    row's k. ``labels`` (P,) is the slab's label table; ``k`` (N,) and ``flags`` (N, 4)
    [distance, weights, normalize, task] are each row's model's. See the module docstring."""
    n, kk = dist.shape
    flags = flags.long()
    distance, weights, task = flags[:, 0], flags[:, 1], flags[:, 3]
    live = (torch.arange(kk, device=dist.device)[None, :] < k[:, None]) & (idx >= 0)  # (N, K)
    lab = torch.where(live, labels[idx.clamp(min=0)], 0.0)  # (N, K)
    rep = dist
    code = distance[:, None]
    rep = torch.where(code == EUCLIDEAN, dist.clamp(min=0).sqrt(), rep)
    rep = torch.where(code == COSINE, (1.0 - dist).clamp(0.0, 2.0), rep)
    rep = torch.where(live, rep, 0.0)
    w = live.float()
    by_distance = (weights == DISTANCE)[:, None]  # (N, 1)
    if bool(by_distance.any()):
        exact = live & (rep == 0)
        inverse = torch.where(exact.any(dim=1, keepdim=True), exact.float(), 1.0 / rep)
        w = torch.where(by_distance & live, inverse, w)
    value = (w * lab).sum(dim=1) / w.sum(dim=1)  # (N,) the regressor's (weighted) mean
    # the classifier's vote: labels sorted, equal runs summed, the first run of most weight
    keyed = torch.where(live, lab, torch.inf)
    sorted_lab, order = torch.sort(keyed, dim=1, stable=True)
    sorted_w = w.gather(1, order)
    starts = torch.ones_like(live)
    starts[:, 1:] = sorted_lab[:, 1:] != sorted_lab[:, :-1]
    group = starts.long().cumsum(dim=1) - 1  # (N, K) run of each neighbour
    votes = torch.zeros_like(w).scatter_add_(1, group, sorted_w)
    run_label = torch.zeros_like(w).scatter_(1, group, sorted_lab)
    voted = run_label.gather(1, votes.argmax(dim=1, keepdim=True)).squeeze(1)
    prediction = torch.where(task == CLASSIFIER, voted, value)
    return torch.cat([prediction[:, None], rep, lab], dim=1)


def knn_decide(
    dist: torch.Tensor,
    idx: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    flags: torch.Tensor,
) -> torch.Tensor:
    """``decide_reference``, by the C++ kernel on the CPU when it is built (one pass per row,
    no (N, K) temporaries); the reference elsewhere."""
    if dist.device.type == "cpu":
        fn = _native.function("knn_decide", "knn")
        if fn is not None:
            return fn(dist, idx, labels, k.to(torch.int32), flags.to(torch.int8))
    return decide_reference(dist, idx, labels, k, flags)


@torch.library.custom_op("mmhost::knn", mutates_args=())
def _knn_op(
    x: torch.Tensor,
    row_model: torch.Tensor,
    points: torch.Tensor,
    model_points: torch.Tensor,
    k: int,
    metric: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return knn_reference(x, row_model, points, model_points, k, metric)


@_knn_op.register_fake
def _(x, row_model, points, model_points, k, metric):
    return x.new_empty((x.shape[0], k)), row_model.new_empty((x.shape[0], k))


def _native_knn() -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    return _native.function("knn_forward", "knn")


@torch.library.register_kernel("mmhost::knn", "cpu")
def _knn_cpu(x, row_model, points, model_points, k, metric):
    fn = _native_knn()
    if fn is None:
        return knn_reference(x, row_model, points, model_points, k, metric)
    return fn(x, row_model, points, model_points, k, METRIC_CODES[metric])


@torch.library.register_kernel("mmhost::knn", "cuda")
def _knn_cuda(x, row_model, points, model_points, k, metric):
    from mmhost.kernels.knn_triton import knn_triton

    return knn_triton(x, row_model, points, model_points, k, metric)


def knn_forward(
    x: torch.Tensor,
    row_model: torch.Tensor,
    points: torch.Tensor,
    model_points: torch.Tensor,
    k: int,
    metric: str = "l2",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` nearest points of its own model: (N, k) distances, (N, k) indices. See
    the module docstring. Like the other ops, the hot path calls the device's implementation
    directly (the ``torch.ops.mmhost.knn`` dispatcher costs ~20 us a call)."""
    check_inputs(x, row_model, points, model_points, k, metric)
    args = (x.contiguous(), row_model.contiguous(), points, model_points.contiguous(), k, metric)
    if x.device.type == "cuda":
        return _knn_cuda(*args)
    return _knn_cpu(*args)
