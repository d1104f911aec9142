"""Fusion metrics (paper Table 2 and the usual extras), computed the way the field's toolboxes do.

Every metric takes float images in [0, 1] (anything :func:`fusionbench.data.io.as_image`
accepts): ``a`` the PAT source, ``b`` the MRI source, ``f`` the fused image. ``convention``
selects the toolbox whose number is reproduced (see :mod:`fusionbench.metrics._conventions`):

============ ==================================================================================
``paper``    the default: per metric the variant that reproduces the seed paper's Table 2
``tang``     Tang's Matlab Evaluation-for-Image-Fusion toolbox (the Table 2 metric set)
``vifb``     the VIFB benchmark's Matlab metrics (no VIF, no FMI)
``mefb``     the MEFB benchmark's Matlab metrics (Han's VIFF; no plain MI, no plain SSIM)
``cddfuse``  the Python ``Evaluator`` of CDDFuse / PAMRFuse+ (no FMI)
============ ==================================================================================

A toolbox convention sees the images as the 8-bit files that toolbox reads: ``x * 255`` (exact
integers for 8-bit data; :func:`~fusionbench.metrics._conventions.to_255`). A toolbox that does
not define a metric raises ``ValueError``. Inputs for which a definition divides 0 by 0 (constant
images, images smaller than a window) return the documented value with a ``RuntimeWarning``,
never NaN.

References
----------
.. [MI] G. Qu, D. Zhang, P. Yan, "Information measure for performance of image fusion",
   Electronics Letters 38(7), 2002.
.. [VIF] H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006.
.. [VIFF] Y. Han, Y. Cai, Y. Cao, X. Xu, "A new image fusion performance metric based on visual
   information fidelity", Information Fusion 14(2), 2013.
.. [QABF] C. S. Xydeas, V. Petrovic, "Objective image fusion performance measure", Electronics
   Letters 36(4), 2000.
.. [SF] A. M. Eskicioglu, P. S. Fisher, "Image quality measures and their performance", IEEE
   Trans. Communications 43(12), 1995.
.. [SSIM] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from
   error visibility to structural similarity", IEEE TIP 13(4), 2004.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..data.io import as_image, check_same_shape
from ._conventions import check_convention, to_255, to_levels, unsupported, warn_degenerate

__all__ = ["mi", "vif", "qabf", "sf", "ssim", "en", "sd", "ag", "psnr", "fusion_suite", "suite_columns",
           "SUITE_COLUMNS"]

#: The columns of :func:`fusion_suite`: the paper's Table 2 in its order, then the usual extras.
SUITE_COLUMNS = ("MI", "VIF", "Qabf", "SF", "SSIM", "FMI_pixel", "FMI_dct", "FMI_w", "EN", "SD", "AG", "PSNR")

_FMI_FEATURES = {"FMI_pixel": "edge", "FMI_dct": "dct", "FMI_w": "wavelet"}

# What each toolbox leaves out, and why (the message of the ValueError).
_MISSING = {
    "vifb": {"VIF": "VIFB reports no VIF", "FMI_pixel": "VIFB reports no FMI",
             "FMI_dct": "VIFB reports no FMI", "FMI_w": "VIFB reports no FMI"},
    "mefb": {"MI": "MEFB reports Hossny's normalised MI, not MI",
             "SSIM": "MEFB reports MEF-SSIM, a different metric"},
    "cddfuse": {"FMI_pixel": "the CDDFuse Evaluator has no FMI", "FMI_dct": "the CDDFuse Evaluator has no FMI",
                "FMI_w": "the CDDFuse Evaluator has no FMI"},
}


# --------------------------------------------------------------------------------------------
# Input handling and filters
# --------------------------------------------------------------------------------------------

class _Images:
    """The checked images (``a``, ``b`` may be None for the fused-only metrics) and the derived
    arrays the metrics share, each computed at most once."""

    def __init__(self, metric: str, a, b, f):
        self.f = as_image(f, name=f"{metric}: f (fused)")
        self.a = None if a is None else as_image(a, name=f"{metric}: a (PAT)")
        self.b = None if b is None else as_image(b, name=f"{metric}: b (MRI)")
        if a is not None:
            check_same_shape(a=self.a, b=self.b, f=self.f)
        self.shape = self.f.shape

    def _each(self, convert):
        return tuple(None if x is None else convert(x) for x in (self.a, self.b, self.f))

    @cached_property
    def unit(self) -> tuple:
        """float64 on [0, 1]."""
        return self._each(lambda x: x.astype(np.float64))

    @cached_property
    def scaled(self) -> tuple:
        """float64 on 0-255, as the toolboxes read 8-bit files."""
        return self._each(to_255)

    @cached_property
    def levels(self) -> tuple:
        """int 8-bit grey levels."""
        return self._each(to_levels)


def _require(metric: str, convention: str, column: str) -> None:
    why = _MISSING.get(convention, {}).get(column)
    if why is not None:
        raise unsupported(metric, convention, why)


def _require_size(metric: str, shape: tuple[int, ...], minimum: int, why: str) -> None:
    if min(shape) < minimum:
        raise ValueError(f"{metric}: image of shape {tuple(shape)} is too small; {why} needs at least "
                         f"{minimum} x {minimum} pixels")


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """One factor of Matlab's ``fspecial('gaussian', size, sigma)``.

    The 2-D window is the outer product of this with itself (fspecial's truncation of values
    below eps x max never triggers here: the smallest corner/centre ratio, of the 11-tap SSIM
    window, is ~1.5e-5).
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Matlab ``filter2(kernel' * kernel, x, 'valid')`` for a symmetric separable window."""
    n = kernel.size
    rows, cols = x.shape[0] - n + 1, x.shape[1] - n + 1
    if rows <= 0 or cols <= 0:
        return np.zeros((max(rows, 0), max(cols, 0)))
    r = n // 2
    full = cv2.sepFilter2D(x, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_CONSTANT)
    return full[r:r + rows, r:r + cols]


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def _joint_counts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Joint histogram of two int arrays of grey levels 0..255."""
    return np.bincount((x * 256 + y).ravel(), minlength=256 * 256)


def _is_constant(x: np.ndarray) -> bool:
    return bool(x.max() == x.min())


# --------------------------------------------------------------------------------------------
# MI
# --------------------------------------------------------------------------------------------

def _mi_bits(x: np.ndarray, f: np.ndarray, *, merge_top: bool = False) -> float:
    """MI(x; f) in bits from 256-level histograms of the int grey levels ``x`` and ``f``.

    ``merge_top`` reproduces Tang's ``Hab.m``: it adds 1 to uint8 indices, which saturates, so
    levels 254 and 255 share one bin of the *joint* histogram (the marginals stay exact).
    """
    hx = _entropy_bits(np.bincount(x.ravel(), minlength=256))
    hf = _entropy_bits(np.bincount(f.ravel(), minlength=256))
    if merge_top:
        x, f = np.minimum(x, 254), np.minimum(f, 254)
    # Plug-in MI is a KL divergence, so >= 0; clip the rounding of the entropy sum (about -2e-16
    # for an independent joint histogram).
    return max(hx + hf - _entropy_bits(_joint_counts(x, f)), 0.0)


def _vifb_levels(x255: np.ndarray) -> np.ndarray:
    """VIFB's ``mutinf``: min-max normalise, ``int16(x * 255)`` (rounds half away from zero)."""
    lo, hi = x255.min(), x255.max()
    if hi == lo:
        return np.zeros(x255.shape, dtype=np.int64)
    return np.floor((x255 - lo) / (hi - lo) * 255.0 + 0.5).astype(np.int64)


def _mi(images: _Images, convention: str) -> float:
    check_convention(convention, "mi")
    _require("mi", convention, "MI")
    if any(_is_constant(x) for x in (images.a, images.b, images.f)):
        warn_degenerate("mi", "a constant image carries no information; its MI terms are 0")
    if convention == "vifb":
        qa, qb, qf = (_vifb_levels(x) for x in images.scaled)
        return math.log(2.0) * (_mi_bits(qa, qf) + _mi_bits(qb, qf))
    qa, qb, qf = images.levels
    if convention == "tang":
        return _mi_bits(qa, qf, merge_top=True) + _mi_bits(qb, qf, merge_top=True)
    bits = _mi_bits(qa, qf) + _mi_bits(qb, qf)
    return math.log(2.0) * bits if convention == "cddfuse" else bits


def mi(a, b, f, *, convention: str = "paper") -> float:
    """Mutual information MI(A, F) + MI(B, F) of the fused image with its two sources [MI]_.

    Entropies come from 256-bin histograms of the 8-bit grey levels (``round(x * 255)``).

    Parameters
    ----------
    a, b, f : array_like
        PAT source, MRI source and fused image, float in [0, 1] (or integer images), same shape.
    convention : {"paper", "tang", "vifb", "cddfuse"}
        ``paper`` (default): bits, summed over the two sources, exact 256-bin histograms; the
        Tang toolbox's definition without its saturation bug.
        ``tang``: bits, as Tang's ``MI_evaluation.m``, whose joint histogram merges grey levels
        254 and 255 (it differs from ``paper`` only when an image holds both levels).
        ``vifb``: nats; each image min-max normalised to 0..255 and rounded (VIFB ``mutinf``).
        ``cddfuse``: nats, ``sklearn.metrics.mutual_info_score`` of the grey levels. For 8-bit
        data ``vifb`` = ``cddfuse`` = ln 2 x ``paper``. ``mefb`` raises (MEFB has no plain MI).

    Returns
    -------
    float
        In [0, 16] bits (``paper``); higher is better. A constant image gives MI terms of 0
        (with a ``RuntimeWarning``).
    """
    return _mi(_Images("mi", a, b, f), convention)


# --------------------------------------------------------------------------------------------
# VIF
# --------------------------------------------------------------------------------------------

_VIF_EPS = 1e-10


def _vif_scales(refs: list[np.ndarray], dist: np.ndarray, sigma_nsq: float):
    """Sheikh's multiscale pixel-domain VIF (``vifp_mscale.m``) for several references at once.

    Yields, per scale, a list with one ``(vid, vind, g)`` tuple of maps per reference: the
    information with and without distortion and the gain. Empty maps where the image is
    smaller than the scale's window (Matlab's 'valid' filtering then returns empty).
    """
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        win = _gaussian_1d(n, n / 5.0)
        if scale > 1:
            refs = [_filter_valid(r, win)[::2, ::2] for r in refs]
            dist = _filter_valid(dist, win)[::2, ::2]
        mu2 = _filter_valid(dist, win)
        sigma2_sq = np.maximum(_filter_valid(dist * dist, win) - mu2 * mu2, 0.0)
        flat2 = sigma2_sq < _VIF_EPS
        out = []
        for ref in refs:
            mu1 = _filter_valid(ref, win)
            sigma1_sq = np.maximum(_filter_valid(ref * ref, win) - mu1 * mu1, 0.0)
            sigma12 = _filter_valid(ref * dist, win) - mu1 * mu2
            g = sigma12 / (sigma1_sq + _VIF_EPS)
            sv_sq = np.maximum(sigma2_sq - g * sigma12, _VIF_EPS)
            flat1 = sigma1_sq < _VIF_EPS
            sigma1_sq[flat1] = 0.0
            # Sheikh's code also resets sv_sq on these pixels, but only where it zeroes g, which
            # makes their VID 0 whatever sv_sq is.
            g[flat1 | flat2 | (g < 0)] = 0.0
            vid = np.log10(1.0 + g * g * sigma1_sq / (sv_sq + sigma_nsq))
            vind = np.log10(1.0 + sigma1_sq / sigma_nsq)
            out.append((vid, vind, g))
        yield out


def _vif_sheikh(a255, b255, f255) -> float:
    num = np.zeros(2)
    den = np.zeros(2)
    for per_ref in _vif_scales([a255, b255], f255, sigma_nsq=2.0):
        for i, (vid, vind, _) in enumerate(per_ref):
            num[i] += vid.sum()
            den[i] += vind.sum()
    total = 0.0
    for i, role in enumerate(("a (PAT)", "b (MRI)")):
        if den[i] > 0:
            total += num[i] / den[i]
        else:
            warn_degenerate("vif", f"source {role} has no variance in any window (constant, or smaller than "
                                   "the 17 x 17 window); its VIF is 0/0 and counts as 1.0 (CDDFuse's rule)")
            total += 1.0
    return float(total)


_VIFF_SCALE_WEIGHTS = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
_VIFF_C = 1e-7


def _vif_han(a255, b255, f255) -> float:
    values, empty_scales = [], 0
    for (vid_a, vind_a, g_a), (vid_b, vind_b, g_b) in _vif_scales([a255, b255], f255, sigma_nsq=0.005 * 255 * 255):
        if vid_a.size == 0:
            values.append(1.0)  # Matlab gives 0/0 here; an empty scale has nothing to lose
            empty_scales += 1
            continue
        take_a = g_a < g_b
        vid = np.where(take_a, vid_a, vid_b)
        vind = np.where(take_a, vind_a, vind_b)
        values.append((vid + _VIFF_C).sum() / (vind + _VIFF_C).sum())
    if empty_scales:
        warn_degenerate("vif", f"image of shape {f255.shape} is too small for {empty_scales} of VIFF's four "
                               "scales (41 x 41 needed); each missing scale counts as 1.0")
    return float(np.dot(_VIFF_SCALE_WEIGHTS, values))


def _vif(images: _Images, convention: str) -> float:
    check_convention(convention, "vif")
    _require("vif", convention, "VIF")
    a255, b255, f255 = images.scaled
    if convention == "mefb":
        return _vif_han(a255, b255, f255)
    return _vif_sheikh(a255, b255, f255)


def vif(a, b, f, *, convention: str = "paper") -> float:
    """Visual information fidelity of the fused image to its sources.

    Parameters
    ----------
    a, b, f : array_like
        PAT source, MRI source and fused image in [0, 1], same shape.
    convention : {"paper", "tang", "cddfuse", "mefb"}
        ``paper`` = ``tang`` = ``cddfuse`` (its "VIFF"): Sheikh and Bovik's multiscale pixel-domain
        VIF [VIF]_ (``vifp_mscale.m``) on the 0-255 scale, VIF(A, F) + VIF(B, F). Four scales with
        a Gaussian window of N = 2^(5-s) + 1 taps (17, 9, 5, 3) and sigma N/5, 'valid' filtering,
        the image low-passed and subsampled by 2 before scales 2-4, noise variance
        sigma_n^2 = 2, eps = 1e-10; per source VIF = sum of log10 gains over all scales and
        pixels divided by the sum of log10 reference information.
        ``mefb``: Han et al.'s VIFF [VIFF]_: the same four-scale model with
        sigma_n^2 = 0.005 * 255^2, per pixel the source with the smaller gain g, per scale
        (sum VID + 1e-7) / (sum VIND + 1e-7), weighted by [1, 0, 0.15, 1] / 2.15.
        ``vifb`` raises (VIFB has no VIF).

    Returns
    -------
    float
        ``paper``: >= 0 (about 1 per source for a faithful image, 2 for ``f == a == b``; above 1
        per source where F has more contrast). ``mefb``: about [0, 1]. Higher is better.
        A source with zero variance in every window (constant, or smaller than 17 pixels)
        makes its VIF 0/0, counted as 1.0 as CDDFuse does, with a ``RuntimeWarning``.
    """
    return _vif(_Images("vif", a, b, f), convention)


# --------------------------------------------------------------------------------------------
# Qabf
# --------------------------------------------------------------------------------------------

_SOBEL_SMOOTH = np.array([1.0, 2.0, 1.0])
_SOBEL_DIFF = np.array([-1.0, 0.0, 1.0])
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def _edge_strength_angle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength and orientation with zero padding, as ``conv2(x, h, 'same')``.

    Correlating instead of convolving flips the sign of both responses, which changes neither
    the strength nor atan(sy / sx).
    """
    sx = cv2.sepFilter2D(x, cv2.CV_64F, _SOBEL_DIFF, _SOBEL_SMOOTH, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.sepFilter2D(x, cv2.CV_64F, _SOBEL_SMOOTH, -_SOBEL_DIFF, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sx * sx + sy * sy)
    vertical = sx == 0
    angle = np.arctan(np.divide(sy, sx, out=np.zeros_like(sy), where=~vertical))
    angle[vertical] = np.pi / 2
    return strength, angle


def _edge_preservation(g_x, a_x, g_f, a_f) -> np.ndarray:
    # The references set G = g_F (not 1) where g_X == g_F: 0 on flat pixels, which carry no
    # weight, and a slightly different value at exact ties of non-zero strength.
    ratio = np.divide(np.minimum(g_x, g_f), np.maximum(g_x, g_f), out=g_f.copy(), where=g_x != g_f)
    orientation = 1.0 - np.abs(a_x - a_f) / (np.pi / 2)
    q_g = _TG / (1.0 + np.exp(_KG * (ratio - _DG)))
    q_a = _TA / (1.0 + np.exp(_KA * (orientation - _DA)))
    return q_g * q_a


def _qabf(images: _Images, convention: str) -> float:
    check_convention(convention, "qabf")
    # VIFB and MEFB apply 255 * im2double to images already in 0..255 doubles: a 255^2 scale.
    # It matters only at the exact ties above.
    scale = 255.0 if convention in ("vifb", "mefb") else 1.0
    (g_a, a_a), (g_b, a_b), (g_f, a_f) = (_edge_strength_angle(x * scale) for x in images.scaled)
    weight = float(np.sum(g_a) + np.sum(g_b))
    if weight == 0:
        warn_degenerate("qabf", "both sources have no edges (all zero); Qabf is 0/0, returning 0.0")
        return 0.0
    q_af = _edge_preservation(g_a, a_a, g_f, a_f)
    q_bf = _edge_preservation(g_b, a_b, g_f, a_f)
    return float((np.sum(q_af * g_a) + np.sum(q_bf * g_b)) / weight)


def qabf(a, b, f, *, convention: str = "paper") -> float:
    """Xydeas-Petrovic edge-preservation metric Q^{AB/F} [QABF]_.

    Sobel responses sx = [-1 0 1; -2 0 2; -1 0 1] and sy = [1 2 1; 0 0 0; -1 -2 -1] with zero
    padding ('same' size); strength g = sqrt(sx^2 + sy^2), orientation atan(sy / sx) (pi/2 where
    sx = 0). Per pixel, G = min(g_X, g_F) / max(g_X, g_F) (g_F where they are equal, as in the
    references), A = 1 - |alpha_X - alpha_F| / (pi/2), Q_XF = 0.9994 / (1 + e^(-15 (G - 0.5)))
    * 0.9879 / (1 + e^(-22 (A - 0.8))); Qabf = sum(Q_AF g_A + Q_BF g_B) / sum(g_A + g_B).

    Parameters
    ----------
    a, b, f : array_like
        PAT source, MRI source and fused image in [0, 1], same shape.
    convention : {"paper", "tang", "vifb", "mefb", "cddfuse"}
        All compute the same formula (it is scale-free); ``paper``, ``tang`` and ``cddfuse`` on
        the 0-255 scale, ``vifb`` and ``mefb`` on 255 x that (their double ``im2double``), which
        changes only pixels where g_X == g_F exactly.

    Returns
    -------
    float
        In [0, 0.9754] (0.9994 x 0.9879 / (1 + e^-4.4) caps it); higher is better. Sources
        without any edge (all-zero images) give 0/0, returned as 0.0 with a ``RuntimeWarning``.
    """
    return _qabf(_Images("qabf", a, b, f), convention)


# --------------------------------------------------------------------------------------------
# SF
# --------------------------------------------------------------------------------------------

def _sf(images: _Images, convention: str) -> float:
    check_convention(convention, "sf")
    _require_size("sf", images.shape, 2, "a pixel difference")
    x = images.unit[2] if convention == "paper" else images.scaled[2]
    row_sq = np.square(np.diff(x, axis=0))
    col_sq = np.square(np.diff(x, axis=1))
    if convention in ("vifb", "mefb"):
        return float(math.sqrt((row_sq.sum() + col_sq.sum()) / x.size))
    return float(math.sqrt(row_sq.mean() + col_sq.mean()))


def sf(f, *, convention: str = "paper") -> float:
    """Spatial frequency of the fused image [SF]_.

    SF = sqrt(RF^2 + CF^2), RF^2 and CF^2 the squared differences of vertically and horizontally
    adjacent pixels.

    Parameters
    ----------
    f : array_like
        Fused image in [0, 1], at least 2 x 2.
    convention : {"paper", "tang", "vifb", "mefb", "cddfuse"}
        ``paper``: Tang's formula (each sum divided by its own number of differences, (m-1) n
        and m (n-1)) on **[0, 1]** intensities, as the seed paper reports it (~0.02-0.05).
        ``tang`` = ``cddfuse``: the same on 0-255. ``vifb`` = ``mefb``: both sums divided by
        m n, on 0-255.

    Returns
    -------
    float
        >= 0 (``paper``: <= sqrt(2)); higher is better (more detail). 0 for a constant image.
    """
    return _sf(_Images("sf", None, None, f), convention)


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

_SSIM_GAUSS = _gaussian_1d(11, 1.5)


def _ssim_map_matlab(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Matlab's ``ssim`` map: 11 x 11 Gaussian (sigma 1.5), replicate padding, K = (0.01, 0.03)."""
    def blur(z):
        return cv2.sepFilter2D(z, cv2.CV_64F, _SSIM_GAUSS, _SSIM_GAUSS, borderType=cv2.BORDER_REPLICATE)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    mxy = mx * my
    mx2, my2 = mx * mx, my * my
    vx, vy, cxy = blur(x * x) - mx2, blur(y * y) - my2, blur(x * y) - mxy
    return (2 * mxy + c1) * (2 * cxy + c2) / ((mx2 + my2 + c1) * (vx + vy + c2))


