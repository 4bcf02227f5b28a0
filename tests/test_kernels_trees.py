"""The fused multi-model tree-ensemble op (mmhost::trees): C++ kernel, plain-torch reference and
the packer, against XGBoost's own margins and the numpy oracle ``predict_reference``."""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
import torch

from mmhost.artifacts.xgboost import MAX_DEPTH, TreeEnsemble, predict_reference
from mmhost.convert.xgboost import read_model
from mmhost.kernels import _native
from mmhost.kernels.trees import (
    NODE_DEFAULT_LEFT,
    NODE_FEATURE,
    NODE_LEFT,
    NODE_VALUE,
    PackedTrees,
    check_inputs,
    pack,
    trees_forward,
    trees_reference,
)

# Tolerance: none. Every implementation adds float32 leaf values to the float32 base margin one
# tree at a time in tree order, as XGBoost does, and compares float32 x < float32 threshold: the
# same roundings in the same order, so margins are compared bit for bit (torch.equal /
# assert_array_equal), not with atol/rtol.

OBJECTIVES = ["reg:squarederror", "binary:logistic", "multi:softprob", "count:poisson"]


def rows(n: int, f: int, rng: np.random.Generator, nan: float = 0.1) -> np.ndarray:
    """(n, f) float32 normal noise with a fraction ``nan`` of NaN (missing)."""
    x = rng.normal(size=(n, f)).astype(np.float32)
    x[rng.random(x.shape) < nan] = np.nan
    return x


def ensemble(trees: list[dict[str, list]], num_feature: int, k: int = 1, base=None):
    """TreeEnsemble from trees given as node lists with children relative to the tree's root."""
    offsets = np.cumsum([0] + [len(t["feature"]) for t in trees])

    def cat(key: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.asarray(t[key], dtype=dtype) for t in trees])

    return TreeEnsemble(
        feature=cat("feature", np.int32),
        threshold=cat("threshold", np.float32),
        left=cat("left", np.int32),
        right=cat("right", np.int32),
        default_left=cat("default_left", bool),
        value=cat("value", np.float32),
        tree_offsets=offsets.astype(np.int64),
        tree_group=np.arange(len(trees), dtype=np.int32) % k,
        base_score=np.asarray(base if base is not None else [0.5] * k, dtype=np.float32),
        num_feature=num_feature,
        num_class=k,
        objective="multi:softprob" if k > 1 else "reg:squarederror",
    )


def random_tree(rng: np.random.Generator, depth: int, num_feature: int) -> dict[str, list]:
    """A random tree numbered depth-first (so the right child is rarely left + 1: pack must
    renumber), leaves stopping early at random, at most ``depth`` levels."""
    t: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right")}
    t.update(default_left=[], value=[])

    def grow(level: int) -> int:
        i = len(t["feature"])
        for key in t:
            t[key].append(0)
        if level < depth and (level == 0 or rng.random() < 0.8):
            t["feature"][i] = int(rng.integers(num_feature))
            t["threshold"][i] = float(rng.normal())
            t["default_left"][i] = bool(rng.random() < 0.5)
            t["left"][i] = grow(level + 1)
            t["right"][i] = grow(level + 1)
        else:
            t["feature"][i], t["left"][i], t["right"][i] = -1, -1, -1
            t["value"][i] = float(rng.normal())
        return i

    grow(0)
    return t


def chain_tree(depth: int) -> dict[str, list]:
    """Splits on x0 < 0 down one path: split j (node 2j) sends x0 < 0 and NaN left to a leaf
    worth j (node 2j + 1), the rest right to split j + 1 (node 2j + 2); the last leaf (node
    2 * depth) is worth depth."""
    t: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right")}
    t.update(default_left=[], value=[])

    def node(feature: int, left: int, right: int, value: float) -> None:
        for key, v in zip(t, (feature, 0.0, left, right, True, value), strict=True):
            t[key].append(v)

    for j in range(depth):
        node(0, 2 * j + 1, 2 * j + 2, 0.0)
        node(-1, -1, -1, float(j))
    node(-1, -1, -1, float(depth))
    return t


def native():
    """mmhost._C, or a skip when it is not built (test_kernels_linear asserts that it is)."""
    return pytest.importorskip("mmhost._C", exc_type=ImportError)


def run(packed: PackedTrees, x: np.ndarray, row_model: np.ndarray) -> dict[str, torch.Tensor]:
    """The C++ kernel, the public op and the reference on one batch."""
    args = (torch.from_numpy(x), torch.from_numpy(row_model), *packed)
    return {
        "cpp": native().trees_forward(*args),
        "op": trees_forward(*args),
        "ref": trees_reference(*args),
    }


