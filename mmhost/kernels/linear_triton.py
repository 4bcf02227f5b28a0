"""Triton kernel for the fused multi-model linear op (the CUDA implementation).

The math, per row ``i`` (see ``linear.py`` for the reference that defines it)::

    s = slots[i]
    z[k] = sum_d weight[s, k, d] * x[i, d] + bias[s, k]          k < K
    out[i] = z | sigmoid(z) | softmax_k(z)                       chosen by link[s]

Every row has its own weight matrix, so this is a batched GEMV with a gather, not a GEMM: each
program takes BLOCK_N rows, gathers their (K, D) matrices chunk by chunk as one
(BLOCK_N, BLOCK_K, BLOCK_D) tile and reduces over D in fp32. The link is read per row, so one
block may mix identity, sigmoid and softmax models.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from mmhost.kernels.linear import LINK_SIGMOID, LINK_SOFTMAX, check_inputs

# triton.jit reads this when the kernel below is decorated; read it once here to agree with it.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _linear_kernel(
    # pointers
    x_ptr,
    slots_ptr,
    w_ptr,
    b_ptr,
    link_ptr,
    out_ptr,
    # sizes
    N,
    K,
    D,
    # strides (in elements)
    stride_xn,
    stride_xd,
    stride_slots,
    stride_ws,
    stride_wk,
    stride_wd,
    stride_bs,
    stride_bk,
    stride_link,
    stride_on,
    stride_ok,
    # constexprs
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    LINK_SIG: tl.constexpr,
    LINK_SMAX: tl.constexpr,
    HAS_SOFTMAX: tl.constexpr,
):
    pid = tl.program_id(0)
    # int64 row index: N * stride_xn can pass 2**31 for big batches of wide rows
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask_n = rows < N
    ks = tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    mask_k = ks < K

    # padding rows read slot 0; their loads are masked anyway and nothing is stored for them
    slot = tl.load(slots_ptr + rows * stride_slots, mask=mask_n, other=0)  # (BLOCK_N,) int64

    w_row = w_ptr + slot[:, None, None] * stride_ws + ks[None, :, None] * stride_wk  # (BN, BK, 1)
    x_row = x_ptr + rows[:, None] * stride_xn  # (BLOCK_N, 1)
    mask_nk = mask_n[:, None] & mask_k[None, :]  # (BLOCK_N, BLOCK_K)

    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
        mask_d = ds < D
        xt = tl.load(
            x_row + ds[None, :] * stride_xd, mask=mask_n[:, None] & mask_d[None, :], other=0.0
        )  # (BLOCK_N, BLOCK_D)
        wt = tl.load(
            w_row + ds[None, None, :] * stride_wd,
            mask=mask_nk[:, :, None] & mask_d[None, None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_K, BLOCK_D)
        acc += tl.sum(wt * xt[:, None, :], axis=2)

    b = tl.load(
        b_ptr + slot[:, None] * stride_bs + ks[None, :] * stride_bk, mask=mask_nk, other=0.0
    )  # (BLOCK_N, BLOCK_K)
    z = acc + b
    row_link = tl.load(link_ptr + slot * stride_link, mask=mask_n, other=0).to(tl.int32)

    out = tl.where(row_link[:, None] == LINK_SIG, tl.sigmoid(z), z)
    if HAS_SOFTMAX:  # K > 1; like the reference, softmax over a single output is left as identity
        # stable softmax over the real K columns; padding columns become exp(-inf) = 0
        zm = tl.where(mask_k[None, :], z, float("-inf"))
        e = tl.exp(zm - tl.max(zm, axis=1)[:, None])
        smax = e / tl.sum(e, axis=1)[:, None]
        out = tl.where(row_link[:, None] == LINK_SMAX, smax, out)
    tl.store(out_ptr + rows[:, None] * stride_on + ks[None, :] * stride_ok, out, mask=mask_nk)


def _block_sizes(k: int, d: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, BLOCK_D) for a slab of K outputs over D features."""
    block_k = triton.next_power_of_2(k)
    if _INTERPRET:
        # the interpreter runs one program at a time in numpy: few big programs are fastest,
        # up to its cap of 2**20 elements per tensor
        block_n, budget, max_d = 512, 1 << 20, 1024
    else:
        # the gathered W tile lives in registers: 16K fp32 over 4 warps is 128 per thread
        block_n, budget, max_d = 32, 1 << 14, 64
    block_n = max(1, min(block_n, budget // (block_k * 16)))  # leave room for BLOCK_D >= 16
    block_d = max(1, min(triton.next_power_of_2(d), max_d, budget // (block_n * block_k)))
    return block_n, block_k, block_d


def linear_triton(
    x: torch.Tensor,
    slots: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    link: torch.Tensor,
) -> torch.Tensor:
    """``out[i] = link[s](weight[s] @ x[i] + bias[s])`` with ``s = slots[i]``; (N, K) float32.

    Any strides are accepted. Inputs must be on CUDA (or on CPU under ``TRITON_INTERPRET=1``).
    """
    check_inputs(x, slots, weight, bias, link)
    if not (x.is_cuda or (_INTERPRET and x.device.type == "cpu")):
        raise ValueError(
            f"linear_triton needs CUDA tensors (CPU only under TRITON_INTERPRET=1), got {x.device}"
        )
    n, d = x.shape
    k = weight.shape[1]

    out = torch.empty((n, k), dtype=torch.float32, device=x.device)
    if n == 0 or k == 0:
        return out
    if d == 0:  # nothing to reduce; launch on real zeros, as empty tensors may have no storage
        x = x.new_zeros((n, 1))
        weight = weight.new_zeros((weight.shape[0], k, 1))
        d = 1

    block_n, block_k, block_d = _block_sizes(k, d)
    grid = (triton.cdiv(n, block_n),)
    _linear_kernel[grid](
        x, slots, weight, bias, link, out,
        n, k, d,
        x.stride(0), x.stride(1),
        slots.stride(0),
        weight.stride(0), weight.stride(1), weight.stride(2),
        bias.stride(0), bias.stride(1),
        link.stride(0),
        out.stride(0), out.stride(1),
        BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d,
        LINK_SIG=LINK_SIGMOID, LINK_SMAX=LINK_SOFTMAX, HAS_SOFTMAX=k > 1,
    )  # fmt: skip
    return out
