"""The training kernels (``mmhost/kernels/gram.py``): the C++ ``entity_gram`` and
``column_moments`` equal their plain-torch references (rtol 1e-12: the same sums in another
order), on rows read in place and gathered, segments of every length around the tile's, NaN
cells and unknown categories; and out-of-range inputs are refused, not read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmhost.kernels import _native
from mmhost.kernels.gram import gram_reference, moments_reference

pytestmark = pytest.mark.skipif(_native.load() is None, reason="the C++ kernels are not built")
LENGTHS = [0, 1, 2, 3, 4, 5, 63, 64, 65, 127, 130, 300]


def _native_fn(name: str):
    fn = _native.function(name, "gram")
    assert fn is not None
    return fn


def _inputs(rng: np.random.Generator, n: int = 2_000, nan: bool = False, gather: bool = False):
    numeric = [
        torch.from_numpy(rng.normal(size=n) * s + o) for s, o in ((1, 0), (3, 5), (0.1, 1e3))
    ]
    if nan:
        numeric[1][rng.random(n) < 0.05] = float("nan")
    categorical = [
        torch.from_numpy(rng.integers(-1, 3, n)),  # -1: a category unseen in training
        torch.from_numpy(rng.integers(0, 5, n)),
    ]
    label = torch.from_numpy(rng.normal(size=n) * 100)
    lengths = np.array(LENGTHS)
    m = int(lengths.sum())
    order = torch.from_numpy(rng.integers(0, n, m) if gather else np.arange(m))
    ends = np.cumsum(lengths)
    bounds = torch.from_numpy(np.stack([ends - lengths, ends], axis=1))
    # numeric at 0, 4, 11; categories at 1..3 and 5..9; feature 10 left empty
    layout = (
        torch.tensor([0, 4, 11]), torch.tensor([0.2, 5.0, 1e3], dtype=torch.float64),
        categorical, torch.tensor([1, 5]), torch.tensor([3, 5]),
    )  # fmt: skip
    return (numeric, *layout, label, order, bounds, 12)


@pytest.mark.parametrize("nan", [False, True], ids=["complete", "with NaN"])
@pytest.mark.parametrize("gather", [False, True], ids=["rows in place", "rows gathered"])
def test_entity_gram_equals_the_reference(nan, gather):
    args = _inputs(np.random.default_rng(1), nan=nan, gather=gather)
    got = _native_fn("entity_gram")(*args)
    want = gram_reference(*args)
    assert got.shape == (len(LENGTHS), 14, 14)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-9)
    assert not torch.isnan(got).any()
    counts = got[:, 12, 12].numpy()
    np.testing.assert_array_equal(counts, LENGTHS)  # the ones feature counts the rows
    assert (got[:, 10, :] == 0).all()  # a feature no column fills stays 0
    assert torch.equal(got, got.transpose(1, 2))


def test_a_missing_number_adds_the_shift_that_is_its_fill():
    numeric = [torch.tensor([1.0, float("nan"), 3.0, 4.0, 5.0], dtype=torch.float64)]
    none, f64 = torch.zeros(0, dtype=torch.int64), torch.float64
    args = (numeric, torch.tensor([0]), torch.tensor([3.0], dtype=f64), [], none, none,
            torch.ones(5, dtype=f64), torch.arange(5), torch.tensor([[0, 5]]), 1)  # fmt: skip
    got = _native_fn("entity_gram")(*args)[0]
    # shifted values -2, 0 (the NaN), 0, 1, 2
    assert got[0, 0] == 9.0 and got[0, 1] == 1.0 and got[1, 1] == 5.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.__setitem__(7, torch.tensor([0, 1, 5_000])), "order entry"),
        (lambda a: a.__setitem__(7, torch.tensor([-1, 1, 2])), "order entry"),
        (lambda a: a.__setitem__(8, torch.tensor([[0, 4]])), "not a run"),
        (lambda a: a.__setitem__(8, torch.tensor([[2, 1]])), "not a run"),
        (lambda a: a[3].__setitem__(0, torch.full((2_000,), 3)), "category code"),
        (lambda a: a.__setitem__(1, torch.tensor([0, 4, 4])), "num_pos"),
        (lambda a: a.__setitem__(5, torch.tensor([1, 9])), "does not fit"),
    ],
    ids=["row past the table", "negative row", "run past order", "reversed run",
         "code past the categories", "overlapping features", "categories past the width"],
)  # fmt: skip
def test_entity_gram_refuses_what_is_out_of_range(change, message):
    args = list(_inputs(np.random.default_rng(2)))
    args[7], args[8] = torch.tensor([0, 1, 2]), torch.tensor([[0, 3]])
    change(args)
    with pytest.raises(RuntimeError, match=message):
        _native_fn("entity_gram")(*args)


def test_a_float32_column_is_refused_by_name():
    args = list(_inputs(np.random.default_rng(4)))
    args[0] = [args[0][0].float(), *args[0][1:]]
    with pytest.raises(RuntimeError, match="numeric columns must be contiguous 1-d float64"):
        _native_fn("entity_gram")(*args)


def test_column_moments_equal_numpy_even_far_from_zero():
    rng = np.random.default_rng(3)
    cols = [rng.normal(size=10_000) * 1e-3 + 1.7e9, rng.normal(size=10_000), np.full(10_000, 2.5)]
    cols[1][::9] = np.nan
    cols.append(np.full(10_000, np.nan))
    tensors = [torch.from_numpy(c) for c in cols]
    for order in (np.arange(10_000), rng.integers(0, 10_000, 4_000)):
        got = _native_fn("column_moments")(tensors, torch.from_numpy(order)).numpy()
        ref = moments_reference(tensors, torch.from_numpy(order)).numpy()
        for c, col in enumerate(cols):
            v = col[order]
            v = v[~np.isnan(v)]
            assert got[c, 0] == len(v)
            if len(v):
                # two passes about a first value: exact where numpy's mean of 1.7e9 is not
                for moments in (got, ref):
                    np.testing.assert_allclose(moments[c, 1], v.mean(), rtol=1e-14,
                                               atol=1e-14 * v.std())  # fmt: skip
                    np.testing.assert_allclose(moments[c, 2], (v - v[0]).var(), rtol=1e-12,
                                               atol=1e-18)  # fmt: skip
            else:
                assert np.isnan(got[c, 1:]).all() and np.isnan(ref[c, 1:]).all()
    with pytest.raises(RuntimeError, match="outside the 10000 rows"):
        _native_fn("column_moments")(tensors, torch.tensor([10_000]))
    assert _native_fn("column_moments")([], torch.arange(5)).shape == (0, 3)  # no numbers


def _encoded(args, scale):
    """The rows of each segment as the kernels encode them (the oracle's input)."""
    numeric, num_pos, shift, categorical, cat_off, cat_size, label, order, bounds, width = args
    rows = []
    for a, z in bounds.tolist():
        r = order[a:z]
        Z = torch.zeros(len(r), width, dtype=torch.float64)
        for j, col in enumerate(numeric):
            Z[:, int(num_pos[j])] = torch.nan_to_num((col[r] - shift[j]) * scale[j], nan=0.0)
        for c, codes in enumerate(categorical):
            k = codes[r]
            hit = (k >= 0).nonzero()[:, 0]
            Z[hit, int(cat_off[c]) + k[hit]] = 1.0
        rows.append((Z, label[r]))
    return rows


@pytest.mark.parametrize(
    "intercept, normalize, wd",
    [(True, False, 0.01), (False, True, 0.05), (True, True, 0.002), (True, False, 1e-5)],
)
def test_entity_logistic_equals_the_batched_torch_solver(intercept, normalize, wd):
    from mmhost.train import solvers

    rng = np.random.default_rng(5)
    args = list(_inputs(rng, nan=True, gather=True))
    lengths = [5, 40, 300, 1_000]
    ends = np.cumsum(lengths)
    args[7] = torch.from_numpy(rng.integers(0, 2_000, int(ends[-1])))
    args[8] = torch.from_numpy(np.stack([ends - lengths, ends], axis=1))
    numeric = args[0]
    s = (
        numeric[0]
        - 0.3 * torch.nan_to_num(numeric[1] - 5)
        + torch.from_numpy(rng.normal(size=2_000))
    )
    if wd < 1e-4:  # nearly separable: large scores, exp(-|s|) far into its tail, steps halved
        s = numeric[0] * 30 + torch.from_numpy(rng.normal(size=2_000))
    args[6] = (s > 0).double()  # a label the features tell something of
    scale = [1.0, 1 / 3, 10.0]
    got = _native_fn("entity_logistic")(
        *args[:3], torch.tensor(scale, dtype=torch.float64), *args[3:], wd, intercept, normalize,
        100, 1e-10, 1 << 20,
    )  # fmt: skip
    theta, iterations, accuracy = got
    assert (iterations > 0).all() and (iterations < 100).all()
    for e, (Z, y) in enumerate(_encoded(args, scale)):
        mu = Z.mean(0) if (normalize and intercept) else torch.zeros(Z.shape[1], dtype=Z.dtype)
        sd = ((Z - mu) ** 2).mean(0).sqrt() if normalize else torch.ones(Z.shape[1], dtype=Z.dtype)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        w, b = solvers.logistic(
            ((Z - mu) / sd)[None], y[None], torch.ones(1, len(y)), wd, intercept
        )
        w = w[0] / sd
        b = b[0] - (w * mu).sum()
        np.testing.assert_allclose(theta[e, :12].numpy(), w.numpy(), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(float(theta[e, 12]), float(b), rtol=1e-7, atol=1e-9)
        right = ((Z @ w + b > 0) == (y > 0.5)).double().mean()
        np.testing.assert_allclose(float(accuracy[e]), float(right))


def test_entity_logistic_leaves_what_it_cannot_fit_to_the_caller():
    args = list(_inputs(np.random.default_rng(6)))
    args[6] = (args[0][0] > 0).double()
    # no rows; rows over max_rows; a category never seen with wd 0: a singular Hessian
    args[8] = torch.tensor([[0, 0], [0, 500], [500, 540]])
    args[3] = [torch.zeros(2_000, dtype=torch.int64), args[3][1]]
    scale = torch.ones(3, dtype=torch.float64)
    _, iterations, accuracy = _native_fn("entity_logistic")(
        *args[:3], scale, *args[3:], 0.0, True, False, 100, 1e-10, 400
    )
    assert iterations.tolist() == [-1, -1, -1]
    assert torch.isnan(accuracy).all()


@pytest.mark.parametrize(
    "spread, wd, n", [(1e-4, 0.0, 3_000), (1e-3, 1e-7, 3_000), (0.3, 1e-3, 400_000)]
)
def test_entity_logistic_fits_nearly_collinear_features(spread, wd, n):
    """Two features nearly equal: a Hessian too ill-conditioned for the AVX2 path's float32
    sums, which the kernel then takes again in float64; and an entity of 400,000 rows, whose
    float32 sums are taken in runs. The fit is the torch solver's."""
    from mmhost.train import solvers

    rng = np.random.default_rng(7)
    x = rng.normal(size=n)
    numeric = [x, x + rng.normal(size=n) * spread, rng.normal(size=n)]
    y = ((x + rng.normal(size=n) * 0.5) > 0).astype(np.float64)
    none = torch.zeros(0, dtype=torch.int64)
    theta, iterations, _ = _native_fn("entity_logistic")(
        [torch.from_numpy(c) for c in numeric], torch.tensor([0, 1, 2]),
        torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), [], none, none,
        torch.from_numpy(y), torch.arange(n), torch.tensor([[0, n]]), 3, wd, True, False, 100,
        1e-10, 1 << 20,
    )  # fmt: skip
    assert 0 < int(iterations[0]) < 100
    Z = torch.from_numpy(np.stack(numeric, axis=1))
    w, b = solvers.logistic(Z[None], torch.from_numpy(y)[None], torch.ones(1, n), wd, True)
    np.testing.assert_allclose(theta[0, :3].numpy(), w[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(float(theta[0, 3]), float(b[0]), rtol=1e-6, atol=1e-9)
