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
        mean, std, cats, missing = {}, {}, {}, set()
        every = len(rows) == len(table.label)  # all the rows (in some order): no gather
        for name, values in table.features.items():
            v = values if every else values[rows]
            if values.dtype == object:
                cats[name] = base.categories[name] if base else sorted(set(v.tolist()))
                continue
            gaps = np.isnan(v)
            ok = v[~gaps] if gaps.any() else v
            mean[name] = float(ok.mean()) if ok.size else 0.0
            sd = float(ok.std()) if ok.size else 0.0
            std[name] = sd if sd > 0 else 1.0
            if bool(gaps.any()) or (not every and bool(np.isnan(values).any())):
                missing.add(name)
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
