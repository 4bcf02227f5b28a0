"""The fused multi-forest Random Cut Forest op: each row is scored by its own forest, in one call,
as AWS's RCF library scores it (``RandomCutForest.score``).

Semantics (the reference below is the oracle for the C++ and Triton kernels), per row ``i`` of
forest ``s = row_model[i]`` and each tree ``t`` of it (empty trees score 0)::

    descend from the root: left iff x[cut_dim] <= cut; D = the leaf's depth, M = tree_mass[t]
    if x equals the leaf's point (every float32 coordinate):
        m = the leaf's mass (the library's count: 1, or c for c + 1 copies)
        s = (1 - m / (2M)) / (D + log2(1 + m))
    else:
        s = 1 / (D + 1)
        for each ancestor, bottom up, at depth k:
            gap = sum_j max(0, x_j - max_j) + sum_j max(0, min_j - x_j)   # float32, in order
            p = 0 if gap == 0 else gap / (range_sum + gap)                 # float64
            if p == 0: stop                  # inside the box: no ancestor above changes s
            s = (1 - p) * s + p / (k + 1)
    score_t = s * log2(1 + M);   out[i] = mean over the forest's trees

The two gap sums are float32, each summed in dimension order and then added, as the library
does; everything else is float64. Dimensions past a forest's own are zero in both the row and
the boxes, which changes no sum.

Inputs (``families/rcf.py``'s slabs hold them per slot): x (N, D) float32; row_model (N,) int64;
per node (all trees of all forests): nodes (M, 4) int32 records [left, right, cut_dim, float32
bits of cut] (absolute children; -1, -1, -1 at a leaf: one 16-byte record a step of the descent),
mass (M,) float32 (read at leaves),
box (M, 2, D) float32 [min, max] (a leaf: its point), range_sum (M,) float64; per tree:
tree_root (T,) int64 absolute (-1: empty), tree_mass (T,) float64; model_trees (S, 2) int64
[first, end) -> out (N,) float64.

Dispatch: ``torch.ops.mmhost.rcf``; the CPU kernel is the C++ op ``mmhost._C.rcf_forward`` (the
reference, with one warning, when it is not built), CUDA the Triton kernel in ``rcf_triton.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from mmhost.artifacts.rcf import Forest
from mmhost.kernels import _native


class PackedForests(NamedTuple):
    """Several forests as the op's flat inputs (``rcf_forward(x, row_model, *packed)``);
    ``pack`` builds one for tests and benchmarks, the family's slabs hold the same per slot."""

    nodes: torch.Tensor  # (M, 4) int32 [left, right, cut_dim, cut bits]
    mass: torch.Tensor
    box: torch.Tensor
    range_sum: torch.Tensor
    tree_root: torch.Tensor
    tree_mass: torch.Tensor
    model_trees: torch.Tensor

    def to(self, device: torch.device | str) -> PackedForests:
        return PackedForests(*(t.to(device) for t in self))


def pack(forests: Sequence[Forest], width: int | None = None) -> PackedForests:
    """Concatenate checked forests (forest s = forests[s]) into the op's inputs, boxes padded
    with zeros to ``width`` dimensions (default: the widest forest's)."""
    d = width or max(f.dims for f in forests)
    nodes = np.cumsum([0] + [len(f.left) for f in forests])
    trees = np.cumsum([0] + [f.num_trees for f in forests])
    records, box, roots = [], [], []
    for f, base in zip(forests, nodes, strict=False):
        kids = np.stack([f.left, f.right], axis=1)  # relative to each tree
        first = np.repeat(f.tree_nodes[:, 0], f.tree_nodes[:, 1] - f.tree_nodes[:, 0])
        kids = np.where(kids >= 0, kids + first[:, None] + base, -1)
        bits = np.ascontiguousarray(f.cut, np.float32).view(np.int32)
        records.append(np.column_stack([kids, f.cut_dim, bits]))
        b = np.zeros((len(f.left), 2, d), np.float32)
        b[:, :, : f.dims] = f.box
        box.append(b)
        empty = f.tree_nodes[:, 1] == f.tree_nodes[:, 0]
        roots.append(np.where(empty, -1, f.tree_nodes[:, 0] + base))

    def cat(arrays: list[np.ndarray], dtype: type) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays), dtype))

    return walk_order(
        PackedForests(
            cat(records, np.int32),
            cat([f.mass for f in forests], np.float32),
            cat(box, np.float32),
            cat([f.range_sum for f in forests], np.float64),
            cat(roots, np.int64),
            cat([f.tree_mass for f in forests], np.float64),
            torch.from_numpy(np.stack([trees[:-1], trees[1:]], axis=1).astype(np.int64)),
        )
    )


