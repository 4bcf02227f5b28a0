"""Triton kernel for the fused multi-forest Random Cut Forest op (the CUDA implementation).

The math is ``rcf.py``'s (the reference defines it). A lane is one row; a program takes
BLOCK_N rows and walks the j-th tree of each row's forest together, j = 0, 1, ... (rows of
smaller forests idle). A GPU lane has no stack for the path, so the bottom-up recursion

    s <- (1 - p_k) s + p_k / (k + 1)        for the ancestors k = D-1 .. 0

is unrolled and accumulated top-down while descending, as the same affine maps composed:

    s = s_leaf * prod_k (1 - p_k) + sum_k p_k / (k + 1) * prod_{j<k} (1 - p_j)

(the library stops at the first ancestor whose box holds the row; every ancestor above holds it
too, since boxes nest, so its p is 0 and changes nothing). At the leaf, a row equal to the
leaf's point takes the damped "seen" score instead. The gap sums are float32 in dimension
order, as the library's; the rest is float64 in another order than the library's recursion, so
scores agree to rounding (the tests use rtol 1e-12).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from mmhost.artifacts.rcf import MAX_DEPTH
from mmhost.kernels.rcf import check_inputs

# triton.jit reads this when the kernel below is decorated; read it once here to agree with it.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _rcf_kernel(
    x_ptr,
    row_model_ptr,
    nodes_ptr,
    mass_ptr,
    box_ptr,
    range_sum_ptr,
    tree_root_ptr,
    tree_mass_ptr,
    model_trees_ptr,
    out_ptr,
    N,
    D,
    stride_xn,
    BLOCK_N: tl.constexpr,
    MAX_LEVELS: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask_n = rows < N
    s = tl.load(row_model_ptr + rows, mask=mask_n, other=0)
    first = tl.load(model_trees_ptr + 2 * s, mask=mask_n, other=0)
    end = tl.load(model_trees_ptr + 2 * s + 1, mask=mask_n, other=0)
    count = end - first
    x_row = x_ptr + rows * stride_xn
    total = tl.zeros((BLOCK_N,), dtype=tl.float64)
    for j in range(0, tl.max(count, axis=0)):
        live = mask_n & (j < count)
        t = first + j
        node = tl.load(tree_root_ptr + t, mask=live, other=-1)
        valid = live & (node >= 0)
        node = tl.where(valid, node, 0)
        big_m = tl.load(tree_mass_ptr + t, mask=valid, other=1.0)
        prod = tl.full((BLOCK_N,), 1.0, tl.float64)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float64)
        depth = tl.zeros((BLOCK_N,), dtype=tl.float64)
        dim = tl.load(nodes_ptr + 4 * node + 2, mask=valid, other=-1)
        at_split = valid & (dim >= 0)
        steps = 0
        while (tl.max(at_split.to(tl.int32), axis=0) > 0) & (steps < MAX_LEVELS):
            above = tl.zeros((BLOCK_N,), dtype=tl.float32)
            below = tl.zeros((BLOCK_N,), dtype=tl.float32)
            lo_ptr = box_ptr + node * 2 * D
            for dd in range(0, D):  # float32, in dimension order: the library's sums
                xv = tl.load(x_row + dd, mask=at_split, other=0.0)
                lo = tl.load(lo_ptr + dd, mask=at_split, other=0.0)
                hi = tl.load(lo_ptr + D + dd, mask=at_split, other=0.0)
                above += tl.maximum(xv - hi, 0.0)
                below += tl.maximum(lo - xv, 0.0)
            gap = (above + below).to(tl.float64)
            rs = tl.load(range_sum_ptr + node, mask=at_split, other=0.0)
            p = gap / tl.where(gap == 0.0, 1.0, rs + gap)  # 0 where the row is inside
            acc = tl.where(at_split, acc + prod * p / (depth + 1.0), acc)
            prod = tl.where(at_split, prod * (1.0 - p), prod)
            xv = tl.load(x_row + dim.to(tl.int64), mask=at_split, other=0.0)
            c = tl.load(nodes_ptr + 4 * node + 3, mask=at_split, other=0).to(
                tl.float32, bitcast=True
            )
            side = tl.where(xv <= c, 0, 1)
            nxt = tl.load(nodes_ptr + 4 * node + side, mask=at_split, other=0).to(tl.int64)
            node = tl.where(at_split, nxt, node)
            depth = tl.where(at_split, depth + 1.0, depth)
            dim = tl.load(nodes_ptr + 4 * node + 2, mask=at_split, other=-1)
            at_split = at_split & (dim >= 0)
            steps += 1
        seen = valid
        leaf = box_ptr + node * 2 * D
        for dd in range(0, D):
            xv = tl.load(x_row + dd, mask=valid, other=0.0)
            pt = tl.load(leaf + dd, mask=valid, other=0.0)
            seen = seen & (xv == pt)
        m = tl.load(mass_ptr + node, mask=valid, other=1.0).to(tl.float64)
        s_seen = (1.0 - m / (2.0 * big_m)) / (depth + tl.log2(1.0 + m))
        s_unseen = prod / (depth + 1.0) + acc
        score = tl.where(seen, s_seen, s_unseen) * tl.log2(1.0 + big_m)
        total += tl.where(valid, score, 0.0)
    out = total / tl.maximum(count, 1).to(tl.float64)
    tl.store(out_ptr + rows, out, mask=mask_n)


def rcf_triton(
    x: torch.Tensor,
    row_model: torch.Tensor,
    nodes: torch.Tensor,
    mass: torch.Tensor,
    box: torch.Tensor,
    range_sum: torch.Tensor,
    tree_root: torch.Tensor,
    tree_mass: torch.Tensor,
    model_trees: torch.Tensor,
) -> torch.Tensor:
    """(N,) float64 scores, as ``rcf_reference``. Inputs must be contiguous and on CUDA (or on
    CPU under ``TRITON_INTERPRET=1``); row_model and the tree ranges are checked on the host."""
    args = (x, row_model, nodes, mass, box, range_sum, tree_root, tree_mass)
    check_inputs(*args, model_trees)
    if not (x.is_cuda or (_INTERPRET and x.device.type == "cpu")):
        raise ValueError(
            f"rcf_triton needs CUDA tensors (CPU only under TRITON_INTERPRET=1), got {x.device}"
        )
    n, d = x.shape
    s = model_trees.shape[0]
    if n and not bool(((row_model >= 0) & (row_model < s)).all()):
        raise RuntimeError(f"row_model holds a forest outside [0, {s})")
    out = torch.zeros(n, dtype=torch.float64, device=x.device)
    if n == 0 or tree_root.shape[0] == 0:
        return out
    tensors = [t.contiguous() for t in (x, *args[1:], model_trees)]
    block_n = 256 if _INTERPRET else 32
    _rcf_kernel[(triton.cdiv(n, block_n),)](
        *tensors,
        out,
        n,
        d,
        tensors[0].stride(0),
        BLOCK_N=block_n,
        MAX_LEVELS=MAX_DEPTH,
        num_warps=1,
    )
    return out
