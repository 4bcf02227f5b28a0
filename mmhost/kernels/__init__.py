"""Fused ops, one public function per family. Call sites never branch on device."""

from mmhost.kernels.linear import LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX, linear_forward

__all__ = ["LINK_IDENTITY", "LINK_SIGMOID", "LINK_SOFTMAX", "linear_forward"]
