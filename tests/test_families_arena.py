"""Slab memory (mmhost/families/arena.py): zeros of the asked shape, on host memory asked to be
transparent huge pages where Linux offers them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from mmhost.families import arena
from mmhost.families.rcf import RcfSlab

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_eligible(address: int) -> bool:
    """Whether the mapping holding ``address`` may take huge pages (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        span = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if span:
            inside = int(span[1], 16) <= address < int(span[2], 16)
        elif inside and line.startswith("THPeligible:"):
            return line.split()[1] == "1"
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.float64, torch.int8])
def test_zeros_are_zeros_of_the_shape(dtype):
    for shape in [(3, 5), (1 << 20, 4), (0, 7)]:
        t = arena.zeros(shape, dtype, torch.device("cpu"))
        assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
        assert not t.any()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "[never]" in (THP.read_text() if THP.exists() else ""),
    reason="transparent huge pages are off or not Linux",
)
def test_a_large_slab_is_advised_huge_pages():
    big = arena.zeros((8 << 20,), torch.float32, torch.device("cpu"))  # 32 MiB
    middle = big.data_ptr() + big.numel() * 2  # well inside the advised, aligned range
    assert _thp_eligible(middle)
    if "[madvise]" in THP.read_text():  # only advised memory may: a plain tensor may not
        plain = torch.zeros((8 << 20,), dtype=torch.float32)
        assert not _thp_eligible(plain.data_ptr() + plain.numel() * 2)
    # slabs grow through the same allocator: a grown RCF slab's boxes are advised too
    slab = RcfSlab(512, 8, 8, torch.device("cpu"))
    slab._grow(slab.capacity * 64)
    box = slab.box
    assert box.numel() * 4 >= 4 * arena.HUGE_PAGE
    assert _thp_eligible(box.data_ptr() + box.numel() * 2)
