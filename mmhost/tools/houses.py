"""Synthetic per-city house-price data, the running example of the docs, tests and benchmarks.

Eight raw columns, as in the cloud service's multi-model walkthrough: year built, square feet,
bedrooms, bathrooms, lot size, garages, deck (y/n), front porch (y/n).
"""

from __future__ import annotations

import numpy as np

COLUMNS = [
    "year_built",
    "square_feet",
    "num_bedrooms",
    "num_bathrooms",
    "lot_size",
    "garage_spaces",
    "deck",
    "front_porch",
]
NUMERIC = COLUMNS[:6]
CATEGORICAL = COLUMNS[6:]


def houses(n: int, seed: int = 0, city_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(X, y): X is an (n, 8) object array (numbers, and 'y'/'n' strings), y prices in dollars."""
    rng = np.random.default_rng(seed)
    year = rng.integers(1950, 2022, n)
    sqft = rng.integers(1000, 5000, n)
    beds = rng.integers(1, 7, n)
    baths = rng.choice([1.0, 1.5, 2.0, 2.5, 3.0, 3.5], n)
    lot = np.round(rng.uniform(0.1, 1.5, n), 2)
    garage = rng.integers(0, 4, n)
    deck = rng.choice(["y", "n"], n)
    porch = rng.choice(["y", "n"], n)
    price = city_factor * (
        (year - 1950) * 1500
        + sqft * 110
        + beds * 8000
        + baths * 12000
        + lot * 40000
        + garage * 9000
        + (deck == "y") * 15000
        + (porch == "y") * 10000
    ) + rng.normal(0, 20000, n)
    X = np.empty((n, 8), dtype=object)
    for j, col in enumerate((year, sqft, beds, baths, lot, garage, deck, porch)):
        X[:, j] = col.tolist()
    return X, price


# Per-city price coefficients of ``city_houses``: dollars per unit of each column, plus a base.
# Square feet is what varies most: worth four times as much in New York as in Houston.
CITY_PRICES: dict[str, dict[str, float]] = {
    "NewYork_NY": {"base": 60_000, "sqft": 220, "bedroom": 15_000, "bathroom": 25_000,
                   "acre": 90_000, "garage": 30_000, "year": 1_200, "deck": 20_000,
                   "porch": 15_000},
    "LosAngeles_CA": {"base": 50_000, "sqft": 160, "bedroom": 12_000, "bathroom": 20_000,
                      "acre": 120_000, "garage": 15_000, "year": 1_000, "deck": 25_000,
                      "porch": 8_000},
    "Chicago_IL": {"base": 40_000, "sqft": 110, "bedroom": 9_000, "bathroom": 14_000,
                   "acre": 40_000, "garage": 12_000, "year": 700, "deck": 10_000,
                   "porch": 12_000},
    "Houston_TX": {"base": 30_000, "sqft": 55, "bedroom": 7_000, "bathroom": 10_000,
                   "acre": 30_000, "garage": 9_000, "year": 500, "deck": 12_000,
                   "porch": 9_000},
}  # fmt: skip


def city_houses(city: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) for one city of ``CITY_PRICES``: X an (n, 8) object array in ``COLUMNS`` order
    (Python ints and floats, 'y'/'n' strings), y prices in dollars; the same seed gives the
    same houses.

    Square feet ~ N(3000, 750) (at least 500), bedrooms 2-6, bathrooms 1.0-3.0 in halves, lot
    acres ~ N(1.0, 0.25) (at least 0.05, 2 decimals), garages 0-3, year built
    min(2019, N(1995, 10)), deck and front porch y/n. The price is linear in these with the
    city's coefficients, plus N(0, 10,000) noise.
    """
    if city not in CITY_PRICES:
        raise ValueError(f"unknown city {city!r}; one of {sorted(CITY_PRICES)}")
    c = CITY_PRICES[city]
    rng = np.random.default_rng(seed)
    year = np.minimum(2019, np.rint(rng.normal(1995, 10, n))).astype(int)
    sqft = np.maximum(500, np.rint(rng.normal(3000, 750, n))).astype(int)
    beds = rng.integers(2, 7, n)
    baths = rng.integers(2, 7, n) / 2  # 1.0, 1.5, ..., 3.0
    lot = np.round(np.maximum(0.05, rng.normal(1.0, 0.25, n)), 2)
    garage = rng.integers(0, 4, n)
    deck = rng.choice(["y", "n"], n)
    porch = rng.choice(["y", "n"], n)
    price = (
        c["base"]
        + c["sqft"] * sqft
        + c["bedroom"] * beds
        + c["bathroom"] * baths
        + c["acre"] * lot
        + c["garage"] * garage
        + c["year"] * (year - 1950)
        + c["deck"] * (deck == "y")
        + c["porch"] * (porch == "y")
        + rng.normal(0, 10_000, n)
    )
    X = np.empty((n, 8), dtype=object)
    for j, col in enumerate((year, sqft, beds, baths, lot, garage, deck, porch)):
        X[:, j] = col.tolist()
    return X, price
