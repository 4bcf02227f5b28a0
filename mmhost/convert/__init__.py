"""Converters from what users have to mmhost artifacts."""

from mmhost.convert.rcf import fit_rcf, from_rcf
from mmhost.convert.sklearn import from_sklearn
from mmhost.convert.xgboost import from_xgboost, save_xgboost

__all__ = ["fit_rcf", "from_rcf", "from_sklearn", "from_xgboost", "save_xgboost"]
