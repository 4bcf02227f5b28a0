"""The trees family: XGBoost ensembles as node records in arena slabs, one fused op per slab.

Load: an artifact's ``xgboost-model`` file -> ``TreeEnsemble`` (``artifacts.xgboost``, which
checks it) -> ``kernels.trees.pack`` (which checks every tree and numbers its nodes breadth
first) -> a ``TreeModel``: the node records of one model with indices relative to its own first
node, ready to copy into a slot. The host tier keeps exactly these.

A ``TreeSlab`` holds models of one size class: up to C nodes, up to T trees and K outputs each.
Slot s owns records ``s*C : s*C + C`` of the flattened node table and trees ``s*T : s*T + T``;
placing a model adds ``s*C`` to its child and root indices, so the op (``mmhost::trees``) walks
every slot of a slab in one call. Size classes step by an eighth of a power of two (< 25%
padding); the tier accounts a slot's exact bytes (``tree_slot_bytes``).

Preprocessing is not folded into thresholds (that would change float32 rounding at the splits):
``FeatureEncoder`` (``families/features.py``) applies the artifact's ``scale * source + shift``
to the encoded rows, and skips it when it is the identity (SageMaker's bare ``xgboost-model``).
NaN passes through to the trees' default directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from mmhost.artifacts import Artifact, Column, Preprocessing
from mmhost.artifacts.manifest import MAX_COLUMNS, ManifestError
from mmhost.artifacts.xgboost import TreeEnsemble, read_xgboost
from mmhost.errors import SlabFull, UnsupportedModel
from mmhost.families import arena
from mmhost.families.arena import Slab, fine_class
from mmhost.families.base import Family, copy_in
from mmhost.families.features import FeatureEncoder, feature_encoder
from mmhost.families.linear import chain
from mmhost.kernels.links import LINK_IDENTITY, LINKS, apply_link
from mmhost.kernels.trees import NODE_FEATURE, NODE_LEFT, pack, trees_forward

_INT32_MAX = 2**31 - 1
_NO_NODES = np.zeros((0, 4), np.int32)
_NO_TREES = np.zeros(0, np.int64)
_NO_GROUPS = np.zeros(0, np.int32)
_NO_BASE = np.zeros(0, np.float32)


def tree_slot_bytes(c: int, t: int, k: int) -> int:
    """Exact device bytes of one slot: C 16-byte node records, T tree roots (int64) and groups
    (int32), the tree range (2 x int64), K base margins, the feature count and the link code."""
    return c * 16 + t * 12 + 16 + k * 4 + 4 + 1


# --- the model -------------------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class TreeModel:
    """One ensemble in host memory, as its slot holds it (indices relative to the model)."""

    family: ClassVar[str] = "trees"
    task: str
    classes: list[Any] | None
    encoder: FeatureEncoder
    link: int
    k: int  # outputs (margins) per row
    nodes: np.ndarray  # (M, 4) int32 records; left relative to the model's first node
    tree_root: np.ndarray  # (T,) int64, relative likewise
    tree_group: np.ndarray  # (T,) int32
    base: np.ndarray  # (K,) float32 base margins
    threshold: float = 0.5  # a binary classifier's, on P(positive)

    @property
    def num_features(self) -> int:
        return self.encoder.width

    @property
    def slab_key(self) -> tuple[int, int, int]:
        return (fine_class(len(self.nodes), 8), fine_class(len(self.tree_root), 4), self.k)

    @property
    def nbytes(self) -> int:
        """Host-tier bytes: the records and per-tree arrays (the encoder is shared)."""
        arrays = (self.nodes, self.tree_root, self.tree_group, self.base)
        return int(sum(a.nbytes for a in arrays))

    @property
    def meta_key(self) -> tuple[object, ...]:
        classes = None if self.classes is None else tuple(self.classes)
        return ("trees", self.task, classes, self.encoder, self.link, self.k)

    def stripped(self) -> TreeModel:
        return TreeModel(
            self.task,
            self.classes,
            self.encoder,
            self.link,
            self.k,
            _NO_NODES,
            _NO_TREES,
            _NO_GROUPS,
            _NO_BASE,
        )


def compile_trees(art: Artifact, preprocessor: Artifact | None = None) -> TreeModel:
    """An xgboost artifact -> a checked, packed ``TreeModel``. ManifestError says what's off."""
    if art.kind != "model" or art.algorithm != "xgboost" or art.xgboost is None:
        raise ManifestError(f"not an xgboost model artifact (algorithm={art.algorithm})")
    try:
        ens = read_xgboost(art.xgboost)
    except UnsupportedModel as exc:  # MalformedModel too
        raise ManifestError(f"xgboost-model: {exc.message}") from None
    if ens.num_class > 1 and not ens.objective.startswith("multi:"):
        raise ManifestError(
            f"xgboost-model: {ens.num_class} targets under {ens.objective}; multi-target models "
            "are not supported"
        )
    builtin = not art.inputs
    if builtin:  # SageMaker's bare xgboost-model: F numeric columns, NaN = missing
        if ens.num_feature > MAX_COLUMNS:
            raise ManifestError(
                f"xgboost-model: {ens.num_feature} features, over the {MAX_COLUMNS} supported"
            )
        art = replace(
            art,
            inputs=[Column(n, "float", missing=math.nan) for n in _column_names(ens)],
            preprocessing=Preprocessing.identity(ens.num_feature),
            task=_builtin_task(ens),
            classes=None,
        )
    inputs, pre = art.inputs, art.preprocessing
    if preprocessor is not None:  # an inference pipeline: its outputs are the model's inputs
        inputs, pre = chain(preprocessor, art)
    task = art.task or "regressor"
    if not builtin:
        _check_task(ens, task, art.classes, art.preprocessing.n_features)
    try:
        packed = pack([ens])
    except ValueError as exc:
        raise ManifestError(f"xgboost-model: {exc}") from None
    return TreeModel(
        task,
        art.classes,
        feature_encoder(tuple(inputs), pre),
        LINKS[ens.link],
        ens.num_class,
        packed.nodes.numpy(),
        packed.tree_root.numpy(),
        packed.tree_group.numpy(),
        packed.base.numpy()[0],
    )


