"""The linear family: compose a model with its preprocessing, pack it into a slab, run it.

Composition happens once, at load: with an artifact's preprocessing ``f = scale * source +
shift`` (see ``artifacts.manifest``) in front of ``z = coef @ f + intercept``, the composed model
over the encoded inputs (``codecs.rows``) is

    W[:, slot(source_j)] += coef[:, j] * scale[j]        b = intercept + coef @ shift

so scaling is folded into the weights and one-hot is a column offset: a pipeline costs the same
as a bare model. A shared preprocessor in front is composed the same way first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from mmhost.artifacts import Artifact, Column, Preprocessing
from mmhost.artifacts.manifest import ManifestError
from mmhost.codecs import RowEncoder, encoder_for
from mmhost.codecs.rows import passes_nan
from mmhost.families.arena import LinearSlab, size_class, slot_bytes
from mmhost.families.base import Family, copy_in
from mmhost.kernels import linear_forward
from mmhost.kernels.links import LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX

_EMPTY = np.zeros((0, 0), np.float32)

LINKS = {
    "regressor": LINK_IDENTITY,
    "binary_classifier": LINK_SIGMOID,
    "multiclass_classifier": LINK_SOFTMAX,
}


@dataclass(eq=False, slots=True)
class LinearModel:
    """A composed model in host memory (the ``host`` tier holds these). Slotted: a million
    resident models keep one of these each (with empty arrays) for their metadata."""

    family: ClassVar[str] = "linear"
    task: str
    classes: list[Any] | None
    encoder: RowEncoder
    weight: np.ndarray  # (K, E) float32, E = encoder.width
    bias: np.ndarray  # (K,) float32
    threshold: float = 0.5  # a binary classifier's, on P(positive)

    @property
    def link(self) -> int:
        return LINKS[self.task]

    @property
    def n_outputs(self) -> int:
        return int(self.weight.shape[0])

    @property
    def slab_key(self) -> tuple[int, int]:
        return (self.n_outputs, size_class(self.encoder.width))

    @property
    def nbytes(self) -> int:
        """Host-tier bytes: the composed parameters (the encoder is shared between models)."""
        return int(self.weight.nbytes + self.bias.nbytes)

    @property
    def meta_key(self) -> tuple[object, ...]:
        """Models with equal keys share one ``stripped()`` copy for their bookkeeping."""
        classes = None if self.classes is None else tuple(self.classes)
        return ("linear", self.task, classes, self.encoder, self.threshold)

    def stripped(self) -> LinearModel:
        """A parameter-less copy: what a resident model keeps beside its slot."""
        return LinearModel(self.task, self.classes, self.encoder, _EMPTY, _EMPTY, self.threshold)


def compile_linear(art: Artifact, preprocessor: Artifact | None = None) -> LinearModel:
    """Fold ``preprocessor`` (optional, shared) and the artifact's own preprocessing into one
    linear model over the raw inputs' encoding. ManifestError if they can't compose."""
    if art.kind != "model" or art.algorithm != "linear":
        raise ManifestError(
            f"not a linear model artifact (kind={art.kind}, algorithm={art.algorithm})"
        )
    inputs, pre = art.inputs, art.preprocessing
    if preprocessor is not None:
        inputs, pre = chain(preprocessor, art)
    if any(passes_nan(c) for c in inputs):
        raise ManifestError("a linear model cannot take NaN inputs: give each column a fill value")
    encoder = encoder_for(tuple(inputs))
    coef = art.params["coef"].astype(np.float64)  # (K, F)
    weight = np.zeros((coef.shape[0], encoder.width), np.float64)  # (K, E)
    for j, f in enumerate(pre.features):
        weight[:, encoder.offsets[f.column] + (f.category or 0)] += coef[:, j] * pre.scale[j]
    bias = art.params["intercept"].astype(np.float64) + coef @ pre.shift  # (K,)
    return LinearModel(
        art.task or "regressor",
        art.classes,
        encoder,
        weight.astype(np.float32),
        bias.astype(np.float32),
        art.threshold,
    )


def chain(first: Artifact, second: Artifact) -> tuple[list[Column], Preprocessing]:
    """Preprocessing of ``second`` applied to the outputs of ``first`` (the shared stage)."""
    p1, p2 = first.preprocessing, second.preprocessing
    if len(second.inputs) != p1.n_features:
        raise ManifestError(
            f"the model takes {len(second.inputs)} inputs but the shared "
            f"preprocessor produces {p1.n_features} features"
        )
    if any(c.type != "float" for c in second.inputs):
        raise ManifestError(
            "a model behind a shared preprocessor must take numeric inputs "
            "(its own one-hot encoding cannot be composed)"
        )
    inputs = list(first.inputs)
    feats, scale, shift = [], np.empty(p2.n_features), np.empty(p2.n_features)
    for j, f in enumerate(p2.features):
        m = f.column  # a feature of the first stage
        feats.append(p1.features[m])
        scale[j] = p2.scale[j] * p1.scale[m]
        shift[j] = p2.scale[j] * p1.shift[m] + p2.shift[j]
        fill = second.inputs[m].missing
        src = p1.features[m]
        raw = inputs[src.column]
        if fill is not None and raw.missing is None and src.category is None:
            # the model's own imputer sees NaN only where the raw column had no fill
            inputs[src.column] = replace(raw, missing=(fill - p1.shift[m]) / p1.scale[m])
    return inputs, Preprocessing(feats, scale, shift)


class LinearFamily(Family[LinearModel, LinearSlab]):
    """The linear slabs on one device: (S, K, D) weights, the fused op ``mmhost::linear``."""

    name = "linear"
    algorithms = ("linear",)
    compile = staticmethod(compile_linear)

    def slot_bytes(self, model: LinearModel) -> int:
        return slot_bytes(*model.slab_key)

    def new_slab(self, key: tuple[int, ...]) -> LinearSlab:
        k, d = key
        return LinearSlab(k, d, self.device)

    def row_width(self, slab: LinearSlab, meta: LinearModel) -> int:
        """Columns of the encoded rows this slab's op takes (the padded width)."""
        return slab.d

    def write(self, slab: LinearSlab, slot: int, model: LinearModel) -> None:
        e = model.encoder.width
        copy_in(slab.weight, (slot, slice(None), slice(None, e)), model.weight)  # (K, E)
        copy_in(slab.weight, (slot, slice(None), slice(e, None)), 0.0)  # the padding
        copy_in(slab.bias, slot, model.bias)
        copy_in(slab.link, slot, model.link)

    def read_back(self, slab: LinearSlab, slot: int, model: LinearModel) -> LinearModel:
        """The model's parameters as they sit in the slot (demotion keeps exactly these).
        With CUDA they land in pinned host memory, so promotion is a DMA copy."""
        e = model.encoder.width
        w = slab.weight[slot, :, :e]  # (K, E)
        b = slab.bias[slot]  # (K,)
        pin = self.device.type == "cuda"
        w_host = torch.empty(w.shape, dtype=w.dtype, pin_memory=pin).copy_(w)
        b_host = torch.empty(b.shape, dtype=b.dtype, pin_memory=pin).copy_(b)
        return replace(model, weight=w_host.numpy(), bias=b_host.numpy())

    def forward(self, slab: LinearSlab, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """x (N, D) and slots (N,) for one slab -> (N, K) scores after each model's link."""
        return linear_forward(x, slots, slab.weight, slab.bias, slab.link)
