"""A Random Cut Forest as mmhost keeps it: every tree's nodes, breadth first, with what scoring
reads and nothing else (``convert.rcf`` builds it from AWS's RCF library state).

Per node (all trees' nodes concatenated, tree t owning ``tree_nodes[t, 0]:tree_nodes[t, 1]``):

    left, right   children, relative to the tree's first node; -1 at a leaf
    cut_dim       the split's dimension (-1 at a leaf); a point goes left iff x[dim] <= cut
    cut           float32 split value (0 at a leaf)
    mass          the library's mass: a leaf's 1, or c for c + 1 copies of its point (the
                  library's duplicate count); an internal node's, its children's sum
    box           (2, D) float32 [min, max] of the points below (a leaf: its point twice)
    range_sum     float64 sum of max - min, as the library keeps it for the node

plus ``tree_mass`` per tree (the tree's sample count, every copy counted: between the root's
mass and that plus the number of leaves). ``check_forest`` validates everything
against itself before any of it is used: shapes and counts, children inside their tree with one
parent each and none for the root (so no cycles), the depth bound, masses that add up (a node's
mass is its children's; the tree's within the bounds above), finite cuts and boxes, leaves as
points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmhost.artifacts.manifest import ManifestError

MAX_TREE_NODES = 8191  # 2 x 4,096 samples - 1: so no path is deeper than 4,095 levels
MAX_DEPTH = MAX_TREE_NODES // 2  # what the kernels' path buffers hold
MAX_TREES = 1000  # SageMaker's num_trees range: 50..1000
MAX_NODES = 2**26  # all trees together
PARAMS = (
    "rcf.left",
    "rcf.right",
    "rcf.cut_dim",
    "rcf.cut",
    "rcf.mass",
    "rcf.box",
    "rcf.range_sum",
    "rcf.tree_nodes",
    "rcf.tree_mass",
)


@dataclass(frozen=True)
class Forest:
    """A checked forest (see the module docstring for the fields)."""

    dims: int
    left: np.ndarray  # (M,) int64, relative to the tree; -1 at a leaf
    right: np.ndarray  # (M,) int64
    cut_dim: np.ndarray  # (M,) int64
    cut: np.ndarray  # (M,) float32
    mass: np.ndarray  # (M,) int64
    box: np.ndarray  # (M, 2, D) float32
    range_sum: np.ndarray  # (M,) float64
    tree_nodes: np.ndarray  # (T, 2) int64 [first, end) node of each tree
    tree_mass: np.ndarray  # (T,) int64

    @property
    def num_trees(self) -> int:
        return len(self.tree_nodes)

    def params(self) -> dict[str, np.ndarray]:
        """The arrays as an artifact's params (named ``PARAMS``)."""
        arrays = (
            self.left,
            self.right,
            self.cut_dim,
            self.cut,
            self.mass,
            self.box,
            self.range_sum,
            self.tree_nodes,
            self.tree_mass,
        )
        return dict(zip(PARAMS, arrays, strict=True))


def forest_from_params(params: dict[str, np.ndarray], dims: int) -> Forest:
    """The forest an artifact's params hold, checked (ManifestError says what's off)."""
    missing = [n for n in PARAMS if n not in params]
    if missing:
        raise ManifestError(f"an rcf artifact's params lack {missing[0]!r}")

    def whole(name: str) -> np.ndarray:
        a = np.asarray(params[name], np.float64)
        if not (np.isfinite(a).all() and (a == np.round(a)).all() and (np.abs(a) < 2**53).all()):
            raise ManifestError(f"{name} must hold whole numbers")
        return a.astype(np.int64)

    forest = Forest(
        dims,
        whole("rcf.left"),
        whole("rcf.right"),
        whole("rcf.cut_dim"),
        np.asarray(params["rcf.cut"]).astype(np.float32),
        whole("rcf.mass"),
        np.asarray(params["rcf.box"]).astype(np.float32),
        np.asarray(params["rcf.range_sum"], np.float64),
        whole("rcf.tree_nodes"),
        whole("rcf.tree_mass"),
    )
    check_forest(forest)
    return forest


