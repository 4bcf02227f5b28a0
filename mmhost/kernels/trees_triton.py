"""Triton kernel for the fused multi-model tree-ensemble op (the CUDA implementation).

The math, per row ``i`` (see ``trees.py`` for the reference that defines it)::

    s = row_model[i]
    out[i] = base[s]                                          # (K,) float32
    for t in range(*model_trees[s]):                          # in tree order
        out[i, tree_group[t]] += value[leaf of tree t for x[i]]

Each program takes BLOCK_N rows, one lane per row, and walks their trees in lockstep: tree j of
every row at step j (rows of different models walk different trees), each walk a ``while`` loop
that runs until no lane of the block is at a split. ``out`` starts as the rows' base margins
(gathered by the launcher) and each leaf is added to ``out[row, tree_group[t]]`` right after its
walk: a lane owns its row, so the read-add-write needs no atomics, every sum is taken in the
reference's order (bit-identical to it), and nothing is sized by K (a model of many classes
costs memory traffic, not registers).

A corrupt pack (a root, child or feature out of range, a group >= K, or a walk that does not
reach a leaf within MAX_DEPTH levels) cannot raise from inside a kernel without a device sync:
its loads are masked and the row's margins come out NaN instead.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from mmhost.artifacts.xgboost import MAX_DEPTH
from mmhost.kernels.trees import (
    NODE_DEFAULT_LEFT,
    NODE_FEATURE,
    NODE_LEFT,
    NODE_VALUE,
    check_inputs,
    check_rows,
)

# triton.jit reads this when the kernel below is decorated; read it once here to agree with it.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _trees_kernel(
    # pointers
    x_ptr,
    row_model_ptr,
    nodes_ptr,
    tree_root_ptr,
    tree_group_ptr,
    model_trees_ptr,
    out_ptr,
    # sizes
    N,
    F,
    M,
    K,
    # strides (in elements)
    stride_xn,
    stride_xf,
    stride_rm,
    stride_nm,
    stride_nc,
    stride_root,
    stride_group,
    stride_ms,
    stride_mc,
    stride_on,
    stride_ok,
    # constexprs
    BLOCK_N: tl.constexpr,
    MAX_LEVELS: tl.constexpr,
    COL_FEATURE: tl.constexpr,
    COL_LEFT: tl.constexpr,
    COL_DEFAULT_LEFT: tl.constexpr,
    COL_VALUE: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) int64
    mask_n = rows < N

    # padding rows read model 0 and own no trees; nothing is stored for them
    slot = tl.load(row_model_ptr + rows * stride_rm, mask=mask_n, other=0)  # (BLOCK_N,) int64
    first = tl.load(model_trees_ptr + slot * stride_ms, mask=mask_n, other=0)  # (BLOCK_N,)
    end = tl.load(model_trees_ptr + slot * stride_ms + stride_mc, mask=mask_n, other=0)
    count = end - first  # (BLOCK_N,) int64, >= 0 (checked on the host)
    x_row = x_ptr + rows * stride_xn  # (BLOCK_N,)
    out_row = out_ptr + rows * stride_on  # (BLOCK_N,) holds the base margins already
    broken = rows < 0  # (BLOCK_N,) all False: rows that met a corrupt tree
    for j in range(0, tl.max(count, axis=0)):
        live = mask_n & (j < count)  # (BLOCK_N,) rows that have a j-th tree
        t = first + j
        node = tl.load(tree_root_ptr + t * stride_root, mask=live, other=0)  # (BLOCK_N,) int64
        group = tl.load(tree_group_ptr + t * stride_group, mask=live, other=0)  # (BLOCK_N,)
        ok = live & (node >= 0) & (node < M) & (group >= 0) & (group < K)
        broken |= live & ~ok
        ok &= ~broken  # a broken row walks no more trees
        rec = nodes_ptr + node * stride_nm  # (BLOCK_N,) the current node's record
        feat = tl.load(rec + COL_FEATURE * stride_nc, mask=ok, other=-1)
        at_split = ok & (feat >= 0)
        depth = tl.zeros((BLOCK_N,), dtype=tl.int32)  # steps taken (the same in every lane)
        while tl.max(at_split.to(tl.int32), axis=0) > 0:
            left = tl.load(rec + COL_LEFT * stride_nc, mask=at_split, other=0).to(tl.int64)
            default_left = tl.load(rec + COL_DEFAULT_LEFT * stride_nc, mask=at_split, other=0)
            threshold = tl.load(rec + COL_VALUE * stride_nc, mask=at_split, other=0).to(
                tl.float32, bitcast=True
            )
            in_x = at_split & (feat < F)
            v = tl.load(x_row + feat.to(tl.int64) * stride_xf, mask=in_x, other=0.0)
            go_left = tl.where(v != v, default_left != 0, v < threshold)  # NaN: the default
            node = tl.where(at_split, left + tl.where(go_left, 0, 1), node)
            depth += 1
            bad = at_split & ~(in_x & (node >= 0) & (node < M))
            broken |= bad
            ok &= ~bad
            rec = nodes_ptr + node * stride_nm
            feat = tl.load(rec + COL_FEATURE * stride_nc, mask=at_split & ok, other=-1)
            # still at a split after MAX_LEVELS steps: a cycle, pack refuses deeper trees
            stuck = ok & (feat >= 0) & (depth >= MAX_LEVELS)
            broken |= stuck
            ok &= ~stuck
            at_split = ok & (feat >= 0)

        leaf = tl.load(rec + COL_VALUE * stride_nc, mask=ok, other=0).to(tl.float32, bitcast=True)
        at = out_row + group.to(tl.int64) * stride_ok  # (BLOCK_N,) this tree's output
        tl.store(at, tl.load(at, mask=ok, other=0.0) + leaf, mask=ok)  # the reference's order

    for k in range(0, K):  # a row that met a corrupt tree: NaN margins
        tl.store(out_row + k * stride_ok, float("nan"), mask=broken)


def _block_sizes() -> tuple[int, int]:
    """(BLOCK_N, num_warps)."""
    if _INTERPRET:
        # the interpreter runs one program at a time in numpy: few big programs are fastest
        return 1024, 1
    # one warp, one row a lane: the "any lane at a split" test of every step is a warp vote,
    # and small programs keep many warps in flight to hide the latency of the node gathers
    return 32, 1


def trees_triton(
    x: torch.Tensor,
    row_model: torch.Tensor,
    nodes: torch.Tensor,
    tree_root: torch.Tensor,
    tree_group: torch.Tensor,
    model_trees: torch.Tensor,
    base: torch.Tensor,
    num_features: torch.Tensor,
) -> torch.Tensor:
    """Margins (N, K) float32: ``base[s]`` plus the leaves of model ``s = row_model[i]``'s trees.

    Bit-identical to ``trees_reference``, and raises its RuntimeError for a bad row. Any strides
    are accepted. Inputs must be on CUDA (or on CPU under ``TRITON_INTERPRET=1``)."""
    args = (x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features)
    check_inputs(*args)
    if not (x.is_cuda or (_INTERPRET and x.device.type == "cpu")):
        raise ValueError(
            f"trees_triton needs CUDA tensors (CPU only under TRITON_INTERPRET=1), got {x.device}"
        )
    n, f = x.shape
    m, k = nodes.shape[0], base.shape[1]
    check_rows(x, row_model, tree_root, model_trees, base, num_features)
    if n == 0 or k == 0 or tree_root.shape[0] == 0:  # nothing to walk: the base margins
        return base.index_select(0, row_model)  # (N, K), a copy

    # launch on real memory: empty tensors may have no storage (their loads are all masked)
    if f == 0:
        x = x.new_zeros((n, 1))
    if m == 0:
        nodes = nodes.new_zeros((1, 4))
    out = base.index_select(0, row_model)  # (N, K) base margins; the kernel adds the leaves
    block_n, num_warps = _block_sizes()
    grid = (triton.cdiv(n, block_n),)
    _trees_kernel[grid](
        x, row_model, nodes, tree_root, tree_group, model_trees, out,
        n, f, m, k,
        x.stride(0), x.stride(1),
        row_model.stride(0),
        nodes.stride(0), nodes.stride(1),
        tree_root.stride(0),
        tree_group.stride(0),
        model_trees.stride(0), model_trees.stride(1),
        out.stride(0), out.stride(1),
        BLOCK_N=block_n, MAX_LEVELS=MAX_DEPTH,
        COL_FEATURE=NODE_FEATURE, COL_LEFT=NODE_LEFT, COL_DEFAULT_LEFT=NODE_DEFAULT_LEFT,
        COL_VALUE=NODE_VALUE,
        num_warps=num_warps, enable_fp_fusion=False,  # adds only; never contract to an fma
    )  # fmt: skip
    return out
