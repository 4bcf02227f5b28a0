from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
# the SageMaker SDK v2 (the RecordIO-protobuf client of the tests) warns of v3 on import
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mmhost import Host
from mmhost.convert import from_sklearn
from mmhost.tools.houses import COLUMNS, houses

NUM = list(range(6))
CAT = [6, 7]

# float32 end to end: a composed house-price model sums ~10 products of float32 weights and
# inputs up to ~5e3, so relative error is a few ulps of the ~1e5-1e6 result -> rtol 1e-5.
RTOL_PRICE = 1e-5
# probabilities are in [0, 1]; logits are float32 sums of ~10 terms -> atol 1e-5.
ATOL_PROBA = 1e-5


def house_pipeline(seed: int = 0, factor: float = 1.0, n: int = 300) -> Pipeline:
    X, y = houses(n, seed, factor)
    pre = ColumnTransformer(
        [("num", StandardScaler(), NUM), ("cat", OneHotEncoder(handle_unknown="error"), CAT)]
    )
    return Pipeline([("pre", pre), ("lr", LinearRegression())]).fit(X, y)


def house_classifier(seed: int = 0, n: int = 300) -> Pipeline:
    X, y = houses(n, seed)
    label = (y > np.median(y)).astype(int)
    pre = ColumnTransformer([("num", StandardScaler(), NUM), ("cat", OneHotEncoder(), CAT)])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))]).fit(X, label)


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """``mmhost serve`` (run in-process by CLI tests) points the root logger at the stderr of
    its moment, which pytest closes after the test: give later tests theirs back."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def city_store(store: Path) -> Path:
    """Three per-city house-price pipelines under the store, as <city>/<city>.tar.gz."""
    for i, city in enumerate(["Chicago_IL", "Houston_TX", "NewYork_NY"]):
        from_sklearn(house_pipeline(i, 1.0 + i), COLUMNS).save(store / city / f"{city}.tar.gz")
    return store


@pytest.fixture
def host_factory() -> Iterator:
    hosts: list[Host] = []

    def make(**kwargs) -> Host:
        h = Host(**kwargs)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.close()


@pytest.fixture
def serve(host_factory) -> Iterator:
    """Start a real uvicorn server (127.0.0.1, a free port) over a new Host; ``.url`` and
    ``.host`` on the result. Stopped before its host is closed."""
    from mmhost.api import ServerThread

    servers: list[ServerThread] = []

    def start(**kwargs) -> ServerThread:
        kwargs.setdefault("log_level", "warning")
        h = host_factory(**kwargs)
        s = ServerThread(h, port=0).start()
        s.host = h  # type: ignore[attr-defined]
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def runtime_client(
    url: str,
    retries: int = 0,
    key_id: str = "AKIDEXAMPLE",
    secret: str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    region: str = "us-east-1",
):
    """boto3's sagemaker-runtime client pointed at ``url`` (SigV4-signed with test keys)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": retries + 1}),
    )