def check_forest(f: Forest) -> None:
    """Every field against the others (ManifestError names the tree and node)."""
    m, d = len(f.left), f.dims
    _expect(0 < d <= 100_000, f"an rcf forest has 1..100000 dimensions, not {d}")
    _expect(m <= MAX_NODES, f"{m} nodes: a forest holds at most {MAX_NODES}")
    for name, a in (("right", f.right), ("cut_dim", f.cut_dim), ("cut", f.cut), ("mass", f.mass)):
        _expect(a.shape == (m,), f"rcf.{name} has shape {a.shape}; rcf.left has ({m},)")
    _expect(f.box.shape == (m, 2, d), f"rcf.box has shape {f.box.shape}; expected ({m}, 2, {d})")
    _expect(f.range_sum.shape == (m,), f"rcf.range_sum has shape {f.range_sum.shape}")
    t = len(f.tree_nodes)
    _expect(
        f.tree_nodes.shape == (t, 2) and 0 < t <= MAX_TREES,
        f"rcf.tree_nodes has shape {f.tree_nodes.shape}: a forest has 1..{MAX_TREES} trees",
    )
    _expect(f.tree_mass.shape == (t,), f"rcf.tree_mass has shape {f.tree_mass.shape}")
    ends = f.tree_nodes[:, 1]
    starts = f.tree_nodes[:, 0]
    _expect(
        t > 0
        and bool(starts[0] == 0 and ends[-1] == m and (starts[1:] == ends[:-1]).all())
        and bool((ends >= starts).all()),
        "rcf.tree_nodes must cover the nodes in order",
    )
    _expect(bool(np.isfinite(f.cut).all()), "rcf.cut holds NaN or inf")
    _expect(bool(np.isfinite(f.box).all()), "rcf.box holds NaN or inf")
    _expect(bool((np.isfinite(f.range_sum) & (f.range_sum >= 0)).all()), "rcf.range_sum is bad")
    _expect(bool((f.mass >= 1).all()), "every node's mass must be >= 1")
    for ti in range(t):
        _check_tree(f, ti, int(starts[ti]), int(ends[ti]))


def _check_tree(f: Forest, ti: int, start: int, end: int) -> None:
    """Children after their parent, one parent each, n - 1 of them: a tree, no cycles; at most
    MAX_TREE_NODES nodes, so no deeper than MAX_DEPTH."""
    n = end - start
    if n == 0:  # an empty tree (it scores 0)
        _expect(int(f.tree_mass[ti]) == 0, f"tree {ti} is empty but its tree_mass is not 0")
        return
    _expect(n <= MAX_TREE_NODES, f"tree {ti} has {n} nodes; a tree holds at most {MAX_TREE_NODES}")
    left, right = f.left[start:end], f.right[start:end]
    leaf = left < 0
    where = f"tree {ti}"
    _expect(
        bool(((left < 0) == (right < 0)).all()),
        f"{where}: a node has one child (both or neither)",
    )
    inner = ~leaf
    kids = np.concatenate([left[inner], right[inner]])
    _expect(
        bool(((kids > 0) & (kids < n)).all()),
        f"{where}: a child index is outside the tree's {n} nodes (or points at the root)",
    )
    _expect(len(np.unique(kids)) == len(kids), f"{where}: a node has two parents")
    _expect(len(kids) == n - 1, f"{where}: {n - 1 - len(kids)} nodes are unreachable")
    dims = f.cut_dim[start:end]
    _expect(
        bool(((dims[inner] >= 0) & (dims[inner] < f.dims)).all() and (dims[leaf] == -1).all()),
        f"{where}: a cut dimension is outside 0..{f.dims - 1}",
    )
    box = f.box[start:end]
    _expect(bool((box[:, 0] <= box[:, 1]).all()), f"{where}: a box's min passes its max")
    _expect(bool((box[leaf, 0] == box[leaf, 1]).all()), f"{where}: a leaf's box is not a point")
    mass = f.mass[start:end]
    _expect(
        bool((mass[inner] == mass[left[inner]] + mass[right[inner]]).all()),
        f"{where}: a node's mass is not the sum of its children's",
    )
    leaves = int(leaf.sum())
    _expect(
        int(mass[0]) <= int(f.tree_mass[ti]) <= int(mass[0]) + leaves,
        f"{where}: tree_mass {int(f.tree_mass[ti])} but its root holds {int(mass[0])} "
        f"over {leaves} leaves",
    )
    order = np.flatnonzero(inner)
    _expect(
        bool((left[inner] > order).all() and (right[inner] > order).all()),
        f"{where}: nodes are not in breadth-first order (a child before its parent)",
    )


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)
