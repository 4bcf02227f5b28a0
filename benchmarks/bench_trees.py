"""Fused trees op vs per-model loops: 1,000 distinct XGBoost models (binary:logistic, 100 trees of
depth 6) x 1 row and x 100 rows (issue 7).

Providers, all scoring the same rows with the same 1,000 models, outputs the probabilities
(the sigmoid link included):

- xgboost loop: ``booster.inplace_predict(rows)`` per model (the issue's baseline); every
  booster has ``nthread=1``, one thread per call
- xgboost loop on prebuilt DMatrix: ``booster.predict(dmatrix)`` per model, the DMatrix built
  off the clock, new ones every round (a server would have to build it per request; and a
  DMatrix predicted twice is answered from the booster's prediction cache)
- Hummingbird loop: ``hummingbird.ml.convert(XGBClassifier, "torch")`` per model, then
  ``predict_proba(rows)`` per model (skipped when hummingbird is not installed; it is not a
  project dependency: ``.venv/bin/pip install hummingbird-ml``)
- fused op: ``torch.sigmoid(trees_forward(x, row_model, *pack(ensembles)))``, one call on the
  whole batch, with torch's default thread count (the kernel uses a second thread only for
  batches of >= 8,192 tree walks) and with one thread (like for like with the xgboost loop)
- cold caches: the inplace_predict loop and the fused op (both thread counts) again, with every
  cache flushed (twice the last-level cache read) before each round; a round scores the batch
  once, each model's trees once per model. The other providers score the same batch again and
  again, and the pack (0.1 GiB) fits the 300 MiB L3 of the machine the results were measured on

Batches: x 1 row is one row per model in random model order (a mixed batch); x 100 rows is 100
rows per model, rows grouped by model as mmhost's batcher groups them.

Every provider's output is checked off the clock against xgboost's probabilities on the
benchmarked batch (rtol 1e-5; Hummingbird 1e-4), and the fused op's margins against xgboost's
``predict_type="margin"`` (bit for bit).

The models: 1,000 distinct boosters (own data, labels and seed each), trained once on 512 rows x
10 features (``tree_method="hist"``, ``nthread=1``, ``min_child_weight=0.01`` so every model
reaches depth 6: ~70 nodes a tree) and cached as UBJSON under ``.benchmarks/trees-models/``
(~4 min to train the first time, ~45 s to load, convert and pack after); the Hummingbird
conversions are cached there too (a pickle this benchmark wrote itself; ~3 min the first time).
With both caches the file runs in ~90 s.

Target (from the issue): fused >= 50x the inplace_predict loop on 1,000 models x 1 row (checked
warm against warm, and cold against cold).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xgboost as xgb
from fleet import describe
from report import Bench, group_section

from mmhost.artifacts.xgboost import TreeEnsemble
from mmhost.convert.xgboost import read_model
from mmhost.kernels import _native
from mmhost.kernels.trees import PackedTrees, pack, trees_forward

try:  # optional: not a project dependency
    import hummingbird
    import hummingbird.ml as hb_ml

    HB_MISSING = ""
except Exception as e:  # an incompatible install raises more than ImportError
    hb_ml = None
    HB_MISSING = f"hummingbird-ml is not importable ({type(e).__name__}: {e})"

N_MODELS = 1000
N_TREES = 100
DEPTH = 6
FIT_ROWS = 512
N_FEATURES = 10
TRAIN_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "max_depth": DEPTH,
    "min_child_weight": 0.01,  # the default (1) stops most late trees short of depth 6
    "eta": 0.3,
    "tree_method": "hist",
    "nthread": 1,
}
CACHE = Path(__file__).resolve().parent.parent / ".benchmarks" / "trees-models"
RTOL_PROB = 1e-5

P_XGB = "xgboost loop (inplace_predict, nthread=1)"
P_XGB_DM = "xgboost loop (predict on a prebuilt DMatrix, nthread=1)"
P_HB = "Hummingbird torch loop (predict_proba)"
_THREADS = torch.get_num_threads()
P_FUSED = f"fused trees op + sigmoid ({_THREADS} torch thread{'s' if _THREADS > 1 else ''})"
P_FUSED_1 = "fused trees op + sigmoid (1 torch thread)"
P_XGB_COLD = "xgboost loop (inplace_predict, nthread=1), caches flushed before each round"
P_FUSED_COLD = "fused trees op + sigmoid ({n} torch thread{s}), caches flushed before each call"
BASELINES = (P_XGB, P_XGB_DM, P_HB, P_XGB_COLD)

_HAS_KERNEL = _native.available() and hasattr(_native.load(), "trees_forward")
_RESULTS: list[Bench] = []  # this run's benchmarks, for the printed summary


# -- the models -------------------------------------------------------------------------------


def _training_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Model ``seed``'s own problem: a random linear score plus a random nonlinearity and an
    interaction, noisy labels (so no two models share trees)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(FIT_ROWS, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=N_FEATURES)
    a, b, c = rng.integers(N_FEATURES, size=3)
    z = x @ w + 2 * np.sin(3 * x[:, a]) + x[:, b] * x[:, c]
    y = (z + rng.normal(size=FIT_ROWS) > 0).astype(np.float32)
    return x, y


def _model_dir() -> Path:
    """The cache folder of these training settings (a change of them trains anew)."""
    key = json.dumps([TRAIN_PARAMS, N_TREES, FIT_ROWS, N_FEATURES, xgb.__version__, 1])
    d = CACHE / hashlib.sha256(key.encode()).hexdigest()[:12]
    d.mkdir(parents=True, exist_ok=True)
    (d / "settings.json").write_text(key)
    return d


def _booster(d: Path, i: int) -> Path:
    path = d / f"model{i:04d}.ubj"
    if not path.exists():
        x, y = _training_data(i)
        booster = xgb.train({**TRAIN_PARAMS, "seed": i}, xgb.DMatrix(x, y), N_TREES)
        tmp = path.with_suffix(f".tmp{os.getpid()}.ubj")
        booster.save_model(tmp)
        tmp.replace(path)
    return path


@dataclass
class TreeFleet:
    paths: list[Path]  # each model's UBJSON file
    boosters: list[xgb.Booster]  # nthread=1
    ensembles: list[TreeEnsemble]  # read_model() of each file, as a host reads them
    packed: PackedTrees  # all 1,000 models in the op's flat inputs


@pytest.fixture(scope="module")
def tree_fleet() -> TreeFleet:
    return load_tree_fleet()


def load_tree_fleet() -> TreeFleet:
    """The 1,000 boosters (trained once, cached), their ensembles and the pack of all of them."""
    d = _model_dir()
    t0 = time.perf_counter()
    missing = sum(not (d / f"model{i:04d}.ubj").exists() for i in range(N_MODELS))
    if missing:
        print(f"\ntraining {missing} xgboost models into {d} (once) ...", flush=True)
    if missing:  # one process per core: ~4 min on 2 cores, seconds on a 16-core GPU host
        with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_booster, [d] * N_MODELS, range(N_MODELS), chunksize=16))
    paths = [_booster(d, i) for i in range(N_MODELS)]
    boosters = []
    for p in paths:
        b = xgb.Booster(model_file=str(p))
        b.set_param({"nthread": 1})
        boosters.append(b)
    ensembles = [read_model(p) for p in paths]
    assert all(e.max_depth == DEPTH and e.num_trees == N_TREES for e in ensembles)
    packed = pack(ensembles)
    print(f"\n{N_MODELS} tree models ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return TreeFleet(paths, boosters, ensembles, packed)


# -- the batches ------------------------------------------------------------------------------


@dataclass
class TreeBatch:
    rows_per_model: int
    x: np.ndarray  # (N, F) float32
    row_model: np.ndarray  # (N,) int64: the model of each row
    calls: list[tuple[int, np.ndarray]]  # one per-model call each: (model, its rows), batch order
    xt: torch.Tensor  # (N, F) float32, x as the fused op takes it
    row_model_t: torch.Tensor  # (N,) int64
    want: np.ndarray  # (N,) float32: xgboost's probabilities
    want_margin: np.ndarray  # (N,) float32: xgboost's margins

    @property
    def n_rows(self) -> int:
        return len(self.x)


def make_tree_batch(fleet: TreeFleet, rows_per_model: int) -> TreeBatch:
    rng = np.random.default_rng(7_000 + rows_per_model)
    n = N_MODELS * rows_per_model
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    if rows_per_model == 1:  # mixed: one row per model, models in random order
        row_model = rng.permutation(N_MODELS).astype(np.int64)
    else:  # grouped by model, as the batcher sorts them
        row_model = np.repeat(np.arange(N_MODELS, dtype=np.int64), rows_per_model)
    starts = range(0, n, rows_per_model)
    calls = [(int(row_model[i]), x[i : i + rows_per_model]) for i in starts]
    want = np.concatenate([fleet.boosters[m].inplace_predict(r) for m, r in calls])
    margin = [fleet.boosters[m].inplace_predict(r, predict_type="margin") for m, r in calls]
    return TreeBatch(
        rows_per_model,
        x,
        row_model,
        calls,
        torch.from_numpy(x),
        torch.from_numpy(row_model),
        want.astype(np.float32),
        np.concatenate(margin).astype(np.float32),
    )


@pytest.fixture(scope="module", params=[1, 100], ids=lambda r: f"{r}row")
def tbatch(request: pytest.FixtureRequest, tree_fleet: TreeFleet) -> TreeBatch:
    return make_tree_batch(tree_fleet, request.param)


# -- labels, checks, the printed summary ------------------------------------------------------


def _group(batch: TreeBatch) -> str:
    r = batch.rows_per_model
    return f"trees op: 1000 models x {r} row{'s' if r > 1 else ''} ({N_TREES} trees, depth {DEPTH})"


def _label(benchmark, batch: TreeBatch, provider: str, **extra) -> None:
    describe(
        benchmark, _group(batch), provider, batch.n_rows, baseline=provider in BASELINES, **extra
    )


def _record(benchmark) -> None:
    stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
    if stats is not None:
        raw = {"name": benchmark.name, "group": benchmark.group, "extra_info": benchmark.extra_info}
        raw["stats"] = {"median": stats.stats.median, "rounds": stats.stats.rounds}
        _RESULTS.append(Bench(raw))


def _check(probs: np.ndarray, batch: TreeBatch, rtol: float = RTOL_PROB) -> None:
    np.testing.assert_allclose(np.asarray(probs).reshape(-1), batch.want, rtol=rtol, atol=0)


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    """Print each group's table (visible with ``-s``): median, rows/s and the ratio over each
    baseline, as ``benchmarks/report.py`` renders a ``--benchmark-json`` file."""
    yield
    groups: dict[str, list[Bench]] = {}
    for b in _RESULTS:
        groups.setdefault(b.group, []).append(b)
    for group, benches in groups.items():
        print("\n" + "\n".join(group_section(group, benches)))


# -- providers --------------------------------------------------------------------------------


def test_xgboost_inplace_loop(benchmark, tree_fleet, tbatch):
    boosters = tree_fleet.boosters

    def run():
        return [boosters[m].inplace_predict(r) for m, r in tbatch.calls]

    _check(np.concatenate(run()), tbatch)
    _label(benchmark, tbatch, P_XGB)
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark)


def test_xgboost_dmatrix_loop(benchmark, tree_fleet, tbatch):
    boosters = tree_fleet.boosters

    def fresh():
        """New DMatrix objects for every round, built off the clock: a booster caches its
        predictions per DMatrix, so predicting a DMatrix again measures a cache hit (~55 us)."""
        return ([(boosters[m], xgb.DMatrix(r, nthread=1)) for m, r in tbatch.calls],), {}

    def run(calls):
        return [b.predict(d) for b, d in calls]

    _check(np.concatenate(run(*fresh()[0])), tbatch)
    _label(benchmark, tbatch, P_XGB_DM)
    benchmark.pedantic(run, setup=fresh, rounds=5, warmup_rounds=1)
    _record(benchmark)


def _hb_convert(fleet: TreeFleet) -> list[Any]:
    """Each booster as an XGBClassifier converted to Hummingbird's torch backend. Hummingbird
    0.4.12 drops an XGBClassifier's base_score (it assumes a margin of 0), so the model's base
    margin is passed in as ``base_prediction``. Cached as one pickle (this benchmark's own
    file) keyed by the hummingbird and torch versions."""
    assert hb_ml is not None
    path = _model_dir() / f"hummingbird-{hummingbird.__version__}-torch-{torch.__version__}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    print(f"\nconverting {N_MODELS} models with hummingbird (once) ...", flush=True)
    threads = torch.get_num_threads()  # convert() sets torch's thread count: put it back
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p, e in zip(fleet.paths, fleet.ensembles, strict=True):
            clf = xgb.XGBClassifier()
            clf.load_model(p)
            extra = {"base_prediction": [float(e.base_score[0])], "n_threads": threads}
            models.append(hb_ml.convert(clf, "torch", extra_config=extra))
    torch.set_num_threads(threads)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(models, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return models


@pytest.fixture(scope="module")
def hb_models(tree_fleet: TreeFleet) -> list[Any]:
    return _hb_convert(tree_fleet)


@pytest.mark.skipif(hb_ml is None, reason=HB_MISSING or "-")
def test_hummingbird_torch_loop(benchmark, hb_models, tbatch):
    def run():
        return [hb_models[m].predict_proba(r)[:, 1] for m, r in tbatch.calls]

    # Hummingbird sums a model's trees in its own order (a reduction over a tensor), not
    # XGBoost's: its float32 margins differ in the last bits, so its probabilities get 1e-4.
    probs = np.concatenate(run())
    _check(probs, tbatch, rtol=1e-4)
    err = float(np.max(np.abs(probs - tbatch.want) / tbatch.want))
    impl = type(hb_models[0].model._operators[0]).__name__
    _label(benchmark, tbatch, P_HB, implementation=impl, max_rel_err=f"{err:.1e}")
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark)


def _fused_args(fleet: TreeFleet, batch: TreeBatch) -> tuple[torch.Tensor, ...]:
    return (batch.xt, batch.row_model_t, *fleet.packed)


def _fused_check(fleet: TreeFleet, batch: TreeBatch) -> dict[str, Any]:
    """Margins bit-identical to XGBoost's, probabilities to rtol 1e-5 (torch's sigmoid against
    XGBoost's expf)."""
    out = trees_forward(*_fused_args(fleet, batch))  # (N, 1)
    np.testing.assert_array_equal(out[:, 0].numpy(), batch.want_margin)
    _check(torch.sigmoid(out).numpy(), batch)
    return {"margins": "bit-identical to xgboost"}


