"""``mmhost train`` (issue 20): many per-entity linear models fitted at once.

Workloads:
- regressor: 10,000 entities x 500 rows x 10 numeric features, ridge (wd = 0.01);
- binary: 1,000 entities x 2,000 rows x 10 numeric features, L2 logistic (wd = 0.01).

Providers, measured in one run on the same rows:
- mmhost ``fit_table``: every entity's model from the table in memory (the shared
  standardization, the batched solve, the weights back), on this machine's CPU. The table's
  entity column is dictionary-encoded (a ``pandas.Categorical``), as ``read_table`` reads it
  (pandas' ``category`` dtype at parse time): as the baseline's rows come split by entity
  before the clock starts, mmhost's come with each row's entity index;
- a loop of scikit-learn fits in one process (``Ridge(alpha=n * wd)`` /
  ``LogisticRegression(C=1 / (2 n wd))`` on each entity's standardized rows, prepared before
  the clock starts): the baseline;
- the same loop with ``joblib.Parallel`` over the machine's cores;
- the whole ``mmhost train linear-learner`` command on a CSV of the regressor's first 1,000
  entities (500,000 rows): read, fit, write 1,000 ``{entity}/{entity}.tar.gz`` and the report,
  against the scikit-learn loop over the same 1,000 entities.

Each fit is checked against scikit-learn's off the clock (the tests hold the tolerances).

    python -m pytest benchmarks/bench_train.py -o python_files='bench_*.py' -q
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from fleet import describe

from mmhost.train import fit_table
from mmhost.train.data import Table

WD = 0.01
BASELINE = "scikit-learn, a loop in one process"
TARGET = {"kind": "speedup", "vs": BASELINE, "min": 50.0}  # issue 20, on CPU
WORKLOADS = {
    "regressor": (10_000, 500, 10),
    "binary_classifier": (1_000, 2_000, 10),
}


def _group(task: str) -> str:
    e, n, f = WORKLOADS[task]
    return f"train: {task}, {e:,} entities x {n:,} rows x {f} features"


@pytest.fixture(scope="module")
def tables() -> dict[str, tuple[Table, list[np.ndarray], list[np.ndarray]]]:
    return build_tables()


def build_tables() -> dict[str, tuple[Table, list[np.ndarray], list[np.ndarray]]]:
    """Each workload's table, and its rows standardized and split by entity (the baseline's)."""
    out = {}
    rng = np.random.default_rng(0)
    for task, (entities, rows, width) in WORKLOADS.items():
        X = rng.normal(size=(entities * rows, width)) * rng.uniform(0.5, 3, width)
        owner = np.repeat(np.arange(entities), rows)
        w = rng.normal(size=(entities, width))
        s = np.einsum("nf,nf->n", X, w[owner]) + rng.normal(size=len(X))
        label = s if task == "regressor" else (s > 0).astype(np.float64)
        feats = {f"x{j}": np.ascontiguousarray(X[:, j]) for j in range(width)}
        names = [f"e{i:05d}" for i in range(entities)]
        table = Table(
            pd.Categorical.from_codes(owner, names), label, feats, np.zeros(len(X), bool),
            [("memory", 0, len(X))],
        )  # fmt: skip
        Z = (X - X.mean(0)) / X.std(0)  # the shared standardization, as fit_table computes it
        out[task] = (table, np.split(Z, entities), np.split(label, entities))
    return out


def _sklearn_fit(task: str, Z: np.ndarray, y: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """scikit-learn's fit of one entity (its default tolerance on the clock)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if task == "regressor":
        return Ridge(alpha=len(y) * WD).fit(Z, y).coef_
    est = LogisticRegression(C=1 / (2 * len(y) * WD), tol=tol, max_iter=1000)
    return est.fit(Z, y).coef_[0]


