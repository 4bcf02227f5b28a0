"""The Random Cut Forest family: every resident forest's node records in arena slabs, one fused
scoring call per slab.

Load: an ``rcf`` artifact (``convert.from_rcf`` / ``fit_rcf``) -> ``artifacts.rcf.Forest``
(checked) -> ``kernels.rcf.pack`` -> an ``RcfModel``: the forest's node arrays with indices
relative to its own first node, ready to copy into a slot. The host tier keeps exactly these.

An ``RcfSlab`` holds forests of one size class: up to C nodes, T trees and D dimensions. Slot s
owns nodes ``s*C : s*C + C`` and trees ``s*T : s*T + T``; placing a forest adds ``s*C`` to its
child and root indices, so the op (``mmhost::rcf``) scores rows of every slot in one call.
Dimensions past a forest's own are zero in its boxes and in its rows (no sum changes). Bytes:
a node is 28 + 8*D (a 16-byte record of children, cut dimension and cut, the descent's one load
a level; mass float32, range sum float64, box 2 x D float32), a tree 16 (root int64, mass
float64), a slot 16 more (its tree range): a forest of 100 trees of 256 samples (511 nodes
each) in 8 dimensions takes 4.7 MB.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from mmhost.artifacts import Artifact
from mmhost.artifacts.manifest import RCF_TASK, ManifestError
from mmhost.artifacts.rcf import forest_from_params
from mmhost.codecs.rows import passes_nan
from mmhost.errors import SlabFull
from mmhost.families import arena
from mmhost.families.arena import Slab, fine_class
from mmhost.families.base import Family, copy_in
from mmhost.families.features import FeatureEncoder, feature_encoder
from mmhost.families.linear import chain
from mmhost.kernels.rcf import PackedForests, pack, rcf_forward

_INT32_MAX = 2**31 - 1


def rcf_slot_bytes(c: int, t: int, d: int) -> int:
    """Exact device bytes of one slot (see the module docstring)."""
    return c * (28 + 8 * d) + t * 16 + 16


@dataclass(eq=False, slots=True)
class RcfModel:
    """One forest in host memory, as its slot holds it (indices relative to the forest)."""

    family: ClassVar[str] = "rcf"
    encoder: FeatureEncoder
    nodes: np.ndarray  # (M, 4) int32 [left, right, cut_dim, cut bits]; children -1 at a leaf
    mass: np.ndarray  # (M,) float32
    box: np.ndarray  # (M, 2, F) float32
    range_sum: np.ndarray  # (M,) float64
    tree_root: np.ndarray  # (T,) int64, -1 for an empty tree
    tree_mass: np.ndarray  # (T,) float64
    task: str = RCF_TASK
    classes: list[Any] | None = None
    threshold: float = 0.5  # (the protocol's; a forest scores)

    @property
    def slab_key(self) -> tuple[int, int, int]:
        dims = max(1, self.encoder.width)
        return (
            fine_class(len(self.nodes), 8),
            fine_class(len(self.tree_root), 4),
            fine_class(dims, 4),
        )

    @property
    def nbytes(self) -> int:
        arrays = (self.nodes, self.mass, self.box, self.range_sum)
        return int(sum(a.nbytes for a in arrays) + self.tree_root.nbytes + self.tree_mass.nbytes)

    @property
    def meta_key(self) -> tuple[object, ...]:
        return ("rcf", self.encoder)

    def stripped(self) -> RcfModel:
        d = self.encoder.width
        return replace(
            self,
            nodes=np.zeros((0, 4), np.int32),
            mass=np.zeros(0, np.float32),
            box=np.zeros((0, 2, d), np.float32),
            range_sum=np.zeros(0, np.float64),
            tree_root=np.zeros(0, np.int64),
            tree_mass=np.zeros(0, np.float64),
        )


def compile_rcf(art: Artifact, preprocessor: Artifact | None = None) -> RcfModel:
    """An rcf artifact -> a checked, packed ``RcfModel``. ManifestError says what's off."""
    if art.kind != "model" or art.algorithm != "rcf":
        raise ManifestError(f"not an rcf model artifact (algorithm={art.algorithm})")
    inputs, pre = art.inputs, art.preprocessing
    if preprocessor is not None:
        inputs, pre = chain(preprocessor, art)
    if any(passes_nan(c) for c in inputs):
        raise ManifestError("a forest cannot take NaN inputs: give each column a fill value")
    forest = forest_from_params(art.params, art.preprocessing.n_features)
    p = pack([forest])
    return RcfModel(
        feature_encoder(tuple(inputs), pre),
        p.nodes.numpy(),
        p.mass.numpy(),
        p.box.numpy(),
        p.range_sum.numpy(),
        p.tree_root.numpy(),
        p.tree_mass.numpy(),
    )


