"""The vocabulary the stages share: what rows and slots are, what a model is described as, what
an answer carries, what a loaded model served. Only numpy and torch below it; every stage may
import it, it imports no stage (see ``docs/architecture.md`` for the layers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Rows = np.ndarray | torch.Tensor
"""(n, D) float32 encoded rows: on the host, or a tensor on the device."""
Slots = int | np.ndarray
"""The slot of one model for every row, or (n,) int64: a slot per row."""


@dataclass(frozen=True)
class Neighbors:
    """A k-NN answer's neighbours of each row, nearest first."""

    labels: np.ndarray
    """(N, k): each neighbour's label (class or value)."""
    distances: np.ndarray
    """(N, k) float32, as the model reports them."""


@dataclass(frozen=True)
class Prediction:
    """One request's answer, with what a response encoder needs to label it."""

    scores: np.ndarray
    """As ``Host.predict`` returns them: (N,) or, for multiclass, (N, k) probabilities."""
    task: str
    """regressor, binary_classifier or multiclass_classifier."""
    classes: list[Any] | None
    """Class labels of a classifier (binary: [negative, positive])."""
    model_seconds: float = 0.0
    """Time in the model: waiting for the batch and the fused op (ModelLatency)."""
    wait_seconds: float = 0.0
    """Time spent waiting for the model to be loaded (0 when it was resident)."""
    threshold: float = 0.5
    """A binary classifier's decision threshold on P(positive)."""
    neighbors: Neighbors | None = None
    """A k-NN answer's neighbours (then ``scores`` are the predicted labels)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: ``Host.load`` and ``Host.describe`` return it. Reads as a mapping
    too (``info["task"]``), as the dicts it replaces did."""

    name: str
    family: str
    task: str
    classes: list[Any] | None
    outputs: int
    """Score columns (a multiclass model's k probabilities)."""
    version: str
    inputs: list[dict[str, Any]]
    """The input columns as the V2 metadata and ``mmhost.json`` write them."""

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class ModelUsage:
    """A loaded model's version and what it served since it was placed (V2 statistics)."""

    name: str
    version: str
    tier: str
    requests: int
    """Answered."""
    rows: int
    infer_seconds: float
    last_used: float
    """Epoch seconds; 0: not used since placed."""
