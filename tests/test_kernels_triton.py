"""The Triton linear kernel against the plain-torch reference (runs under TRITON_INTERPRET=1)."""

import os

# must precede the triton import: triton.jit picks the interpreter when a kernel is decorated
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from mmhost.kernels import linear_triton as lt  # noqa: E402
from mmhost.kernels.linear import (  # noqa: E402
    LINK_IDENTITY,
    LINK_SIGMOID,
    LINK_SOFTMAX,
    linear_reference,
)
from mmhost.kernels.linear_triton import linear_triton  # noqa: E402

# fp32 sums of <= 300 O(1/sqrt(D))-scaled products, reduced in another order than torch.bmm:
# the difference stays a few ulp of O(1) outputs, far below 1e-5
ATOL, RTOL = 1e-5, 1e-5

# CPU tensors under the interpreter; with TRITON_INTERPRET=0 on a GPU box, the same tests on CUDA
DEVICE = "cpu" if lt._INTERPRET else "cuda"
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="Triton needs CUDA or TRITON_INTERPRET=1",
)


def _inputs(n, s, k, d, links, *, device=DEVICE, seed=0):
    """x (n, d), slots (n,) over s models, and a slab whose link cycles through ``links``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    slots = torch.randint(0, s, (n,), generator=g)
    weight = torch.randn(s, k, d, generator=g) / d**0.5
    bias = torch.randn(s, k, generator=g)
    link = torch.tensor(links, dtype=torch.int8).repeat(s // len(links) + 1)[:s]
    return [t.to(device) for t in (x, slots, weight, bias, link)]


def _check(x, slots, weight, bias, link):
    got = linear_triton(x, slots, weight, bias, link)
    assert got.shape == (x.shape[0], weight.shape[1]) and got.device == x.device
    torch.testing.assert_close(got, linear_reference(x, slots, weight, bias, link),
                               atol=ATOL, rtol=RTOL)  # fmt: skip


LINK_NAMES = {LINK_IDENTITY: "identity", LINK_SIGMOID: "sigmoid", LINK_SOFTMAX: "softmax"}
# softmax is only used with K > 1
LINK_K = [(link, k) for link in LINK_NAMES for k in (1, 3, 5) if link != LINK_SOFTMAX or k > 1]


@pytest.mark.parametrize("d", [1, 7, 33, 300])
@pytest.mark.parametrize(("link", "k"), LINK_K, ids=[f"{LINK_NAMES[i]}-k{k}" for i, k in LINK_K])
def test_matches_reference_on_odd_shapes(d, link, k):
    _check(*_inputs(37, 4, k, d, [link]))


@pytest.mark.parametrize("d", [1, 33])
def test_single_row_single_model(d):
    _check(*_inputs(1, 1, 3, d, [LINK_SOFTMAX]))


def test_many_rows_one_model():
    _check(*_inputs(10_000, 1, 3, 300, [LINK_SIGMOID]))


def test_many_rows_many_models_mixed_links():
    # 5,000 models, links cycling identity/sigmoid/softmax, so every block mixes all three
    _check(*_inputs(10_000, 5_000, 5, 33, [LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX]))


def test_slab_mixing_identity_and_sigmoid_with_one_output():
    _check(*_inputs(200, 50, 1, 7, [LINK_IDENTITY, LINK_SIGMOID]))


@pytest.mark.parametrize("cols", [slice(5, 38), slice(0, 66, 2)], ids=["slice", "step"])
def test_non_contiguous_x(cols):
    x, slots, weight, bias, link = _inputs(101, 6, 3, 33, [LINK_SOFTMAX, LINK_SIGMOID])
    wide = torch.randn(101, 70, device=x.device)
    wide[:, cols] = x
    x_view = wide[:, cols]  # (101, 33) with row stride 70
    assert not x_view.is_contiguous()
    _check(x_view, slots, weight, bias, link)


def test_non_contiguous_weight_and_bias():
    x, slots, weight, bias, link = _inputs(50, 4, 5, 33, [LINK_IDENTITY, LINK_SOFTMAX])
    weight_t = weight.transpose(1, 2).contiguous().transpose(1, 2)  # (4, 5, 33), stride k = 1
    bias_t = bias.t().contiguous().t()
    assert not weight_t.is_contiguous() and not bias_t.is_contiguous()
    _check(x, slots, weight_t, bias_t, link)


@pytest.mark.parametrize("d", [7, 300])
@pytest.mark.parametrize("k", [3, 5])
def test_gpu_block_sizes_under_interpreter(monkeypatch, d, k):
    # the interpreter's big blocks take D <= 1024 in one chunk; run the GPU tiling instead, so
    # the D loop, its ragged last chunk (300 = 4 * 64 + 44) and many row blocks are exercised
    interpret = lt._INTERPRET
    monkeypatch.setattr(lt, "_INTERPRET", False)
    sizes = lt._block_sizes(k, d)
    monkeypatch.setattr(lt, "_INTERPRET", interpret)
    monkeypatch.setattr(lt, "_block_sizes", lambda k, d: sizes)
    _check(*_inputs(77, 5, k, d, [LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX]))


def test_softmax_is_stable_for_large_logits():
    x, slots, weight, bias, link = _inputs(16, 2, 3, 7, [LINK_SOFTMAX])
    bias += 1e4  # exp would overflow without subtracting the row max
    _check(x, slots, weight, bias, link)


def test_empty_batch_returns_empty_output():
    x, slots, weight, bias, link = _inputs(0, 3, 5, 7, [LINK_IDENTITY])
    out = linear_triton(x, slots, weight, bias, link)
    assert out.shape == (0, 5) and out.dtype == torch.float32


def test_zero_features_scores_the_bias():
    _check(*_inputs(9, 2, 3, 0, [LINK_SIGMOID, LINK_SOFTMAX]))


def test_rejects_wrong_dtype():
    x, slots, weight, bias, link = _inputs(4, 2, 3, 7, [LINK_IDENTITY])
    with pytest.raises(ValueError, match="int64"):
        linear_triton(x, slots.int(), weight, bias, link)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("d", [1, 33, 300])
def test_matches_reference_on_cuda(d):
    links = [LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX]
    _check(*_inputs(10_000, 5_000, 5, d, links, device="cuda"))
