"""AWS Random Cut Forests (the ``krcf`` library's state) -> mmhost artifacts; offline only.

``from_rcf`` reads the library's own serialized state (``RandomCutForest.to_json()``): each
tree's node store (children, cut dimensions and values, masses, the box cache and its range
sums), the shared point store, and the forest's settings; ``fit_rcf`` trains one with
SageMaker's hyperparameter names. What scoring needs is kept, breadth first per tree
(``artifacts.rcf``):

- node ids: ``0 .. capacity - 2`` are internal slots, ``capacity - 1`` is "none" and
  ``capacity + i`` is the leaf of point ``i``;
- a leaf's mass is 1 unless the duplicate table holds c for it (a leaf of c + 1 copies), then
  c: the library's own count, which its score reads (``tree_mass`` counts every copy); an
  internal node's mass is its children's sum, recomputed (the score never reads it, and the
  library's stored masses drift once duplicates come and go);
- boxes: the library's cached box and range sum where it scores with them (cache fraction >=
  0.5 and a cached slot), else the union of the children's boxes and its range sum recomputed
  as the library does (a float64 sum, in dimension order, of float32 max - min).

Refused, naming the field: shingling (``shingle_size`` > 1), internal rotation or other
transforms, attributes, and a forest that has not seen ``output_after`` points (the library
scores it 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmhost.artifacts import Artifact, Column, Preprocessing
from mmhost.artifacts.rcf import Forest, check_forest
from mmhost.errors import UnsupportedModel

NONE = 2**64 - 1  # usize::MAX in the state: an unused slot
CACHE_SWITCH = 0.5  # below this cache fraction the library scores with boxes grown on the path


def from_rcf(forest: Any, columns: Sequence[str] | None = None) -> Artifact:
    """A ``krcf.RandomCutForest`` (or its ``to_json()`` text) as an rcf artifact of numeric
    columns ``columns`` (default f0, f1, ...)."""
    text = forest if isinstance(forest, (str, bytes)) else forest.to_json()
    state = json.loads(text)
    rcf = state.get("rcf", state) if isinstance(state, dict) else None
    if not isinstance(rcf, dict) or "sampler_plus_trees" not in rcf:
        raise UnsupportedModel("not a Random Cut Forest state (no rcf.sampler_plus_trees)")
    _check_settings(rcf)
    d = int(rcf["dimensions"])
    names = list(columns) if columns is not None else [f"f{i}" for i in range(d)]
    if len(names) != d:
        raise UnsupportedModel(f"{len(names)} columns given; the forest has {d} dimensions")
    points = _points(rcf["point_store"], d)
    parts = [_tree(spt["tree"], points, d) for spt in rcf["sampler_plus_trees"]]
    sizes = np.array([len(p[0]) for p in parts], np.int64)
    ends = np.cumsum(sizes)
    cat = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    forest_ = Forest(
        d,
        left=cat[0],
        right=cat[1],
        cut_dim=cat[2],
        cut=cat[3].astype(np.float32),
        mass=cat[4],
        box=cat[5].reshape(-1, 2, d).astype(np.float32),
        range_sum=cat[6],
        tree_nodes=np.stack([ends - sizes, ends], axis=1),
        tree_mass=np.array([p[7] for p in parts], np.int64),
    )
    check_forest(forest_)
    return Artifact(
        "model",
        [Column(n) for n in names],
        Preprocessing.identity(d),
        algorithm="rcf",
        task="anomaly_detector",
        params=forest_.params(),
    )


def fit_rcf(
    x: Any,
    num_trees: int = 100,
    num_samples_per_tree: int = 256,
    seed: int | None = None,
    columns: Sequence[str] | None = None,
) -> Artifact:
    """Train a forest on the rows of ``x`` with AWS's library (``pip install 'mmhost[rcf]'``)
    under SageMaker's hyperparameter names, and return its artifact."""
    try:
        import krcf
    except ImportError:
        raise UnsupportedModel(
            "fit_rcf needs AWS's RCF library: pip install 'mmhost[rcf]' (krcf)"
        ) from None
    rows = np.asarray(x, np.float64)
    if rows.ndim != 2 or not len(rows):
        raise UnsupportedModel(f"fit_rcf takes rows (N, D); got shape {rows.shape}")
    options: Any = {
        "dimensions": rows.shape[1],
        "shingle_size": 1,
        "num_trees": num_trees,
        "sample_size": num_samples_per_tree,
        "output_after": 1,
    }
    if seed is not None:
        options["random_seed"] = seed
    forest = krcf.RandomCutForest(options)
    for row in rows.tolist():
        forest.update(row)
    return from_rcf(forest, columns)


