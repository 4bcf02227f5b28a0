"""The Random Cut Forest op (``mmhost/kernels/rcf.py``: reference and C++) and its converter
(``mmhost/convert/rcf.py``) against AWS's own library, ``krcf``.

Oracle: ``krcf.RandomCutForest.score`` on the forest the artifact was converted from. Tolerance:
rtol 1e-12 (both sides do the library's float32 gap sums in dimension order and the rest in
float64; only the order trees are added in may differ, in the reference); the family's
float32 answers are checked in test_api_rcf.py at rtol 1e-6.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmhost.artifacts.manifest import ManifestError
from mmhost.artifacts.rcf import forest_from_params
from mmhost.convert import fit_rcf, from_rcf
from mmhost.errors import UnsupportedModel
from mmhost.kernels.rcf import pack, rcf_forward, rcf_reference

krcf = pytest.importorskip("krcf")


def train(d: int, trees: int, samples: int, n: int, seed: int, duplicates: bool = False, **opts):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, size=d)
    if duplicates:
        x[::3] = x[1]  # one point, many copies
        x[1::5] = np.round(x[1::5])  # and a grid
    options = {
        "dimensions": d,
        "shingle_size": 1,
        "num_trees": trees,
        "sample_size": samples,
        "output_after": 1,
        "random_seed": seed,
        **opts,
    }
    forest = krcf.RandomCutForest(options)
    for row in x.tolist():
        forest.update(row)
    return forest, x


def queries(forest, x: np.ndarray, seed: int) -> np.ndarray:
    """Inside the data, on training points, on cut values, on box corners, far outside."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    state = json.loads(forest.to_json())["rcf"]["sampler_plus_trees"][0]["tree"]["node_store"]
    cuts = [c for c, dim in zip(state["cut_value"], state["cut_dimension"], strict=True) if dim < d]
    on_cut = x[:4].copy()
    for i, c in enumerate(cuts[:4]):
        on_cut[i, i % d] = c
    corners = np.stack([x.min(axis=0), x.max(axis=0)])
    far = rng.normal(size=(3, d)) * 1e4
    return np.concatenate([rng.normal(size=(8, d)), x[:6], on_cut, corners, far])


def op_scores(arts, rows: np.ndarray, row_model: np.ndarray, fn=rcf_forward) -> np.ndarray:
    forests = [forest_from_params(a.params, a.preprocessing.n_features) for a in arts]
    packed = pack(forests)
    width = packed.box.shape[2]
    x = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    return fn(torch.from_numpy(x), torch.from_numpy(row_model), *packed).numpy()


CONFIGS = [  # dims, trees, samples, points, duplicates
    (1, 1, 8, 50, False),
    (3, 10, 64, 400, True),
    (8, 50, 256, 700, False),
    (30, 20, 32, 200, True),
    (5, 200, 16, 100, False),
    (4, 3, 1024, 1500, True),
]


@pytest.mark.parametrize(("d", "trees", "samples", "n", "dup"), CONFIGS)
def test_scores_equal_the_library(d, trees, samples, n, dup):
    forest, x = train(d, trees, samples, n, seed=d + trees, duplicates=dup)
    art = from_rcf(forest)
    q = queries(forest, x, seed=1)
    want = np.array([forest.score(r.tolist()) for r in q])
    rm = np.zeros(len(q), np.int64)
    for fn in (rcf_forward, rcf_reference):
        np.testing.assert_allclose(op_scores([art], q, rm, fn), want, rtol=1e-12)


def test_cache_fractions_and_decay_score_the_same_way():
    for fraction in (0.0, 0.3, 0.7):
        forest, x = train(
            4, 8, 64, 300, seed=3, duplicates=True, bounding_box_cache_fraction=fraction
        )
        q = queries(forest, x, seed=2)
        want = np.array([forest.score(r.tolist()) for r in q])
        got = op_scores([from_rcf(forest)], q, np.zeros(len(q), np.int64))
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_mixed_batches_over_300_forests():
    rng = np.random.default_rng(0)
    forests, arts, rows, row_model, want = [], [], [], [], []
    for s in range(300):
        d = 1 + s % 6
        forest, x = train(d, 1 + s % 7, 8 + s % 24, 40, seed=s)
        forests.append(forest)
        arts.append(from_rcf(forest))
        for r in np.concatenate([rng.normal(size=(1 + s % 3, d)), x[:1]]):
            rows.append(r)
            row_model.append(s)
            want.append(forest.score(r.tolist()))
    order = rng.permutation(len(rows))
    got = op_scores(arts, [rows[i] for i in order], np.array(row_model)[order])
    np.testing.assert_allclose(got, np.array(want)[order], rtol=1e-12)


