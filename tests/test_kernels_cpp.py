"""The C++ CPU linear kernel (mmhost._C.linear_forward) against the plain-torch reference."""

import math

import pytest
import torch

# exc_type=ImportError: a built-but-broken .so (ImportError, not ModuleNotFoundError) skips too
_C = pytest.importorskip("mmhost._C", exc_type=ImportError)

from mmhost.kernels.linear import (  # noqa: E402
    LINK_IDENTITY,
    LINK_SIGMOID,
    LINK_SOFTMAX,
    linear_reference,
)

# Both sides sum D float32 products of O(1) size (w ~ N(0, 1/D), x ~ N(0, 1)) in different
# orders (torch.bmm vs the kernel's vector lanes). Rounding error of such a sum grows like a
# random walk, ~u*sqrt(D) with u = 2**-24 ~ 6e-8; 2e-6*sqrt(D) is ~30 u*sqrt(D), about 5x the
# worst difference seen over 30k rows per shape. RTOL = 1e-6 (~8 ulp) covers the last roundings
# of the bias add and of exp in sigmoid/softmax.
RTOL = 1e-6


def _atol(d: int) -> float:
    return 2e-6 * math.sqrt(d)


def _inputs(n: int, s: int, k: int, d: int) -> tuple[torch.Tensor, ...]:
    """x (n, d), slots (n,) over s models, weight (s, k, d), bias (s, k)."""
    g = torch.Generator().manual_seed(n * 7919 + s * 31 + k * 7 + d)
    x = torch.randn(n, d, generator=g)  # (N, D)
    slots = torch.randint(0, s, (n,), generator=g)  # (N,)
    weight = torch.randn(s, k, d, generator=g) / math.sqrt(d)  # (S, K, D)
    bias = torch.randn(s, k, generator=g)  # (S, K)
    return x, slots, weight, bias


def _links(s: int, k: int) -> dict[str, torch.Tensor]:
    """Each link alone, and one slab mixing every link that K allows (softmax only with K > 1)."""
    allowed = [LINK_IDENTITY, LINK_SIGMOID] + ([LINK_SOFTMAX] if k > 1 else [])
    names = ["identity", "sigmoid", "softmax"]
    links = {names[code]: torch.full((s,), code, dtype=torch.int8) for code in allowed}
    g = torch.Generator().manual_seed(s)
    pick = torch.randint(0, len(allowed), (s,), generator=g)
    links["mixed"] = torch.tensor(allowed, dtype=torch.int8)[pick]
    return links


@pytest.mark.parametrize("d", [1, 7, 33, 300])
@pytest.mark.parametrize("n", [1, 10_000])
@pytest.mark.parametrize("s", [1, 5_000])
@pytest.mark.parametrize("k", [1, 3])
def test_matches_reference_on_odd_shapes(d, n, s, k):
    # N=10_000 with K*D >= 33 crosses the parallel grain, so both the inline and the threaded
    # paths are compared
    x, slots, weight, bias = _inputs(n, s, k, d)
    for name, link in _links(s, k).items():
        got = _C.linear_forward(x, slots, weight, bias, link)
        assert got.shape == (n, k) and got.dtype == torch.float32, name
        want = linear_reference(x, slots, weight, bias, link)
        torch.testing.assert_close(
            got, want, atol=_atol(d), rtol=RTOL, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_softmax_is_stable_for_large_logits():
    x, slots, weight, _ = _inputs(4, 2, 3, 7)
    bias = torch.tensor([[1000.0, 999.0, -1000.0], [-1e30, 0.0, 1e30]])
    link = torch.full((2,), LINK_SOFTMAX, dtype=torch.int8)
    got = _C.linear_forward(x, slots, weight, bias, link)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.sum(1), torch.ones(4))
    want = linear_reference(x, slots, weight, bias, link)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=RTOL)


def test_empty_batch():
    x, slots, weight, bias = _inputs(1, 3, 2, 5)
    link = torch.zeros(3, dtype=torch.int8)
    got = _C.linear_forward(x[:0], slots[:0], weight, bias, link)
    assert got.shape == (0, 2)


@pytest.mark.parametrize("bad", [-1, 3, 1 << 40])
def test_bad_slot_raises(bad):
    x, slots, weight, bias = _inputs(10, 3, 2, 5)
    slots[6] = bad
    link = torch.zeros(3, dtype=torch.int8)
    with pytest.raises(RuntimeError, match=rf"slots\[6\] = {bad} .*slot < 3"):
        _C.linear_forward(x, slots, weight, bias, link)


@pytest.mark.parametrize(
    "name, dtype",
    [("x", torch.float64), ("slots", torch.int32), ("weight", torch.float16),
     ("bias", torch.float64), ("link", torch.int64)],
)  # fmt: skip
def test_wrong_dtype_raises(name, dtype):
    x, slots, weight, bias = _inputs(10, 3, 2, 5)
    args = dict(x=x, slots=slots, weight=weight, bias=bias, link=torch.zeros(3, dtype=torch.int8))
    args[name] = args[name].to(dtype)
    with pytest.raises(RuntimeError, match=rf"^{name} must be "):
        _C.linear_forward(**args)


def test_non_contiguous_raises():
    x, slots, weight, bias = _inputs(10, 3, 2, 5)
    x = torch.cat([x, x], dim=1)[:, ::2]  # (10, 5), stride 10
    with pytest.raises(RuntimeError, match="x must be contiguous"):
        _C.linear_forward(x, slots, weight, bias, torch.zeros(3, dtype=torch.int8))


@pytest.mark.parametrize(
    "name, shape",
    [("x", (10, 4)), ("slots", (9,)), ("bias", (3, 1)), ("link", (2,))],
)
def test_shape_mismatch_raises(name, shape):
    x, slots, weight, bias = _inputs(10, 3, 2, 5)
    args = dict(x=x, slots=slots, weight=weight, bias=bias, link=torch.zeros(3, dtype=torch.int8))
    args[name] = torch.zeros(shape, dtype=args[name].dtype)
    with pytest.raises(RuntimeError, match=name if name != "x" else "D=4"):
        _C.linear_forward(**args)
