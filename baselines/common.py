"""Building blocks shared by the classic fusion baselines, written to the Matlab references' conventions.

The fusion baselines of fusionbench re-implement Matlab code (VIFB and the authors' packages), and
several of their results depend on Matlab details that numpy does not share: ``uint8()`` rounds
half away from zero and saturates, ``imfilter`` pads with zeros unless told otherwise and puts the
centre of an even-sized kernel before the middle, ``imresize`` is an antialiased Keys bicubic with
mirrored borders, and He et al.'s guided filter normalises its box means by the number of pixels
actually inside the image. Each function here reproduces one of those conventions, so that the
methods can be written as short transcriptions of their papers.

All functions take and return float64 arrays unless stated otherwise (Matlab computes in double);
the methods convert their [0, 1] float32 inputs once, with :func:`fusionbench.data.io.as_image`,
and only the final result goes back to float32.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from fusionbench.data.io import as_image, check_same_shape
from fusionbench.methods import FusionMethod

__all__ = [
    "matlab_round", "to_uint8", "im2uint8", "mat2gray",
    "box_sum", "box_mean", "guided_filter",
    "fspecial_gaussian", "imfilter", "gaussian_blur",
    "cubic_kernel", "imresize",
    "PYRAMID_FILTER", "pyramid_downsample", "pyramid_upsample", "gaussian_pyramid",
    "laplacian_pyramid", "reconstruct_laplacian_pyramid",
    "gray_entropy", "ClassicFusion", "DEFAULT_ROLES",
]

#: Role mapping of the asymmetric IR/visible methods (DESIGN §3): PAT in the infrared/functional
#: slot, MRI in the visible/anatomical slot.
DEFAULT_ROLES = {"ir": "pat", "vis": "mri"}

_BOUNDARIES = {
    # Matlab imfilter / padarray name -> scipy.ndimage mode
    "zero": "constant",
    "replicate": "nearest",
    "symmetric": "reflect",  # scipy's "reflect" repeats the edge sample: d c b a | a b c d
    "circular": "wrap",
}


# --------------------------------------------------------------------------------------------
# Matlab numeric conversions
# --------------------------------------------------------------------------------------------

def matlab_round(x) -> np.ndarray:
    """Round half away from zero, as Matlab's ``round`` (numpy rounds half to even).

    Parameters
    ----------
    x : array_like
        Real values.

    Returns
    -------
    ndarray
        Float array of rounded values (``2.5 -> 3``, ``-2.5 -> -3``, ``0.5 -> 1``).
    """
    x = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def to_uint8(x) -> np.ndarray:
    """Matlab's ``uint8(x)`` for real input: round half away from zero, then saturate to [0, 255].

    NaN maps to 0 as in Matlab. The BGR and SAI references rely on this saturation (negative
    feature values clip to 0 instead of wrapping around).

    Parameters
    ----------
    x : array_like
        Real values on the 0..255 scale.

    Returns
    -------
    ndarray of uint8
    """
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(matlab_round(x), 0, 255).astype(np.uint8)


def im2uint8(x) -> np.ndarray:
    """Matlab's ``im2uint8`` for a double image: clip to [0, 1], scale by 255, round half away from zero.

    Parameters
    ----------
    x : array_like
        Real image nominally in [0, 1].

    Returns
    -------
    ndarray of uint8
    """
    return to_uint8(255.0 * np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0))


def mat2gray(x) -> np.ndarray:
    """Min-max normalisation to [0, 1], Matlab's ``mat2gray(x)``.

    A constant array has no range; Matlab then returns the values clipped to [0, 1], and so does
    this function (never a division by zero).

    Parameters
    ----------
    x : array_like
        Real array.

    Returns
    -------
    ndarray of float64
    """
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.clip(x, 0.0, 1.0)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Box filter and guided filter (He, Sun, Tang, ECCV 2010 / TPAMI 2013, Matlab reference code)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Linear filtering (Matlab fspecial / imfilter)
# --------------------------------------------------------------------------------------------

def fspecial_gaussian(size, sigma: float) -> np.ndarray:
    """Matlab's ``fspecial('gaussian', size, sigma)``: sampled Gaussian, tiny tails zeroed, sum 1.

    Parameters
    ----------
    size : int or (int, int)
        Kernel shape (rows, cols); an int means square.
    sigma : float
        Standard deviation in pixels (> 0).

    Returns
    -------
    ndarray of float64
    """
    rows, cols = (size, size) if np.isscalar(size) else tuple(size)
    if int(rows) < 1 or int(cols) < 1 or not sigma > 0:
        raise ValueError(f"fspecial_gaussian: need size >= 1 and sigma > 0, got {size}, {sigma}")
    y = np.arange(int(rows)) - (int(rows) - 1) / 2.0
    x = np.arange(int(cols)) - (int(cols) - 1) / 2.0
    h = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    return h / h.sum()


def _matlab_origin(n: int) -> int:
    # Matlab centres a length-n kernel at floor((n+1)/2) (1-based); scipy centres it at n//2
    # (0-based). They differ by one for even n, where Matlab's centre is left of the middle.
    return (n - 1) // 2 - n // 2


def imfilter(img, kernel, boundary: str = "zero") -> np.ndarray:
    """Matlab's ``imfilter(img, kernel, boundary)``: correlation, 'same' size, Matlab kernel centre.

    Parameters
    ----------
    img : array_like, 2-D
        Real image.
    kernel : array_like, 1-D or 2-D
        Correlation kernel (not flipped, as ``imfilter``); a 1-D kernel is a row vector.
    boundary : {"zero", "replicate", "symmetric", "circular"}
        Padding. ``imfilter``'s default is zero padding.

    Returns
    -------
    ndarray of float64
    """
    img = np.asarray(img, dtype=np.float64)
    kernel = np.atleast_2d(np.asarray(kernel, dtype=np.float64))
    mode = _mode(boundary)
    origin = [_matlab_origin(n) for n in kernel.shape]
    return ndimage.correlate(img, kernel, mode=mode, cval=0.0, origin=origin)


def gaussian_blur(img, sigma: float, size=None, boundary: str = "replicate") -> np.ndarray:
    """``imfilter(img, fspecial('gaussian', size, sigma), boundary)``, computed separably.

    The sampled Gaussian is an outer product, so two 1-D passes give the same result as the 2-D
    kernel (up to rounding) at a fraction of the cost. When ``fspecial`` would zero some kernel
    tails (a window wider than about 17 sigma), the 2-D kernel is used instead.

    Parameters
    ----------
    img : array_like, 2-D
        Real image.
    sigma : float
        Standard deviation in pixels.
    size : int or (int, int), optional
        Kernel shape; default ``2*ceil(3*sigma)+1``.
    boundary : {"zero", "replicate", "symmetric", "circular"}
        Padding (``imfilter`` naming).

    Returns
    -------
    ndarray of float64
    """
    if size is None:
        size = 2 * math.ceil(3 * sigma) + 1
    rows, cols = (size, size) if np.isscalar(size) else tuple(size)
    kernel2d = fspecial_gaussian((rows, cols), sigma)
    if np.any(kernel2d == 0):
        return imfilter(img, kernel2d, boundary)
    img = np.asarray(img, dtype=np.float64)
    mode = _mode(boundary)
    out = img
    for axis, n in ((0, int(rows)), (1, int(cols))):
        k = fspecial_gaussian((n, 1), sigma)[:, 0]
        out = ndimage.correlate1d(out, k, axis=axis, mode=mode, cval=0.0, origin=_matlab_origin(n))
    return out


# --------------------------------------------------------------------------------------------
# Matlab imresize (bicubic)
# --------------------------------------------------------------------------------------------

def cubic_kernel(x) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, the kernel of Matlab's ``imresize`` 'bicubic'.

    Keys, "Cubic convolution interpolation for digital image processing", IEEE TASSP 29(6), 1981.
    """
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """(out_len, in_len) interpolation matrix of Matlab's imresize ``contributions`` for one axis."""
    if antialias and scale < 1:
        width = 4.0 / scale

        def kernel(t):
            return scale * cubic_kernel(scale * t)
    else:
        width = 4.0
        kernel = cubic_kernel
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # output pixel centres in 1-based input coordinates
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - idx)
    weights /= weights.sum(axis=1, keepdims=True)
    # Out-of-range taps are mirrored with the edge sample repeated (Matlab's [1:n, n:-1:1]).
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), cols.ravel()), weights.ravel())
    return matrix


