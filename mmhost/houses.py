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
