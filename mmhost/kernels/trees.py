"""The fused multi-model tree-ensemble op: each row is scored by its own model's trees, in one call.

Semantics (the reference below is the oracle for the C++ and Triton kernels)::

    for i in range(N):
        s = row_model[i]
        out[i] = base[s]                                      # (K,) margins, float32
        for t in range(*model_trees[s]):                      # the model's trees, in order
            n = tree_root[t]
            while feature[n] >= 0:                            # -1 marks a leaf
                v = x[i, feature[n]]
                go_left = default_left[n] if isnan(v) else v < threshold[n]
                n = left[n] if go_left else left[n] + 1       # children are adjacent
            out[i, tree_group[t]] += value[n]                 # float32, tree by tree

where ``feature, left, default_left = nodes[:, 0], nodes[:, 1], nodes[:, 2]`` and threshold (at a
split) and value (at a leaf) are both ``nodes[:, 3]`` read as float32.

Each ``out[i, k]`` is a float32 sum in XGBoost's order (base score, then each tree of group k in
file order), so it equals ``predict_reference(ensemble, x, output_margin=True)`` bit for bit.

Inputs (``PackedTrees`` holds everything but x and row_model; ``pack`` builds it):

- x (N, F) float32, NaN = missing. A row of model s reads only its first num_features[s]
  columns; F is the widest model's, the rest of a narrower model's row is never read.
- row_model (N,) int64 in [0, S).
- nodes (M, 4) int32, one 16-byte record per node, all trees of all models concatenated:
  ``[feature, left, default_left, threshold | value]``. feature is -1 at a leaf; left is the
  ABSOLUTE index of the left child and the right child is ``left + 1`` (pack renumbers each tree
  breadth-first, so both children share a cache line); default_left is 0/1; the last column
  holds the float32 bits of the split threshold at a split and of the leaf value at a leaf.
- tree_root (T,) int64, absolute node index of each tree's root; tree_group (T,) int32, the
  output k the tree adds to.
- model_trees (S, 2) int64: model s owns trees ``model_trees[s, 0]:model_trees[s, 1]`` (ranges,
  so a slab can leave room between models).
- base (S, K) float32: each model's base margins; K is the most outputs of any packed model and
  a model with fewer leaves the extra columns 0 (they stay base, i.e. 0).
- num_features (S,) int32, checked against F.
-> out (N, K) float32 margins.

The objective's link (sigmoid, softmax, exp, argmax) is not part of the op: the caller applies
each model's link (``TreeEnsemble.link``) to its rows' margins. Cheap next to the tree walks; a
per-model link code like the linear op's can move into the kernel if it ever shows in a profile.

Record layout: one 16-byte record per node, children adjacent, was measured against six arrays
(feature, threshold, left, right, default_left, value) walked one tree at a time, on 1,000
XGBoost models of 100 depth-6 trees (8.6 M nodes, 2-core AMD EPYC, one thread). Rows of one
model (warm caches): 1,000 rows 4.5 ms with the arrays, 1.9 ms with the records walked 8 at a
time branch-free; 100 models x 10 rows 6.8 vs 3.1 ms. 1,000 models x 1 row (cold): the arrays
were faster, 16 vs 19 ms median (the hardware prefetcher streams each array's dense range per
model, and a mispredicted branch is cheap next to a cache miss), until the kernel prefetched the
top levels of the trees ahead: 15 ms. The records also take 16 bytes a node instead of 21.

Trust: the op trusts ``pack``'s output as a kernel must (node records are not range-checked per
step); ``pack`` validates every tree (children in range, one parent per node, depth <= 64). The
C++ kernel still checks what is cheap: row_model in [0, S) and num_features[s] <= F per row, each
walked tree's root and group, and it stops a walk after MAX_DEPTH levels with an error, so a
corrupt pack cannot loop forever.

Dispatch: ``torch.ops.mmhost.trees`` is registered with torch.library; the CPU kernel is the C++
op ``mmhost._C.trees_forward`` (falling back to the reference with one warning when the
extension is not built, or was built before this op existed); the CUDA kernel is the Triton
kernel in ``trees_triton.py`` (bit-identical to the reference; a corrupt pack gives NaN rows
there, as a GPU kernel cannot raise without a device sync).

Size: the op's packing layout, its launcher and its plain-torch reference walk belong
together (a kernel beside its launcher and its reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from mmhost.artifacts.xgboost import MAX_DEPTH, TreeEnsemble
from mmhost.kernels import _native

# columns of a node record
NODE_FEATURE = 0
NODE_LEFT = 1
NODE_DEFAULT_LEFT = 2
NODE_VALUE = 3  # float32 bits: the threshold at a split, the leaf value at a leaf


class PackedTrees(NamedTuple):
    """Several models' tree ensembles as the op's flat inputs (``trees_forward(x, rows, *p)``).

    ``pack`` builds one for tests and benchmarks; the trees family's slabs
    (``families/trees.py``) hold the same tensors per slot."""

    nodes: torch.Tensor  # (M, 4) int32: feature, left (right = left + 1), default_left, bits
    tree_root: torch.Tensor  # (T,) int64: absolute node index of each tree's root
    tree_group: torch.Tensor  # (T,) int32: the output each tree adds to
    model_trees: torch.Tensor  # (S, 2) int64: model s owns trees [model_trees[s, 0], [s, 1])
    base: torch.Tensor  # (S, K) float32: base margins, 0 past a model's own outputs
    num_features: torch.Tensor  # (S,) int32: columns of x each model reads

    def to(self, device: torch.device | str) -> PackedTrees:
        return PackedTrees(*(t.to(device) for t in self))


def pack(ensembles: Sequence[TreeEnsemble]) -> PackedTrees:
    """Concatenate models' ensembles (model s = ensembles[s]) into the op's flat inputs.

    Validates every tree, since the kernels trust the result: split features in
    [0, num_feature), children inside their tree, at most one parent per node and none for the
    root, depth <= MAX_DEPTH, tree groups in [0, num_class). Each tree is renumbered
    breadth-first so the right child is left + 1; unreachable nodes are dropped."""
    parts = [_pack_one(i, e) for i, e in enumerate(ensembles)]
    node_counts = [len(p[0]) for p in parts]
    if sum(node_counts) > np.iinfo(np.int32).max:
        raise ValueError(f"{sum(node_counts)} nodes do not fit int32 node indices")
    node_base = np.concatenate([[0], np.cumsum(node_counts)]).astype(np.int64)

    k = max((e.num_class for e in ensembles), default=1)
    base = np.zeros((len(ensembles), k), dtype=np.float32)  # (S, K)
    nodes, roots = [], []
    for s, ((rec, root), e) in enumerate(zip(parts, ensembles, strict=True)):
        rec[:, NODE_LEFT] += np.where(rec[:, NODE_FEATURE] >= 0, node_base[s], 0).astype(np.int32)
        nodes.append(rec)
        roots.append(root + node_base[s])
        base[s, : e.num_class] = e.base_score
    tree_counts = [e.num_trees for e in ensembles]
    ends = np.cumsum(tree_counts, dtype=np.int64)
    model_trees = np.stack([ends - np.asarray(tree_counts, np.int64), ends], axis=1).reshape(-1, 2)
    groups = [np.asarray(e.tree_group, dtype=np.int32) for e in ensembles]
    return PackedTrees(
        nodes=torch.from_numpy(_concat(nodes, np.int32, (0, 4))),
        tree_root=torch.from_numpy(_concat(roots, np.int64, (0,))),
        tree_group=torch.from_numpy(_concat(groups, np.int32, (0,))),
        model_trees=torch.from_numpy(model_trees),
        base=torch.from_numpy(base),
        num_features=torch.tensor([e.num_feature for e in ensembles], dtype=torch.int32),
    )


def _concat(arrays: list[np.ndarray], dtype: type, empty: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(empty, dtype=dtype)


def _pack_one(s: int, e: TreeEnsemble) -> tuple[np.ndarray, np.ndarray]:
    """One model, checked -> (records (M', 4) int32 with left relative to this model's first
    node, tree roots (T,) int64 likewise)."""
    where = f"model {s}"
    m, t = len(e.feature), e.num_trees
    columns = (e.threshold, e.left, e.right, e.default_left, e.value)
    if any(len(c) != m for c in columns):
        raise ValueError(f"{where}: node arrays differ in length ({[m, *map(len, columns)]})")
    offsets = np.asarray(e.tree_offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    if len(offsets) != t + 1 or offsets[0] != 0 or offsets[-1] != m or (sizes < 1).any():
        raise ValueError(f"{where}: tree_offsets do not split {m} nodes into {t} trees")
    if e.num_class < 1 or len(e.base_score) != e.num_class:
        raise ValueError(f"{where}: {len(e.base_score)} base scores, num_class {e.num_class}")
    group = np.asarray(e.tree_group)
    if t and (group.min() < 0 or group.max() >= e.num_class):
        raise ValueError(f"{where}: a tree adds to an output outside [0, {e.num_class})")

    feature = np.asarray(e.feature, dtype=np.int64)
    split = feature >= 0
    owner = np.repeat(np.arange(t), sizes)  # (M,) tree of each node
    size = sizes[owner]
    left, right = np.asarray(e.left, np.int64), np.asarray(e.right, np.int64)
    bad = np.flatnonzero(
        split
        & ((feature >= e.num_feature) | (left < 0) | (left >= size) | (right < 0) | (right >= size))
    )
    if len(bad):
        j = int(bad[0])
        raise ValueError(
            f"{where}, node {j}: feature {feature[j]} (of {e.num_feature}) or children "
            f"{left[j]}, {right[j]} out of range (its tree has {size[j]} nodes)"
        )
    root = offsets[:-1]
    abs_left = np.where(split, left + offsets[owner], -1)  # (M,) absolute in this model
    abs_right = np.where(split, right + offsets[owner], -1)
    parents = np.bincount(np.concatenate([abs_left[split], abs_right[split]]), minlength=m)
    wrong = parents > 1
    wrong[root] |= parents[root] > 0
    if wrong.any():
        j = int(np.flatnonzero(wrong)[0])
        what = "a root with a parent" if j in root else f"a node with {parents[j]} parents"
        raise ValueError(f"{where}, node {j}: {what} (not a tree)")

    # Breadth-first, all trees at once; a level lists each split's children as a pair.
    levels, level = [], root
    for depth in range(MAX_DEPTH + 1):
        levels.append(level)
        level = level[split[level]]
        if not len(level):
            break
        if depth == MAX_DEPTH:
            raise ValueError(f"{where}: tree {int(owner[level[0]])} is deeper than {MAX_DEPTH}")
        level = np.stack([abs_left[level], abs_right[level]], axis=1).ravel()
    order = np.concatenate(levels)
    order = order[np.argsort(owner[order], kind="stable")]  # (M',) old index of each new node
    new = np.full(m, -1, dtype=np.int64)
    new[order] = np.arange(len(order))

    rec = np.zeros((len(order), 4), dtype=np.int32)  # (M', 4)
    is_split = split[order]
    rec[:, NODE_FEATURE] = np.where(is_split, feature[order], -1)
    rec[:, NODE_LEFT] = np.where(is_split, new[abs_left[order]], -1)
    rec[:, NODE_DEFAULT_LEFT] = np.where(is_split, np.asarray(e.default_left)[order] != 0, 0)
    leaf_or_split = np.where(is_split, e.threshold[order], e.value[order]).astype(np.float32)
    rec[:, NODE_VALUE] = leaf_or_split.view(np.int32)
    return rec, new[root]


def check_inputs(
    x: torch.Tensor,
    row_model: torch.Tensor,
    nodes: torch.Tensor,
    tree_root: torch.Tensor,
    tree_group: torch.Tensor,
    model_trees: torch.Tensor,
    base: torch.Tensor,
    num_features: torch.Tensor,
) -> None:
    """Shape/dtype contract shared by every implementation (cheap: no data is read)."""
    named = {
        "x": (x, torch.float32, 2),
        "row_model": (row_model, torch.int64, 1),
        "nodes": (nodes, torch.int32, 2),
        "tree_root": (tree_root, torch.int64, 1),
        "tree_group": (tree_group, torch.int32, 1),
        "model_trees": (model_trees, torch.int64, 2),
        "base": (base, torch.float32, 2),
        "num_features": (num_features, torch.int32, 1),
    }
    for name, (t, dtype, dim) in named.items():
        if t.dtype != dtype or t.dim() != dim:
            raise ValueError(
                f"{name} must be a {dim}-D {dtype} tensor, got {t.dtype} of shape {tuple(t.shape)}"
            )
    n, s = x.shape[0], base.shape[0]
    if tuple(row_model.shape) != (n,):
        raise ValueError(f"row_model must be ({n},) to match x, got {tuple(row_model.shape)}")
    if nodes.shape[1] != 4:
        raise ValueError(f"nodes must be (M, 4) records, got {tuple(nodes.shape)}")
    if tree_group.shape != tree_root.shape:
        raise ValueError(
            f"tree_group must be {tuple(tree_root.shape)} like tree_root, "
            f"got {tuple(tree_group.shape)}"
        )
    if tuple(model_trees.shape) != (s, 2) or tuple(num_features.shape) != (s,):
        raise ValueError(
            f"base has S={s} models: model_trees must be ({s}, 2) and num_features ({s},); "
            f"got {tuple(model_trees.shape)}, {tuple(num_features.shape)}"
        )
    devices = {t.device for t, _, _ in named.values()}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")


def check_rows(
    x: torch.Tensor,
    row_model: torch.Tensor,
    tree_root: torch.Tensor,
    model_trees: torch.Tensor,
    base: torch.Tensor,
    num_features: torch.Tensor,
) -> None:
    """Every row's model is packed, reads <= F columns and owns a range of the packed trees:
    else a RuntimeError naming the first row that does not, as the C++ kernel words it. One
    device sync when all is well (the reference and the Triton launcher share this)."""
    n, f = x.shape
    s, t = base.shape[0], tree_root.shape[0]
    if n == 0:
        return
    outside = (row_model < 0) | (row_model >= s)  # (N,)
    bad = outside
    if s > 0:
        slot = row_model.clamp(0, s - 1)  # (N,)
        first, end = model_trees.index_select(0, slot).unbind(1)  # (N,), (N,)
        wide = num_features.index_select(0, slot) > f
        no_range = (first < 0) | (end < first) | (end > t)
        bad = outside | wide | no_range
    if not bool(bad.any()):
        return
    i = int(bad.nonzero()[0, 0])
    m = int(row_model[i])
    if outside[i]:
        raise RuntimeError(f"row_model[{i}] = {m} is not a packed model (0 <= model < {s})")
    if wide[i]:
        raise RuntimeError(f"row {i} (model {m}) reads {int(num_features[m])} columns, x has F={f}")
    lo, hi = model_trees[m].tolist()
    raise RuntimeError(f"model_trees[{m}] = [{lo}, {hi}] is not a range of the {t} packed trees")


def trees_reference(
    x: torch.Tensor,
    row_model: torch.Tensor,
    nodes: torch.Tensor,
    tree_root: torch.Tensor,
    tree_group: torch.Tensor,
    model_trees: torch.Tensor,
    base: torch.Tensor,
    num_features: torch.Tensor,
) -> torch.Tensor:
    """Plain torch; the test oracle and the fallback when no native kernel is available.

    Walks every (row, tree) pair at once, a level per step, then adds the leaves tree by tree
    (the j-th tree of every row in one step) so each sum is in the semantics' order."""
    n = x.shape[0]
    check_rows(x, row_model, tree_root, model_trees, base, num_features)
    out = base.index_select(0, row_model)  # (N, K), a copy
    if n == 0:
        return out
    first = model_trees[:, 0].index_select(0, row_model)  # (N,)
    count = model_trees[:, 1].index_select(0, row_model) - first  # (N,)
    pair_row = torch.repeat_interleave(torch.arange(n, device=x.device), count)  # (P,)
    pos = torch.arange(len(pair_row), device=x.device) - (count.cumsum(0) - count)[pair_row]
    tree = first[pair_row] + pos  # (P,) row-major, trees in order within a row
    feature = nodes[:, NODE_FEATURE].long()
    left = nodes[:, NODE_LEFT].long()
    default_left = nodes[:, NODE_DEFAULT_LEFT] != 0
    split_value = nodes.view(torch.float32)[:, NODE_VALUE]  # threshold | leaf value

    node = tree_root.index_select(0, tree)  # (P,)
    for depth in range(MAX_DEPTH + 1):
        feat = feature[node]  # (P,)
        active = feat >= 0
        if not active.any():
            break
        if depth == MAX_DEPTH:
            t = int(tree[active.nonzero()[0, 0]])
            raise RuntimeError(f"tree {t} did not reach a leaf within {MAX_DEPTH} levels")
        v = x[pair_row, feat.clamp(min=0)]  # (P,)
        go_left = torch.where(v.isnan(), default_left[node], v < split_value[node])
        node = torch.where(active, left[node] + (~go_left).long(), node)
    leaf = split_value[node]  # (P,)

    by_pos = torch.argsort(pos, stable=True)  # pairs grouped by position j within their row
    per_pos = torch.bincount(pos).tolist() if len(pos) else []
    for sel in torch.split(by_pos, per_pos):  # at most one pair per row in each step
        rows = pair_row[sel]
        out[rows, tree_group[tree[sel]].long()] += leaf[sel]
    return out


@torch.library.custom_op("mmhost::trees", mutates_args=())
def _trees_op(
    x: torch.Tensor,
    row_model: torch.Tensor,
    nodes: torch.Tensor,
    tree_root: torch.Tensor,
    tree_group: torch.Tensor,
    model_trees: torch.Tensor,
    base: torch.Tensor,
    num_features: torch.Tensor,
) -> torch.Tensor:
    return trees_reference(
        x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features
    )


@_trees_op.register_fake
def _(x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features):
    return x.new_empty((x.shape[0], base.shape[1]))


TREES_ABI = 2  # mmhost/csrc/bindings.cpp's TREES_ABI: model_trees as (S, 2) ranges


def _native_trees() -> Callable[..., torch.Tensor] | None:
    return _native.function("trees_forward", "trees", ("TREES_ABI", TREES_ABI))


@torch.library.register_kernel("mmhost::trees", "cpu")
def _trees_cpu(x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features):
    fn = _native_trees()
    args = (x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features)
    return trees_reference(*args) if fn is None else fn(*args)


@torch.library.register_kernel("mmhost::trees", "cuda")
def _trees_cuda(x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features):
    from mmhost.kernels.trees_triton import trees_triton

    return trees_triton(x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features)


def trees_forward(
    x: torch.Tensor,
    row_model: torch.Tensor,
    nodes: torch.Tensor,
    tree_root: torch.Tensor,
    tree_group: torch.Tensor,
    model_trees: torch.Tensor,
    base: torch.Tensor,
    num_features: torch.Tensor,
) -> torch.Tensor:
    """Margins (N, K) of every row of ``x`` under its model's trees. See the module docstring.

    Like ``linear_forward``, the hot path calls the device's implementation directly rather than
    through the ``torch.ops.mmhost.trees`` dispatcher (~20 us a call); the registered op is the
    same function for torch.compile users."""
    args = (x, row_model, nodes, tree_root, tree_group, model_trees, base, num_features)
    check_inputs(*args)
    args = (x.contiguous(), *args[1:])
    if x.device.type == "cuda":
        return _trees_cuda(*args)
    return _trees_cpu(*args)