class RcfSlab(Slab):
    """Slots for forests of up to C nodes, T trees and D dimensions."""

    fields = (
        "nodes",
        "mass",
        "box",
        "range_sum",
        "tree_root",
        "tree_mass",
        "model_trees",
    )

    def __init__(self, c: int, t: int, d: int, device: torch.device) -> None:
        self.c, self.t, self.d, self.k, self.device = c, t, d, 1, device
        capacity = max(1, min(64, (1 << 22) // rcf_slot_bytes(c, t, d)))  # ~4 MiB to start

        def zeros(*shape: int, dtype: torch.dtype) -> torch.Tensor:
            return arena.zeros(shape, dtype, device)

        self.nodes = zeros(capacity, c, 4, dtype=torch.int32)  # (S, C, 4) records
        self.mass = zeros(capacity, c, dtype=torch.float32)
        self.box = zeros(capacity, c, 2, d, dtype=torch.float32)
        self.range_sum = zeros(capacity, c, dtype=torch.float64)
        self.tree_root = zeros(capacity, t, dtype=torch.int64)
        self.tree_mass = zeros(capacity, t, dtype=torch.float64)
        self.model_trees = zeros(capacity, 2, dtype=torch.int64)
        self.sizes = np.zeros((capacity, 2), np.int64)  # host: nodes and trees of each slot
        super().__init__(capacity)

    @property
    def slot_bytes(self) -> int:
        return rcf_slot_bytes(self.c, self.t, self.d)

    def packed(self) -> PackedForests:
        """Every slot's forest as the op's inputs (a slot is its forest's index: row_model)."""
        return PackedForests(
            self.nodes.view(-1, 4),
            self.mass.view(-1),
            self.box.view(-1, 2, self.d),
            self.range_sum.view(-1),
            self.tree_root.view(-1),
            self.tree_mass.view(-1),
            self.model_trees,
        )

    def _grow(self, capacity: int) -> None:
        capacity = min(capacity, (_INT32_MAX + 1) // self.c)  # node indices stay int32
        old = self.capacity
        if capacity <= old:
            raise SlabFull(f"the rcf slab of {self.c}-node forests is full; unload forests")
        super()._grow(capacity)
        self.sizes = np.concatenate([self.sizes, np.zeros((capacity - old, 2), np.int64)])


class RcfFamily(Family[RcfModel, RcfSlab]):
    """The rcf slabs on one device: node records, the fused op ``mmhost::rcf``."""

    name = "rcf"
    algorithms = ("rcf",)
    compile = staticmethod(compile_rcf)

    def slot_bytes(self, model: RcfModel) -> int:
        return rcf_slot_bytes(*model.slab_key)

    def new_slab(self, key: tuple[int, ...]) -> RcfSlab:
        c, t, d = key
        return RcfSlab(c, t, d, self.device)

    def row_width(self, slab: RcfSlab, meta: RcfModel) -> int:
        return slab.d

    def write(self, slab: RcfSlab, s: int, model: RcfModel) -> None:
        m, t, f = len(model.nodes), len(model.tree_root), model.box.shape[2]
        base = s * slab.c
        rec = model.nodes.copy()
        rec[:, :2] = np.where(rec[:, :2] >= 0, rec[:, :2] + base, -1)
        roots = np.where(model.tree_root >= 0, model.tree_root + base, -1)
        copy_in(slab.nodes, (s, slice(None, m)), rec)
        copy_in(slab.mass, (s, slice(None, m)), model.mass)
        copy_in(slab.box, (s, slice(None, m), slice(None), slice(None, f)), model.box)
        copy_in(slab.box, (s, slice(None, m), slice(None), slice(f, None)), 0.0)  # padding
        copy_in(slab.range_sum, (s, slice(None, m)), model.range_sum)
        copy_in(slab.tree_root, (s, slice(None, t)), roots)
        copy_in(slab.tree_mass, (s, slice(None, t)), model.tree_mass)
        copy_in(slab.model_trees, s, np.array([s * slab.t, s * slab.t + t], np.int64))
        slab.sizes[s] = (m, t)

    def read_back(self, slab: RcfSlab, slot: int, meta: RcfModel) -> RcfModel:
        m, t = (int(v) for v in slab.sizes[slot])
        f, base = meta.encoder.width, slot * slab.c

        def host(x: torch.Tensor) -> np.ndarray:
            return x.cpu().numpy().copy()

        rec = host(slab.nodes[slot, :m])
        rec[:, :2] = np.where(rec[:, :2] >= 0, rec[:, :2] - base, -1)
        roots = host(slab.tree_root[slot, :t])
        return replace(
            meta,
            nodes=rec,
            mass=host(slab.mass[slot, :m]),
            box=host(slab.box[slot, :m, :, :f]),
            range_sum=host(slab.range_sum[slot, :m]),
            tree_root=np.where(roots >= 0, roots - base, -1),
            tree_mass=host(slab.tree_mass[slot, :t]),
        )

    def clear(self, slab: RcfSlab, slot: int) -> None:
        slab.sizes[slot] = 0
        slab.model_trees[slot] = 0  # an empty range: a stale slot scores no trees

    def forward(self, slab: RcfSlab, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """x (N, D) and slots (N,) for one slab -> (N, 1) float32 anomaly scores."""
        return rcf_forward(x, slots, *slab.packed()).float()[:, None]
