"""Which family a model belongs to: one object that the cache and the batcher talk to.

A model carries its family's name (``model.family``) and a slab the name of the family that
made it (``slab.family``), so placing, reading back, freeing and running dispatch through the
registry (``families/registry.py``) without the caller knowing which family it holds.
``compile_model`` picks the family by the artifact's algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmhost.artifacts import Artifact
from mmhost.artifacts.manifest import ManifestError
from mmhost.families.arena import Slab
from mmhost.families.base import Family, FamilyModel
from mmhost.families.registry import FAMILIES, family_for
from mmhost.types import Neighbors

Model = FamilyModel


def compile_model(art: Artifact, preprocessor: Artifact | None = None) -> Model:
    """The artifact composed into its family's host-memory model (ManifestError if it can't)."""
    family = family_for(art.algorithm) if art.kind == "model" else None
    if family is None:
        raise ManifestError(f"not a model artifact (kind={art.kind}, algorithm={art.algorithm})")
    return family.compile(art, preprocessor)


class Families:
    """Every registered family on one device, behind the interface each family implements."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.by_name: dict[str, Family[Any, Any]] = {n: f(device) for n, f in FAMILIES.items()}

    def _of_slab(self, slab: Slab) -> Family[Any, Any]:
        return self.by_name[slab.family]

    def slot_bytes(self, model: Model) -> int:
        return self.by_name[model.family].slot_bytes(model)

    def place(self, model: Model) -> tuple[Slab, int]:
        slab, slot = self.by_name[model.family].place(model)
        return slab, slot

    def read_back(self, slab: Slab, slot: int, meta: Model) -> Model:
        model: Model = self._of_slab(slab).read_back(slab, slot, meta)
        return model

    def free(self, slab: Slab, slot: int) -> None:
        self._of_slab(slab).free(slab, slot)

    def row_width(self, slab: Slab, meta: Model) -> int:
        """Columns of the encoded rows that ``slab``'s op takes for this model."""
        return self._of_slab(slab).row_width(slab, meta)

    def forward(self, slab: Slab, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """(N, K) outputs of the rows ``x`` under the models in ``slots`` of ``slab``."""
        return self._of_slab(slab).forward(slab, x, slots)

    def answer(self, meta: Model, out: np.ndarray) -> tuple[np.ndarray, Neighbors | None]:
        """(N, K) outputs -> what predict returns, and a k-NN answer's neighbours."""
        return self.by_name[meta.family].answer(meta, out)

    def answer_values(self, slab: Slab, meta: Model) -> int:
        """The fewest values any encoding of one row's answer holds."""
        return self._of_slab(slab).answer_values(slab, meta)

    @property
    def reserved_bytes(self) -> int:
        return sum(f.reserved_bytes for f in self.by_name.values())

    def stats(self) -> dict[str, dict[str, int]]:
        """Per family: resident models, slabs (size classes in use) and the bytes they reserve
        (capacity grows by doubling, so reserved >= the models' exact slot bytes)."""
        return {name: f.stats() for name, f in self.by_name.items()}