def expect_margins(outs: dict[str, torch.Tensor], ensembles, x, row_model) -> None:
    """Every implementation equals predict_reference's margins, model by model, bit for bit."""
    for name, out in outs.items():
        assert out.dtype == torch.float32 and out.shape[0] == len(x), name
        assert torch.equal(out, outs["ref"]), name
    out = outs["ref"].numpy()
    for s, e in enumerate(ensembles):
        mine = row_model == s
        if mine.any():
            want = predict_reference(e, x[mine, : e.num_feature], output_margin=True)
            got = out[mine, : e.num_class]
            np.testing.assert_array_equal(got, want.reshape(got.shape), err_msg=f"model {s}")
            assert (out[mine, e.num_class :] == 0).all()  # padding outputs stay base, i.e. 0


def mixed_batch(ensembles, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n rows interleaved over the models; a row's columns past its model's are garbage that
    must never be read."""
    rng = np.random.default_rng(seed)
    width = max(e.num_feature for e in ensembles)
    row_model = rng.integers(0, len(ensembles), n).astype(np.int64)
    x = rows(n, width, rng)
    used = np.array([e.num_feature for e in ensembles])[row_model]
    x[np.arange(width)[None, :] >= used[:, None]] = 1e30
    return x, row_model


def first_trees(e: TreeEnsemble, n: int) -> TreeEnsemble:
    """The model made of e's first n trees (XGBoost's Booster[:rounds], n = rounds * K)."""
    m = int(e.tree_offsets[n])
    nodes = {k: getattr(e, k)[:m] for k in ("feature", "threshold", "left", "right", "value")}
    return replace(
        e,
        **nodes,
        default_left=e.default_left[:m],
        tree_offsets=e.tree_offsets[: n + 1],
        tree_group=e.tree_group[:n],
    )


@cache
def xgboost_models() -> tuple[list, list[TreeEnsemble]]:
    """200 XGBoost models: 50 trained (depths 1-10, 1-50 features, 4 objectives, multi:softprob
    with 3 classes, on NaN-laced data), each cut into 4 models of 1-100 trees by slicing its
    rounds (Booster[:r], and the same trees of its TreeEnsemble): training and reading 200
    take ~15 s on 2 shared cores, this ~2 s."""
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(7)
    boosters, ensembles = [], []
    for s in range(50):
        objective = OBJECTIVES[s % len(OBJECTIVES)]
        multi = objective.startswith("multi:")
        f, depth = int(rng.integers(1, 51)), int(rng.integers(1, 11))
        rounds = int(rng.integers(1, 35 if multi else 101))  # at most 100 trees
        x = rows(128, f, rng)
        z = np.nan_to_num(x[:, 0]) + rng.normal(scale=0.5, size=len(x))
        y = {
            "multi:softprob": np.digitize(z, [-0.5, 0.5]),
            "binary:logistic": z > 0,
            "count:poisson": rng.poisson(np.exp(z / 2)),
        }.get(objective, 3 * z)
        params = dict(objective=objective, max_depth=depth, max_bin=16, nthread=1, seed=s)
        params.update({"num_class": 3} if multi else {})
        booster = xgb.train(params, xgb.DMatrix(x, np.asarray(y, dtype=float)), rounds)
        whole = read_model(booster)
        for r in [rounds, *rng.integers(1, rounds + 1, 3).tolist()]:
            boosters.append(booster[:r])
            ensembles.append(first_trees(whole, r * whole.num_class))
    return boosters, ensembles


def test_matches_xgboost_on_a_mixed_batch_of_200_models():
    xgb = pytest.importorskip("xgboost")
    boosters, ensembles = xgboost_models()
    packed = pack(ensembles)
    x, row_model = mixed_batch(ensembles, 3000, seed=1)
    outs = run(packed, x, row_model)  # ~200k tree walks: the threaded path
    expect_margins(outs, ensembles, x, row_model)
    for s, (booster, e) in enumerate(zip(boosters, ensembles, strict=True)):
        mine = row_model == s
        got = outs["cpp"][torch.from_numpy(mine), : e.num_class].numpy()  # (n, K)
        # XGBoost starts from the packed base margins, not from its own conversion of
        # base_score: the converter's float32 log can be an ulp off XGBoost's for learned base
        # scores (count:poisson, binary:logistic), which is the converter's business, not the op's
        start = np.broadcast_to(e.base_score, got.shape).squeeze(1 if e.num_class == 1 else ())
        data = xgb.DMatrix(x[mine, : e.num_feature], base_margin=start)
        want = booster.predict(data, output_margin=True)
        np.testing.assert_array_equal(got, want.reshape(got.shape), err_msg=f"model {s}")

    few = slice(0, 20)  # the inline (one-thread) path, rows of distinct models
    small = run(packed, x[few], row_model[few])
    assert torch.equal(small["cpp"], outs["cpp"][few])

    by_model = np.argsort(row_model, kind="stable")  # long runs of one model: walked tree-major
    sorted_outs = run(packed, x[by_model], row_model[by_model])
    assert torch.equal(sorted_outs["cpp"], outs["cpp"][torch.from_numpy(by_model)])


def test_random_trees_numbered_depth_first_are_renumbered():
    rng = np.random.default_rng(3)
    ensembles = []
    for s in range(40):
        k, f = (3 if s % 5 == 0 else 1), int(rng.integers(1, 30))
        depth = int(rng.integers(0, 13))
        trees = [random_tree(rng, depth, f) for _ in range(int(rng.integers(1, 20)))]
        ensembles.append(ensemble(trees, f, k, base=rng.normal(size=k)))
    ensembles.append(first_trees(ensembles[0], 0))  # no trees: the margin is the base
    ensembles.append(ensemble([chain_tree(MAX_DEPTH), chain_tree(3)], 1))  # the deepest allowed
    x, row_model = mixed_batch(ensembles, 2000, seed=4)
    x[-5:, 0] = 1.0  # rows that follow the chain to its last leaf...
    row_model[-5:] = len(ensembles) - 1
    outs = run(pack(ensembles), x, row_model)
    expect_margins(outs, ensembles, x, row_model)
    assert (outs["cpp"][-5:, 0] == 0.5 + MAX_DEPTH + 3).all()  # ...64 levels down


def test_a_single_leaf_and_no_features():
    leaf = dict(feature=[-1], threshold=[0], left=[-1], right=[-1], default_left=[0], value=[2])
    ensembles = [ensemble([leaf], num_feature=0, base=[0.25])]
    x = np.zeros((3, 0), dtype=np.float32)
    outs = run(pack(ensembles), x, np.zeros(3, dtype=np.int64))
    expect_margins(outs, ensembles, x, np.zeros(3, dtype=np.int64))
    assert (outs["cpp"] == 2.25).all()


def test_empty_batch():
    packed = pack([ensemble([chain_tree(2)], 1, k=2)])
    outs = run(packed, np.zeros((0, 1), dtype=np.float32), np.zeros(0, dtype=np.int64))
    assert all(out.shape == (0, 2) for out in outs.values())


def test_reference_semantics_loop():
    rng = np.random.default_rng(5)
    ensembles = [ensemble([random_tree(rng, 4, 3) for _ in range(6)], 3, k) for k in (1, 2, 3)]
    p = pack(ensembles)
    x, row_model = mixed_batch(ensembles, 30, seed=6)
    out = trees_reference(torch.from_numpy(x), torch.from_numpy(row_model), *p)
    value = p.nodes.view(torch.float32)[:, NODE_VALUE]
    for i, s in enumerate(row_model.tolist()):
        want = p.base[s].clone()
        for t in range(*p.model_trees[s].tolist()):
            n = int(p.tree_root[t])
            while p.nodes[n, NODE_FEATURE] >= 0:
                v = float(x[i, p.nodes[n, NODE_FEATURE]])
                go_left = bool(p.nodes[n, NODE_DEFAULT_LEFT]) if np.isnan(v) else v < value[n]
                n = int(p.nodes[n, NODE_LEFT]) + (0 if go_left else 1)
            want[p.tree_group[t]] += value[n]
        assert torch.equal(out[i], want), i


def test_model_tree_ranges_may_leave_gaps_and_come_in_any_order():
    """A slab leaves room after each model: model s's trees are any [first, end) range."""
    rng = np.random.default_rng(12)
    ensembles = [ensemble([random_tree(rng, 3, 4) for _ in range(2 + s)], 4, 2) for s in range(3)]
    whole = pack(ensembles)
    # a view of models 2 and 0 only, in that order, over the whole pack's trees
    pick = [2, 0]
    view = whole._replace(
        model_trees=whole.model_trees[pick].clone(),
        base=whole.base[pick].clone(),
        num_features=whole.num_features[pick].clone(),
    )
    x, row_model = mixed_batch([ensembles[s] for s in pick], 40, seed=13)
    expect_margins(run(view, x, row_model), [ensembles[s] for s in pick], x, row_model)


