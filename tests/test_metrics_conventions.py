"""The `paper` default convention: one pinned, hand-computed value per change of the default.

The defaults were re-derived on real registered PAT/MRI pairs against the seed paper's Table 2
(``research/paper_convention.py``; the table and the evidence are in docs/conventions.md, "The
`paper` default on real images"). One default changed there:

* **SSIM**: from Matlab's ``ssim`` on [0, 1] averaged over the two sources to the SSIM of
  CDDFuse's ``Evaluator``, the evaluator the paper's released code ships: scikit-image 0.19's
  ``structural_similarity`` defaults on the 0-255 values (7 x 7 uniform window, sample covariance,
  ``data_range`` 2, so C1 = (0.01 * 2)^2 and C2 = (0.03 * 2)^2), summed over the two sources.

The expected values below are written out from the formula with plain numpy, window by window;
none of them calls the package's SSIM code.
"""
from __future__ import annotations

import numpy as np
import pytest

from fusionbench.metrics.fusion import ssim

C1 = (0.01 * 2) ** 2  # scikit-image 0.19: data_range 2 for float input, whatever its values
C2 = (0.03 * 2) ** 2


def ssim_7x7_window(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one 7 x 7 window (0-255 values): uniform weights, sample (n - 1) covariance."""
    n = x.size
    mx, my = x.mean(), y.mean()
    vx = ((x - mx) ** 2).sum() / (n - 1)
    vy = ((y - my) ** 2).sum() / (n - 1)
    cxy = ((x - mx) * (y - my)).sum() / (n - 1)
    return (2 * mx * my + C1) * (2 * cxy + C2) / ((mx * mx + my * my + C1) * (vx + vy + C2))


def ssim_evaluator(f: np.ndarray, x: np.ndarray) -> float:
    """Mean of the window SSIMs over every 7 x 7 window that fits (the map cropped by 3)."""
    rows, cols = f.shape[0] - 6, f.shape[1] - 6
    return float(np.mean([ssim_7x7_window(f[i:i + 7, j:j + 7], x[i:i + 7, j:j + 7])
                          for i in range(rows) for j in range(cols)]))


def test_ssim_default_on_a_checkerboard_by_hand():
    # 7 x 7: one window. F is a checkerboard of 25 pixels at 255 and 24 at 0; A = F; B = 255 - F.
    # SSIM(F, A) = 1. For B: means 255 * 25/49 and 255 * 24/49, both sample variances
    # 255^2 * (49/48) * (25/49) * (24/49) = 255^2 * 25/98, covariance minus that. So
    # SSIM(F, B) = (255^2 * 1200/2401 + C1) (-255^2 * 50/98 + C2)
    #              / ((255^2 * 1201/2401 + C1) (255^2 * 50/98 + C2))  ~ -1200/1201,
    # and the sum is ~ 1/1201.
    rows, cols = np.mgrid[0:7, 0:7]
    f = np.where((rows + cols) % 2 == 0, 255, 0).astype(np.uint8)
    a, b = f.copy(), (255 - f).astype(np.uint8)
    q = 255.0 ** 2
    expected = 1.0 + (q * 1200 / 2401 + C1) * (-q * 50 / 98 + C2) / ((q * 1201 / 2401 + C1) * (q * 50 / 98 + C2))
    assert ssim(a, b, f) == pytest.approx(expected, rel=1e-9)
    assert ssim(a, b, f) == pytest.approx(1 / 1201, rel=1e-3)
    # ... plus 2 C2 / (255^2 * 50/98) * 1200/1201 = 2.2e-7 from the contrast constant:
    assert ssim(a, b, f) == pytest.approx(8.3286e-4, rel=1e-4)


def test_ssim_default_window_by_window_on_a_small_triplet():
    # 9 x 8 8-bit images: 3 x 2 windows of 7 x 7; the value is the mean over them, per source.
    rng = np.random.default_rng(21)
    a = rng.integers(0, 256, (9, 8)).astype(np.uint8)
    b = rng.integers(40, 200, (9, 8)).astype(np.uint8)
    f = ((a.astype(int) + b.astype(int)) // 2).astype(np.uint8)
    a255, b255, f255 = (x.astype(np.float64) for x in (a, b, f))
    expected = ssim_evaluator(f255, a255) + ssim_evaluator(f255, b255)
    assert ssim(a, b, f) == pytest.approx(expected, rel=1e-9)
    # Float input in [0, 1] is read as the same 8-bit file: the same value.
    assert ssim(a / 255, b / 255, f / 255) == pytest.approx(expected, rel=1e-9)


def test_ssim_default_is_a_sum_over_the_two_sources():
    x = np.random.default_rng(3).integers(0, 256, (10, 10)).astype(np.uint8)
    assert ssim(x, x, x) == pytest.approx(2.0, abs=1e-12)
    assert ssim(x, x, x, convention="tang") == pytest.approx(1.0, abs=1e-12)  # tang stays a mean


def test_ssim_default_needs_a_7x7_window():
    x = np.zeros((6, 9))
    with pytest.raises(ValueError, match="too small"):
        ssim(x, x, x)
