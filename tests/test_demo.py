"""The walkthrough behind ``make demo`` / ``mmhost demo`` runs end to end and every price it
serves is scikit-learn's. No timing is asserted (CI machines vary)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import RTOL_PRICE

import mmhost.tools.demo
from mmhost.tools.houses import CITY_PRICES, city_houses

CITIES = ["NewYork_NY", "LosAngeles_CA", "Chicago_IL", "Houston_TX"]


def test_city_houses_are_seeded_and_in_range():
    X, y = city_houses("Chicago_IL", 1000, seed=3)
    X2, y2 = city_houses("Chicago_IL", 1000, seed=3)
    assert X.shape == (1000, 8) and X.tolist() == X2.tolist()
    np.testing.assert_array_equal(y, y2)
    year, sqft, beds, baths, lot, garage = (X[:, j].astype(float) for j in range(6))
    assert year.max() <= 2019 and sqft.min() >= 500 and lot.min() >= 0.05
    assert set(beds) <= set(range(2, 7)) and set(garage) <= {0, 1, 2, 3}
    assert set(baths) <= {1.0, 1.5, 2.0, 2.5, 3.0}
    assert set(X[:, 6]) | set(X[:, 7]) <= {"y", "n"}
    assert CITY_PRICES["NewYork_NY"]["sqft"] > 3 * CITY_PRICES["Houston_TX"]["sqft"]


def test_demo_serves_scikit_learns_prices(tmp_path, capsys):
    summary = mmhost.tools.demo.main(tmp_path / "demo")
    out = capsys.readouterr().out

    served = summary["served"]
    assert len(served) >= 11
    got = np.array([s[2] for s in served])
    want = np.array([s[3] for s in served])
    np.testing.assert_allclose(got, want, rtol=RTOL_PRICE)
    models = {s[0] for s in served}
    # Houston too, deployed while serving, and Austin's XGBoost model in SageMaker's layout
    assert models == {f"{c}/{c}.tar.gz" for c in CITIES} | {"Austin_TX/model.tar.gz"}
    assert set(summary["cold_ms"]) == models
    assert "Using model " in out and "took" in out
    assert "all match scikit-learn/XGBoost" in out
    assert "unknown category 'maybe'" in out and "was not found" in out


def test_mmhost_demo_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mmhost.cli", "demo", "--store", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for city in CITIES:
        assert city in proc.stdout
    assert (tmp_path / "d" / "models" / "Houston_TX" / "Houston_TX.tar.gz").is_file()
    assert (tmp_path / "d" / "models" / "Austin_TX" / "model.tar.gz").is_file()
