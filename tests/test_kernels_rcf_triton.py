"""The Triton Random Cut Forest kernel against the plain-torch reference and ``krcf`` (runs
under TRITON_INTERPRET=1). Tolerance: rtol 1e-12 (the kernel composes the bottom-up recursion
top-down, in float64; the gap sums are the library's float32 ones)."""

import os

# must precede the triton import: triton.jit picks the interpreter when a kernel is decorated
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")
pytest.importorskip("krcf")

from test_kernels_rcf import queries, train  # noqa: E402

from mmhost.artifacts.rcf import forest_from_params  # noqa: E402
from mmhost.convert import from_rcf  # noqa: E402
from mmhost.kernels import rcf_triton as rt  # noqa: E402
from mmhost.kernels.rcf import pack, rcf_reference  # noqa: E402
from mmhost.kernels.rcf_triton import rcf_triton  # noqa: E402

DEVICE = "cpu" if rt._INTERPRET else "cuda"
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="Triton needs CUDA or TRITON_INTERPRET=1",
)


def test_equals_the_reference_and_the_library_on_mixed_forests():
    arts, rows, row_model, want = [], [], [], []
    for s, (d, trees, samples, dup) in enumerate(
        [(1, 2, 8, False), (3, 4, 16, True), (6, 3, 64, False)]
    ):
        forest, x = train(d, trees, samples, 150, seed=s, duplicates=dup)
        arts.append(from_rcf(forest))
        for r in queries(forest, x, seed=s)[:12]:
            rows.append(r)
            row_model.append(s)
            want.append(forest.score(r.tolist()))
    packed = pack([forest_from_params(a.params, a.preprocessing.n_features) for a in arts])
    x = np.zeros((len(rows), packed.box.shape[2]), np.float32)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    args = (torch.from_numpy(x), torch.tensor(row_model), *packed)
    ref = rcf_reference(*args)
    got = rcf_triton(*(a.to(DEVICE) for a in args)).cpu()
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-12)
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-12)


def test_an_empty_batch_and_bad_rows():
    forest, _ = train(2, 2, 8, 30, seed=0)
    packed = pack([forest_from_params(from_rcf(forest).params, 2)])
    empty = rcf_triton(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64), *packed)
    assert empty.shape == (0,)
    with pytest.raises(RuntimeError, match="outside"):
        rcf_triton(torch.zeros(1, 2), torch.tensor([3]), *packed)
