"""The benchmarks' workload: 1,000 per-city house-price pipelines and the batches they score,
plus the labels ``benchmarks/report.py`` reads.

Labels: each benchmark sets ``benchmark.group``, and ``describe`` puts its provider, unit and
count of units per round (rows, loads, models) in ``benchmark.extra_info``. In a group, every
provider marked ``baseline`` gets a ratio column; ``part_of`` names the provider a measurement
is a part of (the report derives the rest); ``targets`` are checked by the report.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mmhost.artifacts import read_artifact
from mmhost.convert import from_sklearn
from mmhost.families.arena import LinearSlab, size_class
from mmhost.families.linear import LinearFamily, LinearModel, compile_linear
from mmhost.tools.houses import COLUMNS, houses

N_MODELS = 1000
FIT_ROWS = 50  # rows per city: fitting 1,000 pipelines on 50 rows takes ~6 s on one core
# float32 composed weights against sklearn's float64: a price of ~1e5-1e6 sums ~10 products of
# float32 weights and inputs up to ~5e3, a few ulps of the result (the bound tests/ use).
RTOL_PRICE = 1e-5

# Provider names, shared between modules so the report matches a baseline across groups.
P_PIPELINE = "sklearn pipeline loop (raw rows)"
P_BARE = "sklearn bare-estimator loop (encoded rows)"
P_TORCH_LOOP = "torch per-model loop (x @ w.T + b)"
P_REFERENCE = "fused reference op (plain torch)"
P_CPP = "fused C++ op (mmhost._C)"


def describe(
    benchmark: Any, group: str, provider: str, count: int, unit: str = "rows", **extra: Any
) -> None:
    """Label a benchmark for the report: ``count`` units (rows, loads, models) per round."""
    benchmark.group = group
    benchmark.extra_info.update(provider=provider, unit=unit, count=count, **extra)


def serve_process(store: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``mmhost serve`` over ``store`` in a subprocess on a free loopback port, once it
    answers /ping: (the process, its URL). The caller terminates it."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "mmhost.cli", "serve", "--store", str(store), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--log-level", "error", *flags], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/ping", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def house_pipeline(seed: int, factor: float, n: int = FIT_ROWS) -> Pipeline:
    """The houses model of tests/conftest.py: scaler on 6 numbers, one-hot on 2 y/n columns,
    LinearRegression. Encoded D = 6 + 2 + 2 = 10, padded to the 16-wide slab."""
    X, y = houses(n, seed, factor)
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), list(range(6))),
            ("cat", OneHotEncoder(handle_unknown="error"), [6, 7]),
        ]
    )
    return Pipeline([("pre", pre), ("lr", LinearRegression())]).fit(X, y)


@dataclass
class Fleet:
    store: Path  # a folder store: city0000.tar.gz ... city0999.tar.gz
    names: list[str]
    pipelines: list[Pipeline]
    models: list[LinearModel]  # composed from the saved artifacts, as a Host loads them


def build_fleet(store: Path, n: int = N_MODELS) -> Fleet:
    names, pipes, models = [], [], []
    for i in range(n):
        pipe = house_pipeline(seed=i, factor=0.5 + i / n)
        name = f"city{i:04d}.tar.gz"
        from_sklearn(pipe, COLUMNS).save(store / name)
        names.append(name)
        pipes.append(pipe)
        models.append(compile_linear(read_artifact(store / name)))
    return Fleet(store, names, pipes, models)


@dataclass
class Batch:
    """``rows_per_model`` rows for each of the fleet's models, in every form a provider takes."""

    rows_per_model: int
    raw: list[np.ndarray]  # per model: (r, 8) object array, numbers and 'y'/'n' strings
    encoded64: list[np.ndarray]  # per model: (r, 10) float64 from the pipeline's transformer
    slab: LinearSlab  # every model in one (K=1, D=16) slab, placed as the host places them
    slots: list[int]  # per model: its slot in the slab
    x: torch.Tensor  # (N, 16) float32, rows grouped by model, N = models * r
    row_slots: torch.Tensor  # (N,) int64
    want: np.ndarray  # (N,) the pipelines' own predictions (float64)

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])


def make_batch(fleet: Fleet, rows_per_model: int) -> Batch:
    family = LinearFamily(torch.device("cpu"))
    raw, enc64, slots, xs, want = [], [], [], [], []
    for i, (pipe, model) in enumerate(zip(fleet.pipelines, fleet.models, strict=True)):
        X, _ = houses(rows_per_model, seed=100_000 + i)
        raw.append(X)
        enc64.append(pipe.named_steps["pre"].transform(X))
        _, slot = family.place(model)
        slots.append(slot)
        xs.append(model.encoder.encode(X, size_class(model.encoder.width)))  # (r, 16)
        want.append(pipe.predict(X))
    (slab,) = family.slabs.values()  # same K and D: the whole fleet shares one slab
    row_slots = torch.tensor(slots, dtype=torch.int64).repeat_interleave(rows_per_model)
    x = torch.from_numpy(np.concatenate(xs))
    return Batch(rows_per_model, raw, enc64, slab, slots, x, row_slots, np.concatenate(want))