@pytest.mark.parametrize("task", list(WORKLOADS))
def test_mmhost_fit_table(benchmark, tables, task):
    table, Zs, ys = tables[task]
    describe(
        benchmark, _group(task), "mmhost fit_table (batched, CPU)", len(Zs), unit="models",
        targets=[TARGET],
    )  # fmt: skip
    hp = {"predictor_type": task, "wd": WD, "normalize_data": False, "holdout_fraction": 0.0}
    if task == "regressor":
        hp["normalize_label"] = False
    report = benchmark.pedantic(lambda: fit_table(table, **hp), rounds=5, iterations=1)
    got = report.by_entity()
    for i in (0, len(Zs) // 2, len(Zs) - 1):  # spot checks against scikit-learn
        want = _sklearn_fit(task, Zs[i], ys[i], tol=1e-10)
        np.testing.assert_allclose(got[f"e{i:05d}"].coef[0], want, atol=1e-4)


@pytest.mark.parametrize("task", list(WORKLOADS))
def test_sklearn_loop(benchmark, tables, task):
    _, Zs, ys = tables[task]
    describe(
        benchmark, _group(task), BASELINE, len(Zs), unit="models", baseline=True,
    )  # fmt: skip
    benchmark.pedantic(
        lambda: [_sklearn_fit(task, Z, y) for Z, y in zip(Zs, ys, strict=True)],
        rounds=1,
        iterations=1,
    )


@pytest.mark.parametrize("task", list(WORKLOADS))
def test_sklearn_joblib(benchmark, tables, task):
    from joblib import Parallel, delayed

    _, Zs, ys = tables[task]
    cores = len(os.sched_getaffinity(0))
    describe(
        benchmark, _group(task), f"scikit-learn, joblib over {cores} cores", len(Zs),
        unit="models",
    )  # fmt: skip
    pool = Parallel(n_jobs=cores, batch_size=64)
    benchmark.pedantic(
        lambda: pool(delayed(_sklearn_fit)(task, Z, y) for Z, y in zip(Zs, ys, strict=True)),
        rounds=1,
        iterations=1,
    )


WHOLE = 1_000  # entities of the regressor's table in the whole-command rows
WHOLE_GROUP = f"train, whole: regressor, {WHOLE:,} entities x 500 rows x 10 features, CSV to store"


def test_whole_command(benchmark, tables, tmp_path_factory):
    from mmhost.cli import main

    table, _, _ = tables["regressor"]
    n = WHOLE * WORKLOADS["regressor"][1]
    folder = tmp_path_factory.mktemp("train")
    frame = pd.DataFrame(
        {"entity": np.asarray(table.entity[:n], dtype=object), "label": table.label[:n]}
        | {k: v[:n] for k, v in table.features.items()}
    )
    frame.to_csv(folder / "table.csv", index=False)
    argv = ["train", "linear-learner", "--data", str(folder / "table.csv"), "--entity-column",
            "entity", "--label-column", "label", "--wd", str(WD), "--holdout-fraction", "0",
            "--no-progress"]  # fmt: skip
    runs = iter(range(100))
    group = f"train, whole: regressor, {WHOLE:,} entities x 500 rows x 10 features, CSV to store"
    describe(
        benchmark, group, "mmhost train (read CSV, fit, write artifacts)", WHOLE, unit="models"
    )
    benchmark.pedantic(
        lambda: main([*argv, "--out", str(folder / f"out{next(runs)}")]), rounds=3, iterations=1
    )
    assert len(list((folder / "out0").glob("*/*.tar.gz"))) == WHOLE


def test_whole_sklearn_loop(benchmark, tables):
    _, Zs, ys = tables["regressor"]
    group = f"train, whole: regressor, {WHOLE:,} entities x 500 rows x 10 features, CSV to store"
    describe(
        benchmark, group, "scikit-learn fits alone, a loop", WHOLE, unit="models", baseline=True
    )
    benchmark.pedantic(
        lambda: [_sklearn_fit("regressor", Zs[i], ys[i]) for i in range(WHOLE)],
        rounds=3,
        iterations=1,
    )