def _fused_info(fleet: TreeFleet, batch: TreeBatch, cold: bool = False) -> dict[str, Any]:
    nodes = fleet.packed.nodes
    info: dict[str, Any] = {
        "nodes_per_tree": round(nodes.shape[0] / (N_MODELS * N_TREES), 1),
        "packed_gib": nodes.numel() * nodes.element_size() / 1024**3,
    }
    if batch.rows_per_model == 1:
        info["targets"] = [{"kind": "speedup", "vs": P_XGB_COLD if cold else P_XGB, "min": 50}]
    return info


@pytest.mark.skipif(not _HAS_KERNEL, reason="mmhost._C with trees_forward is not built")
def test_fused_trees(benchmark, tree_fleet, tbatch):
    args = _fused_args(tree_fleet, tbatch)

    def run():
        return torch.sigmoid(trees_forward(*args))

    exact = _fused_check(tree_fleet, tbatch)
    _label(benchmark, tbatch, P_FUSED, **_fused_info(tree_fleet, tbatch), **exact)
    benchmark(run)
    _record(benchmark)


@pytest.mark.skipif(not _HAS_KERNEL, reason="mmhost._C with trees_forward is not built")
@pytest.mark.skipif(_THREADS == 1, reason="torch runs one thread: test_fused_trees measures it")
def test_fused_trees_one_thread(benchmark, tree_fleet, tbatch):
    args = _fused_args(tree_fleet, tbatch)

    def run():
        return torch.sigmoid(trees_forward(*args))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exact = _fused_check(tree_fleet, tbatch)
        _label(benchmark, tbatch, P_FUSED_1, **_fused_info(tree_fleet, tbatch), **exact)
        benchmark(run)
    finally:
        torch.set_num_threads(threads)
    _record(benchmark)


