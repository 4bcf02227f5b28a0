"""Request bodies and raw rows -> float32 rows; scores -> responses."""

from mmhost.codecs.rows import RowEncoder, encoder_for

__all__ = ["RowEncoder", "encoder_for"]
