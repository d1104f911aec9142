"""VGGML: Li, Wu & Kittler, "Infrared and visible image fusion using a deep learning framework",
ICPR 2018 (VIFB calls it "DLF"); the rule of the authors' Matlab code
(``fusion_method_multi_layers.m``).

1. Base/detail split by SPORCO's Tikhonov low-pass: pad 16 px 'symmetric', solve
   (1 + λ|Gr|² + λ|Gc|²) X̂ = Ŝ in the Fourier domain with Gr, Gc the transforms of the differences
   [−1, 1] along rows and columns, λ = 5, crop; detail = image − base.
2. Fused base = average of the two bases.
3. Each detail image, repeated to 3 channels and fed as it is (no mean subtraction, as the
   MatConvNet code), goes through a pretrained VGG; at 4 depths (conv1_1, conv2_1, conv3_1,
   conv4_1) the activity A = Σ_channels |φ| is averaged over 3×3 (zero padding), the weights
   wᵢ = Aᵢ / (A₁ + A₂) are upsampled by nearest-neighbour block replication (×1, ×2, ×4, ×8; the
   edge a feature map does not cover gets weight 0) and weight the two detail images.
4. Fused detail = element-wise maximum over the 4 depths; F = base + detail, ``im2uint8``.

The Matlab code taps the convolutions *before* their ReLU (its ``res(2)``, ``res(7)``, ``res(12)``,
``res(21)``), although the paper says relu1_1..relu4_1: ``taps="conv"`` (default) follows the
code that produced the published numbers, ``taps="relu"`` the paper's wording.

Feature network: the paper uses ImageNet VGG-19; no VGG-19 can be obtained offline, so this uses
the ImageNet VGG-16 of :mod:`fusionbench.nn.vgg` (same first four taps: conv1_1..conv3_1 are the
same layers of the same family, conv4_1 follows 3 instead of 4 convolutions of block 3), or a
seeded random VGG-16 when it is not installed. :attr:`VGGML.feature_network` names what was used
and the results table shows it. There is nothing to train.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fusionbench.methods import register_method
from fusionbench.nn.layers import to_tensor
from fusionbench.nn.vgg import VGG16_CONV_TAPS, VGG16_RELU_TAPS, extract, vgg16_features

from ..matlab import im2uint8
from ._deep import TorchFusion

__all__ = ["tikhonov_lowpass", "VGGML", "detail_weights", "LEVELS"]

LEVELS = ("1_1", "2_1", "3_1", "4_1")


def tikhonov_lowpass(img: np.ndarray, lmbda: float = 5.0, npad: int = 16) -> np.ndarray:
    """SPORCO's ``tikhonov_filter``: the minimiser of ‖x − s‖² + λ(‖∇r x‖² + ‖∇c x‖²), via FFT.

    The image is padded by ``npad`` pixels ('symmetric', Matlab/numpy convention) so that the
    periodic boundary of the FFT solve stays away from the kept region.
    """
    img = np.asarray(img, dtype=np.float64)
    padded = np.pad(img, npad, mode="symmetric")
    shape = padded.shape
    grad_r = np.fft.fft2(np.array([[-1.0], [1.0]]), shape)
    grad_c = np.fft.fft2(np.array([[-1.0, 1.0]]), shape)
    denom = 1.0 + lmbda * (np.abs(grad_r) ** 2 + np.abs(grad_c) ** 2)
    low = np.real(np.fft.ifft2(np.fft.fft2(padded) / denom))
    return low[npad:npad + img.shape[0], npad:npad + img.shape[1]]


def detail_weights(fa: torch.Tensor, fb: torch.Tensor, unit: int, shape: tuple[int, int]) -> torch.Tensor:
    """Weight of input A at full resolution from two (1, C, h, w) feature maps at scale ``unit``.

    l1 activity over channels, 3×3 mean with zero padding, normalised to sum to 1, block-replicated
    by ``unit``; where ``unit·h < H`` (or ``unit·w < W``) the uncovered edge gets weight 0.
    """
    ka = F.avg_pool2d(fa.abs().sum(1, keepdim=True), 3, 1, 1, count_include_pad=True)
    kb = F.avg_pool2d(fb.abs().sum(1, keepdim=True), 3, 1, 1, count_include_pad=True)
    total = ka + kb
    wa = torch.where(total > 0, ka / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
    up = wa.repeat_interleave(unit, dim=2).repeat_interleave(unit, dim=3)[0, 0]
    out = torch.zeros(shape, dtype=up.dtype, device=up.device)
    rows, cols = min(shape[0], up.shape[0]), min(shape[1], up.shape[1])
    out[:rows, :cols] = up[:rows, :cols]
    return out


@register_method("vggml", kind="cnn", reference="Li, Wu & Kittler, ICPR 2018 (DLF)")
class VGGML(TorchFusion):
    """Li et al.'s multi-layer deep-feature fusion on a frozen pretrained VGG (no training)."""

    trainable = False

    def __init__(self, *, vgg: str = "auto", taps: str = "conv", lmbda: float = 5.0, seed: int = 0,
                 roles: dict[str, str] | None = None, device: str = "auto"):
        super().__init__(roles=roles, device=device)
        if taps not in ("conv", "relu"):
            raise ValueError(f"VGGML taps must be 'conv' or 'relu', got {taps!r}")
        self.taps, self.lmbda = taps, float(lmbda)
        self.features, source = vgg16_features(vgg, seed=seed)
        table = VGG16_CONV_TAPS if taps == "conv" else VGG16_RELU_TAPS
        self.tap_ends = [table[f"{taps}{level}"] for level in LEVELS]
        # Keep only the layers up to conv4_1: the rest is never evaluated.
        self.features = self.features[:max(self.tap_ends)]
        self.feature_network = f"{source} to {taps}4_1 (paper: ImageNet VGG-19)"

    def modules(self):
        return [self.features]

    def describe_weights(self) -> str:
        return self.feature_network

    def tap_weights(self, ta: torch.Tensor, tb: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per VGG tap, the full-resolution weights (H, W) of the two detail layers."""
        maps_a = extract(self.features, ta, self.tap_ends, normalize=False)
        maps_b = extract(self.features, tb, self.tap_ends, normalize=False)
        shape = tuple(ta.shape[-2:])
        return [(detail_weights(fa, fb, 2 ** level, shape), detail_weights(fb, fa, 2 ** level, shape))
                for level, (fa, fb) in enumerate(zip(maps_a, maps_b))]

    def fuse_pair(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        base_a, base_b = tikhonov_lowpass(ir, self.lmbda), tikhonov_lowpass(vis, self.lmbda)
        ta = to_tensor(ir - base_a, self.torch_device)
        tb = to_tensor(vis - base_b, self.torch_device)
        fused_details = [wa * ta[0, 0] + wb * tb[0, 0] for wa, wb in self.tap_weights(ta, tb)]
        detail = torch.stack(fused_details).amax(0).double().cpu().numpy()
        return im2uint8(0.5 * (base_a + base_b) + detail) / 255.0

    def config(self):
        return {**super().config(), "taps": self.taps, "lmbda": self.lmbda,
                "feature_network": self.feature_network}