def _last_level_cache_bytes() -> int:
    try:
        size = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
        return int(size[:-1]) * {"K": 1 << 10, "M": 1 << 20}[size[-1]]
    except (OSError, ValueError, KeyError):
        return 64 << 20


@pytest.fixture(scope="module")
def cache_flusher() -> Callable[[], None]:
    """Reads twice the last-level cache's size (clean lines, so the timed call pays no
    write-backs): afterwards none of the pack, x or the op's other inputs is cached."""
    junk = np.ones(2 * _last_level_cache_bytes() // 8)

    def flush() -> None:
        junk.sum()

    return flush


def test_xgboost_inplace_loop_cold(benchmark, tree_fleet, tbatch, cache_flusher):
    """The issue's baseline on the same footing as the cold fused op: caches flushed before each
    round (a round visits each model once, as one fused call does)."""
    boosters = tree_fleet.boosters

    def run():
        return [boosters[m].inplace_predict(r) for m, r in tbatch.calls]

    _check(np.concatenate(run()), tbatch)
    _label(benchmark, tbatch, P_XGB_COLD)
    benchmark.pedantic(run, setup=cache_flusher, rounds=5, warmup_rounds=1)
    _record(benchmark)


@pytest.mark.skipif(not _HAS_KERNEL, reason="mmhost._C with trees_forward is not built")
@pytest.mark.parametrize("threads", sorted({_THREADS, 1}, reverse=True))
def test_fused_trees_cold(benchmark, tree_fleet, tbatch, cache_flusher, threads):
    """The fused op with every cache flushed before each call (the warm providers score their
    batch again and again; the 0.1 GiB pack fits a large L3, e.g. the 300 MiB of the machine in
    benchmarks/results/trees-cpu-2core.md)."""
    args = _fused_args(tree_fleet, tbatch)

    def run():
        return torch.sigmoid(trees_forward(*args))

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        exact = _fused_check(tree_fleet, tbatch)
        provider = P_FUSED_COLD.format(n=threads, s="s" if threads > 1 else "")
        info = _fused_info(tree_fleet, tbatch, cold=True)
        _label(benchmark, tbatch, provider, **info, **exact)
        benchmark.pedantic(run, setup=cache_flusher, rounds=15, warmup_rounds=1)
    finally:
        torch.set_num_threads(before)
    _record(benchmark)


# -- served: the whole Host path --------------------------------------------------------------

P_HOST = "mmhost Host.predict_many (1,000 requests: decode, batch, fused op, link, split)"


@pytest.fixture(scope="module")
def tree_host(tree_fleet: TreeFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Host over a folder store of the 1,000 models in SageMaker's layout (a folder holding
    ``xgboost-model``, hard-linked to the cached file), every model loaded before timing."""
    from mmhost import Host

    store = tmp_path_factory.mktemp("trees-store")
    for i, path in enumerate(tree_fleet.paths):
        folder = store / f"m{i:04d}"
        folder.mkdir()
        try:
            os.link(path, folder / "xgboost-model")
        except OSError:  # another file system: copy
            (folder / "xgboost-model").write_bytes(path.read_bytes())
    host = Host(store=str(store), device="cpu", device_budget="4GiB", load_workers=2)
    for i in range(N_MODELS):
        host.load(f"m{i:04d}")
    yield host
    host.close()


def test_host_predict_many(benchmark, tree_host, tbatch):
    """What a server does per batch of requests, minus HTTP: 1,000 requests (one per model,
    numpy rows) in one ``predict_many``, on the engine's event loop thread."""
    requests = [(f"m{m:04d}", rows) for m, rows in tbatch.calls]

    def run():
        return tree_host.predict_many(requests)

    out = run()
    assert not any(isinstance(o, Exception) for o in out)
    _check(np.concatenate(out), tbatch)
    _label(benchmark, tbatch, P_HOST)
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    _record(benchmark)
