"""Batched torch scoring of the fusion metrics, on CPU or CUDA: the ``paper`` convention only.

:func:`fusion_suite_batch` computes, for N triplets at once, the numbers that
:func:`fusionbench.metrics.fusion.fusion_suite` computes for one (``convention="paper"``): the
paper's Table 2 (MI, VIF, Qabf, SF, SSIM, FMI_pixel, FMI_dct, FMI_w) and the extras (EN, SD, AG,
PSNR). Every convention of the numpy core is reproduced, so the values agree with it to rounding
(about 1e-12 in float64):

- inputs are read as :func:`fusionbench.data.io.as_image` reads them (float32 in [0, 1]) and put on
  the toolboxes' 0-255 scale as :func:`~fusionbench.metrics._conventions.to_255` does (exact
  integers for 8-bit data), so every integer-valued step (Sobel responses, edge maps, histograms)
  is exact on both sides and ties break the same way;
- histogram MI and EN on the 8-bit levels; Sheikh's pixel-domain multiscale VIF [VIF]_; Qabf [QABF]_;
  SF on [0, 1]; CDDFuse's SSIM (old scikit-image defaults) [SSIM]_;
- Haghighat's FMI [FMI]_ with Matlab's ``edge`` map, the orthonormal DCT-II of the whole image and
  Matlab's 102-tap ``dmey`` DWT (symmetric extension), per-window min-max scaling, the identical-
  window rule with the reference's quirk (B is tested against A's min-max scaled F window), the
  Nelsen / Frechet-bound joint distribution and ``2 MI / (H_X + H_F)``.

FMI's degenerate windows are decided as in the numpy core and Matlab: a constant window (all ones
after scaling, a uniform distribution) is centred by its left-to-right summed mean like every
other window (``pdf - cumsum(pdf)[-1] / 9``, as Matlab's ``mean`` sums), so two constant windows
that are not identical correlate exactly 1 and score about 1; running sums go left to right on
every device (a CUDA scan would sum in another order); and dmey coefficients over a flat stretch
are exactly equal, as Matlab's direct convolution gives them.

Known differences, all in degenerate inputs: FMI_dct of constant images (scipy's FFT leaves
1e-14 residues for some sizes, e.g. 20 x 24 at 127.5, that the identical-window test sees; here
constant rows transform to exact zeros); FMI_w where a flat stretch of a non-zero value ends under
the dmey filter's zero tap (the numpy core keeps rounding there, see :func:`_dmey_analysis`;
about 5e-5 on a 256-wide image); SSIM and VIF in flat 0-255 windows differ by rounding only
(~1e-10). The numpy core's ``RuntimeWarning`` for degenerate inputs is not repeated here.

The numpy core never imports torch; this module is imported only by callers that want it (the
harness scores on the GPU with it when a run's device is CUDA).

References
----------
.. [MI] G. Qu, D. Zhang, P. Yan, "Information measure for performance of image fusion",
   Electronics Letters 38(7), 2002.
.. [VIF] H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006.
.. [QABF] C. S. Xydeas, V. Petrovic, "Objective image fusion performance measure", Electronics
   Letters 36(4), 2000.
.. [SF] A. M. Eskicioglu, P. S. Fisher, "Image quality measures and their performance", IEEE
   Trans. Communications 43(12), 1995.
.. [SSIM] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from
   error visibility to structural similarity", IEEE TIP 13(4), 2004.
.. [FMI] M. B. A. Haghighat, A. Aghagolzadeh, H. Seyedarabi, "A non-reference image fusion metric
   based on mutual information of image features", Computers and Electrical Engineering 37(5),
   2011; M. Haghighat, M. A. Razian, "Fast-FMI: non-reference image fusion metric", AICT 2014.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ._dmey import MATLAB_DMEY_REC_LO, quadrature_mirror
from .fusion import SUITE_COLUMNS, canonical_columns

__all__ = ["TORCH_COLUMNS", "fusion_suite_batch"]

#: The columns :func:`fusion_suite_batch` computes: every column of the numpy suite.
TORCH_COLUMNS = SUITE_COLUMNS

_FMI_FEATURES = {"FMI_pixel": "edge", "FMI_dct": "dct", "FMI_w": "wavelet"}

# Smallest image side each metric needs (the numpy core raises below these sizes too).
_MIN_SIDE = {"SF": 2, "AG": 2, "SSIM": 7, "FMI_pixel": 3, "FMI_dct": 3, "FMI_w": 3}

# as_image clips float images within this tolerance of [0, 1] and rejects anything further out.
_RANGE_TOLERANCE = 1e-6
# to_255: a float32 k/255 times 255 lies within ~2e-5 of k; anything closer is 8-bit data.
_SNAP_TOLERANCE = 1e-4


# --------------------------------------------------------------------------------------------
# Arguments and inputs
# --------------------------------------------------------------------------------------------

def _resolve_device(device, tensors) -> torch.device:
    """``device`` as a :class:`torch.device`; None takes the inputs' device (CPU for arrays)."""
    if device is None:
        found = {t.device for t in tensors if isinstance(t, torch.Tensor)}
        if len(found) > 1:
            raise ValueError(f"fusion_suite_batch: inputs on different devices ({', '.join(map(str, found))}); "
                             "pass device=")
        return found.pop() if found else torch.device("cpu")
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise ValueError(f"fusion_suite_batch: device must be auto, cpu, cuda or cuda:N, got {device!r}")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ValueError(f"fusion_suite_batch: device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"fusion_suite_batch: device {name}: no CUDA device is available (use cpu)")
    return resolved


def _check_dtype(dtype) -> torch.dtype:
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"fusion_suite_batch: dtype must be torch.float64 or torch.float32, got {dtype!r}")
    return dtype


