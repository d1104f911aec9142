"""CNN: Liu, Chen, Cheng, Peng & Wang, "Infrared and visible image fusion with convolutional neural
networks", IJWMIP 16(3), 2018; the network is the multi-focus CNN of Liu, Chen, Peng & Wang,
Information Fusion 36, 2017.

A Siamese network scores which of two 16×16 patches is the sharper one: one branch (shared
weights) conv3×3 1→64, ReLU, conv3×3 64→128, ReLU, 2×2 max-pool, conv3×3 128→256, ReLU; the two
256-channel maps are concatenated and an 8×8 'valid' convolution 512→2 (the fully connected layer
applied convolutionally) gives two logits, softmax. 435,202 parameters, as the released
``cnnmodel.mat``. Applied to whole images it scores every 16×16 patch at stride 2; averaging the
score of input 1 over the patches covering each pixel gives the weight map W.

Fusion (VIFB ``run_CNN.m``/``band_fuse.m``): Laplacian pyramids of both inputs and a Gaussian
pyramid of W, ``floor(log2(min(H, W)))`` levels, Burt & Adelson's [1 4 6 4 1]/16 filter; per
level, local energies E over 3×3 windows (symmetric borders), similarity M = 2 Σ L₁L₂ / (E₁+E₂);
where M ≥ 0.6 the weighted average W·L₁ + (1−W)·L₂, elsewhere the coefficient of larger energy;
collapse, ``uint8(255·F)``. As in ``run_CNN.m`` the output layer's bias is not added at inference
(``output_bias=False``); it is trained with it.

Training (Liu 2017): patches blurred by a 7×7 Gaussian (σ = 2) applied 1–5 times; the pair
(clear, blurred) has label 1 ("input 1 is sharper") and (blurred, clear) label 0; softmax
cross-entropy; SGD with momentum 0.9 and weight decay 5e-4. The paper trains on ImageNet at lr 1e-4
for about 2M pairs; we train on the offline set (phantom + ``skimage.data``) with a higher learning
rate for a short CPU schedule (``train_defaults``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from fusionbench.methods import register_method
from fusionbench.nn.layers import to_tensor

from ..matlab import im2uint8
from ..pyramids import gaussian_pyramid, laplacian_pyramid, reconstruct_laplacian_pyramid
from ._deep import TrainableFusion, TrainingData

__all__ = ["SiameseFocusNet", "CNNFusion", "blur_pairs", "patch_average", "pyramid_fuse", "focus_loss"]

PATCH = 16  # input patch of the classifier
BLUR_SIGMA, BLUR_SIZE, BLUR_LEVELS = 2.0, 7, 5
MATCH_THRESHOLD = 0.6


class SiameseFocusNet(nn.Module):
    """Liu et al.'s two-branch focus classifier (shared branch, 8×8 'valid' output convolution)."""

    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(),
        )
        self.output = nn.Conv2d(512, 2, PATCH // 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor, *, output_bias: bool = True) -> torch.Tensor:
        """Logits (B, 2, H/2 − 7, W/2 − 7) for every 16×16 patch pair at stride 2 (even H, W)."""
        features = torch.cat([self.branch(a), self.branch(b)], dim=1)
        return F.conv2d(features, self.output.weight, self.output.bias if output_bias else None)


def focus_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of (B, 2, 1, 1) logits against labels (B,) (1: input 1 is sharper)."""
    return F.cross_entropy(logits.flatten(1), labels)


def _gaussian_kernel(sigma: float = BLUR_SIGMA, size: int = BLUR_SIZE) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    k = g[:, None] * g[None, :]
    return (k / k.sum())[None, None]


def blur_pairs(patches: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Liu 2017's training pairs from (B, 1, P, P) patches, P ≥ 16 + 2·15.

    Each patch is blurred 1..5 times (drawn per patch) by the 7×7, σ = 2 Gaussian (replicate
    borders), then the central 16×16 of the clear and the blurred version form a pair, in random
    order. Returns ``(a, b, labels)`` with label 1 where ``a`` is the clear one.
    """
    size = patches.shape[-1]
    if size < PATCH + 2 * BLUR_LEVELS * (BLUR_SIZE // 2):
        raise ValueError(f"blur_pairs needs patches of at least {PATCH + 30} px, got {size}")
    kernel = _gaussian_kernel().to(patches)
    levels = torch.from_numpy(rng.integers(1, BLUR_LEVELS + 1, size=len(patches)))
    blurred, current = patches.clone(), patches
    for level in range(1, BLUR_LEVELS + 1):
        current = F.conv2d(F.pad(current, (3, 3, 3, 3), mode="replicate"), kernel)
        blurred[levels == level] = current[levels == level]
    lo = (size - PATCH) // 2
    clear, blurred = patches[..., lo:lo + PATCH, lo:lo + PATCH], blurred[..., lo:lo + PATCH, lo:lo + PATCH]
    labels = torch.from_numpy(rng.integers(2, size=len(patches)))
    first = labels.bool().view(-1, 1, 1, 1)
    return torch.where(first, clear, blurred), torch.where(first, blurred, clear), labels


def patch_average(score: np.ndarray, shape: tuple[int, int], patch: int = PATCH, stride: int = 2) -> np.ndarray:
    """Full-resolution map: each pixel gets the mean score of the patches that cover it.

    ``score[i, j]`` belongs to the patch with top-left corner (stride·i, stride·j).
    """
    sum_map = np.zeros(shape)
    count = np.zeros(shape)
    h, w = score.shape
    # Scatter each score at its patch corner, then a box sum over the patch extent spreads it.
    corners = np.zeros((stride * (h - 1) + patch, stride * (w - 1) + patch))
    ones = np.zeros_like(corners)
    corners[:stride * h:stride, :stride * w:stride] = score
    ones[:stride * h:stride, :stride * w:stride] = 1.0
    origin = (patch - 1) // 2  # window rows r-patch+1 .. r: the patches whose corner lies above
    sums = ndimage.uniform_filter(corners, patch, mode="constant", origin=origin) * patch * patch
    counts = ndimage.uniform_filter(ones, patch, mode="constant", origin=origin) * patch * patch
    rows, cols = min(shape[0], sums.shape[0]), min(shape[1], sums.shape[1])
    sum_map[:rows, :cols] = sums[:rows, :cols]
    count[:rows, :cols] = counts[:rows, :cols]
    return np.where(count > 0.5, sum_map / np.maximum(count, 1.0), 0.5)


def _local_energy(band: np.ndarray) -> np.ndarray:
    return ndimage.uniform_filter(band * band, 3, mode="reflect") * 9.0


def pyramid_fuse(a: np.ndarray, b: np.ndarray, weight: np.ndarray, threshold: float = MATCH_THRESHOLD) -> np.ndarray:
    """Liu 2018's multi-scale fusion of ``a`` and ``b`` guided by the weight map of ``a``.

    Laplacian pyramids of the inputs, a Gaussian pyramid of ``weight``; per level Burt's match
    measure over 3×3 windows ('symmetric' borders): weighted average where it is ≥ ``threshold``,
    selection of the higher local energy elsewhere.
    """
    la, lb, gw = laplacian_pyramid(a), laplacian_pyramid(b), gaussian_pyramid(weight)
    fused = []
    for band_a, band_b, w in zip(la, lb, gw):
        ea, eb = _local_energy(band_a), _local_energy(band_b)
        match = 2.0 * ndimage.uniform_filter(band_a * band_b, 3, mode="reflect") * 9.0 / (ea + eb + np.finfo(float).eps)
        average = w * band_a + (1.0 - w) * band_b
        select = np.where(ea >= eb, band_a, band_b)
        fused.append(np.where(match >= threshold, average, select))
    return reconstruct_laplacian_pyramid(fused)


@register_method("cnn", kind="cnn",
                 reference="Liu et al., IJWMIP 16(3) 2018 (network: Liu et al., Inf. Fusion 36 2017)")
class CNNFusion(TrainableFusion):
    """Liu et al.'s CNN weight map + Laplacian-pyramid fusion, trained here on blur pairs."""

    weights_name = "cnn"
    # SGD at lr 1e-2 instead of the paper's 1e-4: the paper's schedule is ~2M pairs on a GPU.
    #: The settings of the shipped weights.
    train_defaults = {"steps": 300, "batch": 32, "patch": PATCH + 32, "lr": 1e-2}
    version = "1"

    def __init__(self, *, output_bias: bool = False, threshold: float = MATCH_THRESHOLD, **kw):
        self.output_bias = bool(output_bias)
        self.threshold = float(threshold)
        super().__init__(**kw)

    def build(self) -> nn.Module:
        return SiameseFocusNet()

    def make_optimizers(self):
        return {"net": torch.optim.SGD(self.net.parameters(), lr=float(self.train_settings["lr"]),
                                       momentum=0.9, weight_decay=5e-4)}

    def sample_batch(self, data: TrainingData, rng: np.random.Generator):
        patches = data.sample_singles(rng, int(self.train_settings["batch"]), int(self.train_settings["patch"]))
        return blur_pairs(patches, rng)

    def loss(self, batch):
        a, b, labels = batch
        return focus_loss(self.net(a, b), labels)

    def weight_map(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Probability that ``a`` is the informative input, per pixel (patch-averaged)."""
        h, w = a.shape
        ph, pw = h % 2, w % 2  # odd sizes: zero-pad one row/column before pooling, as the reference
        pad = (0, pw + max(0, PATCH - w - pw), 0, ph + max(0, PATCH - h - ph))
        ta = F.pad(to_tensor(a, self.torch_device), pad)
        tb = F.pad(to_tensor(b, self.torch_device), pad)
        logits = self.net(ta, tb, output_bias=self.output_bias)
        score = torch.softmax(logits, dim=1)[0, 1].double().cpu().numpy()
        return patch_average(score, (h, w))

    def fuse_pair(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        weight = self.weight_map(ir, vis)
        fused = pyramid_fuse(ir.astype(np.float64), vis.astype(np.float64), weight, self.threshold)
        return im2uint8(fused) / 255.0

    def config(self):
        return {**super().config(), "output_bias": self.output_bias, "threshold": self.threshold}
