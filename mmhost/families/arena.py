"""Arena slabs: preallocated per-slot tensors handed out one slot per model.

Bookkeeping only (which slots are free); moving a model's bytes in or out is the family's job.
A slab grows by doubling (one copy, amortised; never on the per-request path of a warm model)
up to the slots that its byte budget allows, so a million resident models are a million slots
in a handful of tensors, not a million tensors.

``Slab`` is the bookkeeping every family shares: each tensor named in ``fields`` has one row per
slot (dimension 0), and growing copies all of them. ``LinearSlab`` holds (S, K, D) weights;
the trees family's ``TreeSlab`` (``families/trees.py``) holds node records.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

import torch

F32 = 4
HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # Linux's <sys/mman.h>


@cache
def _madvise() -> ctypes._NamedFuncPointer | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A slab tensor of zeros. In host memory, the whole 2 MiB pages inside a large one are
    asked to be transparent huge pages (madvise, before the zeros touch them), where Linux
    offers them: a walk over node records that outgrow the caches then misses the TLB far less
    often (Random Cut Forests score ~15% faster at 500 resident forests). Best effort: where
    the kernel says no, the tensor is the same, in small pages."""
    t = torch.empty(shape, dtype=dtype, device=device)
    nbytes = t.numel() * t.element_size()
    advise = _madvise() if t.device.type == "cpu" and nbytes >= 2 * HUGE_PAGE else None
    if advise is not None:
        start = -(-t.data_ptr() // HUGE_PAGE) * HUGE_PAGE
        end = (t.data_ptr() + nbytes) // HUGE_PAGE * HUGE_PAGE
        if end > start:
            advise(start, end - start, _MADV_HUGEPAGE)  # a refusal leaves small pages
    return t.zero_()


def slot_bytes(k: int, d: int) -> int:
    """Exact device bytes one linear model occupies: K*D weights, K biases and its link code."""
    return (k * d + k) * F32 + 1


def size_class(d: int) -> int:
    """Encoded width rounded up to a power of two >= 8: few slabs, at most 2x padding."""
    return max(8, 1 << (max(d, 1) - 1).bit_length())


def fine_class(n: int, floor: int) -> int:
    """``n`` rounded up to a multiple of an eighth of the next power of two (>= floor): a
    class wastes under 25%, and a handful of classes cover a fleet of similar models."""
    if n <= floor:
        return floor
    step = max(1, (1 << (n - 1).bit_length()) // 8)
    return -(-n // step) * step


class Slab:
    """Slots of one shape, in tensors whose dimension 0 is the slot. Subclasses set ``fields``
    (the tensors' attribute names), ``k`` (outputs per row) and ``slot_bytes``."""

    fields: tuple[str, ...] = ()
    k: int
    device: torch.device
    key: tuple[int, ...] = ()  # its family's key for it (set when the family makes it)
    family: str = ""  # the family that made it

    def __init__(self, capacity: int) -> None:
        self._free = list(range(capacity - 1, -1, -1))  # a stack: low slots first
        self.used = 0

    @property
    def capacity(self) -> int:
        return int(getattr(self, self.fields[0]).shape[0])

    @property
    def slot_bytes(self) -> int:
        raise NotImplementedError

    @property
    def reserved_bytes(self) -> int:
        return self.capacity * self.slot_bytes

    def alloc(self) -> int:
        if not self._free:
            self._grow(self.capacity * 2)
        self.used += 1
        return self._free.pop()

    def free(self, slot: int) -> None:
        assert 0 <= slot < self.capacity, f"slot {slot} outside the slab of {self.capacity}"
        self.used -= 1
        self._free.append(slot)

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        for name in self.fields:
            t = getattr(self, name)
            grown = zeros((capacity, *t.shape[1:]), t.dtype, t.device)
            grown[:old] = t
            setattr(self, name, grown)
        self._free.extend(range(capacity - 1, old - 1, -1))


class LinearSlab(Slab):
    """Slots for linear models with K outputs over D (padded) inputs."""

    fields = ("weight", "bias", "link")

    def __init__(self, k: int, d: int, device: torch.device, capacity: int = 64) -> None:
        self.k, self.d, self.device = k, d, device
        self.weight = torch.zeros((capacity, k, d), dtype=torch.float32, device=device)  # (S,K,D)
        self.bias = torch.zeros((capacity, k), dtype=torch.float32, device=device)  # (S, K)
        self.link = torch.zeros((capacity,), dtype=torch.int8, device=device)  # (S,)
        super().__init__(capacity)

    @property
    def slot_bytes(self) -> int:
        return slot_bytes(self.k, self.d)
