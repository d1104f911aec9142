"""Torch building blocks shared by the learned methods (imports torch; the core does not): layers
(:mod:`.layers`), losses (:mod:`.losses`), the offline VGG-16 (:mod:`.vgg`) and training helpers
(:mod:`.training`)."""
from .layers import SpatialTransformer, VecInt, resolve_device, to_tensor, warp_torch
from .training import parameter_count

__all__ = ["SpatialTransformer", "VecInt", "resolve_device", "to_tensor", "warp_torch", "parameter_count"]
