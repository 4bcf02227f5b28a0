"""The preprocessing ``mmhost train`` fits: raw columns -> standardized numbers (as
``StandardScaler`` computes them; a missing number takes its column's mean) and one-hot
categories (as ``OneHotEncoder(handle_unknown="ignore")``, sorted), and the artifacts that carry
it: the shared preprocessor alone, and each entity's model with it folded in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmhost.artifacts import Artifact, Column
from mmhost.artifacts.manifest import Feature, Preprocessing
from mmhost.train.data import Table


@dataclass
class Encoding:
    """Raw columns -> the standardized / one-hot features, and the artifact's preprocessing."""

    columns: list[Column]
    mean: dict[str, float]
    std: dict[str, float]
    categories: dict[str, list[str]]

    @classmethod
    def fit(cls, table: Table, rows: np.ndarray, base: Encoding | None = None) -> Encoding:
        """Fitted on ``rows``: each number's mean and deviation (one native pass over them,
        ``kernels.gram.column_moments``), each category column's categories (those ``rows``
        have, sorted; or ``base``'s)."""
        import torch

        from mmhost.kernels.gram import column_moments, column_tensor

        numeric = [n for n, v in table.features.items() if v.dtype != object]
        order = torch.from_numpy(np.asarray(rows, np.int64))
        stats = column_moments([column_tensor(table.features[n]) for n in numeric], order)
        every = len(rows) == len(table.label)  # all the rows (in some order)
        mean, std, cats, missing = {}, {}, {}, set()
        for name, (count, mu, var) in zip(numeric, stats.tolist(), strict=True):
            mean[name] = mu if count else 0.0
            sd = float(np.sqrt(var)) if count else 0.0
            std[name] = sd if sd > 0 else 1.0
            gaps = count < len(rows) or (not every and np.isnan(table.features[name]).any())
            if gaps:
                missing.add(name)
        for name, values in table.features.items():
            if values.dtype == object:
                cats[name] = base.categories[name] if base else _categories(values, rows)
        return cls.of(table, mean, std, cats, missing)

    @classmethod
    def of(
        cls,
        table: Table,
        mean: dict[str, float],
        std: dict[str, float],
        categories: dict[str, list[str]],
        missing: set[str],
    ) -> Encoding:
        """The encoding of the table's columns with these statistics (``missing``: the numeric
        columns with a missing value, filled with their mean)."""
        columns = []
        for name, values in table.features.items():
            if values.dtype == object:
                columns.append(Column(name, "category", tuple(categories[name]), "ignore"))
            else:
                fill = mean[name] if name in missing else None
                columns.append(Column(name, "float", missing=fill))
        return cls(columns, mean, std, categories)

    def codes(self, table: Table, name: str) -> np.ndarray:
        """Category column ``name`` as int64 indices into its categories (-1: not one)."""
        import pandas as pd

        index = pd.Index(self.categories[name])
        return np.asarray(index.get_indexer(table.features[name]), dtype=np.int64)

    @property
    def feature_names(self) -> list[str]:
        out = []
        for c in self.columns:
            out += [f"{c.name}={k}" for k in c.categories] if c.type == "category" else [c.name]
        return out

    def preprocessing(self) -> Preprocessing:
        feats, scale, shift = [], [], []
        for j, c in enumerate(self.columns):
            if c.type == "category":
                for k in range(len(c.categories)):
                    feats.append(Feature(j, k))
                    scale.append(1.0)
                    shift.append(0.0)
            else:
                feats.append(Feature(j))
                scale.append(1 / self.std[c.name])
                shift.append(-self.mean[c.name] / self.std[c.name])
        return Preprocessing(feats, np.array(scale), np.array(shift))

    def encode(self, table: Table, rows: np.ndarray) -> np.ndarray:
        """(len(rows), F) float64 features, as the artifact's preprocessing computes them."""
        cols = np.zeros((len(self.feature_names), len(rows)))  # a column a row: contiguous
        j = 0
        for c in self.columns:
            v = table.features[c.name][rows]
            if c.type == "category":
                index = {k: i for i, k in enumerate(c.categories)}
                k = np.array([index.get(x, -1) for x in v.tolist()], np.int64)
                hit = np.flatnonzero(k >= 0)
                cols[j + k[hit], hit] = 1.0  # an unknown category: all zeros
                j += len(c.categories)
            else:
                col = cols[j]
                np.subtract(v, self.mean[c.name], out=col)
                col /= self.std[c.name]
                col[np.isnan(col)] = 0.0  # a missing number takes the mean: 0 once standardized
                j += 1
        return np.ascontiguousarray(cols.T)

    def preprocessor(self) -> Artifact:
        return Artifact(
            "preprocessor", self.columns, self.preprocessing(), feature_names=self.feature_names
        )

    def model(self, w: np.ndarray, b: np.ndarray, task: str, classes: list[Any] | None) -> Artifact:
        return Artifact(
            "model", self.columns, self.preprocessing(), "linear", task, classes,
            self.feature_names, {"coef": w, "intercept": b},
        )  # fmt: skip


def _categories(values: np.ndarray, rows: np.ndarray) -> list[str]:
    """The categories ``rows`` of the column have, sorted (one hash pass over the column)."""
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=True)
    seen = np.bincount(codes[rows], minlength=len(uniques)) > 0
    return [str(u) for u in np.asarray(uniques, dtype=object)[seen]]
