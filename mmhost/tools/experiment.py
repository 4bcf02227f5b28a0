"""``mmhost experiment cache``: the cloud blog's multi-model-endpoint cache experiment, on one
machine, with the device tier in the role of the endpoint instance's memory.

1. Train one house-price pipeline (scaling + one-hot + LinearRegression on 200 Chicago houses),
   convert it, and copy its artifact N times into a fresh folder store as ``model000.tar.gz``,
   ``model001.tar.gz``, ... (identical copies: each is a separate model to the cache).
2. Start an in-process ``Host`` whose device tier holds about ``budget_fraction`` of the N
   models: one model's device bytes (``stats()["tiers"]["device"]["bytes"]`` after loading one)
   times ``round(budget_fraction * N)``, unless ``device_budget`` names the bytes.
   ``host_budget=0``: on the cloud endpoint a model evicted from memory is gone from it, and
   its next invocation loads it again. mmhost would otherwise keep an evicted (demoted) model's
   parameters in host RAM and bring it back as a cheap host-tier hit; with no host tier, an
   evicted model leaves memory and its next invocation is a miss that loads it from the store.
3. Invoke (one row each) models 0..N/2-1 (phase 1), the same again (phase 2), then 0..N-1
   (phase 3), sampling ``host.stats()`` after every invocation. An invocation is a hit when
   ``stats["hits"]["device"]`` went up during it.
4. Write ``cache_experiment.csv`` (one row per invocation, the columns of ``COLUMNS``) and the
   two charts of ``mmhost.tools.plot`` into ``out``, and print a summary.

With the defaults (0.6 of N fits): phase 1 misses every time and fills the tier to N/2 models;
phase 2 hits every time; phase 3 hits its first N/2 invocations, then loads the rest, and
LoadedModelCount levels off at the budget's model count while LRU evicts the oldest.

Needs ``pip install 'mmhost[demo,plots]'`` (scikit-learn and tqdm; matplotlib).
"""

from __future__ import annotations

import csv
import shutil
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmhost.host import Host
from mmhost.tools.plot import WINDOW, render, require_matplotlib
from mmhost.types import HostStats

POLICIES = ["lru"]  # the cache's only eviction policy (mmhost/cache/policy.py)
CSV_NAME = "cache_experiment.csv"
COLUMNS = [
    "invocation",  # 1-based
    "phase",  # 1, 2 or 3
    "model",  # index into model000.tar.gz, model001.tar.gz, ...
    "hit",  # 1 when the model was already in the device tier
    "LoadedModelCount",  # models in the device tier after the invocation
    "MemoryUtilization",  # device-tier bytes / its budget, 0..1
    f"ModelCacheHit_last{WINDOW}",  # hit rate over the last WINDOW invocations (any phase)
    "ModelCacheHit_phase",  # hit rate of this phase's invocations so far
    "latency_ms",  # host.predict, as the caller sees it (stats sampling excluded)
]
TRAIN_HOUSES = 200  # enough for a sensible model; training stays a few milliseconds


@dataclass
class CacheExperiment:
    models: int = 200
    """N, the models in the store. Phases invoke N/2, N/2 and N of them."""
    budget_fraction: float = 0.6
    """Share of the N models the device tier holds. Above 0.5 so phase 2 fits; below 1 so
    phase 3 evicts."""
    device_budget: int | None = None
    """Bytes of the device tier; when set it wins over budget_fraction."""
    policy: str = "lru"
    """Eviction policy of the device tier; only 'lru' exists."""
    device: str = "cpu"
    """'cpu', 'cuda' or 'auto'; cpu by default so runs repeat anywhere."""
    out: str = "experiment-out"
    """Folder the CSV and the charts are written to."""
    seed: int = 0
    """Seeds the training houses and the rows invoked."""
    progress: bool = True
    """Show a progress bar (tqdm, on stderr)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(
                f"policy {self.policy!r} is not available: the cache evicts the least recently "
                f"used model first, so the only policy is {', '.join(POLICIES)}"
            )
        if self.models < 2:
            raise ValueError(f"needs at least 2 models (N/2 per phase), not {self.models}")
        if not self.budget_fraction > 0:
            raise ValueError(f"budget fraction must be above 0, not {self.budget_fraction}")
        if self.device_budget is not None and self.device_budget <= 0:
            raise ValueError(f"device budget must be a positive byte count: {self.device_budget}")


def schedule(n: int) -> list[tuple[int, int]]:
    """(phase, model index) of every invocation, in order: 0..n/2-1 twice, then 0..n-1."""
    half = n // 2
    return (
        [(1, m) for m in range(half)] + [(2, m) for m in range(half)] + [(3, m) for m in range(n)]
    )


def key(model: int) -> str:
    return f"model{model:03d}.tar.gz"


def run(cfg: CacheExperiment) -> dict[str, Any]:
    """Run the experiment; the summary it prints, as a dict."""
    require_matplotlib()  # before the run, not after it
    from tqdm import tqdm

    t_start = time.perf_counter()
    out = Path(cfg.out)
    steps = schedule(cfg.models)
    with tempfile.TemporaryDirectory(prefix="mmhost-experiment-") as tmp:
        store = Path(tmp) / "store"
        rows = _make_store(store, cfg.models, cfg.seed, len(steps))  # (invocations, 8)
        one = _model_bytes(store, cfg.device)
        budget = cfg.device_budget
        if budget is None:
            budget = one * max(1, round(cfg.budget_fraction * cfg.models))
        if budget < one:
            raise ValueError(f"a device budget of {budget} B holds no model: one takes {one} B")
        with Host(store=str(store), device=cfg.device, device_budget=budget, host_budget=0) as h:
            records = list(
                tqdm(
                    _invoke(h, steps, rows),
                    total=len(steps),
                    desc="invocations",
                    unit="inv",
                    disable=not cfg.progress,
                )
            )
            stats = h.stats()
            device = str(h.device)
    csv_path = write_csv(records, out / CSV_NAME)
    capacity = budget // one
    subtitle = (
        f"{cfg.models} models of {one} B, device budget {budget:,} B ({capacity} models), "
        f"{cfg.policy.upper()}, {device}"
    )
    charts = render(_columns(records), out, subtitle)
    summary = _summary(records, stats, one, budget, capacity, [csv_path, *charts])
    summary["seconds"] = time.perf_counter() - t_start
    _print(summary, subtitle)
    return summary


def _make_store(root: Path, n: int, seed: int, invocations: int) -> np.ndarray:
    """Fill ``root`` with N copies of one fitted pipeline; the rows to invoke, one per
    invocation, from the same city."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from mmhost.convert import from_sklearn
    from mmhost.tools.houses import COLUMNS as HOUSE_COLUMNS
    from mmhost.tools.houses import city_houses

    X, y = city_houses("Chicago_IL", TRAIN_HOUSES, seed=seed)  # (200, 8), (200,)
    pre = ColumnTransformer(
        [("num", StandardScaler(), list(range(6))), ("cat", OneHotEncoder(), [6, 7])]
    )
    pipeline = Pipeline([("pre", pre), ("lr", LinearRegression())]).fit(X, y)
    root.mkdir(parents=True)
    first = root / key(0)
    from_sklearn(pipeline, HOUSE_COLUMNS).save(first)
    for m in range(1, n):
        shutil.copyfile(first, root / key(m))
    return city_houses("Chicago_IL", invocations, seed=seed + 1)[0]


