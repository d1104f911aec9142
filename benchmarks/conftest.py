"""Shared fixtures of the benchmark suites: realistic PAT / MRI / fused triplets.

The images are built from scikit-image's ``camera`` (smooth structure with sharp edges), resized,
given a PAT-like rendering (depth fall-off, blur, speckle) and an MRI-like one (different
contrast, mild noise), fused by a weighted average, and quantised to 8 bits as saved images are.
Pure noise would make every metric's data-dependent branches (flat windows, ties) unrealistic.
"""
from __future__ import annotations

import numpy as np
import pytest


def make_triplet(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pat, mri, fused) float32 images of shape (size, size) holding 8-bit grey levels k / 255."""
    from scipy import ndimage as ndi
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    scene = transform.resize(data.camera().astype(np.float64) / 255.0, (size, size), anti_aliasing=True)
    depth = np.linspace(1.0, 0.35, size)[:, None]  # light fluence falls off with depth
    pat = ndi.gaussian_filter(scene, 1.5) ** 1.5 * depth + 0.04 * rng.standard_normal((size, size))
    mri = 0.15 + 0.7 * (1.0 - scene) ** 0.8 + 0.02 * rng.standard_normal((size, size))

    def quantise(x):
        return (np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)

    pat, mri = quantise(pat), quantise(mri)
    return pat, mri, quantise(0.5 * pat + 0.5 * mri)


@pytest.fixture(scope="session")
def triplet_256():
    return make_triplet(256)


@pytest.fixture(scope="session")
def triplet_300():
    return make_triplet(300)


@pytest.fixture(scope="session", params=[256, 300], ids=lambda s: f"{s}x{s}")
def triplet(request):
    """Both sizes in turn: 256 x 256 (the paper's crops) and 300 x 300 (not a power of two)."""
    return make_triplet(request.param)
