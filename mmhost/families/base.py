"""What a family is: the plug-in point for a kind of model.

A family turns a parsed ``Artifact`` into a host-memory model (``compile``), says which slab a
model goes in (``model.slab_key``) and its exact slot bytes, writes a model into a slot and reads
it back, and runs its fused op over one slab. ``Family`` holds what every family shares: its
slabs by key, placing (a slab made on first use, a slot freed again if the write fails), freeing
(an empty slab gives its memory back), reserved bytes and stats. ``copy_in`` is the one CPU/CUDA
copy branch. A new family is one module here, its kernel module, and a line in
``families/registry.py``; nothing else branches on families.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import numpy as np
import torch

from mmhost.artifacts import Artifact, Column
from mmhost.families.arena import Slab
from mmhost.types import Neighbors


class Encoder(Protocol):
    """Raw rows -> the (N, width) float32 matrix a family's op takes (shared between models)."""

    @property
    def columns(self) -> tuple[Column, ...]: ...

    @property
    def width(self) -> int:
        """Columns of the encoded rows the model reads."""
        ...

    @property
    def encoded_width(self) -> int:
        """Columns of the raw rows' encoding (before a family picks its features from it)."""
        ...

    def encode(self, rows: Any, width: int | None = None) -> np.ndarray: ...

    def encode_tensor(self, x: Any, device: torch.device, width: int) -> torch.Tensor: ...


class FamilyModel(Protocol):
    """A composed model in host memory (the host tier keeps these), as the cache, the batcher
    and the answer encoders see it."""

    family: ClassVar[str]

    @property
    def task(self) -> str:
        """regressor, binary_classifier or multiclass_classifier."""
        ...

    @property
    def classes(self) -> list[Any] | None: ...

    @property
    def threshold(self) -> float:
        """A binary classifier's decision threshold on P(positive)."""
        ...

    @property
    def encoder(self) -> Encoder: ...

    @property
    def slab_key(self) -> tuple[int, ...]:
        """The size class: models with equal keys share a slab."""
        ...

    @property
    def nbytes(self) -> int:
        """Host-tier bytes (shared parts, such as the encoder, not counted)."""
        ...

    @property
    def meta_key(self) -> tuple[object, ...]:
        """Models with equal keys share one ``stripped()`` copy for their bookkeeping."""
        ...

    def stripped(self) -> Self:
        """A parameter-less copy: what a resident model keeps beside its slot."""
        ...


M = TypeVar("M", bound=FamilyModel)
S = TypeVar("S", bound=Slab)


class Family(Generic[M, S]):
    """Owns one family's slabs on one device. Subclasses set ``name`` (what its models'
    ``family`` says) and ``algorithms`` (the artifact algorithms it compiles) and implement the
    methods that raise NotImplementedError."""

    name: ClassVar[str]
    algorithms: ClassVar[tuple[str, ...]]

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.slabs: dict[tuple[int, ...], S] = {}

    # --- what each family implements ----------------------------------------------------------
    @staticmethod
    def compile(art: Artifact, preprocessor: Artifact | None) -> M:
        """The artifact (behind an optional shared preprocessor) as a host-memory model."""
        raise NotImplementedError

    def slot_bytes(self, model: M) -> int:
        """Exact device bytes of the model's slot (what the device tier accounts)."""
        raise NotImplementedError

    def new_slab(self, key: tuple[int, ...]) -> S:
        raise NotImplementedError

    def write(self, slab: S, slot: int, model: M) -> None:
        """Copy ``model`` into ``slot`` of ``slab``."""
        raise NotImplementedError

    def read_back(self, slab: S, slot: int, meta: M) -> M:
        """The model as its slot holds it (demotion keeps exactly these bytes)."""
        raise NotImplementedError

    def row_width(self, slab: S, meta: M) -> int:
        """Columns of the encoded rows that ``slab``'s op takes for this model."""
        raise NotImplementedError

    def forward(self, slab: S, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """x (N, width) and slots (N,) of one slab -> (N, K) outputs after each model's link."""
        raise NotImplementedError

    def clear(self, slab: S, slot: int) -> None:
        """Before a slot is freed: forget what the family keeps of it (default: nothing)."""

    def answer(self, meta: M, out: np.ndarray) -> tuple[np.ndarray, Neighbors | None]:
        """(N, K) outputs of ``forward`` -> what ``Host.predict`` returns ((N, k) probabilities
        for multiclass, else (N,)), and the neighbours of a k-NN answer (default: none)."""
        return (out if meta.task == "multiclass_classifier" else out[:, 0]), None

    def answer_values(self, slab: S, meta: M) -> int:
        """The fewest values any encoding of one row's answer holds (scores and a label)."""
        return slab.k + (meta.classes is not None)

    # --- shared --------------------------------------------------------------------------------
    def place(self, model: M) -> tuple[S, int]:
        """Copy the model into a free slot of its size class's slab (made on first use)."""
        key = model.slab_key
        slab = self.slabs.get(key)
        if slab is None:
            slab = self.slabs[key] = self.new_slab(key)
            slab.key, slab.family = key, self.name
        slot = slab.alloc()
        try:
            self.write(slab, slot, model)
        except BaseException:
            slab.free(slot)  # nothing points at the slot yet
            raise
        return slab, slot

    def free(self, slab: S, slot: int) -> None:
        self.clear(slab, slot)
        slab.free(slot)
        if not slab.used:  # an empty slab gives its memory back
            del self.slabs[slab.key]

    @property
    def reserved_bytes(self) -> int:
        return sum(s.reserved_bytes for s in self.slabs.values())

    def stats(self) -> dict[str, int]:
        """Resident models, slabs (size classes in use) and the bytes they reserve."""
        return {
            "models": sum(s.used for s in self.slabs.values()),
            "slabs": len(self.slabs),
            "reserved_bytes": self.reserved_bytes,
        }


def copy_in(tensor: torch.Tensor, index: Any, value: np.ndarray | float) -> None:
    """``tensor[index] = value`` from host memory: through a numpy view on the CPU (a memcpy,
    ~10x cheaper than torch indexing), one host-to-device copy on CUDA."""
    if tensor.device.type == "cpu":
        tensor.numpy()[index] = value
    elif isinstance(value, np.ndarray):
        tensor[index].copy_(torch.from_numpy(np.ascontiguousarray(value)))
    else:
        tensor[index] = value