def _column_names(ens: TreeEnsemble) -> list[str]:
    """The model's own feature names when it was trained with them, else f0, f1, ..."""
    return ens.feature_names or [f"f{i}" for i in range(ens.num_feature)]


def _builtin_task(ens: TreeEnsemble) -> str:
    """How SageMaker's XGBoost answers: a probability for binary:logistic, K probabilities for
    multi:softprob, one number per row for everything else (multi:softmax's is the class)."""
    if ens.objective == "binary:logistic":
        return "binary_classifier"
    if ens.objective == "multi:softprob":
        return "multiclass_classifier"
    return "regressor"


def _check_task(ens: TreeEnsemble, task: str, classes: list[Any] | None, features: int) -> None:
    if features != ens.num_feature:
        raise ManifestError(
            f"the preprocessing produces {features} features; the xgboost-model takes "
            f"{ens.num_feature}"
        )
    if task == "binary_classifier" and ens.objective != "binary:logistic":
        raise ManifestError(f"a binary classifier needs binary:logistic, not {ens.objective}")
    if task == "multiclass_classifier":
        n = len(classes or [])
        if ens.objective != "multi:softprob" or ens.num_class != n:
            raise ManifestError(
                f"a classifier of {n} classes needs multi:softprob with num_class {n}, "
                f"not {ens.objective} with {ens.num_class}"
            )
    if task == "regressor" and ens.link == "softmax":
        raise ManifestError("multi:softprob gives probabilities: declare a multiclass_classifier")