def _check_metrics(metrics: Iterable[str] | None) -> list[str]:
    """Canonical column names in table order (case-insensitive, as ``fusion_suite`` takes them)."""
    if metrics is None:
        return list(TORCH_COLUMNS)
    return canonical_columns(metrics, TORCH_COLUMNS, "fusion_suite_batch")


def _as_unit_batch(x, name: str, device: torch.device) -> torch.Tensor:
    """``x`` as an (N, H, W) float32 tensor in [0, 1] on ``device``, read as ``as_image`` reads.

    Integers are divided by their dtype's maximum (in float64, then rounded to float32, so uint8
    k becomes the float32 k/255 the numpy core sees), booleans become 0/1, floats must lie in
    [0, 1] up to 1e-6 and are clipped, then rounded to float32.
    """
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.is_complex() or not (t.is_floating_point() or t.dtype == torch.bool or _is_integer(t.dtype)):
        raise ValueError(f"fusion_suite_batch: {name} has unsupported dtype {t.dtype}; expected real gray images")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.numel() == 0:
        raise ValueError(f"fusion_suite_batch: {name} must be a non-empty (N, H, W) or (H, W) batch, "
                         f"got shape {tuple(t.shape)}")
    t = t.to(device)
    if t.dtype == torch.bool:
        return t.to(torch.float32)
    if _is_integer(t.dtype):
        if bool((t < 0).any()):
            raise ValueError(f"fusion_suite_batch: {name} has negative values in an integer image")
        return (t.to(torch.float64) / float(torch.iinfo(t.dtype).max)).to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"fusion_suite_batch: {name} has NaN/Inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"fusion_suite_batch: {name} values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return t.clamp(0.0, 1.0).to(torch.float32)


def _is_integer(dtype: torch.dtype) -> bool:
    return dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
                     torch.uint32, torch.uint64)


def _to_255(unit: torch.Tensor) -> torch.Tensor:
    """``to_255`` per image: float64 on 0-255, snapped to integers where an image is 8-bit data."""
    y = unit.to(torch.float64) * 255.0
    levels = torch.round(y)  # half to even, as np.rint
    snap = (y - levels).abs().amax(dim=(1, 2)) < _SNAP_TOLERANCE
    return torch.where(snap[:, None, None], levels, y)


@dataclass
class _Batch:
    """The checked images of a batch in the forms the metrics read, each derived once."""

    unit: tuple[torch.Tensor, ...]  # float64 of the float32 [0, 1] images (a, b, f)
    scaled: tuple[torch.Tensor, ...]  # float64 on 0-255 (to_255)
    levels: tuple[torch.Tensor, ...]  # int64 8-bit grey levels (to_levels)
    dtype: torch.dtype  # working precision of the metrics that tolerate float32