def _ssim_wang_valid(x: np.ndarray, y: np.ndarray) -> float:
    """Wang's ``ssim_index`` (VIFB): the same Gaussian window, 'valid' filtering, L = 255."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _filter_valid(x, _SSIM_GAUSS), _filter_valid(y, _SSIM_GAUSS)
    mxy = mx * my
    mx2, my2 = mx * mx, my * my
    vx = _filter_valid(x * x, _SSIM_GAUSS) - mx2
    vy = _filter_valid(y * y, _SSIM_GAUSS) - my2
    cxy = _filter_valid(x * y, _SSIM_GAUSS) - mxy
    return float(np.mean((2 * mxy + c1) * (2 * cxy + c2) / ((mx2 + my2 + c1) * (vx + vy + c2))))


def _ssim_skimage_old(x: np.ndarray, y: np.ndarray) -> float:
    """scikit-image's old ``structural_similarity`` defaults as CDDFuse calls it on 0-255 floats.

    7 x 7 uniform window, sample covariance (49/48), data_range 2 (the float dtype range), the
    map's mean after cropping 3 pixels, where the reflect padding no longer reaches.
    """
    win = 7
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    cov_norm = win * win / (win * win - 1.0)
    box = np.full(win, 1.0 / win)
    mx, my = _filter_valid(x, box), _filter_valid(y, box)
    vx = cov_norm * (_filter_valid(x * x, box) - mx * mx)
    vy = cov_norm * (_filter_valid(y * y, box) - my * my)
    cxy = cov_norm * (_filter_valid(x * y, box) - mx * my)
    # The 'valid' maps are exactly the cropped ones.
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(np.mean(s))


def _ssim(images: _Images, convention: str) -> float:
    check_convention(convention, "ssim")
    _require("ssim", convention, "SSIM")
    x_a, x_b, x_f = images.scaled
    if convention == "tang":
        # Matlab's ssim with its double-class DynamicRange L = 1, fed 0-255 data by Tang's toolbox.
        return float(0.5 * (_ssim_map_matlab(x_f, x_a, 1.0).mean() + _ssim_map_matlab(x_f, x_b, 1.0).mean()))
    if convention == "vifb":
        _require_size("ssim", images.shape, 11, "VIFB's 'valid' 11 x 11 window")
        return _ssim_wang_valid(x_a, x_f) + _ssim_wang_valid(x_b, x_f)
    # paper = cddfuse: the Evaluator the seed paper's released code ships (docs/conventions.md).
    _require_size("ssim", images.shape, 7, "the 7 x 7 window of CDDFuse's SSIM")
    return _ssim_skimage_old(x_f, x_a) + _ssim_skimage_old(x_f, x_b)


def ssim(a, b, f, *, convention: str = "paper") -> float:
    """Structural similarity of the fused image with its two sources [SSIM]_.

    Parameters
    ----------
    a, b, f : array_like
        PAT source, MRI source and fused image in [0, 1], same shape.
    convention : {"paper", "tang", "vifb", "cddfuse"}
        ``paper`` = ``cddfuse``: the SSIM of CDDFuse's ``Evaluator``, which the seed paper's
        released code ships: scikit-image 0.19's ``structural_similarity`` defaults on the 0-255
        values (7 x 7 uniform window, sample covariance, data_range 2, the float dtype range, so
        C1 = 0.02^2 and C2 = 0.06^2 are negligible; mean of the map cropped by 3 pixels), the
        **sum** SSIM(F, A) + SSIM(F, B), in [-2, 2]; needs 7 x 7 pixels. On 36 real registered
        PAT/MRI pairs it is the published variant that puts the classic methods where the paper's
        Table 2 has them (median 0.84 against the paper's 0.90; docs/conventions.md).
        ``tang``: Matlab's ``ssim`` (Gaussian window sigma 1.5, 11 x 11, replicate padding,
        K = (0.01, 0.03), L = 1, mean of the full map) on 0-255 data, as Tang's toolbox calls it,
        so C1 and C2 are negligible; the **mean** (SSIM(F, A) + SSIM(F, B)) / 2.
        ``vifb``: Wang's ``ssim_index``: same window, 'valid' filtering, L = 255 on 0-255,
        the **sum** SSIM(A, F) + SSIM(B, F) (in [-2, 2]); needs 11 x 11 pixels.
        ``mefb`` raises (MEFB reports MEF-SSIM).

    Returns
    -------
    float
        ``paper``: in [-2, 2], 2 for ``f == a == b``; higher is better. Constant images are
        well defined (the constants C1, C2 > 0).

    Raises
    ------
    ValueError
        Unknown convention, ``mefb``, or an image smaller than the window (7 x 7; ``vifb``
        11 x 11).
    """
    return _ssim(_Images("ssim", a, b, f), convention)


# --------------------------------------------------------------------------------------------
# EN, SD, AG, PSNR
# --------------------------------------------------------------------------------------------

def _en(images: _Images, convention: str) -> float:
    check_convention(convention, "en")
    return _entropy_bits(np.bincount(images.levels[2].ravel(), minlength=256))


def en(f, *, convention: str = "paper") -> float:
    """Entropy of the fused image's 256-bin grey-level histogram, in bits.

    The histogram counts the 8-bit levels round(x * 255). All conventions agree (Matlab
    ``entropy`` of the uint8 image, VIFB/MEFB ``metricsEntropy``, CDDFuse ``EN``).

    Returns
    -------
    float
        In [0, 8]; higher means more information. 0 for a constant image.
    """
    return _en(_Images("en", None, None, f), convention)


def _sd(images: _Images, convention: str) -> float:
    check_convention(convention, "sd")
    return float(np.std(images.scaled[2]))


def sd(f, *, convention: str = "paper") -> float:
    """Standard deviation (contrast) of the fused image on the 0-255 scale.

    The population standard deviation sqrt(mean((F - mean F)^2)) of the 0-255 values, as every
    toolbox computes it (Tang ``SD_evaluation``, VIFB/MEFB ``metricsVariance``, CDDFuse ``SD``).

    Returns
    -------
    float
        In [0, 127.5]; higher means more contrast. 0 for a constant image.
    """
    return _sd(_Images("sd", None, None, f), convention)


def _ag(images: _Images, convention: str) -> float:
    check_convention(convention, "ag")
    _require_size("ag", images.shape, 2, "a gradient")
    x = images.scaled[2]
    grad_r, grad_c = np.gradient(x)  # central differences inside, one-sided at the edges (Matlab)
    s = np.sqrt((grad_r * grad_r + grad_c * grad_c) / 2.0)
    if convention == "cddfuse":
        return float(s.mean())
    return float(s.sum() / ((x.shape[0] - 1) * (x.shape[1] - 1)))


def ag(f, *, convention: str = "paper") -> float:
    """Average gradient of the fused image on the 0-255 scale.

    s = sqrt((dF/dx^2 + dF/dy^2) / 2) with Matlab's ``gradient`` (central differences, one-sided
    at the borders).

    Parameters
    ----------
    f : array_like
        Fused image in [0, 1], at least 2 x 2.
    convention : {"paper", "tang", "vifb", "mefb", "cddfuse"}
        ``paper`` = ``tang`` = ``vifb`` = ``mefb``: sum(s) / ((m - 1)(n - 1)) (the sum runs over
        all m n pixels). ``cddfuse``: mean(s).

    Returns
    -------
    float
        >= 0; higher means sharper. 0 for a constant image.
    """
    return _ag(_Images("ag", None, None, f), convention)


def _psnr(images: _Images, convention: str) -> float:
    check_convention(convention, "psnr")
    x_a, x_b, x_f = images.scaled
    if convention in ("vifb", "mefb"):
        # Their "mse" is sqrt(sum of squared errors) / (m n), not a mean squared error.
        error = 0.5 * (math.sqrt(np.sum((x_a - x_f) ** 2)) + math.sqrt(np.sum((x_b - x_f) ** 2))) / x_f.size
        peak_sq = 255.0 ** 2
    else:
        error = 0.5 * (np.mean((x_a - x_f) ** 2) + np.mean((x_b - x_f) ** 2))
        if convention == "tang":
            error /= 255.0 ** 2  # Tang's MSE is on [0, 1] but its peak stays 255
            peak_sq = 255.0 ** 2
        elif convention == "cddfuse":
            peak_sq = float(x_f.max()) ** 2
        else:
            peak_sq = 255.0 ** 2
    if error == 0:
        warn_degenerate("psnr", "the fused image equals both sources; PSNR is +inf")
        return math.inf
    if peak_sq == 0:
        warn_degenerate("psnr", "the fused image is all zero, CDDFuse's peak; PSNR is -inf")
        return -math.inf
    return float(10.0 * math.log10(peak_sq / error))


def psnr(a, b, f, *, convention: str = "paper") -> float:
    """Peak signal-to-noise ratio of the fused image against its two sources, in dB.

    Parameters
    ----------
    a, b, f : array_like
        PAT source, MRI source and fused image in [0, 1], same shape.
    convention : {"paper", "tang", "vifb", "mefb", "cddfuse"}
        ``paper``: the textbook PSNR with peak 1 on [0, 1] (255 on 0-255) and the mean of the
        two MSEs: 10 log10(1 / ((MSE(A, F) + MSE(B, F)) / 2)); with ``a == b`` it equals
        ``skimage.metrics.peak_signal_noise_ratio(a, f, data_range=1)``.
        ``tang``: 20 log10(255 / sqrt(MSE)) with the MSE on [0, 1], i.e. ``paper`` + 48.13 dB.
        ``vifb`` = ``mefb``: 20 log10(255 / sqrt(E)), E the mean over the two sources of
        sqrt(sum of squared 0-255 errors) / (m n) (their ``mse``).
        ``cddfuse``: 10 log10(max(F)^2 / MSE) on 0-255.

    Returns
    -------
    float
        ``paper``: in [0, +inf]; higher is better. +inf (with a ``RuntimeWarning``) when
        ``f`` equals both sources.
    """
    return _psnr(_Images("psnr", a, b, f), convention)


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------

def canonical_columns(metrics: Iterable[str] | str, columns: Sequence[str], caller: str) -> list[str]:
    """``metrics`` named case-insensitively, as the canonical ``columns`` they name, in table order.

    Raises ``ValueError`` naming ``caller`` and the first unknown name.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    by_lower = {c.lower(): c for c in columns}
    requested = set()
    for name in metrics:
        column = by_lower.get(str(name).lower())
        if column is None:
            raise ValueError(f"{caller}: unknown metric {name!r}; expected some of {', '.join(columns)}")
        requested.add(column)
    return [c for c in columns if c in requested]


