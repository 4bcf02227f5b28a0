"""The tiered model cache: device (arena) -> host (RAM) -> disk -> store."""

from mmhost.cache.model_cache import ModelCache
from mmhost.cache.mover import Resident
from mmhost.types import ModelUsage

__all__ = ["ModelCache", "ModelUsage", "Resident"]