def _prepare(a, b, f, device: torch.device, dtype: torch.dtype) -> _Batch:
    units = [_as_unit_batch(x, role, device) for x, role in ((a, "a (PAT)"), (b, "b (MRI)"), (f, "f (fused)"))]
    shapes = {tuple(u.shape) for u in units}
    if len(shapes) > 1:
        raise ValueError("fusion_suite_batch: shape mismatch: " +
                         ", ".join(f"{r} {tuple(u.shape)}" for r, u in zip("abf", units)))
    unit = tuple(u.to(torch.float64) for u in units)
    levels = tuple(torch.round(u * 255.0).to(torch.int64) for u in unit)
    return _Batch(unit=unit, scaled=tuple(_to_255(u) for u in unit), levels=levels, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------

def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """One factor of Matlab's ``fspecial('gaussian', size, sigma)`` (as the numpy core builds it)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Matlab ``filter2(k' * k, x, 'valid')`` per image for a symmetric 1-D ``kernel``.

    Summed tap by tap (the kernels have at most 17 taps): faster than a float64 convolution on
    the CPU, and the same order on every device. An image smaller than the window gives an empty
    map, as Matlab's 'valid' filtering does.
    """
    n = kernel.size
    rows, cols = x.shape[1] - n + 1, x.shape[2] - n + 1
    if rows <= 0 or cols <= 0:
        return x.new_zeros((x.shape[0], max(rows, 0), max(cols, 0)))
    taps = kernel.tolist()
    along_rows = taps[0] * x[:, :rows]
    for t in range(1, n):
        along_rows += taps[t] * x[:, t:t + rows]
    out = taps[0] * along_rows[:, :, :cols]
    for t in range(1, n):
        out += taps[t] * along_rows[:, :, t:t + cols]
    return out


def _correlate3(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """3 x 3 correlation, 'same' size, with zero (``"constant"``) or ``"replicate"`` padding.

    Shifted slices times the non-zero taps (Sobel kernels: six of nine), faster than a float64
    convolution on the CPU; exact for the integer-valued images these kernels see.
    """
    padded = F.pad(x[:, None], (1, 1, 1, 1), mode=mode)[:, 0]
    rows, cols = x.shape[1], x.shape[2]
    out = None
    for (i, j), weight in np.ndenumerate(kernel):
        if weight != 0:
            term = float(weight) * padded[:, i:i + rows, j:j + cols]
            out = term if out is None else out.add_(term)
    return out


def _entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each row of histogram counts (empty bins skipped)."""
    p = counts.to(torch.float64) / counts.sum(dim=1, keepdim=True)
    terms = torch.where(counts > 0, p * torch.log2(torch.where(counts > 0, p, 1.0)), 0.0)
    return -terms.sum(dim=1)


def _histograms(levels: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, bins) counts of each image's integer values 0..bins-1, one bincount for the batch."""
    n = levels.shape[0]
    offsets = torch.arange(n, device=levels.device)[:, None] * bins
    flat = (levels.reshape(n, -1) + offsets).reshape(-1)
    return torch.bincount(flat, minlength=n * bins).view(n, bins)


# --------------------------------------------------------------------------------------------
# MI, EN
# --------------------------------------------------------------------------------------------

def _mi(batch: _Batch) -> torch.Tensor:
    """MI(A, F) + MI(B, F) in bits from exact 256-bin histograms of the 8-bit levels [MI]_."""
    qa, qb, qf = batch.levels
    h_f = _entropy_bits(_histograms(qf, 256))
    total = torch.zeros_like(h_f)
    for q in (qa, qb):
        joint = _histograms(q * 256 + qf, 256 * 256)
        # Plug-in MI is a KL divergence, so >= 0: clip the rounding of the entropy sum (~-2e-16).
        total += (_entropy_bits(_histograms(q, 256)) + h_f - _entropy_bits(joint)).clamp_min(0.0)
    return total


def _en(batch: _Batch) -> torch.Tensor:
    return _entropy_bits(_histograms(batch.levels[2], 256))


# --------------------------------------------------------------------------------------------
# VIF
# --------------------------------------------------------------------------------------------

_VIF_EPS = 1e-10
_VIF_SIGMA_NSQ = 2.0


def _local_moments(x: torch.Tensor, y: torch.Tensor, win: np.ndarray):
    """Means, variances and covariance of x and y in a 'valid' window, as ``vifp_mscale.m``."""
    mu1, mu2 = _filter_valid(x, win), _filter_valid(y, win)
    sigma1_sq = (_filter_valid(x * x, win) - mu1 * mu1).clamp_min(0.0)
    sigma2_sq = (_filter_valid(y * y, win) - mu2 * mu2).clamp_min(0.0)
    sigma12 = _filter_valid(x * y, win) - mu1 * mu2
    return sigma1_sq, sigma2_sq, sigma12


def _vif(batch: _Batch) -> torch.Tensor:
    """Sheikh's multiscale pixel-domain VIF on 0-255, VIF(A, F) + VIF(B, F) [VIF]_.

    A and B run as one batch of 2N references against F repeated. Always float64: on the 0-255
    scale local variances are differences of ~6.5e4-sized moments, which float32 resolves to
    ~4e-3, far above the 1e-10 flatness threshold.
    """
    a, b, f = batch.scaled
    n = f.shape[0]
    refs, dist = torch.cat([a, b]), torch.cat([f, f])
    num = torch.zeros(2 * n, dtype=torch.float64, device=f.device)
    den = torch.zeros_like(num)
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        win = _gaussian_1d(size, size / 5.0)
        if scale > 1:
            refs = _filter_valid(refs, win)[:, ::2, ::2]
            dist = _filter_valid(dist, win)[:, ::2, ::2]
        sigma1_sq, sigma2_sq, sigma12 = _local_moments(refs, dist, win)
        g = sigma12 / (sigma1_sq + _VIF_EPS)
        sv_sq = (sigma2_sq - g * sigma12).clamp_min(_VIF_EPS)
        flat1 = sigma1_sq < _VIF_EPS
        sigma1_sq = torch.where(flat1, 0.0, sigma1_sq)
        g = torch.where(flat1 | (sigma2_sq < _VIF_EPS) | (g < 0), 0.0, g)
        num += torch.log10(1.0 + g * g * sigma1_sq / (sv_sq + _VIF_SIGMA_NSQ)).sum(dim=(1, 2))
        den += torch.log10(1.0 + sigma1_sq / _VIF_SIGMA_NSQ).sum(dim=(1, 2))
    # A source without variance in any window is 0/0, counted as 1.0 (CDDFuse's rule, as numpy).
    per_source = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 1.0)
    return per_source[:n] + per_source[n:]


# --------------------------------------------------------------------------------------------
# Qabf
# --------------------------------------------------------------------------------------------

_SOBEL_X = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])  # correlation kernel of cv2's sx
_SOBEL_Y_QABF = np.outer([1.0, 0.0, -1.0], [1.0, 2.0, 1.0])
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def _edge_strength_angle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and orientation with zero padding (integer-exact on 8-bit data)."""
    sx = _correlate3(x, _SOBEL_X, "constant")
    sy = _correlate3(x, _SOBEL_Y_QABF, "constant")
    strength = torch.sqrt(sx * sx + sy * sy)
    vertical = sx == 0
    angle = torch.atan(sy / torch.where(vertical, 1.0, sx))
    return strength, torch.where(vertical, math.pi / 2, angle)


def _edge_preservation(g_x, a_x, g_f, a_f) -> torch.Tensor:
    # G = g_F where g_X == g_F, as the references do (0 on flat pixels, which carry no weight).
    tie = g_x == g_f
    ratio = torch.minimum(g_x, g_f) / torch.where(tie, 1.0, torch.maximum(g_x, g_f))
    ratio = torch.where(tie, g_f, ratio)
    orientation = 1.0 - (a_x - a_f).abs() / (math.pi / 2)
    q_g = _TG / (1.0 + torch.exp(_KG * (ratio - _DG)))
    q_a = _TA / (1.0 + torch.exp(_KA * (orientation - _DA)))
    return q_g * q_a


def _qabf(batch: _Batch) -> torch.Tensor:
    """Xydeas-Petrovic Q^{AB/F} on 0-255 [QABF]_; 0 where neither source has an edge."""
    (g_a, a_a), (g_b, a_b), (g_f, a_f) = (_edge_strength_angle(x.to(batch.dtype)) for x in batch.scaled)
    weight = g_a.sum(dim=(1, 2)) + g_b.sum(dim=(1, 2))
    kept = (_edge_preservation(g_a, a_a, g_f, a_f) * g_a).sum(dim=(1, 2)) \
        + (_edge_preservation(g_b, a_b, g_f, a_f) * g_b).sum(dim=(1, 2))
    return torch.where(weight > 0, kept / torch.where(weight > 0, weight, 1.0), 0.0)


# --------------------------------------------------------------------------------------------
# SF, SSIM, SD, AG, PSNR
# --------------------------------------------------------------------------------------------

def _sf(batch: _Batch) -> torch.Tensor:
    """Spatial frequency on [0, 1] (``paper``), each sum over its own number of differences [SF]_."""
    x = batch.unit[2].to(batch.dtype)
    row_sq = torch.diff(x, dim=1).square().mean(dim=(1, 2))
    col_sq = torch.diff(x, dim=2).square().mean(dim=(1, 2))
    return torch.sqrt(row_sq + col_sq)


_SSIM_BOX = np.full(7, 1.0 / 7)
_SSIM_COV_NORM = 49.0 / 48.0
_SSIM_C1, _SSIM_C2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2


def _ssim(batch: _Batch) -> torch.Tensor:
    """CDDFuse's SSIM(F, A) + SSIM(F, B): old scikit-image defaults on 0-255 [SSIM]_.

    7 x 7 uniform window ('valid', i.e. the map cropped by 3), sample covariance, data_range 2.
    Always float64: the constants C1, C2 are tiny against 0-255 moments, so float32 cancellation
    (~4e-3 in a variance) would decide flat windows.
    """
    a, b, f = batch.scaled
    m_f = _filter_valid(f, _SSIM_BOX)
    v_f = _SSIM_COV_NORM * (_filter_valid(f * f, _SSIM_BOX) - m_f * m_f)
    total = torch.zeros(f.shape[0], dtype=torch.float64, device=f.device)
    for y in (a, b):
        m_y = _filter_valid(y, _SSIM_BOX)
        v_y = _SSIM_COV_NORM * (_filter_valid(y * y, _SSIM_BOX) - m_y * m_y)
        c_fy = _SSIM_COV_NORM * (_filter_valid(f * y, _SSIM_BOX) - m_f * m_y)
        s = (2 * m_f * m_y + _SSIM_C1) * (2 * c_fy + _SSIM_C2) \
            / ((m_f * m_f + m_y * m_y + _SSIM_C1) * (v_f + v_y + _SSIM_C2))
        total += s.mean(dim=(1, 2))
    return total


def _sd(batch: _Batch) -> torch.Tensor:
    """Population standard deviation of F on 0-255."""
    return batch.scaled[2].std(dim=(1, 2), correction=0)


def _ag(batch: _Batch) -> torch.Tensor:
    """Average gradient on 0-255: Matlab ``gradient``, sum(s) / ((m - 1)(n - 1))."""
    x = batch.scaled[2].to(batch.dtype)
    grad_r, grad_c = torch.gradient(x, dim=(1, 2))  # central inside, one-sided at the borders
    s = torch.sqrt((grad_r * grad_r + grad_c * grad_c) / 2.0)
    return s.sum(dim=(1, 2)) / ((x.shape[1] - 1) * (x.shape[2] - 1))


def _psnr(batch: _Batch) -> torch.Tensor:
    """10 log10(255^2 / mean of the two MSEs) on 0-255; +inf where F equals both sources."""
    a, b, f = batch.scaled
    error = 0.5 * ((a - f).square().mean(dim=(1, 2)) + (b - f).square().mean(dim=(1, 2)))
    return 10.0 * torch.log10(255.0 ** 2 / error)  # error 0 gives +inf, as numpy returns


# --------------------------------------------------------------------------------------------
# FMI: feature maps
# --------------------------------------------------------------------------------------------

_SOBEL_EDGE = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8.0
_EDGE_SLACK = 100.0 * np.finfo(np.float64).eps


def _edge_map(x: torch.Tensor) -> torch.Tensor:
    """Matlab's default ``edge(I)`` (Sobel, threshold 4 mean(b), thinning) as 0/1 per image.

    On 8-bit data every quantity here is an exact dyadic rational, so the comparisons, ties
    included, come out as in the numpy core (and Matlab).
    """
    by = _correlate3(x, _SOBEL_EDGE, "replicate")
    bx = _correlate3(x, _SOBEL_EDGE.T, "replicate")
    b = bx * bx + by * by
    cutoff = 4.0 * b.sum(dim=(1, 2)) / (b.shape[1] * b.shape[2])
    abs_x, abs_y = bx.abs(), by.abs()
    # -inf neighbours make the out-of-image comparisons true on both sides.
    padded = F.pad(b, (1, 1, 1, 1), value=-math.inf)
    left, right = padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]
    up, down = padded[:, :-2, 1:-1], padded[:, 2:, 1:-1]
    across_columns = (abs_x >= abs_y - _EDGE_SLACK) & (left <= b) & (b > right)
    across_rows = (abs_y >= abs_x - _EDGE_SLACK) & (up <= b) & (b > down)
    return ((b > cutoff[:, None, None]) & (across_columns | across_rows)).to(x.dtype)


@lru_cache(maxsize=16)
def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix C (``C @ x`` = ``scipy.fft.dct(x, norm="ortho")``)."""
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    c = np.cos(np.pi * (2.0 * i + 1.0) * k / (2.0 * n)) * math.sqrt(2.0 / n)
    c[0] = math.sqrt(1.0 / n)
    return c


