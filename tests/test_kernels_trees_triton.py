"""The Triton trees kernel against the plain-torch reference and XGBoost (runs under
TRITON_INTERPRET=1)."""

import os

# must precede the triton import: triton.jit picks the interpreter when a kernel is decorated
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from test_kernels_trees import (  # noqa: E402
    chain_tree,
    ensemble,
    expect_margins,
    first_trees,
    mixed_batch,
    random_tree,
    rows,
    small_pack,
)

from mmhost.artifacts.xgboost import MAX_DEPTH  # noqa: E402
from mmhost.convert.xgboost import read_model  # noqa: E402
from mmhost.kernels import trees  # noqa: E402
from mmhost.kernels import trees_triton as tt  # noqa: E402
from mmhost.kernels.trees import NODE_FEATURE, NODE_LEFT, pack, trees_reference  # noqa: E402
from mmhost.kernels.trees_triton import trees_triton  # noqa: E402

# Tolerance: none. The kernel adds each row's leaves to its base in tree order in float32, as the
# reference does, so margins are compared bit for bit (as int32 bits: -0.0 != 0.0 here).

# CPU tensors under the interpreter; with TRITON_INTERPRET=0 on a GPU box, the same tests on CUDA
DEVICE = "cpu" if tt._INTERPRET else "cuda"
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="Triton needs CUDA or TRITON_INTERPRET=1",
)


def _run(packed, x: np.ndarray, row_model: np.ndarray, device: str = DEVICE) -> torch.Tensor:
    """Triton's margins (N, K) on CPU, asserted bit-identical to the reference's."""
    args = (torch.from_numpy(x), torch.from_numpy(row_model), *packed)
    want = trees_reference(*args)
    got = trees_triton(*(a.to(device) for a in args))
    assert got.dtype == torch.float32 and got.device.type == device
    got = got.cpu()
    assert got.shape == want.shape
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    return got


