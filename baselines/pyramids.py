"""Gaussian and Laplacian pyramids (Burt & Adelson 1983), as Mertens et al.'s exposure-fusion Matlab code."""
from __future__ import annotations

import math

import numpy as np

from baselines.matlab import imfilter

__all__ = [
    "PYRAMID_FILTER", "pyramid_downsample", "pyramid_upsample", "gaussian_pyramid",
    "laplacian_pyramid", "reconstruct_laplacian_pyramid",
]

#: The 5-tap binomial filter of Burt & Adelson's pyramid ([1, 4, 6, 4, 1] / 16).
PYRAMID_FILTER = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def pyramid_downsample(img, filt=PYRAMID_FILTER) -> np.ndarray:
    """Blur with the separable filter ('symmetric' borders) and keep every second row and column.

    Mertens' ``downsample.m``: the kept samples are rows/columns 0, 2, 4, ... (0-based), so an odd
    length n gives (n+1)/2 samples.
    """
    img = np.asarray(img, dtype=np.float64)
    out = imfilter(img, np.asarray(filt)[None, :], "symmetric")
    out = imfilter(out, np.asarray(filt)[:, None], "symmetric")
    return out[::2, ::2]


def pyramid_upsample(img, odd=(0, 0), filt=PYRAMID_FILTER) -> np.ndarray:
    """Mertens' ``upsample.m``: pad one replicated pixel, zero-insert x2 (times 4), blur, crop.

    Parameters
    ----------
    img : array_like, 2-D
        Coarse image of shape (h, w).
    odd : (int, int)
        1 where the target length is odd; the result has shape (2h - odd[0], 2w - odd[1]).
    filt : array_like
        1-D interpolation filter.
    """
    img = np.pad(np.asarray(img, dtype=np.float64), 1, mode="edge")
    rows, cols = 2 * img.shape[0], 2 * img.shape[1]
    up = np.zeros((rows, cols))
    up[::2, ::2] = 4.0 * img
    up = imfilter(up, np.asarray(filt)[None, :], "zero")
    up = imfilter(up, np.asarray(filt)[:, None], "zero")
    return up[2:rows - 2 - int(odd[0]), 2:cols - 2 - int(odd[1])]


def _pyramid_levels(shape, nlev):
    if nlev is None:
        nlev = int(math.floor(math.log2(min(shape))))
    if nlev < 1:
        raise ValueError(f"pyramid: need at least one level, got {nlev} for shape {shape}")
    return nlev


def gaussian_pyramid(img, nlev: int | None = None, filt=PYRAMID_FILTER) -> list[np.ndarray]:
    """Gaussian pyramid, finest first; ``nlev`` defaults to floor(log2(min(H, W))) as Mertens' code."""
    img = np.asarray(img, dtype=np.float64)
    nlev = _pyramid_levels(img.shape, nlev)
    pyr = [img]
    for _ in range(nlev - 1):
        pyr.append(pyramid_downsample(pyr[-1], filt))
    return pyr


def laplacian_pyramid(img, nlev: int | None = None, filt=PYRAMID_FILTER) -> list[np.ndarray]:
    """Laplacian pyramid, finest first, the last level being the low-pass residual (Mertens' code).

    :func:`reconstruct_laplacian_pyramid` inverts it exactly (up to rounding) for any image size.
    """
    cur = np.asarray(img, dtype=np.float64)
    nlev = _pyramid_levels(cur.shape, nlev)
    pyr = []
    for _ in range(nlev - 1):
        low = pyramid_downsample(cur, filt)
        odd = (2 * low.shape[0] - cur.shape[0], 2 * low.shape[1] - cur.shape[1])
        pyr.append(cur - pyramid_upsample(low, odd, filt))
        cur = low
    pyr.append(cur)
    return pyr


def reconstruct_laplacian_pyramid(pyr, filt=PYRAMID_FILTER) -> np.ndarray:
    """Collapse a pyramid made by :func:`laplacian_pyramid` (possibly with fused coefficients)."""
    out = np.asarray(pyr[-1], dtype=np.float64)
    for band in reversed(pyr[:-1]):
        odd = (2 * out.shape[0] - band.shape[0], 2 * out.shape[1] - band.shape[1])
        out = band + pyramid_upsample(out, odd, filt)
    return out
