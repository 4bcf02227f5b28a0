"""Converters from what users have to mmhost artifacts."""

from mmhost.convert.sklearn import from_sklearn

__all__ = ["from_sklearn"]
