"""The k-NN op's reference (``mmhost/kernels/knn.py``) against faiss's exact flat search, many
models in one call, each row searching only its own model's points.

Tolerance: the reference sums float32 squared differences directly; faiss may expand
|x|^2 - 2 x.p + |p|^2 with BLAS. Distances agree to rtol 1e-4 (atol 1e-4 near 0); indices are
compared where the neighbours' distances are apart by more than that (no near-ties decided by
rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmhost.kernels.knn import knn_reference

faiss = pytest.importorskip("faiss")


def models(sizes: list[int], d: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, d)).astype(np.float32) for n in sizes]


def pack(pts: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    ends = np.cumsum([len(p) for p in pts])
    ranges = np.stack([ends - [len(p) for p in pts], ends], axis=1)
    return torch.from_numpy(np.concatenate(pts)), torch.from_numpy(ranges.astype(np.int64))


def faiss_search(p: np.ndarray, q: np.ndarray, k: int, metric: str):
    index = faiss.IndexFlatL2(p.shape[1]) if metric == "l2" else faiss.IndexFlatIP(p.shape[1])
    index.add(p)
    return index.search(q, k)


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
@pytest.mark.parametrize(("k", "d"), [(1, 1), (5, 16), (64, 40)])
def test_each_row_searches_its_own_model_as_faiss_does(metric, k, d):
    sizes = [1, 7, 64, 300, 2000]
    pts = models(sizes, d, seed=k + d)
    points, ranges = pack(pts)
    rng = np.random.default_rng(1)
    row_model = rng.integers(0, len(sizes), size=60)
    x = rng.normal(size=(60, d)).astype(np.float32)
    dist, idx = knn_reference(
        torch.from_numpy(x), torch.from_numpy(row_model), points, ranges, k, metric
    )
    for i, s in enumerate(row_model):
        want_d, want_i = faiss_search(pts[s], x[i : i + 1], k, metric)
        have = min(k, sizes[s])
        np.testing.assert_allclose(dist[i, :have].numpy(), want_d[0, :have], rtol=1e-4, atol=1e-4)
        got = idx[i, :have].numpy() - int(ranges[s, 0])
        gaps = np.abs(np.diff(want_d[0, :have])) > 1e-3
        apart = np.concatenate([[True], gaps]) & np.concatenate([gaps, [True]])
        np.testing.assert_array_equal(got[apart], want_i[0, :have][apart])
        assert (idx[i, have:] == -1).all()
        assert torch.isinf(dist[i, have:]).all()


def test_equidistant_points_keep_their_order():
    points = torch.tensor([[1.0], [-1.0], [1.0], [3.0]])  # 0, 1, 2 all at distance 1 from 0
    ranges = torch.tensor([[0, 4]])
    dist, idx = knn_reference(
        torch.zeros(1, 1), torch.zeros(1, dtype=torch.int64), points, ranges, 3
    )
    assert idx.tolist() == [[0, 1, 2]] and dist.tolist() == [[1.0, 1.0, 1.0]]
    dist, idx = knn_reference(
        torch.ones(1, 1), torch.zeros(1, dtype=torch.int64), points, ranges, 2, "inner_product"
    )
    assert idx.tolist() == [[3, 0]] and dist.tolist() == [[3.0, 1.0]]


def test_bad_arguments_are_refused():
    points, ranges = torch.zeros(2, 3), torch.tensor([[0, 2]])
    rows = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="metric"):
        knn_reference(torch.zeros(1, 3), rows, points, ranges, 1, "cosine")
    with pytest.raises(ValueError, match="must be"):
        knn_reference(torch.zeros(1, 4), rows, points, ranges, 1)
    with pytest.raises(ValueError, match="k must be"):
        knn_reference(torch.zeros(1, 3), rows, points, ranges, 0)