def walk_order(p: PackedForests) -> PackedForests:
    """The same forests with each tree's nodes in depth-first order, left child first: a node's
    left child is the record right after it (often in the same cache line), its subtree a run
    of records, and the range sums of a path's ancestors close together. A walk then misses
    the caches on fewer lines than in breadth-first order (the C++ kernel is bound by those
    misses once forests outgrow the caches); the scores are the same in any order. Each tree's
    nodes must be one run that its root starts (as ``pack`` and the artifact lay them out)."""
    nodes = p.nodes.numpy()
    left, right = nodes[:, 0].astype(np.int64), nodes[:, 1].astype(np.int64)
    roots = p.tree_root.numpy()
    roots = roots[roots >= 0]
    inners = []  # the internal nodes of each depth, all trees at once
    frontier = roots
    while frontier.size:
        inner = frontier[left[frontier] >= 0]
        inners.append(inner)
        frontier = np.concatenate([left[inner], right[inner]])
    size = np.ones(len(nodes), np.int64)  # nodes in each subtree
    for inner in reversed(inners):
        size[inner] += size[left[inner]] + size[right[inner]]
    pos = np.arange(len(nodes), dtype=np.int64)  # a root keeps its place: its tree's first
    for inner in inners:
        pos[left[inner]] = pos[inner] + 1
        pos[right[inner]] = pos[inner] + 1 + size[left[inner]]
    order = np.empty_like(pos)
    order[pos] = np.arange(len(pos))  # order[new] = old
    records = nodes[order].copy()
    kids = records[:, :2]
    records[:, :2] = np.where(kids >= 0, pos[np.maximum(kids, 0)], -1)
    take = torch.from_numpy(order)
    return PackedForests(
        torch.from_numpy(records),
        p.mass[take],
        p.box[take],
        p.range_sum[take],
        p.tree_root,
        p.tree_mass,
        p.model_trees,
    )


def check_inputs(
    x: torch.Tensor,
    row_model: torch.Tensor,
    nodes: torch.Tensor,
    mass: torch.Tensor,
    box: torch.Tensor,
    range_sum: torch.Tensor,
    tree_root: torch.Tensor,
    tree_mass: torch.Tensor,
    model_trees: torch.Tensor,
) -> None:
    """Shapes and dtypes shared by every implementation (cheap: no data is read)."""
    if x.dim() != 2 or x.dtype != torch.float32:
        raise ValueError(f"x must be (N, D) float32, got {tuple(x.shape)} {x.dtype}")
    n, d = x.shape
    m = nodes.shape[0]
    want = {
        "row_model": (row_model, (n,), torch.int64),
        "nodes": (nodes, (m, 4), torch.int32),
        "mass": (mass, (m,), torch.float32),
        "box": (box, (m, 2, d), torch.float32),
        "range_sum": (range_sum, (m,), torch.float64),
        "tree_root": (tree_root, (tree_root.shape[0],), torch.int64),
        "tree_mass": (tree_mass, (tree_root.shape[0],), torch.float64),
        "model_trees": (model_trees, (model_trees.shape[0], 2), torch.int64),
    }
    for name, (t, shape, dtype) in want.items():
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise ValueError(f"{name} must be {shape} {dtype}, got {tuple(t.shape)} {t.dtype}")