def suite_columns(convention: str = "paper") -> tuple[str, ...]:
    """The :data:`SUITE_COLUMNS` that ``convention`` defines, in table order."""
    check_convention(convention, "suite_columns")
    missing = _MISSING.get(convention, {})
    return tuple(c for c in SUITE_COLUMNS if c not in missing)


_SUITE_FUNCTIONS = {"MI": _mi, "VIF": _vif, "Qabf": _qabf, "SF": _sf, "SSIM": _ssim,
                    "EN": _en, "SD": _sd, "AG": _ag, "PSNR": _psnr}


def fusion_suite(a, b, f, *, convention: str = "paper", metrics: Iterable[str] | None = None) -> dict[str, float]:
    """All fusion metrics of one triplet, the paper's Table 2 columns first.

    Parameters
    ----------
    a, b, f : array_like
        PAT source, MRI source and fused image in [0, 1], same shape; converted once.
    convention : str
        Passed to every metric (see the module docstring). Under ``paper`` the FMI columns are
        ``FMI_pixel`` = ``fmi(feature="edge")`` (Haghighat's code default, what the papers call
        FMI_pixel), ``FMI_dct`` = ``fmi(feature="dct")``, ``FMI_w`` = ``fmi(feature="wavelet")``.
    metrics : iterable of str, optional
        Column names to compute (from :data:`SUITE_COLUMNS`). By default every column the
        convention defines (``vifb`` has no VIF and no FMI, ``mefb`` no MI and no SSIM,
        ``cddfuse`` no FMI); naming a column the convention lacks raises ``ValueError``.

    Returns
    -------
    dict of str to float
        In :data:`SUITE_COLUMNS` order: MI, VIF, Qabf, SF, SSIM, FMI_pixel, FMI_dct, FMI_w, EN,
        SD, AG, PSNR.
    """
    check_convention(convention, "fusion_suite")
    missing = _MISSING.get(convention, {})
    if metrics is None:
        wanted = list(suite_columns(convention))
    else:
        wanted = canonical_columns(metrics, SUITE_COLUMNS, "fusion_suite")
        for column in wanted:
            if column in missing:
                raise unsupported("fusion_suite", convention, f"{column}: {missing[column]}")
    images = _Images("fusion_suite", a, b, f)
    results: dict[str, float] = {}
    for column in wanted:
        if column in _FMI_FEATURES:
            from .feature_mi import fmi  # imported only when an FMI column is wanted

            results[column] = float(fmi(images.a, images.b, images.f, feature=_FMI_FEATURES[column],
                                        convention=convention))
        else:
            results[column] = _SUITE_FUNCTIONS[column](images, convention)
    return results
