"""Triton kernel for the fused multi-model k-NN search (the CUDA implementation).

The math, per row ``i`` (see ``knn.py`` for the reference that defines it)::

    s = row_model[i]; start, end = model_points[s]
    d[j] = sum((x[i] - points[j])**2)  (L2)   |   x[i] . points[j]  (inner product)
    out[i] = the k best j of [start, end), equal values in point order

One program per row: it walks its own model's points in tiles of BLOCK_P (tiled distances: a
(BLOCK_P, BLOCK_D) tile of points against the row, reduced over D in fp32 from the differences
themselves, as the reference) and keeps a running top-k in registers. Each candidate is one
int64 key, ``order(distance) << 32 | point``: ``order`` maps a float32 to an int32 with the same
order (inner products negated, so smaller is always better), and the point index breaks ties,
so sorting keys sorts by distance and then by point order, the reference's rule. A tile is
merged by sorting the BLOCK_P best with the tile's BLOCK_P keys and keeping the first BLOCK_P
(BLOCK_P >= k); a tile none of whose keys beats the current worst is skipped. Rows of many
models run in one launch; rows of one model read its points from L2.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from mmhost.kernels.knn import check_inputs

# triton.jit reads this when the kernel below is decorated; read it once here to agree with it.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_NONE = 2**63 - 1  # the key of "no point"


@triton.jit
def _order(v):
    """float32 -> int32 with the same order (-0.0 first made +0.0, so equal values tie)."""
    bits = (v + 0.0).to(tl.int32, bitcast=True)
    return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


@triton.jit
def _knn_kernel(
    # pointers
    x_ptr,
    row_model_ptr,
    points_ptr,
    model_points_ptr,
    dist_ptr,
    idx_ptr,
    # sizes
    D,
    K,
    # strides (in elements)
    stride_xn,
    stride_xd,
    stride_rm,
    stride_pp,
    stride_pd,
    stride_ms,
    stride_mc,
    stride_dn,
    stride_dk,
    stride_in,
    stride_ik,
    # constexprs
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    INNER: tl.constexpr,
    NONE: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    s = tl.load(row_model_ptr + i * stride_rm)
    start = tl.load(model_points_ptr + s * stride_ms)
    end = tl.load(model_points_ptr + s * stride_ms + stride_mc)
    lanes = tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    best = tl.full((BLOCK_P,), NONE, tl.int64)  # the running top-k keys, unsorted past k
    for p0 in range(start, end, BLOCK_P):
        pts = p0 + lanes  # (BLOCK_P,) int64
        live = pts < end
        acc = tl.zeros((BLOCK_P,), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
            mask_d = ds < D
            q = tl.load(x_ptr + i * stride_xn + ds * stride_xd, mask=mask_d, other=0.0)
            tile = tl.load(
                points_ptr + pts[:, None] * stride_pp + ds[None, :] * stride_pd,
                mask=live[:, None] & mask_d[None, :],
                other=0.0,
            )  # (BLOCK_P, BLOCK_D)
            if INNER:
                acc += tl.sum(q[None, :] * tile, axis=1)
            else:
                diff = q[None, :] - tile
                acc += tl.sum(diff * diff, axis=1)
        v = -acc if INNER else acc  # smaller is better
        key = (_order(v).to(tl.int64) << 32) | (pts - start)
        key = tl.where(live, key, NONE)
        if tl.min(key, axis=0) < tl.max(best, axis=0):
            merged = tl.sort(tl.reshape(tl.join(best, key), (2 * BLOCK_P,)))
            best = tl.min(tl.reshape(merged, (2, BLOCK_P)), axis=0)  # the first BLOCK_P
    best = tl.sort(best)
    hi = (best >> 32).to(tl.int32)
    lo = best - ((best >> 32) << 32)
    v = tl.where(hi >= 0, hi, hi ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)
    empty = best == NONE
    if INNER:
        dist = tl.where(empty, float("-inf"), -v)
    else:
        dist = tl.where(empty, float("inf"), v)
    idx = tl.where(empty, -1, lo + start)
    keep = lanes < K
    tl.store(dist_ptr + i * stride_dn + lanes * stride_dk, dist, mask=keep)
    tl.store(idx_ptr + i * stride_in + lanes * stride_ik, idx, mask=keep)


def knn_triton(
    x: torch.Tensor,
    row_model: torch.Tensor,
    points: torch.Tensor,
    model_points: torch.Tensor,
    k: int,
    metric: str = "l2",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) distances and indices, as ``knn_reference``. Any strides are accepted. Inputs
    must be on CUDA (or on CPU under ``TRITON_INTERPRET=1``); model ranges are checked on the
    host (one small copy) since a kernel cannot raise."""
    check_inputs(x, row_model, points, model_points, k, metric)
    if not (x.is_cuda or (_INTERPRET and x.device.type == "cpu")):
        raise ValueError(
            f"knn_triton needs CUDA tensors (CPU only under TRITON_INTERPRET=1), got {x.device}"
        )
    n, d = x.shape
    ranges = model_points.cpu()
    s = ranges.shape[0]
    if s and not (
        (ranges[:, 0] >= 0).all()
        and (ranges[:, 0] <= ranges[:, 1]).all()
        and (ranges[:, 1] <= points.shape[0]).all()
    ):
        raise RuntimeError(f"model_points holds a range outside the {points.shape[0]} points")
    if n and not bool(((row_model >= 0) & (row_model < s)).all()):
        raise RuntimeError(f"row_model holds a slot outside [0, {s})")
    worst = float("-inf") if metric == "inner_product" else float("inf")
    dist = torch.full((n, k), worst, dtype=torch.float32, device=x.device)
    idx = torch.full((n, k), -1, dtype=torch.int64, device=x.device)
    if n == 0 or points.shape[0] == 0:
        return dist, idx
    if d == 0:  # every distance is 0: the first k points, in order
        x = x.new_zeros((n, 1))
        points = points.new_zeros((points.shape[0], 1))
        d = 1
    block_p = max(16, triton.next_power_of_2(k))
    block_d = min(triton.next_power_of_2(d), max(1, 4096 // block_p), 64)
    _knn_kernel[(n,)](
        x, row_model, points, model_points, dist, idx,
        d, k,
        x.stride(0), x.stride(1),
        row_model.stride(0),
        points.stride(0), points.stride(1),
        model_points.stride(0), model_points.stride(1),
        dist.stride(0), dist.stride(1),
        idx.stride(0), idx.stride(1),
        BLOCK_P=block_p, BLOCK_D=block_d, INNER=metric == "inner_product", NONE=_NONE,
        num_warps=4,
    )  # fmt: skip
    return dist, idx
