"""Matlab built-ins reproduced with Matlab's conventions, for the baselines that transcribe Matlab code.

The fusion baselines of fusionbench re-implement Matlab code (VIFB and the authors' packages), and
several of their results depend on Matlab details that numpy does not share: ``uint8()`` rounds
half away from zero and saturates, ``imfilter`` pads with zeros unless told otherwise and puts the
centre of an even-sized kernel before the middle, and ``imresize`` is an antialiased Keys bicubic
with mirrored borders. Each function here reproduces one of those built-ins, so that the methods
can be written as short transcriptions of their papers.

All functions take and return float64 arrays unless stated otherwise (Matlab computes in double);
the methods convert their [0, 1] float32 inputs once, with :func:`fusionbench.data.io.as_image`,
and only the final result goes back to float32.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = [
    "matlab_round", "to_uint8", "im2uint8", "mat2gray", "gray_entropy",
    "fspecial_gaussian", "imfilter", "gaussian_blur",
    "cubic_kernel", "imresize",
]

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
# Image entropy (Matlab entropy)
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


def _mode(boundary: str) -> str:
    try:
        return _BOUNDARIES[boundary]
    except KeyError:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {', '.join(_BOUNDARIES)}") from None


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
