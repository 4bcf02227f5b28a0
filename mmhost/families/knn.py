"""The k-NN family: every resident model's points in arena slabs, one fused search per slab.

Load: a ``knn`` artifact (``from_sklearn``'s, or SageMaker's k-NN layout read by
``artifacts.knn``) -> a ``KnnModel``: its points (n, F) float32 in the feature space, a label
each (a classifier's as class indices), and how it answers (k, distance, weights, task).

A ``KnnSlab`` holds models of one size class: up to C points of D dimensions, searched under
one metric, up to K neighbours. Slot s owns points ``s*C : s*C + n`` of the flattened
(S*C, D) table (``model_points[s]`` is that range, so a freed slot searches nothing); columns
past a model's F are 0, which changes no distance. Slot bytes: C*(D + 1)*4 (points and labels)
+ 16 (the range) + 4 (k) + 4 (flags), C and D rounded up to an eighth of a power of two: a
1,000-point, 16-dim model takes a 1,024-point slot of 69,656 bytes against its 64,000 bytes of
points (1.09x). Squared norms are not stored: the kernels sum differences directly
(an exact match is exactly 0, which distance weighting needs), so they would be dead bytes.

The op (``mmhost::knn``, ``kernels/knn.py``) returns each row's K nearest points of its own
model, and ``knn_decide`` (same module, where the rules are stated) what the model's k first
of them decide, per row, for mixed models in one slab.

``forward`` returns (N, 1 + 2K): the prediction (a class index or a value), then the K reported
distances, then the K neighbours' labels (0 past a model's k). ``answer`` makes labels of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from mmhost.artifacts import Artifact
from mmhost.artifacts.manifest import KNN_DISTANCES, KNN_WEIGHTS, ManifestError
from mmhost.codecs.rows import passes_nan
from mmhost.families import arena
from mmhost.families.arena import Slab, fine_class
from mmhost.families.base import Family, copy_in
from mmhost.families.features import FeatureEncoder, feature_encoder
from mmhost.families.linear import chain
from mmhost.kernels.knn import CLASSIFIER, METRIC_CODES, METRICS, REGRESSOR, knn_decide, knn_forward
from mmhost.types import Neighbors

_NO_POINTS = np.zeros((0, 0), np.float32)
_NO_LABELS = np.zeros(0, np.float32)


def knn_slot_bytes(c: int, d: int) -> int:
    """Exact device bytes of one slot: C points of D float32 and C labels, the point range
    (2 x int64), k (int32) and four int8 flags (distance, weights, normalize, task)."""
    return c * (d + 1) * 4 + 16 + 4 + 4


# --- the model -------------------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class KnnModel:
    """One k-NN model in host memory, as its slot holds it."""

    family: ClassVar[str] = "knn"
    task: str  # "classifier" or "regressor"
    classes: list[Any] | None
    encoder: FeatureEncoder
    k: int  # neighbours used: the model's k, at most its points
    metric: str  # what the search ranks by: "l2" or "inner_product"
    distance: int  # code of KNN_DISTANCES
    weights: int  # code of KNN_WEIGHTS
    normalize: bool  # queries scaled to unit length first
    points: np.ndarray  # (n, F) float32
    labels: np.ndarray  # (n,) float32: class indices, or values
    threshold: float = 0.5  # (the protocol's; a k-NN classifier votes)

    @property
    def slab_key(self) -> tuple[int, int, int, int]:
        n, f = len(self.points), self.encoder.width
        k = 1 << (self.k - 1).bit_length()  # a power of two: 11 classes up to 1,024
        return (METRIC_CODES[self.metric], fine_class(n, 8), fine_class(max(f, 1), 4), k)

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.labels.nbytes)

    @property
    def meta_key(self) -> tuple[object, ...]:
        classes = None if self.classes is None else tuple(self.classes)
        flags = (self.k, self.metric, self.distance, self.weights, self.normalize)
        return ("knn", self.task, classes, self.encoder, *flags)

    def stripped(self) -> KnnModel:
        return replace(self, points=_NO_POINTS, labels=_NO_LABELS)


def compile_knn(art: Artifact, preprocessor: Artifact | None = None) -> KnnModel:
    """A knn artifact -> a ``KnnModel`` over the raw inputs. ManifestError says what's off."""
    if art.kind != "model" or art.algorithm != "knn" or art.knn is None:
        raise ManifestError(f"not a knn model artifact (algorithm={art.algorithm})")
    inputs, pre = art.inputs, art.preprocessing
    if preprocessor is not None:  # an inference pipeline: its outputs are the model's inputs
        inputs, pre = chain(preprocessor, art)
    if any(passes_nan(c) for c in inputs):
        raise ManifestError("a k-NN model cannot take NaN inputs: give each column a fill value")
    points = np.ascontiguousarray(art.params["points"], np.float32)
    opt = art.knn
    return KnnModel(
        art.task or "regressor",
        art.classes,
        feature_encoder(tuple(inputs), pre),
        min(opt.k, len(points)),
        opt.metric,
        KNN_DISTANCES.index(opt.distance),
        KNN_WEIGHTS.index(opt.weights),
        opt.normalize,
        points,
        np.ascontiguousarray(art.params["labels"], np.float32),
    )