def imresize(img, output_shape=None, *, scale=None, antialias: bool = True) -> np.ndarray:
    """Matlab's ``imresize(img, ..., 'bicubic')``: Keys cubic (a=-0.5), antialiased when shrinking.

    Output pixel ``x`` (1-based) samples input position ``u = x/s + (1 - 1/s)/2``; when the scale
    ``s`` is below 1 the kernel is stretched by ``1/s`` (antialiasing); weights are normalised to
    sum 1 and taps beyond the border are mirrored (edge sample repeated). Rows are resized first
    unless the column scale is smaller (Matlab resizes along the smallest scale first). For an
    integer (e.g. uint8) input each one-dimensional pass returns that integer type, rounded half
    away from zero and saturated, as Matlab's ``imresize`` does.

    ``skimage.transform.resize(order=3)`` and ``cv2.INTER_CUBIC`` use other kernels (a=-0.75 in
    OpenCV) and no, or a different, antialiasing filter, so they do not reproduce Matlab.

    Parameters
    ----------
    img : array_like, 2-D
        Image (float or integer).
    output_shape : (int, int), optional
        Output (rows, cols). Exactly one of ``output_shape`` and ``scale`` is required.
    scale : float, optional
        Scale factor; the output shape is ``ceil(scale * shape)``, as in Matlab.
    antialias : bool
        Stretch the kernel when shrinking (Matlab's default for bicubic).

    Returns
    -------
    ndarray
        float64 for float input, the input's integer dtype for integer input.
    """
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"imresize: expected a non-empty 2-D image, got shape {arr.shape}")
    if (output_shape is None) == (scale is None):
        raise ValueError("imresize: give exactly one of output_shape and scale")
    in_shape = arr.shape
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"imresize: scale must be > 0, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(int(math.ceil(scale * n)) for n in in_shape)
    else:
        out_shape = tuple(int(n) for n in output_shape)
        if len(out_shape) != 2 or min(out_shape) < 1:
            raise ValueError(f"imresize: output_shape must be two positive ints, got {output_shape}")
        scales = tuple(o / i for o, i in zip(out_shape, in_shape))
    integer = np.issubdtype(arr.dtype, np.integer)
    out = arr.astype(np.float64)
    for axis in (sorted((0, 1), key=lambda a: scales[a])):
        matrix = _resize_matrix(in_shape[axis], out_shape[axis], scales[axis], antialias)
        out = matrix @ out if axis == 0 else out @ matrix.T
        if integer:
            info = np.iinfo(arr.dtype)
            out = np.clip(matlab_round(out), info.min, info.max)
    return out.astype(arr.dtype) if integer else out