@pytest.mark.parametrize("lo, hi", [(-1, 2), (3, 2), (0, 10)])
def test_a_tree_range_outside_the_pack_is_refused(lo, hi):
    _, args = small_pack()
    args["model_trees"][1] = torch.tensor([lo, hi])
    args["row_model"][:] = 1
    for fn in (native().trees_forward, trees_reference):
        with pytest.raises(
            RuntimeError, match=rf"model_trees\[1\] = \[{lo}, {hi}\] is not a range"
        ):
            fn(**args)


def small_pack() -> tuple[PackedTrees, dict[str, torch.Tensor]]:
    """3 models (K=2, 4 features, 3 trees of depth 3) and 10 rows, as the op's keyword args."""
    rng = np.random.default_rng(8)
    ensembles = [ensemble([random_tree(rng, 3, 4) for _ in range(3)], 4, 2) for _ in range(3)]
    p = pack(ensembles)
    x, row_model = mixed_batch(ensembles, 10, seed=9)
    return p, dict(x=torch.from_numpy(x), row_model=torch.from_numpy(row_model), **p._asdict())


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("x", torch.zeros(10, 4, dtype=torch.float64), "x must be a 2-D torch.float32"),
        ("x", torch.zeros(10), "x must be a 2-D"),
        ("row_model", torch.zeros(10, dtype=torch.int32), "row_model must be a 1-D torch.int64"),
        ("row_model", torch.zeros(9, dtype=torch.int64), r"row_model must be \(10,\)"),
        ("nodes", torch.zeros(5, 3, dtype=torch.int32), r"nodes must be \(M, 4\)"),
        ("nodes", torch.zeros(5, 4, dtype=torch.float32), "nodes must be a 2-D torch.int32"),
        ("tree_root", torch.zeros(8, dtype=torch.int32), "tree_root must be a 1-D torch.int64"),
        ("tree_group", torch.zeros(8, dtype=torch.int32), r"tree_group must be \(9,\)"),
        ("model_trees", torch.zeros(4, 2, dtype=torch.int64), r"model_trees must be \(3, 2\)"),
        ("base", torch.zeros(3, dtype=torch.float32), "base must be a 2-D"),
        ("num_features", torch.zeros(2, dtype=torch.int32), r"num_features \(3,\)"),
        ("num_features", torch.zeros(3, dtype=torch.int64), "num_features must be a 1-D"),
        ("x", torch.zeros(10, 4, device="meta"), "one device"),
    ],
)
def test_contract_violations_are_value_errors(name, bad, match):
    _, args = small_pack()
    args[name] = bad
    with pytest.raises(ValueError, match=match):
        check_inputs(**args)
    with pytest.raises(ValueError, match=match):
        trees_forward(**args)


