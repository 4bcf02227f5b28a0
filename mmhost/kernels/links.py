"""Link codes: one table for the kernels (the linear op applies its link inside) and the
families (which store a code per slot and apply the others after the op)."""

from __future__ import annotations

import torch

LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX, LINK_EXP, LINK_ARGMAX = range(5)
LINKS = {
    "identity": LINK_IDENTITY,
    "sigmoid": LINK_SIGMOID,
    "softmax": LINK_SOFTMAX,
    "exp": LINK_EXP,
    "argmax": LINK_ARGMAX,
}


def apply_link(code: int, margins: torch.Tensor) -> torch.Tensor:
    """(N, K) margins -> outputs. argmax puts the class index (as float) in column 0."""
    if code == LINK_SIGMOID:
        return torch.sigmoid(margins)
    if code == LINK_SOFTMAX:
        return torch.softmax(margins, dim=1)
    if code == LINK_EXP:
        return torch.exp(margins)
    if code == LINK_ARGMAX:
        out = torch.zeros_like(margins)
        out[:, 0] = margins.argmax(dim=1).to(margins.dtype)
        return out
    return margins