def _gap(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(P,) float32: sum_j max(0, x - hi) + sum_j max(0, lo - x), each in dimension order."""
    above = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
    below = torch.zeros_like(above)
    for j in range(x.shape[1]):  # float32 adds one dimension at a time: the library's order
        above = above + (x[:, j] - hi[:, j]).clamp(min=0)
        below = below + (lo[:, j] - x[:, j]).clamp(min=0)
    return above + below


def rcf_reference(
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
    """(N,) float64 scores, vectorised over every (row, tree) pair of the batch."""
    check_inputs(x, row_model, nodes, mass, box, range_sum, tree_root, tree_mass, model_trees)
    n = x.shape[0]
    child, cut_dim, cut = nodes[:, :2], nodes[:, 2], nodes[:, 3].contiguous().view(torch.float32)
    first, end = model_trees[row_model, 0], model_trees[row_model, 1]  # (N,)
    count = end - first
    row = torch.repeat_interleave(torch.arange(n, device=x.device), count)  # (P,)
    offset = torch.arange(row.shape[0], device=x.device) - torch.repeat_interleave(
        count.cumsum(0) - count, count
    )
    tree = first[row] + offset  # (P,) each pair's tree
    q = x[row]  # (P, D)
    node = tree_root[tree]
    valid = node >= 0
    node = node.clamp(min=0)
    path: list[torch.Tensor] = []  # path[k]: the node at depth k (-1 where the walk ended)
    active = valid & (cut_dim[node] >= 0)
    while bool(active.any()):
        path.append(torch.where(active, node, -1))
        dim = cut_dim[node].clamp(min=0).long()
        go_left = q.gather(1, dim[:, None]).squeeze(1) <= cut[node]
        nxt = torch.where(go_left, child[node, 0], child[node, 1]).long()
        node = torch.where(active, nxt, node)
        active = active & (cut_dim[node] >= 0)
    depth = torch.zeros_like(node, dtype=torch.float64)
    for level in path:
        depth += (level >= 0).double()
    big_m = tree_mass[tree]
    reported = mass[node].double()
    seen = (box[node, 0] == q).all(dim=1)
    s_seen = (1 - reported / (2 * big_m)) / (depth + torch.log2(1 + reported))
    s = 1.0 / (depth + 1)
    done = seen | ~valid
    for k in range(len(path) - 1, -1, -1):
        at = path[k]
        live = (at >= 0) & ~done
        if not bool(live.any()):
            continue
        a = at.clamp(min=0)
        gap = _gap(q, box[a, 0], box[a, 1]).double()
        p = torch.where(gap == 0, 0.0, gap / (range_sum[a] + gap))
        done = done | (live & (p == 0))
        s = torch.where(live & (p != 0), (1 - p) * s + p / (k + 1), s)
    s = torch.where(seen, s_seen, s)
    per_tree = torch.where(valid, s * torch.log2(1 + big_m), 0.0)
    out = torch.zeros(n, dtype=torch.float64, device=x.device).index_add_(0, row, per_tree)
    return out / count.clamp(min=1).double()


@torch.library.custom_op("mmhost::rcf", mutates_args=())
def _rcf_op(
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
    return rcf_reference(
        x, row_model, nodes, mass, box, range_sum, tree_root, tree_mass, model_trees
    )


@_rcf_op.register_fake
def _(x, row_model, nodes, mass, box, range_sum, tree_root, tree_mass, model_trees):
    return x.new_empty((x.shape[0],), dtype=torch.float64)


RCF_ABI = 2  # mmhost/csrc/bindings.cpp's RCF_ABI: nodes as (M, 4) records


def _native_rcf() -> Callable[..., torch.Tensor] | None:
    return _native.function("rcf_forward", "rcf", ("RCF_ABI", RCF_ABI))


@torch.library.register_kernel("mmhost::rcf", "cpu")
def _rcf_cpu(*args):
    fn = _native_rcf()
    return rcf_reference(*args) if fn is None else fn(*args)


@torch.library.register_kernel("mmhost::rcf", "cuda")
def _rcf_cuda(*args):
    from mmhost.kernels.rcf_triton import rcf_triton

    return rcf_triton(*args)


def rcf_forward(
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
    """(N,) float64 anomaly scores of every row under its own forest. See the module docstring."""
    args = (x, row_model, nodes, mass, box, range_sum, tree_root, tree_mass)
    check_inputs(*args, model_trees)
    args = (x.contiguous(), *args[1:])
    if x.device.type == "cuda":
        return _rcf_cuda(*args, model_trees)
    return _rcf_cpu(*args, model_trees)