def test_the_cpp_schedule_scores_every_order_of_rows_the_same():
    """The C++ kernel keeps many walks in flight, runs of rows of one forest tree by tree (64
    rows a run) and chunks of ~8k (row, tree) pairs: long runs that cross those bounds, a
    forest of one point (its root is a leaf), and a slot with no trees (a freed one) between
    them score as the library and the reference do."""
    rng = np.random.default_rng(5)
    big, xb = train(3, 200, 32, 300, seed=11)  # 200 trees: 100 rows are 20,000 pairs
    one, xo = train(3, 4, 8, 1, seed=12)  # one point: every tree is a single leaf
    small, xs = train(3, 5, 16, 80, seed=13)
    arts = [from_rcf(f) for f in (big, one, small)]
    forests = [forest_from_params(a.params, 3) for a in arts]
    packed = pack(forests)
    first, end = packed.model_trees[1].tolist()
    model_trees = torch.cat([packed.model_trees, torch.tensor([[end, end]])])  # slot 3: empty
    plan = [(0, 130), (2, 3), (1, 2), (3, 2), (0, 1), (2, 70), (0, 5)]
    row_model = np.concatenate([np.full(n, s, np.int64) for s, n in plan])
    x = rng.normal(size=(len(row_model), 3)).astype(np.float32) * 3
    x[1::7] = xb[: len(x[1::7])]  # points the big forest holds
    x[row_model == 1] = xo[0]  # the one point: seen
    args = (torch.from_numpy(x), torch.from_numpy(row_model), *packed[:-1], model_trees)
    got = rcf_forward(*args).numpy()
    np.testing.assert_allclose(got, rcf_reference(*args).numpy(), rtol=1e-12)
    library = {0: big, 1: one, 2: small}
    want = [
        library[s].score(r.tolist()) if s in library else 0.0
        for s, r in zip(row_model, x, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert (got[row_model == 3] == 0).all()


def test_pack_lays_each_tree_out_depth_first():
    """``pack`` puts a tree's nodes in depth-first order (the C++ kernel's walks touch fewer
    cache lines): each tree starts at its root, a left child is the next record, a right child
    comes after the left subtree; the scores are those of the breadth-first layout."""
    forest, x = train(4, 6, 64, 300, seed=21, duplicates=True)
    f = forest_from_params(from_rcf(forest).params, 4)
    packed = pack([f])
    left, right = packed.nodes[:, 0].numpy(), packed.nodes[:, 1].numpy()
    size = np.ones(len(left), np.int64)
    for n in range(len(left) - 1, -1, -1):  # children come after parents
        if left[n] >= 0:
            size[n] += size[left[n]] + size[right[n]]
    inner = np.flatnonzero(left >= 0)
    assert (left[inner] == inner + 1).all()
    assert (right[inner] == inner + 1 + size[left[inner]]).all()
    roots = packed.tree_root.numpy()
    np.testing.assert_array_equal(roots, f.tree_nodes[:, 0])
    assert (size[roots] == f.tree_nodes[:, 1] - f.tree_nodes[:, 0]).all()
    # the same nodes: every leaf's point and mass, each tree's in some order
    for (a, b), r in zip(f.tree_nodes, roots, strict=True):
        bfs = np.sort(f.box[a:b, 0, :].ravel())
        np.testing.assert_array_equal(np.sort(packed.box[r : r + b - a, 0].numpy().ravel()), bfs)
    q = queries(forest, x, seed=4)
    want = np.array([forest.score(r.tolist()) for r in q])
    rm = torch.zeros(len(q), dtype=torch.int64)
    got = rcf_forward(torch.from_numpy(q.astype(np.float32)), rm, *packed).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_fit_rcf_uses_sagemakers_names():
    x = np.random.default_rng(0).normal(size=(300, 3))
    art = fit_rcf(x, num_trees=12, num_samples_per_tree=32, seed=4)
    forest = forest_from_params(art.params, 3)
    assert forest.num_trees == 12 and int(forest.tree_mass.max()) == 32


@pytest.mark.parametrize(
    ("opts", "says"),
    [
        ({"shingle_size": 4, "dimensions": 8}, "shingle_size=4"),
        ({"internal_rotation": True, "shingle_size": 2, "dimensions": 4}, "shingle_size=2"),
        ({"store_attributes": True}, "store_attributes"),
    ],
)
def test_what_is_not_supported_is_refused_by_name(opts, says):
    options = {"dimensions": 2, "shingle_size": 1, "num_trees": 2, "sample_size": 8, **opts}
    forest = krcf.RandomCutForest({"output_after": 1, **options})
    for row in np.random.default_rng(0).normal(size=(30, options["dimensions"])).tolist():
        forest.update(row)
    with pytest.raises(UnsupportedModel, match=says):
        from_rcf(forest)


def test_a_forest_before_output_after_is_refused():
    forest = krcf.RandomCutForest(
        {"dimensions": 2, "shingle_size": 1, "num_trees": 2, "sample_size": 8, "output_after": 50}
    )
    forest.update([0.0, 1.0])
    with pytest.raises(UnsupportedModel, match="output_after=50"):
        from_rcf(forest)


def _params():
    forest, _ = train(3, 4, 16, 60, seed=0)
    return {k: v.copy() for k, v in from_rcf(forest).params.items()}


def _damaged(change):
    params = _params()
    change(params)
    return params


def _cycle(p):
    inner = next(i for i in range(1, len(p["rcf.left"])) if p["rcf.left"][i] >= 0)
    p["rcf.left"][inner] = 0  # a child pointing back at the root


def _out_of_range(p):
    p["rcf.right"][0] = 10_000


def _masses(p):
    p["rcf.mass"][0] += 3


def _nan_cut(p):
    p["rcf.cut"][0] = np.nan


def _lying_sizes(p):
    p["rcf.tree_nodes"][-1, 1] += 5  # more nodes than the arrays hold


DAMAGED = {
    "a cycle": (_cycle, "outside the tree|two parents|breadth-first"),
    "a child out of range": (_out_of_range, "outside the tree"),
    "masses that don't add up": (_masses, "mass"),
    "a NaN cut": (_nan_cut, "NaN"),
    "sizes that lie": (_lying_sizes, "cover the nodes"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_forests_are_refused(case):
    change, says = DAMAGED[case]
    with pytest.raises(ManifestError, match=says):
        forest_from_params(_damaged(change), 3)
