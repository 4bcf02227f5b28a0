"""The tiered model cache: device (arena) -> host (RAM) -> disk -> store."""

from mmhost.cache.model_cache import ModelCache, ModelUsage, Resident

__all__ = ["ModelCache", "ModelUsage", "Resident"]