# --- the slab and the family -----------------------------------------------------------------
class TreeSlab(Slab):
    """Slots for ensembles of up to C nodes and T trees with K outputs."""

    fields = (
        "nodes",
        "tree_root",
        "tree_group",
        "model_trees",
        "base",
        "num_features",
        "link",
    )

    def __init__(self, c: int, t: int, k: int, device: torch.device) -> None:
        self.c, self.t, self.k, self.device = c, t, k, device
        capacity = max(1, min(64, (1 << 20) // tree_slot_bytes(c, t, k)))  # ~1 MiB to start

        def zeros(*shape: int, dtype: torch.dtype = torch.int32) -> torch.Tensor:
            return arena.zeros(shape, dtype, device)

        self.nodes = zeros(capacity, c, 4)  # (S, C, 4) records
        self.tree_root = zeros(capacity, t, dtype=torch.int64)  # (S, T) absolute node index
        self.tree_group = zeros(capacity, t)  # (S, T)
        self.model_trees = zeros(capacity, 2, dtype=torch.int64)  # (S, 2) [first, end) tree
        self.base = zeros(capacity, k, dtype=torch.float32)  # (S, K)
        self.num_features = zeros(capacity)  # (S,)
        self.link = zeros(capacity, dtype=torch.int8)  # (S,)
        self.sizes = np.zeros((capacity, 2), np.int64)  # host: nodes and trees of each slot
        self.links: dict[int, int] = {}  # link code -> slots using it (host bookkeeping)
        super().__init__(capacity)

    @property
    def slot_bytes(self) -> int:
        return tree_slot_bytes(self.c, self.t, self.k)

    def _grow(self, capacity: int) -> None:
        most = (_INT32_MAX + 1) // self.c  # slots whose node indices fit int32
        capacity = min(capacity, most)
        old = self.capacity
        if capacity <= old:
            raise SlabFull(
                f"the trees slab of {self.c}-node models is full: {old} slots x {self.c} nodes "
                "is as many as int32 node indices reach; unload models of this size"
            )
        super()._grow(capacity)
        self.sizes = np.concatenate([self.sizes, np.zeros((capacity - old, 2), np.int64)])


class TreesFamily(Family[TreeModel, TreeSlab]):
    """The trees slabs on one device: node records, the fused op ``mmhost::trees``."""

    name = "trees"
    algorithms = ("xgboost",)
    compile = staticmethod(compile_trees)

    def slot_bytes(self, model: TreeModel) -> int:
        return tree_slot_bytes(*model.slab_key)

    def new_slab(self, key: tuple[int, ...]) -> TreeSlab:
        c, t, k = key
        return TreeSlab(c, t, k, self.device)

    def row_width(self, slab: TreeSlab, meta: TreeModel) -> int:
        return meta.num_features

    def write(self, slab: TreeSlab, s: int, model: TreeModel) -> None:
        """Copy ``model`` into slot ``s``, its indices made absolute in the slab."""
        m, t = len(model.nodes), len(model.tree_root)
        rec = model.nodes.copy()  # (M, 4)
        rec[:, NODE_LEFT] += np.where(rec[:, NODE_FEATURE] >= 0, s * slab.c, 0).astype(np.int32)
        roots = model.tree_root + s * slab.c  # (T,)
        trees = np.array([s * slab.t, s * slab.t + t], np.int64)
        copy_in(slab.nodes, (s, slice(None, m)), rec)
        copy_in(slab.tree_root, (s, slice(None, t)), roots)
        copy_in(slab.tree_group, (s, slice(None, t)), model.tree_group)
        copy_in(slab.model_trees, s, trees)
        copy_in(slab.base, s, model.base)
        copy_in(slab.num_features, s, model.num_features)
        copy_in(slab.link, s, model.link)
        slab.sizes[s] = (m, t)
        slab.links[model.link] = slab.links.get(model.link, 0) + 1

    def read_back(self, slab: TreeSlab, slot: int, meta: TreeModel) -> TreeModel:
        """The model as its slot holds it, with indices made relative again."""
        m, t = (int(v) for v in slab.sizes[slot])
        rec = slab.nodes[slot, :m].cpu().numpy().copy()
        rec[:, NODE_LEFT] -= np.where(rec[:, NODE_FEATURE] >= 0, slot * slab.c, 0).astype(np.int32)
        roots = slab.tree_root[slot, :t].cpu().numpy() - slot * slab.c
        return replace(
            meta,
            nodes=rec,
            tree_root=roots,
            tree_group=slab.tree_group[slot, :t].cpu().numpy().copy(),
            base=slab.base[slot].cpu().numpy().copy(),
        )

    def clear(self, slab: TreeSlab, slot: int) -> None:
        code = int(slab.link[slot])
        slab.links[code] -= 1
        if not slab.links[code]:
            del slab.links[code]
        slab.sizes[slot] = 0
        slab.model_trees[slot] = 0  # an empty range: a stale slot walks no trees

    def forward(self, slab: TreeSlab, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """x (N, F) and slots (N,) for one slab -> (N, K) outputs after each model's link."""
        margins = trees_forward(
            x,
            slots,
            slab.nodes.view(-1, 4),
            slab.tree_root.view(-1),
            slab.tree_group.view(-1),
            slab.model_trees,
            slab.base,
            slab.num_features,
        )
        codes = list(slab.links)
        if len(codes) == 1:
            return apply_link(codes[0], margins)
        link = slab.link.index_select(0, slots)  # (N,)
        out = margins
        for code in codes:
            if code != LINK_IDENTITY:
                mine = (link == code)[:, None]  # (N, 1)
                out = torch.where(mine, apply_link(code, margins), out)
        return out