# --- the slab and the family -----------------------------------------------------------------
class KnnSlab(Slab):
    """Slots for models of up to C points in D dimensions and K neighbours, one metric."""

    fields = ("points", "labels", "model_points", "neighbors", "flags")

    def __init__(self, metric: str, c: int, d: int, k: int, device: torch.device) -> None:
        self.metric, self.c, self.d, self.kmax, self.device = metric, c, d, k, device
        self.k = 1 + 2 * k  # the op's output columns
        capacity = max(1, min(64, (1 << 22) // knn_slot_bytes(c, d)))  # ~4 MiB to start
        self.points = arena.zeros((capacity, c, d), torch.float32, device)
        self.labels = torch.zeros((capacity, c), dtype=torch.float32, device=device)
        self.model_points = torch.zeros((capacity, 2), dtype=torch.int64, device=device)
        self.neighbors = torch.zeros((capacity,), dtype=torch.int32, device=device)  # k
        # distance, weights, normalize, task
        self.flags = torch.zeros((capacity, 4), dtype=torch.int8, device=device)
        self.sizes = np.zeros(capacity, np.int64)  # host: points of each slot
        self.normalizing = 0  # host: slots whose queries are normalized
        super().__init__(capacity)

    @property
    def slot_bytes(self) -> int:
        return knn_slot_bytes(self.c, self.d)

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        super()._grow(capacity)
        self.sizes = np.concatenate([self.sizes, np.zeros(capacity - old, np.int64)])


class KnnFamily(Family[KnnModel, KnnSlab]):
    """The k-NN slabs on one device: points and labels, the fused search ``mmhost::knn``."""

    name = "knn"
    algorithms = ("knn",)
    compile = staticmethod(compile_knn)

    def slot_bytes(self, model: KnnModel) -> int:
        _, c, d, _ = model.slab_key
        return knn_slot_bytes(c, d)

    def new_slab(self, key: tuple[int, ...]) -> KnnSlab:
        metric, c, d, k = key
        return KnnSlab(METRICS[metric], c, d, k, self.device)

    def row_width(self, slab: KnnSlab, meta: KnnModel) -> int:
        return slab.d

    def write(self, slab: KnnSlab, s: int, model: KnnModel) -> None:
        n, f = model.points.shape
        copy_in(slab.points, (s, slice(None, n), slice(None, f)), model.points)
        copy_in(slab.points, (s, slice(None, n), slice(f, None)), 0.0)  # the padding
        copy_in(slab.labels, (s, slice(None, n)), model.labels)
        copy_in(slab.neighbors, s, model.k)
        task = CLASSIFIER if model.task == "classifier" else REGRESSOR
        flags = np.array([model.distance, model.weights, model.normalize, task], np.int8)
        copy_in(slab.flags, s, flags)
        copy_in(slab.model_points, s, np.array([s * slab.c, s * slab.c + n], np.int64))
        slab.sizes[s] = n
        slab.normalizing += model.normalize

    def read_back(self, slab: KnnSlab, slot: int, meta: KnnModel) -> KnnModel:
        n, f = int(slab.sizes[slot]), meta.encoder.width
        return replace(
            meta,
            points=slab.points[slot, :n, :f].cpu().numpy().copy(),
            labels=slab.labels[slot, :n].cpu().numpy().copy(),
        )

    def clear(self, slab: KnnSlab, slot: int) -> None:
        slab.normalizing -= int(slab.flags[slot, 2])
        slab.sizes[slot] = 0
        slab.model_points[slot] = 0  # an empty range: a stale slot searches nothing

    def forward(self, slab: KnnSlab, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """x (N, D) and slots (N,) for one slab -> (N, 1 + 2K) (see the module docstring)."""
        flags = slab.flags.index_select(0, slots)  # (N, 4) int8
        if slab.normalizing:  # in float64: a large float32 row's norm must not overflow
            wide = x.double()
            norm = wide.norm(dim=1, keepdim=True)  # (N, 1)
            scale = torch.where((flags[:, 2:3] == 1) & (norm > 0), 1.0 / norm, 1.0)
            x = (wide * scale).float()
        dist, idx = knn_forward(
            x, slots, slab.points.view(-1, slab.d), slab.model_points, slab.kmax, slab.metric
        )
        k = slab.neighbors.index_select(0, slots)
        return knn_decide(dist, idx, slab.labels.view(-1), k, flags)

    def answer(self, meta: KnnModel, out: np.ndarray) -> tuple[np.ndarray, Neighbors | None]:
        """The predicted labels (N,), and each row's k neighbours' labels and distances."""
        kk = (out.shape[1] - 1) // 2
        prediction = out[:, 0]
        distances = out[:, 1 : 1 + meta.k]
        labels = out[:, 1 + kk : 1 + kk + meta.k]
        if meta.classes is not None:  # class indices -> the classes themselves
            classes = np.asarray(meta.classes, dtype=object)
            predicted = classes[prediction.astype(np.int64)]
            return predicted, Neighbors(classes[labels.astype(np.int64)], distances)
        return prediction, Neighbors(labels, distances)

    def answer_values(self, slab: KnnSlab, meta: KnnModel) -> int:
        return 1  # the predicted label (the neighbours only when asked for)