def _dct_last_axis(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis, exact zeros for constant vectors.

    The transform of ``x - x[0]`` plus that of the constant ``x[0]`` (DC only): a constant row's
    AC coefficients come out exactly 0, as scipy's FFT gives them for the usual sizes (64, 256),
    rather than 1e-14 residues that FMI's identical-window test would tell apart from zeros.
    """
    n = x.shape[-1]
    first = x[..., :1]
    out = (x - first) @ _matrix(_dct_matrix(n), x).T
    out[..., :1] += first * math.sqrt(n)
    return out


def _dct2(x: torch.Tensor) -> torch.Tensor:
    """Matlab ``dct2``: the orthonormal DCT-II of each whole image, along rows then columns."""
    return _dct_last_axis(_dct_last_axis(x).transpose(1, 2)).transpose(1, 2)


def _symmetric_index(i: np.ndarray, n: int) -> np.ndarray:
    """Source index of position ``i`` of a half-sample symmetric extension (numpy's "symmetric")."""
    j = np.mod(i, 2 * n)
    return np.where(j >= n, 2 * n - 1 - j, j)


_DMEY_TAPS = MATLAB_DMEY_REC_LO.size
_DMEY_BANK = (MATLAB_DMEY_REC_LO, quadrature_mirror(MATLAB_DMEY_REC_LO))  # correlation filters: low, high
# Each filter's sum (numpy's, as the numpy core scales a flat support) and the span of its non-zero
# taps (both filters have one zero tap at an end: Lo_R[101] and its mirror Hi_R[0]).
_DMEY_SUMS = tuple(float(np.sum(filt)) for filt in _DMEY_BANK)
_DMEY_SUPPORT = tuple((int(np.flatnonzero(filt)[0]), int(np.flatnonzero(filt)[-1])) for filt in _DMEY_BANK)


@lru_cache(maxsize=16)
def _dmey_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Low- and high-pass analysis matrices, (floor((n + 101) / 2), n), of Matlab's ``dwt(., 'dmey')``.

    ``dwt`` extends by 101 samples per side (half-sample symmetric), convolves fully with the
    decomposition filter (the reversed reconstruction filter: a correlation with the
    reconstruction filter) and keeps every second sample from index 102, i.e. the correlation at
    extended offsets 1, 3, 5, ...; row m holds the taps output m takes from each input sample.
    """
    n_out = (n + _DMEY_TAPS - 1) // 2
    source = _symmetric_index(_dmey_offsets(n_out)[:, None] + np.arange(_DMEY_TAPS)[None, :] - (_DMEY_TAPS - 1), n)
    rows = np.broadcast_to(np.arange(n_out)[:, None], source.shape)
    out = []
    for filt in _DMEY_BANK:
        m = np.zeros((n_out, n))
        np.add.at(m, (rows, source), np.broadcast_to(filt, source.shape))
        out.append(m)
    return out[0], out[1]


def _dmey_offsets(n_out: int) -> np.ndarray:
    """Extended index of each output's first tap: 1, 3, 5, ..."""
    return 1 + 2 * np.arange(n_out)


def _dmey_analysis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One level of Matlab's ``dwt(., 'dmey')`` along the last axis: (low, high), floor((n + 101) / 2) each.

    Matrix products, except that an output whose non-zero taps all see one value v is set to
    ``v * sum(filter)``: Matlab's direct convolution gives such outputs bit-equal values, a matrix
    product gives them position-dependent rounding, and FMI's per-window min-max scaling would
    stretch that rounding to [0, 1]. (The numpy core tests all 102 samples, the zero tap's
    included, so where a flat stretch ends under the zero tap it keeps the product's rounding.)
    """
    n = x.shape[-1]
    n_out = (n + _DMEY_TAPS - 1) // 2
    bands = [x @ _matrix(m, x).T for m in _dmey_matrices(n)]
    extended_index = _symmetric_index(np.arange(n + 2 * (_DMEY_TAPS - 1)) - (_DMEY_TAPS - 1), n)
    extended = x[..., torch.as_tensor(extended_index, device=x.device)]
    # changes[..., i]: neighbouring samples that differ up to sample i; flat where it does not grow.
    changes = F.pad(torch.cumsum(extended[..., 1:] != extended[..., :-1], dim=-1, dtype=torch.int32), (1, 0))
    offsets = _dmey_offsets(n_out)
    for band, total, (first, last) in zip(bands, _DMEY_SUMS, _DMEY_SUPPORT):
        starts = torch.as_tensor(offsets + first, device=x.device)
        flat = changes[..., starts] == changes[..., torch.as_tensor(offsets + last, device=x.device)]
        flat_value = extended[..., starts] * total
        band.copy_(torch.where(flat, flat_value, band))
    return bands[0], bands[1]


def _matrix(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(array, dtype=like.dtype, device=like.device)


def _dmey_tiled(x: torch.Tensor) -> torch.Tensor:
    """Matlab ``dwt2(x, 'dmey')`` tiled ``[cA cH; cV cD]`` and min-max scaled per image."""
    low, high = _dmey_analysis(x)  # along the columns first, as dwt2
    approx, horizontal = (band.transpose(1, 2) for band in _dmey_analysis(low.transpose(1, 2)))
    vertical, diagonal = (band.transpose(1, 2) for band in _dmey_analysis(high.transpose(1, 2)))
    tiled = torch.cat([torch.cat([approx, horizontal], dim=2), torch.cat([vertical, diagonal], dim=2)], dim=1)
    lo = tiled.amin(dim=(1, 2), keepdim=True)
    span = tiled.amax(dim=(1, 2), keepdim=True) - lo
    constant = span == 0
    # Haghighat's rerange: a constant map becomes all ones.
    return torch.where(constant, 1.0, (tiled - lo) / torch.where(constant, 1.0, span))


def _feature_shape(side: int, feature: str) -> int:
    """Side of a feature map: the image's, or two tiled dmey sub-bands of floor((side + 101) / 2)."""
    return 2 * ((side + MATLAB_DMEY_REC_LO.size - 1) // 2) if feature == "wavelet" else side


def _feature_map(x: torch.Tensor, feature: str) -> torch.Tensor:
    if feature == "edge":
        return _edge_map(x)
    if feature == "dct":
        return _dct2(x)
    return _dmey_tiled(x)


# --------------------------------------------------------------------------------------------
# FMI: per-window values
# --------------------------------------------------------------------------------------------

_WINDOW = 3
_BINS = _WINDOW * _WINDOW
_INNER = _BINS - 1  # interior CDF breakpoints per window


def _windows(maps: torch.Tensor) -> torch.Tensor:
    """All 'valid' 3 x 3 windows of (n, H, W) maps as the columns of a (9, n * K) array.

    Row k is element k of each window in Matlab's column-major ``(:)`` order, which the CDFs and
    bin indices of FMI depend on. Windows run along the long axis, so every per-window statistic
    is a short loop of whole-row operations.
    """
    rows, cols = maps.shape[1] - _WINDOW + 1, maps.shape[2] - _WINDOW + 1
    parts = [maps[:, r:r + rows, c:c + cols] for c in range(_WINDOW) for r in range(_WINDOW)]
    return torch.stack(parts).reshape(_BINS, -1)


def _row_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the rows (the bins), left to right as Matlab sums, on every device."""
    out = x[0].clone()
    for row in x[1:]:
        out += row
    return out


def _min_max(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each column min-max scaled to [0, 1], a constant column all ones (the reference); and the
    (M,) mask of the constant columns."""
    lo = windows.amin(dim=0)
    span = windows.amax(dim=0) - lo
    constant = span == 0
    return ((windows - lo) / span.masked_fill(constant, 1.0)).masked_fill_(constant, 1.0), constant


class _WindowStats:
    """One image's per-window distributions and the moments every comparison reuses.

    ``constant``: the windows that were constant (now all ones); ``pdf``: the scaled window over
    its sum; ``cdf``: (10, K), 0 then the left-to-right running sum; ``centred``: pdf minus the
    running sum's total / 9, as Matlab's ``mean`` sums (for a constant window this leaves nine
    equal residues of -2.8e-17, not zeros, so two constant windows correlate exactly 1);
    ``norm2``: the squared norm of ``centred``; ``mean``/``sd``: of the bin index 1..9 (a variance
    rounded below 0 counts as 0); ``log_pdf``: floored at log2(tiny) for empty bins, where it is
    only ever multiplied by 0; ``entropy`` in bits.
    """

    def __init__(self, scaled: torch.Tensor, constant: torch.Tensor):
        self.constant = constant
        self.pdf = pdf = scaled / _row_sum(scaled)
        self.cdf = cdf = torch.empty((_BINS + 1, pdf.shape[1]), dtype=pdf.dtype, device=pdf.device)
        cdf[0] = 0.0
        cdf[1] = pdf[0]
        for i in range(1, _BINS):
            torch.add(cdf[i], pdf[i], out=cdf[i + 1])
        self.centred = pdf - cdf[-1] / _BINS
        self.norm2 = _row_sum(self.centred * self.centred)
        index = torch.arange(1, _BINS + 1, dtype=pdf.dtype, device=pdf.device)[:, None]
        weighted = index * pdf
        self.mean = _row_sum(weighted)
        self.sd = torch.sqrt((_row_sum(index * weighted) - self.mean * self.mean).clamp_min_(0.0))
        self.log_pdf = _log2_floored(pdf)
        self.entropy = -_row_sum(pdf * self.log_pdf)

    def take(self, columns: torch.Tensor) -> "_WindowStats":
        """The statistics of some windows."""
        new = object.__new__(_WindowStats)
        for name, value in vars(self).items():
            setattr(new, name, value[..., columns])
        return new


def _log2_floored(x: torch.Tensor) -> torch.Tensor:
    """log2(max(x, tiny)): finite where x is 0, where it is only ever multiplied by 0."""
    return torch.log2(x.clamp_min(torch.finfo(x.dtype).tiny))


def _correlation(x: _WindowStats, f: _WindowStats) -> torch.Tensor:
    """Pearson correlation of the two 9-bin distributions; 0 where the covariance sum is exactly 0.

    Two constant windows correlate exactly 1: their centred values are equal residues of the
    left-to-right mean (-2.8e-17 each in float64). Set explicitly because in float32 the sum of
    nine 1/9 is exactly 1, which would leave zeros and a correlation of 0.
    """
    co = _row_sum(x.centred * f.centred)
    zero = co == 0
    corr = (co / torch.sqrt(x.norm2 * f.norm2).masked_fill(zero, 1.0)).masked_fill_(zero, 0.0)
    return corr.masked_fill_(x.constant & f.constant, 1.0)


def _segment_bins(x_breaks: torch.Tensor, f_breaks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For the segments ending at F's breakpoints Q_k: X's bin (the number of X breakpoints strictly
    below Q_k); for those ending at X's breakpoints R_l: F's bin (the number of Q at or below R_l)."""
    below = (x_breaks[None, :, :] < f_breaks[:, None, :]).view(torch.uint8)  # [k, l]: R_l < Q_k
    x_bin = below.sum(dim=1, dtype=torch.uint8).long()  # uint8 counts: an int64 bool sum is far slower
    f_bin = _INNER - below.sum(dim=0, dtype=torch.uint8).long()
    return x_bin, f_bin


def _pair_values(x: _WindowStats, f: _WindowStats) -> torch.Tensor:
    """Haghighat's ``2 MI / (H_X + H_F)`` of each window pair (0 where MI is exactly 0).

    The joint distribution is ``phi * B + (1 - phi) q p^T``, B the Frechet-Hoeffding bound
    coupling (comonotone for correlation c >= 0, countermonotone for c < 0) and phi = c / rho_B.
    B puts mass only on the 17 segments into which the interior CDF values of both windows cut
    [0, 1]; each is named by its right end (a breakpoint of F, one of X, or 1), so the joint
    entropy is the closed-form entropy of ``(1 - phi) q p^T`` plus a correction on 17 cells.
    """
    corr = _correlation(x, f)
    counter = corr < 0
    # X's bins in the order the bound coupling meets them: reversed for the countermonotone one,
    # whose breakpoints are then 1 - P.
    x_pdf = torch.where(counter, x.pdf.flip(0), x.pdf)
    x_cdf = torch.where(counter, 1.0 - x.cdf.flip(0), x.cdf)
    x_log = torch.where(counter, x.log_pdf.flip(0), x.log_pdf)
    x_breaks, f_breaks = x_cdf[1:-1], f.cdf[1:-1]
    x_bin, f_bin = _segment_bins(x_breaks, f_breaks)

    # Rows: the 8 segments ending at F breakpoints, the 8 ending at X breakpoints, the last one.
    at_f, at_x = slice(0, _INNER), slice(_INNER, 2 * _INNER)
    shape = (2 * _INNER + 1, x_pdf.shape[1])
    mass, indep, log_indep = (torch.empty(shape, dtype=x_pdf.dtype, device=x_pdf.device) for _ in range(3))
    torch.sub(f_breaks, torch.maximum(f.cdf[:-2], x_cdf.gather(0, x_bin)), out=mass[at_f])
    torch.sub(x_breaks, torch.maximum(x_cdf[:-2], f.cdf.gather(0, f_bin)), out=mass[at_x])
    torch.sub(1.0, torch.maximum(f_breaks[-1], x_breaks[-1]), out=mass[-1])
    mass[-1].clamp_min_(0.0)  # a CDF may end a rounding error above 1
    torch.mul(f.pdf[:-1], x_pdf.gather(0, x_bin), out=indep[at_f])
    torch.mul(f.pdf.gather(0, f_bin), x_pdf[:-1], out=indep[at_x])
    torch.mul(f.pdf[-1], x_pdf[-1], out=indep[-1])
    torch.add(f.log_pdf[:-1], x_log.gather(0, x_bin), out=log_indep[at_f])
    torch.add(f.log_pdf.gather(0, f_bin), x_log[:-1], out=log_indep[at_x])
    torch.add(f.log_pdf[-1], x_log[-1], out=log_indep[-1])

    bound_cov = _bound_moment(mass, x_bin, f_bin, counter) - x.mean * f.mean
    mixable = (corr != 0) & (x.sd > 0) & (f.sd > 0) & (bound_cov != 0)
    phi = (corr * x.sd * f.sd / bound_cov.masked_fill(~mixable, 1.0)).masked_fill_(~mixable, 0.0)
    weight = 1.0 - phi

    marginal = x.entropy + f.entropy
    log_weight = _log2_floored(weight.abs())
    # Entropy of (1 - phi) q p^T in closed form, corrected on the segments where B adds mass:
    # + g(phi mass + w indep) - g(w indep), g(v) = -v log2|v|, g(w indep) from the marginal logs.
    indep *= weight
    log_indep += log_weight
    log_indep *= indep
    mass *= phi
    mass += indep
    correction = log_indep.sub_(mass * _log2_floored(mass.abs()))
    mutual = marginal - (weight * (marginal - log_weight) + _row_sum(correction))
    undefined = (mutual == 0) | (marginal == 0)
    return (2.0 * mutual / marginal.masked_fill(undefined, 1.0)).masked_fill_(undefined, 0.0)


def _bound_moment(mass, x_bin, f_bin, counter) -> torch.Tensor:
    """E[I J] under the bound coupling (Hoeffding), from the 17 segment masses.

    In coupling order X bin m has index m + 1, or 9 - m when reversed (countermonotone).
    """
    ramp = torch.arange(1, _BINS, dtype=mass.dtype, device=mass.device)[:, None]
    x_bin = x_bin.to(mass.dtype)
    j_at_f = torch.where(counter, _BINS - x_bin, x_bin + 1.0) * ramp
    j_at_x = torch.where(counter, _BINS + 1.0 - ramp, ramp) * (f_bin + 1).to(mass.dtype)
    last = torch.where(counter, mass.new_tensor(float(_BINS)), mass.new_tensor(float(_BINS * _BINS)))
    return _row_sum(j_at_f * mass[:_INNER]) + _row_sum(j_at_x * mass[_INNER:2 * _INNER]) + last * mass[-1]


def _stats(windows: torch.Tensor, dtype: torch.dtype) -> _WindowStats:
    """Min-max scale in float64 (a window's span may be a tiny part of its values), then the
    statistics in the working precision."""
    scaled, constant = _min_max(windows)
    return _WindowStats(scaled.to(dtype), constant)


def _scores(source: torch.Tensor, same: torch.Tensor, stats_f: _WindowStats) -> torch.Tensor:
    """Per-window value of one source: 1 for identical windows, else the pair value."""
    dtype = stats_f.pdf.dtype
    todo = (~same).nonzero().squeeze(1)
    if todo.numel() == same.numel():
        return _pair_values(_stats(source, dtype), stats_f)
    value = torch.ones(same.shape, dtype=dtype, device=source.device)
    if todo.numel():  # edge maps: most windows are identical (all zero) and cost nothing
        value[todo] = _pair_values(_stats(source[:, todo], dtype), stats_f.take(todo))
    return value


def _window_values(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(fmi_AF + fmi_BF) / 2`` of float64 window columns (9, M) of the three feature maps."""
    same_af = (a == f).all(dim=0)
    f_scaled, f_constant = _min_max(f)
    # Reference quirk: fmi.m overwrites its F window with the scaled one while scoring A, so B is
    # tested for identity against the *scaled* F window unless A's window was identical.
    same_bf = (b == torch.where(same_af, f, f_scaled)).all(dim=0)
    stats_f = _WindowStats(f_scaled.to(dtype), f_constant)
    return 0.5 * (_scores(a, same_af, stats_f) + _scores(b, same_bf, stats_f))


# Windows per group of images: bounds the (8, 8, M) and (17, M) temporaries of _pair_values.
_GROUP_WINDOWS = {"cpu": 1 << 17, "cuda": 1 << 21}  # CUDA: a few GB at the peak


def _fmi(batch: _Batch, feature: str) -> torch.Tensor:
    """Mean per-window FMI of each image, the images processed in groups of bounded size."""
    a, b, f = batch.scaled
    n, height, width = f.shape
    map_h, map_w = _feature_shape(height, feature), _feature_shape(width, feature)
    per_image = (map_h - _WINDOW + 1) * (map_w - _WINDOW + 1)
    group = max(1, _GROUP_WINDOWS.get(f.device.type, 1 << 17) // per_image)
    means = []
    for start in range(0, n, group):
        part = slice(start, start + group)
        # One call, so identical images give identical maps; always in float64, where the edge
        # threshold is exact, flat dmey supports are exactly flat and identical windows stay so.
        maps = _feature_map(torch.cat([a[part], b[part], f[part]]), feature)
        windows = _windows(maps).view(_BINS, 3, -1)
        values = _window_values(windows[:, 0], windows[:, 1], windows[:, 2], batch.dtype)
        means.append(values.view(-1, per_image).mean(dim=1))
    return torch.cat(means)


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------

_FUNCTIONS = {"MI": _mi, "VIF": _vif, "Qabf": _qabf, "SF": _sf, "SSIM": _ssim, "EN": _en, "SD": _sd,
              "AG": _ag, "PSNR": _psnr}


def fusion_suite_batch(a, b, f, *, convention: str = "paper", metrics: Iterable[str] | None = None,
                       device=None, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """The fusion metrics of N triplets at once, equal to ``fusion_suite(..., convention="paper")``.

    Parameters
    ----------
    a, b, f : torch.Tensor or array_like, shape (N, H, W) or (H, W)
        PAT sources, MRI sources and fused images, gray in [0, 1] (or integer / boolean images,
        read as :func:`fusionbench.data.io.as_image` reads them: converted to float32 first, as
        the numpy core does), all of one shape.
    convention : {"paper"}
        Only the ``paper`` convention (see :mod:`fusionbench.metrics.fusion`); any other name
        raises ``ValueError``; use the numpy ``fusion_suite`` for the toolbox conventions.
    metrics : iterable of str, optional
        Column names (case-insensitive) from :data:`TORCH_COLUMNS`; default all twelve. ``FMI_pixel``
        is ``fmi(feature="edge")``, ``FMI_dct`` ``fmi(feature="dct")``, ``FMI_w``
        ``fmi(feature="wavelet")``.
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available). None: the device
        of the input tensors, CPU for arrays. Everything runs there.
    dtype : {torch.float64, torch.float32}
        Working precision. float64 (default) agrees with the numpy core to rounding (observed
        below 1e-12). float32 runs Qabf, SF, AG and FMI's per-window distributions and joint
        entropies in float32 and agrees to 1e-4 absolute (observed: 2e-6, mostly the float32
        rounding of the values themselves); the rest stays float64 whatever ``dtype`` says: the
        histograms of MI and EN, the FMI feature maps and per-window min-max scaling (identical
        and constant windows must stay so), and VIF, SSIM, SD and PSNR, whose local variances
        cancel catastrophically in float32 on the 0-255 scale (E[x^2] ~ 6.5e4 is resolved to
        ~4e-3, against SSIM's C2 = 3.6e-3 and VIF's 1e-10 flatness threshold).

    Returns
    -------
    dict of str to torch.Tensor
        Column name -> (N,) tensor of ``dtype`` on ``device``, in :data:`TORCH_COLUMNS` order.
        Degenerate inputs give the numpy core's documented values (VIF 1 per constant source,
        Qabf 0 without edges, PSNR +inf for f == a == b), without its ``RuntimeWarning``.

    Raises
    ------
    ValueError
        Another convention, an unknown metric, a bad device or dtype, images of different shapes,
        values outside [0, 1], or images smaller than a metric's window (SSIM 7 x 7, FMI 3 x 3,
        SF and AG 2 x 2).
    """
    if convention != "paper":
        raise ValueError(f"fusion_suite_batch: convention {convention!r} is not supported; the torch path "
                         "implements only 'paper' (use fusionbench.metrics.fusion.fusion_suite)")
    wanted = _check_metrics(metrics)
    dtype = _check_dtype(dtype)
    device = _resolve_device(device, (a, b, f))
    batch = _prepare(a, b, f, device, dtype)
    shape = tuple(batch.unit[2].shape[1:])
    for column in wanted:
        side = _MIN_SIDE.get(column, 1)
        if min(shape) < side:
            raise ValueError(f"fusion_suite_batch: {column} needs images of at least {side} x {side} pixels, "
                             f"got {shape[0]} x {shape[1]}")
    results = {}
    with torch.no_grad():
        for column in wanted:
            if column in _FMI_FEATURES:
                value = _fmi(batch, _FMI_FEATURES[column])
            else:
                value = _FUNCTIONS[column](batch)
            results[column] = value.to(dtype)
    return results