def _model_bytes(store: Path, device: str) -> int:
    """Device-tier bytes of one model (they are all copies of one), on a throwaway host."""
    with Host(store=str(store), device=device, host_budget=0) as h:
        h.load(key(0))
        one = int(h.stats()["tiers"]["device"]["bytes"])
        h.unload(key(0))
    return one


def _invoke(h: Host, steps: list[tuple[int, int]], rows: np.ndarray) -> Iterator[dict[str, Any]]:
    """Invoke each step's model with one row; yield its CSV record."""
    hits_before = h.stats()["hits"]["device"]
    recent: deque[int] = deque(maxlen=WINDOW)
    phase_hits = phase_count = 0
    for i, (phase, model) in enumerate(steps):
        if i and phase != steps[i - 1][0]:
            phase_hits = phase_count = 0
        t0 = time.perf_counter()
        h.predict(key(model), rows[i : i + 1])  # (1, 8) -> (1,)
        ms = (time.perf_counter() - t0) * 1e3
        s = h.stats()
        hit = int(s["hits"]["device"] > hits_before)
        hits_before = s["hits"]["device"]
        recent.append(hit)
        phase_hits += hit
        phase_count += 1
        device = s["tiers"]["device"]
        yield {
            "invocation": i + 1,
            "phase": phase,
            "model": model,
            "hit": hit,
            "LoadedModelCount": device["models"],
            "MemoryUtilization": device["bytes"] / device["budget"],
            f"ModelCacheHit_last{WINDOW}": sum(recent) / len(recent),
            "ModelCacheHit_phase": phase_hits / phase_count,
            "latency_ms": ms,
        }


def write_csv(records: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in records:
            w.writerow({c: f"{v:.6g}" if isinstance(v, float) else v for c, v in r.items()})
    return path


def _columns(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    return {c: [float(r[c]) for r in records] for c in COLUMNS}


def _summary(
    records: list[dict[str, Any]],
    stats: HostStats,
    one: int,
    budget: int,
    capacity: int,
    paths: list[Path],
) -> dict[str, Any]:
    phases = sorted({r["phase"] for r in records})
    latency = {
        kind: [r["latency_ms"] for r in records if r["hit"] == flag]
        for kind, flag in (("hit", 1), ("miss", 0))
    }
    return {
        "model_bytes": one,
        "device_budget": budget,
        "capacity": capacity,
        "plateau": max(r["LoadedModelCount"] for r in records),
        "final_models": records[-1]["LoadedModelCount"],
        "max_utilization": max(r["MemoryUtilization"] for r in records),
        "invocations": {p: sum(r["phase"] == p for r in records) for p in phases},
        "hit_rate": {
            p: statistics.mean(r["hit"] for r in records if r["phase"] == p) for p in phases
        },
        "evictions": stats["evictions"]["device"],
        "loads": stats["loads"],
        "median_ms": {k: statistics.median(v) if v else None for k, v in latency.items()},
        "paths": paths,
    }


def _print(s: dict[str, Any], subtitle: str) -> None:
    print(f"cache experiment: {subtitle}")
    for p, rate in s["hit_rate"].items():
        print(f"  phase {p}: {s['invocations'][p]:4d} invocations, hit rate {rate:.2f}")
    print(
        f"  LoadedModelCount levels off at {s['plateau']} (the budget holds {s['capacity']}); "
        f"MemoryUtilization peaks at {s['max_utilization']:.2f}"
    )
    print(f"  {s['loads']} loads from the store, {s['evictions']} evictions from the device tier")
    med = {k: "-" if v is None else f"{v:.2f} ms" for k, v in s["median_ms"].items()}
    print(f"  median latency: hit {med['hit']}, miss {med['miss']}")
    print(f"  wrote {', '.join(str(p) for p in s['paths'])} in {s['seconds']:.1f} s")
