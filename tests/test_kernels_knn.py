"""The k-NN op's reference (``mmhost/kernels/knn.py``) against faiss's exact flat search, many
models in one call, each row searching only its own model's points.

Tolerance: the reference sums float32 squared differences directly; faiss may expand
|x|^2 - 2 x.p + |p|^2 with BLAS. Distances agree to rtol 1e-4 (atol 1e-4 near 0); indices are
compared where the neighbours' distances are apart by more than that (no near-ties decided by
rounding)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from mmhost.kernels import _native
from mmhost.kernels.knn import (
    METRIC_CODES,
    decide_reference,
    knn_decide,
    knn_forward,
    knn_reference,
)

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


# --- the fused kernels against the reference -------------------------------------------------
# Tolerance: on integer-valued points and queries every partial sum is exact in float32, so the
# kernels' distances and indices must equal the reference's exactly, ties included. On normal
# data the distances agree to rtol 1e-5 (another summation order) and indices where the
# neighbours are apart.


def batch(sizes: list[int], d: int, n: int, seed: int, integers: bool):
    rng = np.random.default_rng(seed)
    draw = (lambda *s: rng.integers(-3, 4, size=s)) if integers else (lambda *s: rng.normal(size=s))
    pts = [draw(m, d).astype(np.float32) for m in sizes]
    points, ranges = pack(pts) if pts else (torch.zeros(0, d), torch.zeros(0, 2, dtype=torch.int64))
    row_model = torch.from_numpy(rng.integers(0, len(sizes), size=n))
    return torch.from_numpy(draw(n, d).astype(np.float32)), row_model, points, ranges


def native():
    """mmhost._C, or a skip when it is not built (test_kernels_linear asserts that it is)."""
    return pytest.importorskip("mmhost._C", exc_type=ImportError)


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
@pytest.mark.parametrize(("k", "d"), [(1, 1), (3, 2), (10, 16), (64, 33), (100, 7)])
def test_cpp_kernel_equals_the_reference_ties_included(metric, k, d):
    x, rm, points, ranges = batch([1, 9, 0, 64, 700, 250], d, 200, seed=k * d, integers=True)
    want = knn_reference(x, rm, points, ranges, k, metric)
    got = knn_forward(x, rm, points, ranges, k, metric)
    cpp = native().knn_forward(x, rm, points, ranges, k, METRIC_CODES[metric])
    for have in (got, cpp):
        assert torch.equal(have[0], want[0]) and torch.equal(have[1], want[1])


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_cpp_kernel_agrees_with_the_reference_on_real_valued_data(metric):
    x, rm, points, ranges = batch([5, 100, 3000], 24, 300, seed=3, integers=False)
    want_d, want_i = knn_reference(x, rm, points, ranges, 12, metric)
    got_d, got_i = knn_forward(x, rm, points, ranges, 12, metric)
    torch.testing.assert_close(got_d, want_d, rtol=1e-5, atol=1e-5)
    gaps = (want_d[:, 1:] - want_d[:, :-1]).abs() > 1e-4
    apart = torch.cat([torch.ones(300, 1, dtype=torch.bool), gaps], 1) & torch.cat(
        [gaps, torch.ones(300, 1, dtype=torch.bool)], 1
    )
    assert torch.equal(got_i[apart], want_i[apart])


def test_an_exact_match_is_exactly_zero():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 13)).astype(np.float32)
    points, ranges = pack([pts])
    dist, idx = knn_forward(
        torch.from_numpy(pts[[7, 30]]), torch.zeros(2, dtype=torch.int64), points, ranges, 2
    )
    assert dist[:, 0].tolist() == [0.0, 0.0] and idx[:, 0].tolist() == [7, 30]


def test_the_cpp_kernel_refuses_what_is_out_of_range():
    points, ranges = torch.zeros(4, 2), torch.tensor([[0, 4], [2, 9]])
    with pytest.raises(RuntimeError, match=r"model_points\[1\]"):
        knn_forward(torch.zeros(1, 2), torch.zeros(1, dtype=torch.int64), points, ranges, 1)
    with pytest.raises(RuntimeError, match=r"row_model\[0\] = 5"):
        knn_forward(torch.zeros(1, 2), torch.tensor([5]), points, ranges[:1], 1)


def test_registered_torch_op_is_the_same_function():
    x, rm, points, ranges = batch([3, 40], 5, 20, seed=1, integers=True)
    a = torch.ops.mmhost.knn(x, rm, points, ranges, 4, "l2")
    b = knn_forward(x, rm, points, ranges, 4, "l2")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_build_without_the_knn_op_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_native, "_tried", True)
    monkeypatch.setattr(_native, "_loaded", types.SimpleNamespace(linear_forward=None))
    monkeypatch.setattr(_native, "_stale", set())
    x, rm, points, ranges = batch([3, 40], 5, 20, seed=1, integers=True)
    with pytest.warns(RuntimeWarning, match="built before the current knn op"):
        got = knn_forward(x, rm, points, ranges, 4)
    want = knn_reference(x, rm, points, ranges, 4)
    assert torch.equal(got[1], want[1])
    knn_forward(x, rm, points, ranges, 4)  # no second warning (warnings are errors here)


# --- what the neighbours decide: the C++ pass against the reference --------------------------
@pytest.mark.parametrize("kk", [1, 4, 16])
def test_cpp_decide_equals_the_reference(kk):
    rng = np.random.default_rng(kk)
    n = 400
    x, rm, points, ranges = batch([3, 30, 200], 4, n, seed=kk, integers=True)  # ties galore
    dist, idx = knn_forward(x, rm, points, ranges, kk)
    labels = torch.from_numpy(rng.integers(0, 4, len(points)).astype(np.float32))
    k = torch.from_numpy(rng.integers(1, kk + 1, n).astype(np.int32))
    flags = torch.from_numpy(
        np.stack(
            [rng.integers(0, 4, n), rng.integers(0, 2, n), np.zeros(n), rng.integers(0, 2, n)],
            axis=1,
        ).astype(np.int8)
    )
    flags[flags[:, 0] % 2 == 0, 1] = 0  # distance weights with euclidean or cosine only
    want = decide_reference(dist, idx, labels, k, flags)
    got = knn_decide(dist, idx, labels, k, flags)
    classifier = flags[:, 3] == 1
    uniform = flags[:, 1] == 0
    assert torch.equal(got[:, 1 + kk :], want[:, 1 + kk :])  # the labels
    # distances: torch's vectorised sqrt may differ from std::sqrt by an ulp
    torch.testing.assert_close(got[:, 1 : 1 + kk], want[:, 1 : 1 + kk], rtol=2e-7, atol=0)
    # votes and uniform means are exact sums of small integers; weighted means to rounding
    assert torch.equal(got[classifier | uniform, 0], want[classifier | uniform, 0])
    torch.testing.assert_close(got[:, 0], want[:, 0], rtol=1e-6, atol=1e-6)