# --------------------------------------------------------------------------------------------
# Gaussian / Laplacian pyramids (Burt & Adelson 1983, as Mertens et al.'s exposure-fusion code)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

def gray_entropy(img_u8) -> float:
    """Shannon entropy in bits of the 256-bin histogram of a uint8 image (Matlab's ``entropy``)."""
    img_u8 = np.asarray(img_u8)
    if img_u8.dtype != np.uint8:
        raise ValueError(f"gray_entropy: expected a uint8 image, got {img_u8.dtype}")
    counts = np.bincount(img_u8.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / img_u8.size
    return float(-(p * np.log2(p)).sum())


# --------------------------------------------------------------------------------------------
# Shared method scaffolding
# --------------------------------------------------------------------------------------------

class ClassicFusion(FusionMethod):
    """Base of the classic two-source baselines: input checks, role mapping and the recorded config.

    Subclasses implement :meth:`_fuse_ir_vis` on float64 [0, 1] arrays in the reference's slots
    (``ir`` = first/infrared/functional source, ``vis`` = second/visible/anatomical source) and
    return a float image in [0, 1]. ``roles`` maps slots to modalities; the default puts PAT in the
    IR slot and MRI in the visible slot, ``{"ir": "mri", "vis": "pat"}`` swaps them.
    """

    kind = "traditional"

    def __init__(self, roles: dict[str, str] | None = None, **params: Any):
        roles = dict(DEFAULT_ROLES if roles is None else roles)
        if sorted(roles) != ["ir", "vis"] or sorted(roles.values()) != ["mri", "pat"]:
            raise ValueError(f"{type(self).__name__}: roles must map 'ir' and 'vis' to 'pat' and 'mri', "
                             f"got {roles}")
        self.roles = roles
        self.params = params

    def config(self) -> dict[str, Any]:
        return {**self.params, "roles": dict(self.roles), **dict(getattr(self, "_config", {}))}

    def fuse(self, pat, mri) -> np.ndarray:
        pat = as_image(pat, "pat")
        mri = as_image(mri, "mri")
        check_same_shape(pat=pat, mri=mri)
        by_role = {"pat": pat.astype(np.float64), "mri": mri.astype(np.float64)}
        fused = self._fuse_ir_vis(by_role[self.roles["ir"]], by_role[self.roles["vis"]])
        return np.clip(fused, 0.0, 1.0).astype(np.float32)

    def _fuse_ir_vis(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _check_radius(r) -> int:
    if int(r) != r or r < 0:
        raise ValueError(f"window radius must be a non-negative integer, got {r}")
    return int(r)


def _mode(boundary: str) -> str:
    try:
        return _BOUNDARIES[boundary]
    except KeyError:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {', '.join(_BOUNDARIES)}") from None


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