@pytest.mark.parametrize("bad", [-1, 3, 1 << 40])
def test_cpp_rejects_a_row_model_out_of_range(bad):
    _, args = small_pack()
    args["row_model"][6] = bad
    with pytest.raises(RuntimeError, match=rf"row_model\[6\] = {bad} .*model < 3"):
        native().trees_forward(**args)
    with pytest.raises(RuntimeError, match=rf"row_model\[6\] = {bad} .*model < 3"):
        trees_reference(**args)


def test_cpp_rejects_rows_narrower_than_their_model():
    _, args = small_pack()
    args["x"] = args["x"][:, :3].contiguous()
    with pytest.raises(RuntimeError, match=r"row 0 \(model \d\) reads 4 columns, x has F=3"):
        native().trees_forward(**args)
    with pytest.raises(RuntimeError, match=r"row 0 \(model \d\) reads 4 columns, x has F=3"):
        trees_reference(**args)


@pytest.mark.parametrize(
    "name, dtype",
    [("x", torch.float64), ("row_model", torch.int32), ("nodes", torch.int64),
     ("tree_root", torch.int32), ("tree_group", torch.int64), ("model_trees", torch.int32),
     ("base", torch.float64), ("num_features", torch.int64)],
)  # fmt: skip
def test_cpp_wrong_dtype_names_the_tensor(name, dtype):
    _, args = small_pack()
    args[name] = args[name].to(dtype)
    with pytest.raises(RuntimeError, match=rf"^{name} must be "):
        native().trees_forward(**args)


