"""Model families: each packs its models into arena slabs and runs one fused op per slab."""

from mmhost.families.base import Family, FamilyModel
from mmhost.families.knn import KnnFamily, KnnModel
from mmhost.families.linear import LinearFamily, LinearModel
from mmhost.families.rcf import RcfFamily, RcfModel
from mmhost.families.registry import FAMILIES, register
from mmhost.families.router import Families, Model, compile_model
from mmhost.families.trees import TreeModel, TreesFamily
from mmhost.types import Neighbors

__all__ = [
    "FAMILIES",
    "Families",
    "Family",
    "FamilyModel",
    "KnnFamily",
    "KnnModel",
    "LinearFamily",
    "LinearModel",
    "Model",
    "Neighbors",
    "RcfFamily",
    "RcfModel",
    "TreeModel",
    "TreesFamily",
    "compile_model",
    "register",
]
