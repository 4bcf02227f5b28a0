"""The Triton k-NN kernel against the plain-torch reference (runs under TRITON_INTERPRET=1).

Tolerance: none on integer-valued data (every partial sum is exact, so distances, indices and
the tie order must equal the reference's); rtol 1e-5 on normal data."""

import os

# must precede the triton import: triton.jit picks the interpreter when a kernel is decorated
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from test_kernels_knn import batch  # noqa: E402

from mmhost.kernels import knn_triton as kt  # noqa: E402
from mmhost.kernels.knn import knn_reference  # noqa: E402
from mmhost.kernels.knn_triton import knn_triton  # noqa: E402

# CPU tensors under the interpreter; with TRITON_INTERPRET=0 on a GPU box, the same tests on CUDA
DEVICE = "cpu" if kt._INTERPRET else "cuda"
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="Triton needs CUDA or TRITON_INTERPRET=1",
)


def run(args, k, metric):
    want = knn_reference(*args, k, metric)
    got = knn_triton(*(a.to(DEVICE) for a in args), k, metric)
    return [g.cpu() for g in got], want


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
@pytest.mark.parametrize(("k", "d"), [(1, 1), (5, 16), (20, 3), (40, 70)])
def test_equals_the_reference_ties_included(metric, k, d):
    args = batch([1, 7, 0, 64, 150], d, 12, seed=k + d, integers=True)
    (got_d, got_i), (want_d, want_i) = run(args, k, metric)
    assert torch.equal(got_d, want_d) and torch.equal(got_i, want_i)


def test_agrees_with_the_reference_on_real_valued_data():
    args = batch([30, 200], 24, 8, seed=2, integers=False)
    (got_d, got_i), (want_d, want_i) = run(args, 6, "l2")
    torch.testing.assert_close(got_d, want_d, rtol=1e-5, atol=1e-5)
    assert torch.equal(got_i[:, :2], want_i[:, :2])


def test_zero_width_rows_take_the_first_points():
    args = batch([5, 3], 0, 4, seed=0, integers=True)
    (got_d, got_i), (want_d, want_i) = run(args, 4, "l2")
    assert torch.equal(got_i, want_i) and torch.equal(got_d, want_d)


def test_ranges_outside_the_points_are_refused():
    x, rm, points, _ = batch([4], 2, 1, seed=0, integers=True)
    with pytest.raises(RuntimeError, match="outside"):
        knn_triton(x, rm, points, torch.tensor([[0, 9]]), 1)