def test_cpp_stops_a_corrupt_walk_after_max_depth():
    p, args = small_pack()
    nodes = p.nodes.clone()
    assert nodes[0, NODE_FEATURE] >= 0  # tree 0's root, a split; its children are nodes 1, 2
    nodes[1:3] = nodes[0]  # the children become splits too...
    nodes[0:3, NODE_LEFT] = 1  # ...whose children are nodes 1 and 2: a cycle
    args.update(nodes=nodes, row_model=torch.zeros(10, dtype=torch.int64))
    with pytest.raises(RuntimeError, match=f"did not reach a leaf within {MAX_DEPTH} levels"):
        native().trees_forward(**args)
    with pytest.raises(RuntimeError, match=f"did not reach a leaf within {MAX_DEPTH} levels"):
        trees_reference(**args)


@pytest.mark.parametrize("field, value", [("tree_root", 1 << 40), ("tree_group", 2)])
def test_cpp_rejects_a_corrupt_tree_root_or_group(field, value):
    _, args = small_pack()
    args[field] = args[field].clone()
    args[field][0] = value
    args["row_model"] = torch.zeros(10, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="tree 0 has root"):
        native().trees_forward(**args)


def _broken(change) -> TreeEnsemble:
    t = chain_tree(3)  # nodes: split0 leaf0 split1 leaf1 split2 leaf2 leaf3
    change(t)
    return ensemble([t], num_feature=1)


@pytest.mark.parametrize(
    "ens, match",
    [
        (ensemble([chain_tree(MAX_DEPTH + 1)], 1), f"deeper than {MAX_DEPTH}"),
        (_broken(lambda t: t["right"].__setitem__(4, 7)), "out of range"),
        (_broken(lambda t: t["feature"].__setitem__(2, 1)), r"feature 1 \(of 1\)"),
        (_broken(lambda t: t["right"].__setitem__(2, 1)), "node 1: a node with 2 parents"),
        (_broken(lambda t: t["right"].__setitem__(4, 0)), "node 0: a root with a parent"),
        (replace(ensemble([chain_tree(1)] * 2, 1), tree_group=np.array([0, 1])), "outside"),
    ],
)
def test_pack_rejects_what_is_not_a_tree(ens, match):
    with pytest.raises(ValueError, match=match):
        pack([ens])


def test_pack_drops_unreachable_nodes():
    t = chain_tree(1)  # split, leaf, leaf
    for key, v in dict(
        feature=-1, threshold=0.0, left=-1, right=-1, default_left=0, value=9
    ).items():
        t[key].append(v)  # an orphan leaf, never reached
    p = pack([ensemble([t], 1)])
    assert p.nodes.shape == (3, 4)
    assert (p.nodes.view(torch.float32)[:, NODE_VALUE] != 9).all()


def test_missing_native_build_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_loaded", None)
    monkeypatch.setitem(sys.modules, "mmhost._C", None)  # makes the import fail
    monkeypatch.setenv("MMHOST_JIT", "0")  # and no build on first use
    _, args = small_pack()
    with pytest.warns(RuntimeWarning, match="mmhost._C is not built"):
        got = trees_forward(**args)
    assert torch.equal(got, trees_reference(**args))
    trees_forward(**args)  # no second warning (warnings are errors here)
    monkeypatch.setattr(_native, "_tried", False)


@pytest.mark.parametrize(
    "stale",
    [
        types.SimpleNamespace(linear_forward=None),  # an _C built before the trees op
        types.SimpleNamespace(trees_forward=lambda *a: 1 / 0),  # before (S, 2) ranges
        types.SimpleNamespace(trees_forward=lambda *a: 1 / 0, TREES_ABI=1),
    ],
    ids=["no trees op", "no TREES_ABI", "older TREES_ABI"],
)
def test_native_build_without_trees_falls_back_with_one_warning(monkeypatch, stale):
    monkeypatch.setattr(_native, "_tried", True)
    monkeypatch.setattr(_native, "_loaded", stale)
    monkeypatch.setattr(_native, "_stale", set())
    _, args = small_pack()
    with pytest.warns(RuntimeWarning, match="built before the current trees op"):
        got = trees_forward(**args)
    assert torch.equal(got, trees_reference(**args))
    trees_forward(**args)  # no second warning


def test_this_build_has_the_current_layout():
    assert native().TREES_ABI == trees_module().TREES_ABI


def trees_module():
    from mmhost.kernels import trees

    return trees


def test_registered_torch_op_is_the_same_function():
    _, args = small_pack()
    assert torch.equal(torch.ops.mmhost.trees(**args), trees_forward(**args))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runs_the_triton_kernel_and_matches_cpu():
    p, args = small_pack()
    on_gpu = {k: v.cuda() for k, v in args.items()}
    assert torch.equal(trees_forward(**on_gpu).cpu(), trees_forward(**args))
