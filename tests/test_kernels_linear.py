"""The public op: dispatch through torch.library and the shape contract."""

from __future__ import annotations

import pytest
import torch

from mmhost.kernels import LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX, _native, linear_forward
from mmhost.kernels.linear import linear_reference


def slab(s=5, k=3, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((s, k, d), generator=g)
    b = torch.randn((s, k), generator=g)
    link = torch.tensor([LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX] * s, dtype=torch.int8)[:s]
    return w, b, link


def test_public_op_matches_reference_on_cpu():
    w, b, link = slab()
    x = torch.randn(40, 7)
    slots = torch.randint(0, 5, (40,))
    got = linear_forward(x, slots, w, b, link)
    # 7-term float32 dot products: atol/rtol 1e-5
    torch.testing.assert_close(got, linear_reference(x, slots, w, b, link), atol=1e-5, rtol=1e-5)


def test_reference_semantics_loop():
    w, b, link = slab(s=3, k=3, d=4)
    x = torch.randn(6, 4)
    slots = torch.tensor([0, 1, 2, 2, 1, 0])
    out = linear_reference(x, slots, w, b, link)
    for i, s in enumerate(slots.tolist()):
        z = w[s] @ x[i] + b[s]
        want = [z, torch.sigmoid(z), torch.softmax(z, 0)][int(link[s])]
        torch.testing.assert_close(out[i], want)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(x=torch.zeros(2, 6)), "D=6"),
        (dict(x=torch.zeros(2, 7, dtype=torch.float64)), "float32"),
        (dict(slots=torch.zeros(2, dtype=torch.int32)), "int64"),
        (dict(slots=torch.zeros(3, dtype=torch.int64)), "slots must be"),
    ],
)
def test_contract_violations_are_value_errors(bad, match):
    w, b, link = slab()
    args = dict(x=torch.zeros(2, 7), slots=torch.zeros(2, dtype=torch.int64))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        linear_forward(args["x"], args["slots"], w, b, link)


def test_native_extension_is_built():
    """make test builds mmhost._C; CI must exercise the C++ op, not silently the fallback."""
    assert _native.available()


def test_missing_native_build_falls_back_with_one_warning(monkeypatch):
    import sys

    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_loaded", None)
    monkeypatch.setitem(sys.modules, "mmhost._C", None)  # makes the import fail
    monkeypatch.setenv("MMHOST_JIT", "0")  # and no build on first use
    w, b, link = slab()
    x = torch.randn(9, 7)
    slots = torch.randint(0, 5, (9,))
    with pytest.warns(RuntimeWarning, match="mmhost._C is not built"):
        got = linear_forward(x, slots, w, b, link)
    torch.testing.assert_close(got, linear_reference(x, slots, w, b, link))
    linear_forward(x, slots, w, b, link)  # no second warning (warnings are errors here)
    monkeypatch.setattr(_native, "_tried", False)


def test_registered_torch_op_is_the_same_function():
    w, b, link = slab()
    x = torch.randn(12, 7)
    slots = torch.randint(0, 5, (12,))
    torch.testing.assert_close(
        torch.ops.mmhost.linear(x, slots, w, b, link), linear_forward(x, slots, w, b, link)
    )