def _random_models(seed: int, n: int, k: int, depth: int) -> list:
    """n models of 1-8 random trees up to ``depth`` levels over 1-9 features; every other
    model has k outputs (softprob-style groups t % k), the rest 1."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n):
        ks, f = (k if s % 2 == 0 else 1), int(rng.integers(1, 10))
        trees_ = [random_tree(rng, depth, f) for _ in range(int(rng.integers(1, 9)))]
        out.append(ensemble(trees_, f, ks, base=rng.normal(size=ks)))
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_mixed_batch_matches_the_reference(k):
    ensembles = _random_models(seed=k, n=8, k=k, depth=6)
    x, row_model = mixed_batch(ensembles, 300, seed=2)  # unread columns hold 1e30
    got = _run(pack(ensembles), x, row_model)
    expect_margins({"triton": got, "ref": got}, ensembles, x, row_model)  # vs the numpy oracle


@pytest.mark.parametrize("depth", range(1, 9))
def test_depths(depth):
    ensembles = _random_models(seed=10 + depth, n=3, k=2, depth=depth)
    x, row_model = mixed_batch(ensembles, 64, seed=depth)
    _run(pack(ensembles), x, row_model)


@pytest.mark.parametrize("default_left", [0, 1])
def test_nan_takes_the_default_direction(default_left):
    # x0 < 0.5 goes to the leaf worth -1, else to the leaf worth 2; NaN to the default side
    stump = dict(
        feature=[0, -1, -1], threshold=[0.5, 0, 0], left=[1, -1, -1], right=[2, -1, -1],
        default_left=[default_left, 0, 0], value=[0, -1, 2],
    )  # fmt: skip
    ensembles = [ensemble([stump], 1, base=[0.0])]
    x = np.array([[np.nan], [0.0], [0.5], [np.inf], [-np.inf]], dtype=np.float32)
    got = _run(pack(ensembles), x, np.zeros(5, dtype=np.int64))
    assert got[:, 0].tolist() == [-1.0 if default_left else 2.0, -1.0, 2.0, 2.0, -1.0]


def test_deepest_trees_and_a_model_without_trees():
    chains = ensemble([chain_tree(MAX_DEPTH), chain_tree(3)], 1)
    ensembles = [chains, first_trees(chains, 0), ensemble([chain_tree(5)], 2, k=2)]
    x, row_model = mixed_batch(ensembles, 40, seed=3)
    x[:5, 0], row_model[:5] = 1.0, 0  # rows that follow the long chain to its last leaf...
    got = _run(pack(ensembles), x, row_model)
    assert (got[:5, 0] == 0.5 + MAX_DEPTH + 3).all()  # ...64 levels down
    assert (got[row_model == 1] == torch.tensor([0.5, 0.0])).all()  # no trees: the base


def test_a_single_leaf_and_no_features():
    leaf = dict(feature=[-1], threshold=[0], left=[-1], right=[-1], default_left=[0], value=[2])
    x = np.zeros((3, 0), dtype=np.float32)
    got = _run(pack([ensemble([leaf], num_feature=0, base=[0.25])]), x, np.zeros(3, np.int64))
    assert (got == 2.25).all()


def test_model_tree_ranges_may_leave_gaps_and_come_in_any_order():
    ensembles = _random_models(seed=12, n=4, k=2, depth=3)
    whole = pack(ensembles)
    pick = [3, 0, 2]  # a view of three models, reordered, over the whole pack's trees
    view = whole._replace(
        model_trees=whole.model_trees[pick].clone(),
        base=whole.base[pick].clone(),
        num_features=whole.num_features[pick].clone(),
    )
    x, row_model = mixed_batch([ensembles[s] for s in pick], 50, seed=13)
    _run(view, x, row_model)


def test_gpu_block_sizes_under_interpreter(monkeypatch):
    # 32-row programs: many blocks, a ragged last one, each mixing models of other tree counts
    interpret = tt._INTERPRET
    monkeypatch.setattr(tt, "_INTERPRET", False)
    sizes = tt._block_sizes()
    monkeypatch.setattr(tt, "_INTERPRET", interpret)
    monkeypatch.setattr(tt, "_block_sizes", lambda: sizes)
    assert sizes[0] == 32
    ensembles = _random_models(seed=20, n=6, k=3, depth=4)
    x, row_model = mixed_batch(ensembles, 101, seed=21)
    _run(pack(ensembles), x, row_model)


def test_non_contiguous_inputs():
    ensembles = _random_models(seed=30, n=3, k=3, depth=4)
    p = pack(ensembles)
    x, row_model = mixed_batch(ensembles, 40, seed=31)
    wide = np.full((40, 2 * x.shape[1]), 7.0, dtype=np.float32)
    wide[:, ::2] = x
    args = [torch.from_numpy(wide)[:, ::2], torch.from_numpy(row_model), *p]
    args[2] = p.nodes.t().contiguous().t()  # column-major records
    assert not args[0].is_contiguous() and not args[2].is_contiguous()
    got = trees_triton(*(a.to(DEVICE) for a in args)).cpu()
    assert torch.equal(got, trees_reference(torch.from_numpy(x), *args[1:]))


def test_empty_batch_returns_an_empty_output():
    p = pack([ensemble([chain_tree(2)], 1, k=2)])
    x, row_model = np.zeros((0, 1), dtype=np.float32), np.zeros(0, dtype=np.int64)
    assert _run(p, x, row_model).shape == (0, 2)


@pytest.mark.parametrize("bad", [-1, 3, 1 << 40])
def test_rejects_a_row_model_out_of_range(bad):
    _, args = small_pack()
    args["row_model"][6] = bad
    with pytest.raises(RuntimeError, match=rf"row_model\[6\] = {bad} .*model < 3"):
        trees_triton(**{k: v.to(DEVICE) for k, v in args.items()})


@pytest.mark.parametrize("lo, hi", [(-1, 2), (3, 2), (0, 10)])
def test_rejects_a_tree_range_outside_the_pack(lo, hi):
    _, args = small_pack()
    args["model_trees"][1] = torch.tensor([lo, hi])
    args["row_model"][:] = 1
    with pytest.raises(RuntimeError, match=rf"model_trees\[1\] = \[{lo}, {hi}\] is not a range"):
        trees_triton(**{k: v.to(DEVICE) for k, v in args.items()})


def test_rejects_rows_narrower_than_their_model():
    _, args = small_pack()
    args["x"] = args["x"][:, :3].contiguous()
    with pytest.raises(RuntimeError, match=r"row 0 \(model \d\) reads 4 columns, x has F=3"):
        trees_triton(**{k: v.to(DEVICE) for k, v in args.items()})


def test_rejects_a_wrong_dtype():
    _, args = small_pack()
    args["tree_root"] = args["tree_root"].int()
    with pytest.raises(ValueError, match="tree_root must be a 1-D torch.int64"):
        trees_triton(**{k: v.to(DEVICE) for k, v in args.items()})


def _cycle(p, args):
    nodes = p.nodes.clone()
    nodes[1:3] = nodes[0]  # tree 0's children become splits too...
    nodes[0:3, NODE_LEFT] = 1  # ...whose children are nodes 1 and 2: a cycle
    args["nodes"] = nodes


def _child_out_of_range(p, args):
    args["nodes"] = p.nodes.clone()
    args["nodes"][0, NODE_LEFT] = len(p.nodes)


def _field(name, value):
    def change(p, args):
        args[name] = args[name].clone()
        args[name][0] = value

    return change


@pytest.mark.parametrize(
    "corrupt",
    [_cycle, _child_out_of_range, _field("tree_root", 1 << 40), _field("tree_group", 2)],
    ids=["cycle", "child", "root", "group"],
)
def test_a_corrupt_tree_gives_nan_rows_not_a_crash(corrupt):
    p, args = small_pack()
    assert p.nodes[0, NODE_FEATURE] >= 0 and int(p.model_trees[0, 0]) == 0  # model 0's tree 0
    want = trees_reference(**args)  # before the corruption
    corrupt(p, args)
    got = trees_triton(**{k: v.to(DEVICE) for k, v in args.items()}).cpu()
    mine = args["row_model"] == 0
    assert mine.any() and got[mine].isnan().all()
    assert torch.equal(got[~mine], want[~mine])


def test_the_ops_cuda_kernel_is_trees_triton(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args)
        return trees_triton(*args)

    monkeypatch.setattr(tt, "trees_triton", spy)
    _, args = small_pack()
    got = trees._trees_cuda(**{k: v.to(DEVICE) for k, v in args.items()})
    assert len(calls) == 1 and torch.equal(got.cpu(), trees_reference(**args))


def test_matches_xgboost_margins():
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(40)
    boosters, ensembles = [], []
    for objective, f, depth, rounds in [
        ("binary:logistic", 5, 3, 5),
        ("multi:softprob", 4, 2, 4),
        ("reg:squarederror", 7, 4, 6),
    ]:
        x = rows(96, f, rng)
        z = np.nan_to_num(x[:, 0]) + rng.normal(scale=0.5, size=len(x))
        y = {"binary:logistic": z > 0, "multi:softprob": np.digitize(z, [-0.5, 0.5])}
        params = dict(objective=objective, max_depth=depth, max_bin=16, nthread=1, seed=0)
        params.update({"num_class": 3} if objective == "multi:softprob" else {})
        label = np.asarray(y.get(objective, 3 * z), dtype=float)
        booster = xgb.train(params, xgb.DMatrix(x, label), rounds)
        boosters.append(booster)
        ensembles.append(read_model(booster))
    x, row_model = mixed_batch(ensembles, 120, seed=41)
    got = _run(pack(ensembles), x, row_model).numpy()  # (N, 3)
    for s, (booster, e) in enumerate(zip(boosters, ensembles, strict=True)):
        mine = row_model == s
        margins = got[mine, : e.num_class]  # (n, K)
        # start XGBoost from the packed base margins: the converter's float32 log of a learned
        # base score can be an ulp off XGBoost's own (see test_kernels_trees)
        start = np.broadcast_to(e.base_score, margins.shape).squeeze(1 if e.num_class == 1 else ())
        data = xgb.DMatrix(x[mine, : e.num_feature], base_margin=start)
        want = booster.predict(data, output_margin=True)
        np.testing.assert_array_equal(margins, want.reshape(margins.shape), err_msg=f"model {s}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("k", [1, 3])
def test_matches_reference_on_cuda(k):
    ensembles = _random_models(seed=50 + k, n=200, k=k, depth=6)
    x, row_model = mixed_batch(ensembles, 5000, seed=51)
    _run(pack(ensembles), x, row_model, device="cuda")


def test_many_outputs_cost_no_registers():
    """K = 300 outputs (a 300-class softprob): leaves go straight to out[row, group]."""
    rng = np.random.default_rng(40)
    trees = [random_tree(rng, 2, 3) for _ in range(600)]
    ens = ensemble(trees, 3, k=300)  # tree t adds to output t % 300
    x, row_model = mixed_batch([ens], 20, seed=41)
    _run(pack([ens]), x, row_model)
