"""Raw rows -> a model's float32 features, for families that cannot fold preprocessing into
their parameters (trees: it would change float32 rounding at the splits; k-NN: distances are
taken in the feature space).

``FeatureEncoder`` applies the input schema's encoding (``codecs.rows``), then each feature's
``scale * source + shift`` in float64, as scikit-learn does before its estimator sees the
values, and skips it when it is the identity. One encoder is shared by every model with the
same schema and preprocessing.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from mmhost.artifacts import Column, Preprocessing
from mmhost.codecs import RowEncoder, encoder_for


class FeatureEncoder:
    """Raw rows -> the model's float32 features: the input schema's encoding (``RowEncoder``),
    then feature j = scale[j] * encoded[slot[j]] + shift[j] unless that is the identity.
    Shared by every model with the same schema and preprocessing (see ``feature_encoder``)."""

    def __init__(
        self,
        rows: RowEncoder,
        slot: np.ndarray | None,
        scale: np.ndarray | None,
        shift: np.ndarray | None,
    ) -> None:
        self.rows = rows
        self.columns = rows.columns
        self.slot, self.scale, self.shift = slot, scale, shift  # (F,) each, or None: identity
        self.width = rows.width if slot is None else len(slot)
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}  # slot, scale, shift

    @property
    def encoded_width(self) -> int:
        """Columns of the raw rows' encoding, before the features are taken from it."""
        return self.rows.width

    def __reduce__(self) -> tuple[Any, ...]:
        # unpickled (a model decoded in a worker process) as this process's shared encoder
        if self.slot is None:
            return (_shared_encoder, (self.rows, None, None, None))
        assert self.scale is not None and self.shift is not None
        parts = (self.slot.tobytes(), self.scale.tobytes(), self.shift.tobytes())
        return (_shared_encoder, (self.rows, *parts))

    def encode(self, rows: Any, width: int | None = None) -> np.ndarray:
        """Rows -> (N, width) float32 features, zero beyond the model's."""
        width = self.width if width is None else width
        if self.slot is None:
            return self.rows.encode(rows, width)
        assert self.scale is not None and self.shift is not None
        enc = self.rows.encode(rows, dtype=np.float64)  # (N, E), the values as given
        out = np.zeros((enc.shape[0], width), np.float32)
        out[:, : self.width] = enc[:, self.slot] * self.scale + self.shift
        return out

    def encode_tensor(self, x: Any, device: torch.device, width: int) -> torch.Tensor:
        if self.slot is None:
            return self.rows.encode_tensor(x, device, width)
        assert self.scale is not None and self.shift is not None
        enc = self.rows.encode_tensor(x, device, self.rows.width, torch.float64)  # (N, E)
        mapping = self._on_device.get(device)
        if mapping is None:  # copied to a device once, not per request
            arrays = (self.slot, self.scale, self.shift)
            mapping = self._on_device[device] = tuple(
                torch.tensor(a, device=device)
                for a in arrays  # a copy: the arrays are read-only
            )
        slot, scale, shift = mapping
        feats = (enc.index_select(1, slot) * scale + shift).float()  # (N, F)
        if width > self.width:
            feats = torch.nn.functional.pad(feats, (0, width - self.width))
        return feats.contiguous()


def feature_encoder(columns: tuple[Column, ...], pre: Preprocessing) -> FeatureEncoder:
    rows = encoder_for(columns)
    slot = np.array(
        [rows.offsets[f.column] + (f.category or 0) for f in pre.features], dtype=np.int64
    )
    scale = np.ascontiguousarray(pre.scale, np.float64)
    shift = np.ascontiguousarray(pre.shift, np.float64)
    identity = (
        len(slot) == rows.width
        and (slot == np.arange(len(slot))).all()
        and (scale == 1.0).all()
        and (shift == 0.0).all()
    )
    if identity:
        return _shared_encoder(rows, None, None, None)
    return _shared_encoder(rows, slot.tobytes(), scale.tobytes(), shift.tobytes())


@functools.lru_cache(maxsize=4096)
def _shared_encoder(
    rows: RowEncoder, slot: bytes | None, scale: bytes | None, shift: bytes | None
) -> FeatureEncoder:
    if slot is None:
        return FeatureEncoder(rows, None, None, None)
    assert scale is not None and shift is not None
    return FeatureEncoder(
        rows,
        np.frombuffer(slot, np.int64),
        np.frombuffer(scale, np.float64),
        np.frombuffer(shift, np.float64),
    )
