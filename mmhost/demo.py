"""The walkthrough behind ``make demo``: per-city house-price models in a local folder store.

1. Train a scikit-learn pipeline per city (scaler + one-hot + linear regression) and convert
   each to an mmhost artifact under ./demo-store/<city>/<city>.tar.gz.
2. Start a Host on that folder (CPU, or the GPU when there is one) and score raw rows,
   strings for the categorical columns included; compare with scikit-learn.
3. Send requests for many cities at once: they share one fused kernel call.
4. Shrink the device budget: models are demoted to host RAM and promoted back on use.
5. Bad input gets a clear error and the host keeps serving.
6. An inference pipeline: one shared preprocessor in front of bare per-city models.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmhost import Host, MmhostError
from mmhost.convert import from_sklearn
from mmhost.families.arena import size_class, slot_bytes
from mmhost.houses import COLUMNS, houses

CITIES = [
    "Chicago_IL",
    "Houston_TX",
    "NewYork_NY",
    "LosAngeles_CA",
    "Phoenix_AZ",
    "Seattle_WA",
    "Boston_MA",
    "Denver_CO",
]


def _pipeline(seed: int, factor: float) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = houses(400, seed, factor)
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), list(range(6))),
            ("cat", OneHotEncoder(handle_unknown="ignore"), [6, 7]),
        ]
    )
    return Pipeline([("pre", pre), ("lr", LinearRegression())]).fit(X, y)


def main(root: str = "demo-store") -> None:
    store = Path(root)
    shutil.rmtree(store, ignore_errors=True)
    print(f"1. training {len(CITIES)} per-city pipelines and writing artifacts to {store}/")
    pipes = {}
    for i, city in enumerate(CITIES):
        pipes[city] = _pipeline(i, 1.0 + i / 4)
        from_sklearn(pipes[city], COLUMNS).save(store / city / f"{city}.tar.gz")

    with Host(store=str(store)) as host:
        print(f"\n2. Host on {store}/ (device: {host.device})")
        row = "1992,1531,6,3.0,0.68,1,y,n".split(",")
        for city in CITIES[:3]:
            name = f"{city}/{city}.tar.gz"
            got = host.predict(name, [row])[0]
            want = pipes[city].predict(np.array([row], dtype=object))[0]
            print(f"   {name:32s} mmhost {got:12,.2f}   scikit-learn {want:12,.2f}")

        print("\n3. one request per city, all at once (the first burst loads the models)")
        X, _ = houses(1, seed=123)
        burst = [(f"{c}/{c}.tar.gz", X.tolist()) for c in CITIES]
        host.predict_many(burst)
        before = host.stats()["batches"]["calls"]
        t0 = time.perf_counter()
        outs = host.predict_many(burst)
        ms = (time.perf_counter() - t0) * 1e3
        calls = host.stats()["batches"]["calls"] - before
        print(
            f"   warm: {len(CITIES)} requests for {len(CITIES)} different models -> "
            f"{calls} fused kernel call, {ms:.2f} ms"
        )
        print(
            "   "
            + ", ".join(
                f"{c.split('_')[0]} {float(o[0]):,.0f}"  # type: ignore[index]
                for c, o in zip(CITIES, outs, strict=True)
            )
        )

    slot = slot_bytes(1, size_class(10))
    with Host(store=str(store), device_budget=3 * slot) as host:
        print(f"\n4. device budget of 3 models ({3 * slot} bytes): LRU demotes to host RAM")
        for city in CITIES[:5]:
            host.load(f"{city}/{city}.tar.gz")
        tiers = host.list_models()
        print("   " + ", ".join(f"{n.split('/')[0]}: {t}" for n, t in sorted(tiers.items())))
        host.load(f"{CITIES[0]}/{CITIES[0]}.tar.gz")
        s = host.stats()
        print(
            f"   Chicago promoted back from host: host hits {s['hits']['host']}, "
            f"device bytes {s['tiers']['device']['bytes']} of {s['tiers']['device']['budget']}"
        )

        print("\n5. bad input: a clear error, and the host keeps serving")
        for name, rows in [
            ("Chicago_IL/Chicago_IL.tar.gz", [[1992, "big", 6, 3, 0.7, 1, "y", "n"]]),
            ("../etc/passwd", [row]),
            ("Paris_FR/Paris_FR.tar.gz", [row]),
        ]:
            try:
                host.predict(name, rows)
            except MmhostError as exc:
                print(f"   {exc.status} {exc.code}: {exc.message}")
        print(f"   still serving: {host.predict('Chicago_IL/Chicago_IL.tar.gz', [row])[0]:,.2f}")

    print("\n6. inference pipeline: one shared preprocessor, bare per-city regressors")
    from sklearn.linear_model import LinearRegression

    pre = pipes[CITIES[0]].named_steps["pre"]
    from_sklearn(pre, COLUMNS).save(store / "shared" / "preprocessor.tar.gz")
    for i, city in enumerate(CITIES):
        Xc, yc = houses(400, i, 1.0 + i / 4)
        reg = LinearRegression().fit(pre.transform(Xc), yc)
        from_sklearn(reg).save(store / "bare" / f"{city}.tar.gz")
    with Host(
        store=str(store / "bare"), preprocessor=str(store / "shared" / "preprocessor.tar.gz")
    ) as host:
        got = host.predict("Denver_CO.tar.gz", [row])[0]
        want = reg.predict(pre.transform(np.array([row], dtype=object)))[0]
        print(
            f"   Denver_CO.tar.gz behind the shared preprocessor: mmhost {got:,.2f}, "
            f"scikit-learn {want:,.2f}\n   (scaling folded into the weights, one-hot as "
            "column offsets: the same cost as a bare model)"
        )
    print("\ndone.")


if __name__ == "__main__":
    main(*sys.argv[1:])
