"""Which family a model belongs to: one object that the cache and the batcher talk to.

A model carries its family's name (``LinearModel.family``, ``TreeModel.family``) and a slab is
its family's own type, so placing, reading back, freeing and running dispatch without the
caller knowing which family it holds. ``compile_model`` picks the family by the artifact's
algorithm.
"""

from __future__ import annotations

import torch

from mmhost.artifacts import Artifact
from mmhost.artifacts.manifest import ManifestError
from mmhost.families.arena import LinearSlab, Slab
from mmhost.families.linear import LinearFamily, LinearModel, compile_linear
from mmhost.families.trees import TreeModel, TreesFamily, TreeSlab, compile_trees

Model = LinearModel | TreeModel
Family = LinearFamily | TreesFamily


def compile_model(art: Artifact, preprocessor: Artifact | None = None) -> Model:
    """The artifact composed into its family's host-memory model (ManifestError if it can't)."""
    if art.algorithm == "xgboost":
        return compile_trees(art, preprocessor)
    if art.algorithm == "linear":
        return compile_linear(art, preprocessor)
    raise ManifestError(f"not a model artifact (kind={art.kind}, algorithm={art.algorithm})")


class Families:
    """Every family on one device, behind the interface each family implements."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.linear = LinearFamily(device)
        self.trees = TreesFamily(device)

    def _of_model(self, model: Model) -> Family:
        return self.trees if model.family == "trees" else self.linear

    def _of_slab(self, slab: Slab) -> Family:
        if isinstance(slab, TreeSlab):
            return self.trees
        assert isinstance(slab, LinearSlab), f"no family owns {type(slab).__name__}"
        return self.linear

    def slot_bytes(self, model: Model) -> int:
        return self._of_model(model).slot_bytes(model)  # type: ignore[arg-type]

    def place(self, model: Model) -> tuple[Slab, int]:
        return self._of_model(model).place(model)  # type: ignore[arg-type]

    def read_back(self, slab: Slab, slot: int, meta: Model) -> Model:
        return self._of_slab(slab).read_back(slab, slot, meta)  # type: ignore[arg-type]

    def free(self, slab: Slab, slot: int) -> None:
        self._of_slab(slab).free(slab, slot)  # type: ignore[arg-type]

    def row_width(self, slab: Slab, meta: Model) -> int:
        """Columns of the encoded rows that ``slab``'s op takes for this model."""
        return self._of_slab(slab).row_width(slab, meta)  # type: ignore[arg-type]

    def forward(self, slab: Slab, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """(N, K) outputs of the rows ``x`` under the models in ``slots`` of ``slab``."""
        return self._of_slab(slab).forward(slab, x, slots)  # type: ignore[arg-type]

    @property
    def reserved_bytes(self) -> int:
        return self.linear.reserved_bytes + self.trees.reserved_bytes

    def stats(self) -> dict[str, dict[str, int]]:
        """Per family: resident models, slabs (size classes in use) and the bytes they reserve
        (capacity grows by doubling, so reserved >= the models' exact slot bytes)."""
        families: dict[str, Family] = {"linear": self.linear, "trees": self.trees}
        return {
            name: {
                "models": sum(s.used for s in f.slabs.values()),
                "slabs": len(f.slabs),
                "reserved_bytes": f.reserved_bytes,
            }
            for name, f in families.items()
        }
