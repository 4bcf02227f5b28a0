"""Model families: each packs its models into arena slabs and runs one fused op per slab."""

from mmhost.families.linear import LinearFamily, LinearModel

__all__ = ["LinearFamily", "LinearModel"]
