"""The fused multi-model linear op: every row is scored by its own model, in one call.

Semantics (the reference below is the oracle for the C++ and Triton kernels)::

    for i in range(N):
        s = slots[i]
        z = weight[s] @ x[i] + bias[s]            # (K,)
        out[i] = identity(z) | sigmoid(z) | softmax(z)   chosen by link[s]

Shapes: x (N, D) float32, slots (N,) int64, weight (S, K, D) float32, bias (S, K) float32,
link (S,) int8 -> out (N, K) float32. A slab holds S slots of models with the same K and
(padded) D; softmax is only used with K > 1, sigmoid and identity with any K (elementwise).

Dispatch: ``torch.ops.mmhost.linear`` is registered with torch.library; the CPU kernel is the
C++ op from ``mmhost._C`` (falling back to the reference with one warning when the extension is
not built), the CUDA kernel is the Triton kernel in ``linear_triton.py``.
"""

from __future__ import annotations

import torch

from mmhost.kernels import _native
from mmhost.kernels.links import LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX  # noqa: F401


def check_inputs(
    x: torch.Tensor,
    slots: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    link: torch.Tensor,
) -> None:
    """Shape/dtype contract shared by every implementation (cheap: no data is read)."""
    if x.dim() != 2 or weight.dim() != 3:
        raise ValueError(
            f"x must be (N, D) and weight (S, K, D); got {tuple(x.shape)}, {tuple(weight.shape)}"
        )
    n, d = x.shape
    s, k, dw = weight.shape
    if d != dw:
        raise ValueError(f"x has D={d} columns but the slab is D={dw}")
    if tuple(bias.shape) != (s, k):
        raise ValueError(f"bias must be ({s}, {k}), got {tuple(bias.shape)}")
    if tuple(slots.shape) != (n,) or tuple(link.shape) != (s,):
        raise ValueError(
            f"slots must be ({n},) and link ({s},); got {tuple(slots.shape)}, {tuple(link.shape)}"
        )
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or bias.dtype != torch.float32:
        raise ValueError("x, weight and bias must be float32")
    if slots.dtype != torch.int64 or link.dtype != torch.int8:
        raise ValueError(f"slots must be int64 and link int8, got {slots.dtype}, {link.dtype}")
    devices = {t.device for t in (x, slots, weight, bias, link)}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")


def linear_reference(
    x: torch.Tensor,
    slots: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    link: torch.Tensor,
) -> torch.Tensor:
    """Plain torch; the test oracle and the fallback when no native kernel is available."""
    w = weight.index_select(0, slots)  # (N, K, D)
    z = torch.bmm(w, x.unsqueeze(2)).squeeze(2) + bias.index_select(0, slots)  # (N, K)
    row_link = link.index_select(0, slots).unsqueeze(1)  # (N, 1)
    out = torch.where(row_link == LINK_SIGMOID, torch.sigmoid(z), z)
    if z.shape[1] > 1:
        out = torch.where(row_link == LINK_SOFTMAX, torch.softmax(z, dim=1), out)
    return out


@torch.library.custom_op("mmhost::linear", mutates_args=())
def _linear_op(
    x: torch.Tensor,
    slots: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    link: torch.Tensor,
) -> torch.Tensor:
    return linear_reference(x, slots, weight, bias, link)


@_linear_op.register_fake
def _(x, slots, weight, bias, link):
    return x.new_empty((x.shape[0], weight.shape[1]))


@torch.library.register_kernel("mmhost::linear", "cpu")
def _linear_cpu(x, slots, weight, bias, link):
    native = _native.load()
    if native is None:
        return linear_reference(x, slots, weight, bias, link)
    return native.linear_forward(x, slots, weight, bias, link)


@torch.library.register_kernel("mmhost::linear", "cuda")
def _linear_cuda(x, slots, weight, bias, link):
    from mmhost.kernels.linear_triton import linear_triton

    return linear_triton(x, slots, weight, bias, link)


def linear_forward(
    x: torch.Tensor,
    slots: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    link: torch.Tensor,
) -> torch.Tensor:
    """Score every row of ``x`` with the model in its slot. See the module docstring.

    The hot path calls the device's implementation directly: going through the
    ``torch.ops.mmhost.linear`` dispatcher costs ~20 us a call, more than the C++ kernel
    spends on a thousand rows. The registered op is the same function for torch.compile users.
    """
    check_inputs(x, slots, weight, bias, link)
    x = x.contiguous()
    if x.device.type == "cuda":
        return _linear_cuda(x, slots, weight, bias, link)
    return _linear_cpu(x, slots, weight, bias, link)
