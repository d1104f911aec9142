"""Torch building blocks shared by the learned methods (imports torch; the core does not)."""
from .layers import SpatialTransformer, VecInt, resolve_device, warp_torch

__all__ = ["SpatialTransformer", "VecInt", "resolve_device", "warp_torch"]
