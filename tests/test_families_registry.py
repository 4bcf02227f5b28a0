"""The family plug-in point (``mmhost/families/base.py``, ``registry.py``): a family defined in
this file alone — its model, slab, op and one ``register`` call — is compiled, placed, tiered,
batched beside the built-in families and answered by a Host, with nothing outside this file
knowing it exists."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from mmhost import Host
from mmhost.artifacts import Artifact, Column, Preprocessing
from mmhost.codecs import RowEncoder, encoder_for
from mmhost.convert import from_sklearn
from mmhost.families import FAMILIES, Family, compile_model, register
from mmhost.families.arena import Slab
from mmhost.families.base import copy_in


@dataclass(eq=False, slots=True)
class ScaledSumModel:
    """A toy family: score = scale * sum(row)."""

    family: ClassVar[str] = "scaled_sum"
    task: str
    classes: list[Any] | None
    encoder: RowEncoder
    scale: float
    threshold: float = 0.5

    @property
    def slab_key(self) -> tuple[int, ...]:
        return (self.encoder.width,)

    @property
    def nbytes(self) -> int:
        return 4

    @property
    def meta_key(self) -> tuple[object, ...]:
        return ("scaled_sum", self.encoder)

    def stripped(self) -> ScaledSumModel:
        return replace(self, scale=0.0)


class ScaledSumSlab(Slab):
    fields = ("scale",)

    def __init__(self, d: int, device: torch.device) -> None:
        self.k, self.d, self.device = 1, d, device
        self.scale = torch.zeros(8, dtype=torch.float32, device=device)
        super().__init__(8)

    @property
    def slot_bytes(self) -> int:
        return 4


def _compile(art: Artifact, preprocessor: Artifact | None) -> ScaledSumModel:
    return ScaledSumModel(
        "regressor", None, encoder_for(tuple(art.inputs)), float(art.params["scale"][0])
    )


class ScaledSumFamily(Family[ScaledSumModel, ScaledSumSlab]):
    name = "scaled_sum"
    algorithms = ("scaled_sum",)
    compile = staticmethod(_compile)

    def slot_bytes(self, model: ScaledSumModel) -> int:
        return 4

    def new_slab(self, key: tuple[int, ...]) -> ScaledSumSlab:
        return ScaledSumSlab(key[0], self.device)

    def write(self, slab: ScaledSumSlab, slot: int, model: ScaledSumModel) -> None:
        copy_in(slab.scale, slot, model.scale)

    def read_back(self, slab: ScaledSumSlab, slot: int, meta: ScaledSumModel) -> ScaledSumModel:
        return replace(meta, scale=float(slab.scale[slot]))

    def row_width(self, slab: ScaledSumSlab, meta: ScaledSumModel) -> int:
        return slab.d

    def forward(self, slab: ScaledSumSlab, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return (x.sum(dim=1) * slab.scale.index_select(0, slots))[:, None]


@pytest.fixture
def scaled_sum():
    register(ScaledSumFamily)
    yield
    FAMILIES.pop("scaled_sum", None)  # hosts of later tests don't have it


def _artifact(scale: float, d: int = 3) -> Artifact:
    return Artifact(
        "model",
        [Column(f"x{i}") for i in range(d)],
        Preprocessing.identity(d),
        algorithm="scaled_sum",
        task="regressor",
        params={"scale": np.array([scale])},
    )


def test_a_registered_family_is_served_beside_the_built_in_ones(scaled_sum, store, host_factory):
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    from sklearn.linear_model import LinearRegression

    sk = LinearRegression().fit(x, x @ np.array([1.0, 2.0, 3.0]))
    from_sklearn(sk).save(store / "linear")
    h: Host = host_factory(store=str(store))
    h.load("linear")
    for i, scale in enumerate([2.0, -0.5]):
        h._run(h.cache._place(f"toy{i}", compile_model(_artifact(scale)), "v0"))
    outs = h.predict_many([("toy0", x[:4]), ("linear", x[4:]), ("toy1", x)])
    np.testing.assert_allclose(outs[0], 2.0 * x[:4].sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(outs[1], sk.predict(x[4:]), rtol=1e-5)
    np.testing.assert_allclose(outs[2], -0.5 * x.sum(axis=1), rtol=1e-6)
    families = h.stats()["tiers"]["device"]["families"]
    assert families["scaled_sum"]["models"] == 2 and families["linear"]["models"] == 1
    # demoted to the host tier and promoted back: read_back and write round-trip the slot
    h._run(h._call(h.cache.mover.demote, h.cache.resident["toy1"]))
    assert h.stats()["tiers"]["device"]["families"]["scaled_sum"]["models"] == 1
    np.testing.assert_allclose(h.predict("toy1", x[:2]), -0.5 * x[:2].sum(axis=1), rtol=1e-6)
    assert h.unload("toy0") and h.unload("toy1")
    assert h.stats()["tiers"]["device"]["families"]["scaled_sum"] == {
        "models": 0,
        "slabs": 0,
        "reserved_bytes": 0,
    }


def test_an_algorithm_belongs_to_one_family(scaled_sum):
    class Clash(ScaledSumFamily):
        name = "clash"
        algorithms = ("linear",)

    with pytest.raises(ValueError, match="already compiles the algorithm 'linear'"):
        register(Clash)
    assert "clash" not in FAMILIES


def test_an_algorithm_no_family_compiles_is_refused():
    from mmhost.artifacts.manifest import ManifestError

    with pytest.raises(ManifestError, match="algorithm=scaled_sum"):
        compile_model(_artifact(1.0))
