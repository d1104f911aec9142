"""Torch losses shared by the learned methods: one home (imports torch; :mod:`fusionbench.metrics`
never does, its SSIM and MI are numpy).

Conventions: images are (B, C, H, W) tensors, displacement fields (B, 2, H, W) in pixels; a loss
returns a scalar tensor unless a ``reduction="none"`` asks for one value per batch item.

MONAI has losses with the same names; they are not used here because they compute something else
(``tests/test_nn_losses.py`` measures each difference):

* ``LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=9)`` clamps each window
  variance at ``smooth_dr`` and divides by the product, ``(cross² + nr) / (max(σa², dr)·max(σb², dr))``;
  :func:`local_ncc_loss` adds the epsilon to the product (VoxelMorph's ``cross² / (σa²σb² + 1e-5)``),
  which damps low-contrast windows. −0.27982 against our −0.27694 on camera/moon at 64².
* ``GlobalMutualInformationLoss`` has no mask, and VoxelMorph's MI loss is always measured around
  the fixed image's body (:func:`parzen_mi_loss` weights each pixel's vote). Unmasked, with our
  32 bins, width one bin spacing (``sigma_ratio=1``) and 1e-10 epsilons it agrees with ours to
  3e-8 relative (its extra ``+ smooth_dr`` inside the log); with its default 1e-7 epsilons to 4e-4.
* ``DiffusionLoss`` uses central differences ``(x[i+1] − x[i−1]) / 2`` on the interior and sums the
  two directions; :func:`smoothness_loss` uses forward differences and averages them
  (VoxelMorph's ``Grad('l2')``): 0.945 against our 1.950 on a random field.
  ``BendingEnergyLoss`` penalises second derivatives, another regulariser altogether.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim_map", "ssim", "smoothness_loss", "local_ncc_loss", "parzen_mi_loss"]


def gaussian_window(size: int, sigma: float, device=None, dtype=None) -> torch.Tensor:
    """(1, 1, size, size) Gaussian window: the outer product of a 1-D Gaussian normalised to sum 1."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, win_size: int = 11, sigma: float = 1.5,
             data_range: float = 1.0, padding: str = "valid") -> torch.Tensor:
    """SSIM map (Wang et al., IEEE TIP 2004) of two (B, C, H, W) tensors, channel by channel.

    Gaussian ``win_size``² window of ``sigma``, K1 = 0.01, K2 = 0.03, population (biased)
    statistics. ``padding="valid"`` keeps the part of the map where the window fits
    ((H − win_size + 1) × (W − win_size + 1)): scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` and TF's
    ``tf.image.ssim``, which DenseFuse and U2Fusion train with. ``padding="reflect"`` reflects the
    borders so the map keeps the image size: kornia's ``ssim``, which CDDFuse (PAMRFuse+'s fusion
    stage) trains with.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if padding not in ("valid", "reflect"):
        raise ValueError(f"ssim padding must be 'valid' or 'reflect', got {padding!r}")
    if padding == "valid" and min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim: images of {tuple(x.shape[-2:])} are smaller than the {win_size}×{win_size} window")
    channels = x.shape[1]
    kernel = gaussian_window(win_size, sigma, x.device, x.dtype).expand(channels, 1, win_size, win_size)
    pad = win_size // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        if padding == "reflect":
            t = F.pad(t, (pad,) * 4, mode="reflect")
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(x: torch.Tensor, y: torch.Tensor, *, win_size: int = 11, sigma: float = 1.5, data_range: float = 1.0,
         padding: str = "valid", reduction: str = "mean") -> torch.Tensor:
    """Differentiable SSIM of two (B, C, H, W) tensors: :func:`ssim_map` averaged per batch item.

    ``reduction="none"`` returns the (B,) per-item means, ``"mean"`` their mean. (The mean of the
    whole map, ``ssim_map(...).mean()``, is the same number up to float rounding.)
    """
    per_item = ssim_map(x, y, win_size=win_size, sigma=sigma, data_range=data_range, padding=padding).flatten(1).mean(1)
    if reduction == "none":
        return per_item
    if reduction == "mean":
        return per_item.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def smoothness_loss(flow: torch.Tensor, penalty: str = "l2") -> torch.Tensor:
    """Smoothness of a (B, 2, H, W) displacement from its forward differences.

    ``"l2"``: ``0.5 · (mean dy² + mean dx²)``, VoxelMorph's ``Grad('l2')``; ``"l1"``:
    ``0.5 · (mean |dy| + mean |dx|)``, the PAMRFuse+ paper's form.
    """
    dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    if penalty == "l2":
        return 0.5 * (dy.pow(2).mean() + dx.pow(2).mean())
    if penalty == "l1":
        return 0.5 * (dy.abs().mean() + dx.abs().mean())
    raise ValueError(f"smoothness penalty must be 'l1' or 'l2', got {penalty!r}")


def local_ncc_loss(a: torch.Tensor, b: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """Negative mean squared local normalised cross-correlation of (B, 1, H, W) images.

    VoxelMorph's ``NCC``: ``window``² box sums with zero padding, ``cross² / (σa² σb² + eps)`` with
    unnormalised (window-sum) variances.
    """
    kernel = torch.ones(1, 1, window, window, device=a.device, dtype=a.dtype)
    pad = window // 2
    n = window * window

    def box(x):
        return F.conv2d(x, kernel, padding=pad)

    sa, sb = box(a), box(b)
    saa, sbb, sab = box(a * a), box(b * b), box(a * b)
    cross = sab - sa * sb / n
    var_a = saa - sa * sa / n
    var_b = sbb - sb * sb / n
    return -(cross * cross / (var_a * var_b + eps)).mean()


def parzen_mi_loss(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, bins: int = 32
                   ) -> torch.Tensor:
    """Negative mutual information of (B, 1, H, W) images in [0, 1] from a soft joint histogram.

    Each intensity votes into ``bins`` Gaussian Parzen windows (width one bin spacing; Viola &
    Wells 1997, Mattes et al. 2003), weighted by ``mask`` (soft weights in [0, 1]) so that only a
    region counts: on the phantom the water around the body is flat in both modalities and
    dominates an unmasked histogram. Mean over the batch; in nats.
    """
    batch = a.shape[0]
    a, b = a.reshape(batch, -1, 1).clamp(0, 1), b.reshape(batch, -1, 1).clamp(0, 1)
    m = torch.ones_like(a) if mask is None else mask.reshape(batch, -1, 1).to(a.dtype)
    centres = torch.linspace(0, 1, bins, device=a.device, dtype=a.dtype).view(1, 1, -1)
    width = 1.0 / (bins - 1)

    def votes(x):
        w = torch.exp(-0.5 * ((x - centres) / width) ** 2)
        return w / w.sum(2, keepdim=True)

    joint = torch.bmm((votes(a) * m).transpose(1, 2), votes(b)) / m.sum(1, keepdim=True).clamp_min(1.0)
    pa, pb = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
    return -(joint * torch.log((joint + 1e-10) / (pa * pb + 1e-10))).sum((1, 2)).mean()
