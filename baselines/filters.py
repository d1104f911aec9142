"""Box filter and guided filter (He, Sun, Tang, ECCV 2010 / TPAMI 2013), as their Matlab reference code.

He et al.'s ``boxfilter.m`` truncates the window at the image border, and their guided filter
normalises its box means by the number of pixels actually inside the image; the functions here
reproduce that. They take and return float64 arrays.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["box_sum", "box_mean", "guided_filter"]


def box_sum(img, r: int) -> np.ndarray:
    """Sum over the (2r+1)x(2r+1) window around each pixel, the window truncated at the border.

    This is the ``boxfilter.m`` of He et al.'s guided-filter code (cumulative sums), i.e. a
    correlation with a ones kernel and zero padding.

    Parameters
    ----------
    img : array_like, 2-D
        Real image.
    r : int
        Window radius (r >= 0).

    Returns
    -------
    ndarray of float64
    """
    r = _check_radius(r)
    img = np.ascontiguousarray(img, dtype=np.float64)
    k = 2 * r + 1
    return cv2.boxFilter(img, cv2.CV_64F, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)


def box_mean(img, r: int) -> np.ndarray:
    """Mean over the (2r+1)x(2r+1) window, divided by the number of pixels inside the image.

    He et al.'s ``boxfilter(I, r) ./ boxfilter(ones, r)``: near the border the mean is over the
    truncated window, not a zero-padded one.

    Parameters
    ----------
    img : array_like, 2-D
        Real image.
    r : int
        Window radius.

    Returns
    -------
    ndarray of float64
    """
    img = np.asarray(img, dtype=np.float64)
    return box_sum(img, r) / box_sum(np.ones_like(img), r)


def guided_filter(guide, src, r: int, eps: float) -> np.ndarray:
    """Gray-guide guided filter of He, Sun and Tang (ECCV 2010), as their Matlab ``guidedfilter.m``.

    ``q = mean_a * I + mean_b`` with ``a = cov(I, p) / (var(I) + eps)`` and ``b = mean(p) - a mean(I)``
    over (2r+1)^2 windows; every mean is a :func:`box_mean` (normalised by the in-image count).

    Parameters
    ----------
    guide : array_like, 2-D
        Guidance image I.
    src : array_like, 2-D
        Filtering input p (same shape).
    r : int
        Window radius.
    eps : float
        Regularisation (eps >= 0); larger is smoother.

    Returns
    -------
    ndarray of float64
        The filtered image q.
    """
    guide = np.asarray(guide, dtype=np.float64)
    src = np.asarray(src, dtype=np.float64)
    if guide.shape != src.shape or guide.ndim != 2:
        raise ValueError(f"guided_filter: guide {guide.shape} and src {src.shape} must be equal 2-D shapes")
    if not eps >= 0:
        raise ValueError(f"guided_filter: eps must be >= 0, got {eps}")
    count = box_sum(np.ones_like(guide), r)
    mean_i = box_sum(guide, r) / count
    mean_p = box_sum(src, r) / count
    cov_ip = box_sum(guide * src, r) / count - mean_i * mean_p
    var_i = box_sum(guide * guide, r) / count - mean_i * mean_i
    with np.errstate(divide="ignore", invalid="ignore"):
        a = cov_ip / (var_i + eps)
    # eps = 0 on a flat window is 0/0; the limit of the filter there is the local mean of p.
    a = np.where(np.isfinite(a), a, 0.0)
    b = mean_p - a * mean_i
    return box_sum(a, r) / count * guide + box_sum(b, r) / count


def _check_radius(r) -> int:
    if int(r) != r or r < 0:
        raise ValueError(f"window radius must be a non-negative integer, got {r}")
    return int(r)
