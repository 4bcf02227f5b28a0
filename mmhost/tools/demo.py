"""The walkthrough behind ``make demo`` / ``mmhost demo``: a multi-model endpoint on the
embedded default (a local folder store, CPU or GPU).

1. Generate 1,000 synthetic houses for each of four cities (``mmhost.tools.houses.city_houses``:
   a linear price whose coefficients differ by city; seeded, so runs repeat).
2. Fit one shared preprocessor (scaling + one-hot) and one linear regressor per city on its
   output, and convert them to mmhost artifacts.
3. Serve them as an inference pipeline (the preprocessor in front of every model) over HTTP on
   127.0.0.1, with every city but Houston deployed as ``{City}/{City}.tar.gz``.
4. Invoke random cities through boto3's ``sagemaker-runtime`` client; show each model's first
   (cold: loaded from the store) and later (warm) latency.
5. Deploy Houston while the server runs (no restart) and invoke it; then an XGBoost model for
   Austin in SageMaker's layout (``model.tar.gz`` holding ``xgboost-model``), trained on the
   preprocessor's output, served by the trees family behind the same preprocessor (skipped
   when xgboost is not installed; ``make demo`` installs it).
6. A bad request gets a clear error and the server keeps serving.
7. A summary table; every price served must equal scikit-learn's (XGBoost's for Austin).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmhost import Host
from mmhost.api import ServerThread
from mmhost.convert import from_sklearn, save_xgboost
from mmhost.tools.houses import COLUMNS, city_houses

CITIES = ["NewYork_NY", "LosAngeles_CA", "Chicago_IL", "Houston_TX"]
LATE = "Houston_TX"  # deployed while the server runs
TREES = "Austin_TX"  # an XGBoost model, deployed while the server runs
TREES_KEY = f"{TREES}/model.tar.gz"
HOUSES = 1_000  # per city
INVOCATIONS = 10
RTOL = 1e-5  # float32 end to end, see tests/conftest.py


def _key(city: str) -> str:
    return f"{city}/{city}.tar.gz"


def _client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDDEMO",  # the local server takes any signed request
        aws_secret_access_key="mmhost-demo-secret",
        config=Config(retries={"total_max_attempts": 1}),
    )


def _warm_up(client: Any) -> None:
    """One request that the server refuses before touching any model: boto3's first call
    (endpoint rules, connection) then does not count in the first model's cold latency."""
    from botocore.exceptions import ClientError

    try:
        client.invoke_endpoint(EndpointName="warm-up", TargetModel="-", Body=b"")
    except ClientError:
        pass


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _fit(root: Path) -> tuple[Any, dict[str, Any]]:
    """Fit and convert the shared preprocessor and the per-city regressors; save all but LATE."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from tqdm import tqdm

    data = {city: city_houses(city, HOUSES, seed=i) for i, city in enumerate(CITIES)}
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), list(range(6))),
            ("cat", OneHotEncoder(handle_unknown="error"), [6, 7]),
        ]
    ).fit(np.concatenate([X for X, _ in data.values()]))
    from_sklearn(pre, COLUMNS).save(root / "preprocessor.tar.gz")
    regs = {}
    for city in tqdm(CITIES, desc="fit + convert", unit="city"):
        X, y = data[city]
        regs[city] = LinearRegression().fit(pre.transform(X), y)
        if city != LATE:
            from_sklearn(regs[city]).save(root / "models" / _key(city))
    return pre, regs


def _fit_trees(pre: Any) -> Any:
    """An XGBoost regressor on the shared preprocessor's output, for Austin (priced like
    Houston: the synthetic data has no Austin of its own); None without xgboost."""
    try:
        import xgboost
    except ImportError:
        print("   (xgboost is not installed: the XGBoost step is skipped)")
        return None
    X, y = city_houses(LATE, HOUSES, seed=len(CITIES))
    params = {"max_depth": 6, "eta": 0.3, "nthread": 1, "seed": 0}
    return xgboost.train(params, xgboost.DMatrix(pre.transform(X), y), 50)


def main(root: str | Path = "demo-store") -> dict[str, Any]:
    from botocore.exceptions import ClientError

    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    t_start = time.perf_counter()
    print(f"1-2. {HOUSES:,} houses per city for {', '.join(CITIES)}; one shared preprocessor")
    print(f"     and one linear regressor per city, written to {root}/")
    pre, regs = _fit(root)

    served: list[tuple[str, list[Any], float, float]] = []
    latency: dict[str, list[float]] = {}

    def invoke(city: str, row: list[Any], key: str | None = None) -> None:
        key = key or _key(city)
        body = ",".join(str(v) for v in row) + "\n"
        print(f"Using model {key} to predict price of this house: {row}")
        t0 = time.perf_counter()
        reply = client.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel=key,
            ContentType="text/csv",
            Accept="application/json",
            Body=body,
        )
        ms = (time.perf_counter() - t0) * 1e3
        price = float(json.loads(reply["Body"].read())["predictions"][0]["score"])
        print(f"${price:,.2f}, took {ms:.0f} ms")
        features = pre.transform(np.array([row], dtype=object))
        if key == TREES_KEY:
            want = float(trees.inplace_predict(features)[0])
        else:
            want = float(regs[city].predict(features)[0])
        served.append((key, row, price, want))
        latency.setdefault(key, []).append(ms)

    trees = _fit_trees(pre)

    host = Host(
        store=str(root / "models"),
        preprocessor=str(root / "preprocessor.tar.gz"),
        bind_address="127.0.0.1",
        log_level="warning",
    )
    with host, ServerThread(host, port=0) as server:
        client = _client(server.url)
        _warm_up(client)
        deployed = sorted(host.store.list())
        print(f"\n3. serving {deployed} behind the preprocessor")
        print(f"   on {server.url} (device: {host.device}), endpoint 'mmhost'\n")
        print(f"4. {INVOCATIONS} invocations against random cities (boto3 sagemaker-runtime)")
        rng = random.Random(7)
        for i in range(INVOCATIONS):
            city = rng.choice([c for c in CITIES if c != LATE])
            invoke(city, city_houses(city, 1, seed=100 + i)[0][0].tolist())
        print("\n   first call (cold: loads the model from the store) vs later calls (warm):")
        for key, ms in sorted(latency.items()):
            warm = f"{statistics.median(ms[1:]):.1f} ms median of {len(ms) - 1}" if ms[1:] else "-"
            print(f"   {key:36s} cold {ms[0]:6.1f} ms   warm {warm}")

        print(f"\n5. deploying {_key(LATE)} into the running server's store (no restart)")
        from_sklearn(regs[LATE]).save(root / "models" / _key(LATE))
        for i in range(3):
            invoke(LATE, city_houses(LATE, 1, seed=200 + i)[0][0].tolist())
        if trees is not None:
            print(f"\n   and an XGBoost model, {TREES_KEY} (SageMaker's layout: xgboost-model)")
            save_xgboost(trees, root / "models" / TREES_KEY)
            for i in range(3):
                invoke(TREES, city_houses(LATE, 1, seed=300 + i)[0][0].tolist(), TREES_KEY)

        print("\n6. a bad request gets a clear error, and the server keeps serving")
        for target, body in [
            (_key("Chicago_IL"), "1993,2728,6,3.0,0.7,1,maybe,y\n"),
            (_key("Paris_FR"), "1993,2728,6,3.0,0.7,1,y,y\n"),
        ]:
            try:
                client.invoke_endpoint(
                    EndpointName="mmhost", TargetModel=target, ContentType="text/csv", Body=body
                )
            except ClientError as exc:
                err = exc.response["Error"]
                print(f"   {target}: {err['Code']}: {err['Message']}")
        invoke("Chicago_IL", [1993, 2728, 6, 3.0, 0.7, 1, "y", "y"])

    print("\n7. summary")
    print(f"   {'model':36s} {'calls':>5s} {'cold ms':>8s} {'warm ms':>8s} "
          f"{'last price':>14s} {'reference':>14s}")  # fmt: skip
    for key, ms in sorted(latency.items()):
        last = [s for s in served if s[0] == key][-1]
        warm = f"{statistics.median(ms[1:]):8.1f}" if ms[1:] else f"{'-':>8s}"
        print(
            f"   {key:36s} {len(ms):5d} {ms[0]:8.1f} {warm} "
            f"{_money(last[2]):>14s} {_money(last[3]):>14s}"
        )
    matched = all(np.isclose(got, want, rtol=RTOL, atol=0) for _, _, got, want in served)
    print(
        f"\n{len(served)} prices served; "
        + ("all match scikit-learn/XGBoost" if matched else "SOME DIFFER FROM THE REFERENCE")
        + f" (rtol {RTOL:g}). {time.perf_counter() - t_start:.1f} s in all."
    )
    if not matched:
        raise SystemExit(1)
    return {
        "served": served,
        "cold_ms": {k: ms[0] for k, ms in latency.items()},
        "warm_ms": {k: statistics.median(ms[1:]) for k, ms in latency.items() if ms[1:]},
        "device": str(host.device),
    }


if __name__ == "__main__":
    main(*sys.argv[1:])
