"""DenseFuse: Li & Wu, "DenseFuse: A fusion approach to infrared and visible images", IEEE TIP 28(5), 2019.

An autoencoder trained to reconstruct single images; at test time both inputs are encoded, their
feature maps fused by a fixed rule, and the result decoded.

- Encoder: conv3×3 1→16, ReLU, then a dense block of three conv3×3 →16 (ReLU), each fed the
  concatenation of all earlier outputs (16→32→48→64 channels).
- Decoder: conv3×3 64→64, 64→32, 32→16 (ReLU) and 16→1 (linear).
- Reflection padding everywhere; 74,193 parameters.
- Loss: L = MSE(O, I) + λ·(1 − SSIM(O, I)), λ = 100 (the released model).
- Fusion rules: ``"addition"`` sums the two feature maps (the TF release's default, used for
  the paper's IR/visible results); ``"mean"`` halves the sum (the PyTorch release);
  ``"l1"``: activity C = ‖φ‖₁ over channels, averaged over 3×3 blocks (r = 1, as in the paper;
  the TF code skips the averaging), weights Cᵢ / ΣC.

The paper trains on 80k MS-COCO images (256², Adam 1e-4, batch 2, 4 epochs); we train the same
network and loss on the offline set (phantom + ``skimage.data``) as 64² patches.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.methods import register_method
from fusionbench.nn.layers import to_tensor
from fusionbench.nn.losses import ssim

from ._deep import TrainableFusion

__all__ = ["DenseFuseNet", "DenseFuse", "densefuse_loss", "fuse_features", "STRATEGIES"]

STRATEGIES = ("addition", "mean", "l1")


class _ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3)
        self.relu = relu

    def forward(self, x):
        x = self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        return F.relu(x) if self.relu else x


class DenseFuseNet(nn.Module):
    """DenseFuse's encoder (conv + 3-layer dense block) and decoder."""

    def __init__(self):
        super().__init__()
        self.conv1 = _ConvLayer(1, 16)
        self.dense = nn.ModuleList([_ConvLayer(16 * (i + 1), 16) for i in range(3)])
        self.decoder = nn.Sequential(_ConvLayer(64, 64), _ConvLayer(64, 32), _ConvLayer(32, 16),
                                     _ConvLayer(16, 1, relu=False))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for layer in self.dense:
            x = torch.cat([x, layer(x)], dim=1)
        return x

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def densefuse_loss(output: torch.Tensor, target: torch.Tensor, ssim_weight: float = 100.0) -> dict[str, torch.Tensor]:
    """L = MSE + λ(1 − SSIM) with the terms; SSIM as :func:`fusionbench.nn.losses.ssim` ('valid', TF's)."""
    mse = F.mse_loss(output, target)
    similarity = ssim(output, target)
    return {"loss": mse + ssim_weight * (1.0 - similarity), "mse": mse, "ssim": similarity}


def fuse_features(fa: torch.Tensor, fb: torch.Tensor, strategy: str = "addition") -> torch.Tensor:
    """Combine two (B, C, H, W) feature maps with one of :data:`STRATEGIES`."""
    if strategy == "addition":
        return fa + fb
    if strategy == "mean":
        return 0.5 * (fa + fb)
    if strategy == "l1":
        ca = F.avg_pool2d(fa.abs().sum(1, keepdim=True), 3, 1, 1, count_include_pad=False)
        cb = F.avg_pool2d(fb.abs().sum(1, keepdim=True), 3, 1, 1, count_include_pad=False)
        total = ca + cb
        wa = torch.where(total > 0, ca / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
        return wa * fa + (1.0 - wa) * fb
    raise ValueError(f"DenseFuse strategy must be one of {STRATEGIES}, got {strategy!r}")


@register_method("densefuse", kind="cnn", reference="Li & Wu, IEEE TIP 28(5) 2019")
class DenseFuse(TrainableFusion):
    """DenseFuse autoencoder trained here; ``strategy`` picks the feature fusion rule.

    The default is the paper's l1-norm rule: with an autoencoder trained until its validation
    curve is flat, ``"addition"`` decodes close to the sum of the two images and saturates the
    body (validation SSIM/Qabf 0.55 against 0.81 for ``"l1"``, docs/baselines.md).
    """

    weights_name = "densefuse"
    train_defaults = {"steps": 2000, "batch": 8, "patch": 64, "lr": 1e-3, "ssim_weight": 100.0}
    version = "1"

    def __init__(self, *, strategy: str = "l1", ssim_weight: float | None = None, **kw):
        if strategy not in STRATEGIES:
            raise ValueError(f"DenseFuse strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        super().__init__(**kw)
        if ssim_weight is not None:
            self.train_settings["ssim_weight"] = float(ssim_weight)

    def build(self) -> nn.Module:
        return DenseFuseNet()

    def loss(self, batch: torch.Tensor):
        return densefuse_loss(self.net(batch), batch, float(self.train_settings["ssim_weight"]))

    def fuse_pair(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        fa = self.net.encode(to_tensor(ir, self.torch_device))
        fb = self.net.encode(to_tensor(vis, self.torch_device))
        return self.net.decode(fuse_features(fa, fb, self.strategy))[0, 0].float().cpu().numpy()

    def config(self):
        return {**super().config(), "strategy": self.strategy}