def _check_settings(rcf: dict[str, Any]) -> None:
    if int(rcf.get("shingle_size", 1)) != 1:
        raise UnsupportedModel(f"shingle_size={rcf['shingle_size']}: only unshingled forests")
    for flag in ("internal_rotation", "store_attributes", "propagate_attributes"):
        if rcf.get(flag):
            raise UnsupportedModel(f"{flag}=true is not supported")
    for spt in rcf["sampler_plus_trees"]:
        if spt.get("using_transforms") or spt["tree"].get("using_transforms"):
            raise UnsupportedModel("using_transforms=true (internal transforms) is not supported")
    seen, after = int(rcf["entries_seen"]), int(rcf["output_after"])
    if after > seen:
        raise UnsupportedModel(
            f"the forest has seen {seen} points and scores nothing before output_after={after}"
        )


def _points(ps: dict[str, Any], d: int) -> dict[int, np.ndarray]:
    store = np.asarray(ps["store"], np.float32)
    out = {}
    for i, (loc, refs) in enumerate(zip(ps["location"], ps["reference_count"], strict=False)):
        if refs and loc != NONE:
            out[i] = store[loc * d : loc * d + d]
    return out


def _range_sum(lo: np.ndarray, hi: np.ndarray) -> float:
    """The library's: float32 differences summed in float64, in dimension order."""
    diffs = (hi - lo).astype(np.float32).astype(np.float64)
    return float(np.cumsum(diffs)[-1]) if len(diffs) else 0.0


def _tree(tree: dict[str, Any], points: dict[int, np.ndarray], d: int) -> tuple[Any, ...]:
    """One tree breadth first: (left, right, cut_dim, cut, mass, box, range_sum, tree_mass)."""
    ns = tree["node_store"]
    cap = int(ns["capacity"])
    root, null = int(tree["root"]), cap - 1
    fraction = float(ns["bounding_box_cache_fraction"])
    cached = len(ns["range_sum_data"]) if fraction >= CACHE_SWITCH else 0
    bbox = np.asarray(ns["bounding_box_data"], np.float32).reshape(-1, 2, d)
    dup = {int(k): int(v) for k, v in ns["hash_mass_leaves"].items()}
    ids = [] if root == null else [root]
    at = 0
    while at < len(ids):  # breadth first; ids grows as children are found
        n = ids[at]
        at += 1
        if n < null:
            ids += [int(ns["left_index"][n]), int(ns["right_index"][n])]
            if len(ids) > 2 * cap:
                raise UnsupportedModel("a tree's children form a cycle")
    pos = {n: i for i, n in enumerate(ids)}
    m = len(ids)
    left, right = np.full(m, -1, np.int64), np.full(m, -1, np.int64)
    cut_dim, cut = np.full(m, -1, np.int64), np.zeros(m, np.float32)
    mass = np.zeros(m, np.int64)
    box = np.zeros((m, 2, d), np.float32)
    rsum = np.zeros(m, np.float64)
    for i in range(m - 1, -1, -1):  # children before parents: boxes are unions
        n = ids[i]
        if n > null:  # a leaf
            p = points.get(n - cap)
            if p is None:
                raise UnsupportedModel(f"a leaf refers to point {n - cap}, not in the store")
            box[i] = p
            mass[i] = dup.get(n - cap, 1)
            continue
        a, b = pos[int(ns["left_index"][n])], pos[int(ns["right_index"][n])]
        left[i], right[i] = a, b
        cut_dim[i], cut[i] = int(ns["cut_dimension"][n]), ns["cut_value"][n]
        mass[i] = mass[a] + mass[b]
        if n < cached:
            box[i], rsum[i] = bbox[n], float(ns["range_sum_data"][n])
        else:
            box[i, 0] = np.minimum(box[a, 0], box[b, 0])
            box[i, 1] = np.maximum(box[a, 1], box[b, 1])
            rsum[i] = _range_sum(box[i, 0], box[i, 1])
    return left, right, cut_dim, cut, mass, box.reshape(m, -1), rsum, int(tree["tree_mass"])
