"""Feature mutual information (FMI) of a fused image, Haghighat's fast FMI, compiled.

References
----------
.. [1] M. B. A. Haghighat, A. Aghagolzadeh, H. Seyedarabi, "A non-reference image fusion metric
       based on mutual information of image features", Computers and Electrical Engineering
       37(5):744-756, 2011. doi:10.1016/j.compeleceng.2011.07.012
.. [2] M. Haghighat, M. A. Razian, "Fast-FMI: non-reference image fusion metric", 8th Int. Conf.
       on Application of Information and Communication Technologies (AICT), 2014.

The reference implementation is Haghighat's Matlab ``fmi.m``, shipped unchanged by the ``tang``
(``analysis_fmi.m``) and ``mefb`` (``metricsFMI.m``) toolboxes; it loops over every window and takes
minutes on a 256 x 256 image. :func:`fmi` computes the same numbers in one compiled pass over the
windows (:mod:`fusionbench.metrics._fmi_kernel`; see ``/work/shared/reference/metric-conventions.md``,
row FMI).

Per 3 x 3 window (``window=3``, 'valid' positions only) and per source X in {A, B}:

1. if the X and F windows are identical the window's value is 1;
2. else each window is min-max scaled (a constant window becomes all ones), flattened in Matlab's
   column-major order and divided by its sum: two 9-bin distributions p (X) and q (F), with
   cumulative distributions P and Q;
3. c is the Pearson correlation of the 9-vectors p and q (0 when the covariance sum is exactly 0);
4. the joint distribution is Nelsen's mixture ``phi * M + (1 - phi) * q p^T`` where M is the
   Frechet-Hoeffding upper bound coupling of q and p (the comonotone one) when c >= 0 and the lower
   bound (countermonotone) when c < 0, and ``phi = c / rho_M`` with rho_M the correlation of the bin
   indices 1..9 under M (phi = 0 when c = 0 or either index distribution has zero variance);
5. MI = H(p) + H(q) - H(joint) in bits, where a joint cell j enters as ``-j log2|j|`` (the real part
   Matlab keeps when phi > 1 makes a cell negative) and zero cells are skipped;
   the value is ``2 MI / (H(p) + H(q))``, and 0 where MI is exactly 0.

The window's value is the mean of the A and B values, and FMI is the mean over all windows.

Three details of the reference decide degenerate windows and are reproduced on purpose:

- while scoring A, ``fmi.m`` overwrites its F window with the min-max scaled one, so B is tested
  for identity against the *scaled* F window unless A's window was identical (an all-zero F edge
  window becomes all ones, and an all-zero B window no longer matches it);
- Matlab and Octave sum left to right, so a constant window's distribution ``1/9`` has the mean
  ``(1 + 2^-52) / 9``, not ``1/9``: its centred values are -2.8e-17, not 0. Two constant windows
  that are not identical are therefore perfectly correlated (c = 1, phi = 1) and score 1, and a
  constant window against a structured one scores about 1e-16. (This undoes the first quirk for
  edge maps: the all-zero B window against the all-ones scaled F window scores 1.)
- ``dwt2`` is a direct convolution, so coefficients over a flat stretch of the image are exactly
  equal and their windows constant; :func:`fusionbench.metrics._dmey.dmey_dwt2` keeps that.

The joint entropy needs one logarithm per cell the bound coupling M gives mass to, at most 17 of
the 81 (the stretches between the merged breakpoints of both CDFs): the entropy of the independent
part ``(1 - phi) q p^T`` has a closed form from the marginal logarithms.
"""
from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.ndimage
from numpy.lib.stride_tricks import sliding_window_view

from ..data.io import ImageError, as_image, check_same_shape
from ._conventions import check_convention, to_255, unsupported, warn_degenerate
from ._dmey import dmey_dwt2

__all__ = ["fmi", "matlab_edge", "fmi_features", "FMI_FEATURES"]

FMI_FEATURES = ("edge", "pixel", "dct", "wavelet")

# Matlab's fspecial('sobel') / 8: the y-derivative kernel; its transpose is the x-derivative.
_SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8.0
# Matlab's edge() compares gradient components with a slack of 100 * eps (double).
_EDGE_SLACK = 100.0 * np.finfo(np.float64).eps


def matlab_edge(img) -> np.ndarray:
    """Binary edge map of Matlab's default ``edge(I)`` (Sobel, automatic threshold, thinning).

    Reproduces ``edge(I)`` of the Matlab Image Processing Toolbox, the ``edge`` feature of
    Haghighat's FMI: the Sobel kernels ``[1 2 1; 0 0 0; -1 -2 -1] / 8`` and its transpose applied
    as correlation with replicate padding give ``by`` and ``bx``; ``b = bx**2 + by**2``; the
    threshold is ``cutoff = 4 * mean(b)``; a pixel is an edge where ``b > cutoff`` and ``b`` is a
    local maximum across the dominant gradient direction::

        (|bx| >= |by| - 100 eps  and  b[r, c-1] <= b[r, c] > b[r, c+1])  or
        (|by| >= |bx| - 100 eps  and  b[r-1, c] <= b[r, c] > b[r+1, c])

    where a comparison with a neighbour outside the image counts as true. (GNU Octave's ``edge``
    thins differently.) The map does not depend on the intensity scale; it is computed on the
    0-255 scale the reference toolboxes use, where 8-bit data give exact arithmetic, so ties
    between neighbours are resolved exactly as Matlab resolves them.

    Parameters
    ----------
    img : array_like
        Gray image, converted with :func:`fusionbench.data.io.as_image`.

    Returns
    -------
    numpy.ndarray of bool
        The edge map, same shape as ``img``. A constant image has no edges.
    """
    return _sobel_edges(to_255(as_image(img, name="img")))


def _sobel_edges(x: np.ndarray) -> np.ndarray:
    by = scipy.ndimage.correlate(x, _SOBEL_Y, mode="nearest")
    bx = scipy.ndimage.correlate(x, _SOBEL_Y.T, mode="nearest")
    b = bx * bx + by * by
    cutoff = 4.0 * b.sum() / b.size
    abs_x, abs_y = np.abs(bx), np.abs(by)
    # -inf neighbours make the out-of-image comparisons true on both sides.
    padded = np.pad(b, 1, mode="constant", constant_values=-np.inf)
    left, right = padded[1:-1, :-2], padded[1:-1, 2:]
    up, down = padded[:-2, 1:-1], padded[2:, 1:-1]
    across_columns = (abs_x >= abs_y - _EDGE_SLACK) & (left <= b) & (b > right)
    across_rows = (abs_y >= abs_x - _EDGE_SLACK) & (up <= b) & (b > down)
    return (b > cutoff) & (across_columns | across_rows)


def _rerange(x: np.ndarray) -> np.ndarray:
    """Haghighat's ``rerange``: min-max scale to [0, 1]; a constant array becomes all ones."""
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.ones_like(x)
    return (x - lo) / (hi - lo)


def fmi_features(img, feature: str = "edge") -> np.ndarray:
    """The feature map FMI compares for one image (float64, on the toolboxes' 0-255 scale).

    Parameters
    ----------
    img : array_like
        Gray image, converted with :func:`fusionbench.data.io.as_image`, then put on the 0-255
        scale of the reference toolboxes (exact integers for 8-bit data).
    feature : {"edge", "pixel", "dct", "wavelet"}
        ``"edge"``: :func:`matlab_edge` as 0/1 values (Matlab ``edge(I)``).
        ``"pixel"``: the raw intensities (Haghighat's ``'none'``).
        ``"dct"``: the 2-D orthonormal DCT-II of the whole image (Matlab ``dct2``), same shape;
        coefficients within 1e-13 of the largest, rounding noise of exact zeros, are set to 0.
        ``"wavelet"``: one-level 2-D DWT with Matlab's 102-tap discrete Meyer wavelet, symmetric
        extension, sub-bands tiled ``[cA cH; cV cD]`` and min-max scaled to [0, 1] (Matlab
        ``dwt2(I, 'dmey')``); an H x W image gives 2*floor((H+101)/2) x 2*floor((W+101)/2).

    Returns
    -------
    numpy.ndarray
        float64 feature map.
    """
    x = to_255(as_image(img, name="img"))
    return _feature_map(x, _check_feature(feature))


_DCT_ZERO = 1e-13


def _check_feature(feature: str) -> str:
    if not isinstance(feature, str) or feature not in FMI_FEATURES:
        raise ValueError(f"fmi: unknown feature {feature!r}; expected one of "
                         f"{', '.join(map(repr, FMI_FEATURES))}")
    return feature


def _feature_map(x: np.ndarray, feature: str) -> np.ndarray:
    if feature == "pixel":
        return x
    if feature == "edge":
        return _sobel_edges(x).astype(np.float64)
    if feature == "dct":
        coefficients = scipy.fft.dctn(x, type=2, norm="ortho")
        # Terms that are exactly 0 in exact arithmetic (every AC term of a constant image, those
        # of a constant row or column) come out of the FFT as ~1e-16 of the largest; 3 x 3 min-max
        # scaling would turn that noise into structure, different in every implementation.
        # Natural images have no genuine coefficient within 1e-13 of the largest.
        coefficients[np.abs(coefficients) <= _DCT_ZERO * np.abs(coefficients).max()] = 0.0
        return coefficients
    approx, (horizontal, vertical, diagonal) = dmey_dwt2(x)
    return _rerange(np.block([[approx, horizontal], [vertical, diagonal]]))


def _fmi_map(feature_a: np.ndarray, feature_b: np.ndarray, feature_f: np.ndarray,
             window: int) -> np.ndarray:
    """Per-window FMI, shape (m - window + 1, n - window + 1), of three feature maps."""
    from ._fmi_kernel import fmi_map  # numba costs 0.7 s to import: only when FMI is computed

    maps = [np.ascontiguousarray(m, dtype=np.float64) for m in (feature_a, feature_b, feature_f)]
    return fmi_map(*maps, int(window))


def fmi(a, b, f, *, feature: str = "edge", window: int = 3, convention: str = "paper") -> float:
    """Feature mutual information of a fused image ``f`` with its sources ``a`` and ``b``.

    Haghighat's normalised FMI [1]_ in its fast form [2]_, as computed by Haghighat's ``fmi.m``
    in the ``tang`` and ``mefb`` toolboxes, window by window as the module docstring describes,
    with every branch of the reference reproduced (identical windows score 1; constant windows
    become uniform distributions; the correlation sign picks the upper or lower Frechet bound;
    phi = 0 for zero correlation or zero index variance; a negative joint cell enters as
    ``-j log2|j|``; 0 where MI is exactly 0; the reference's reuse of the scaled F window in
    the B identity test; Matlab's left-to-right sums, which make two different constant windows
    perfectly correlated). Values agree with the reference to rounding (about 1e-12).

    .. warning::
       **The paper's "FMI_pixel" is edge-feature FMI, and it barely ranks.** Haghighat's code
       defaults to the ``edge`` feature although its help text says raw pixels, so the toolboxes'
       "FMI_pixel" column is ``feature="edge"`` (this function's default), not ``"pixel"``.
       Most 3 x 3 windows of Sobel edge maps are all zero in both images and score a perfect 1,
       so edge-feature FMI is about 0.9 **even for a constant (black) fused image**, and that can
       beat a real fusion (a black image scores 0.883, the mean of the two sources 0.877 on
       ``camera`` and ``moon`` at 128 x 128). Report it for comparability with published tables,
       but never let it decide a ranking alone.

    Parameters
    ----------
    a, b : array_like
        The two sources (A = PAT, B = MRI), gray images in [0, 1] (see
        :func:`fusionbench.data.io.as_image`). A and B enter symmetrically.
    f : array_like
        The fused image, same shape.
    feature : {"edge", "pixel", "dct", "wavelet"}
        Feature map compared (see :func:`fmi_features`). ``"edge"`` (default) is the papers'
        FMI_pixel, ``"dct"`` FMI_dct, ``"wavelet"`` FMI_w; ``"pixel"`` is truly raw intensities.
        The features are computed on the 0-255 scale of the toolboxes; FMI does not depend on
        the scale except through rounding.
    window : int
        Odd sliding-window side, at least 3 (default 3, the toolboxes' value). Only 'valid'
        windows count: an m x n feature map has (m - window + 1)(n - window + 1) windows.
    convention : {"paper", "tang", "mefb"}
        All three name the same computation (Haghighat's ``fmi.m``, shipped unchanged by both
        toolboxes). ``"vifb"`` and ``"cddfuse"`` define no FMI and raise ``ValueError``.

    Returns
    -------
    float
        Mean of the per-window values ``(fmi_AF + fmi_BF) / 2``. 1 when ``f`` equals both
        sources. Real images give values in [0, 1]; Nelsen's mixture is not a true joint
        distribution when phi > 1, so a window may fall slightly outside, and on tiny
        near-constant images the mean too (by at most 1.7e-5 in a random search).

    Raises
    ------
    ValueError
        Unknown feature or convention, bad window, mismatched shapes, or images smaller than the
        window (``ImageError``, a ``ValueError``, for image problems).

    Warns
    -----
    RuntimeWarning
        When any image is constant: its windows become uniform distributions by the reference's
        rule, so the score is a convention, not a measurement. For example, with ``feature``
        ``"pixel"`` and a constant ``f``, a window scores 1 against a constant source window and
        about 0 against a structured one; with ``"edge"`` a constant ``f`` scores about 0.9 (see
        the warning above).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b, noise = rng.random((3, 32, 32))
    >>> bool(fmi(a, b, (a + b) / 2, feature="pixel") > fmi(a, b, noise, feature="pixel"))
    True
    >>> fmi(a, a, a, feature="dct")
    1.0
    """
    convention = check_convention(convention, "fmi")
    if convention in ("vifb", "cddfuse"):
        raise unsupported("fmi", convention, "its metric set has no FMI")
    feature = _check_feature(feature)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) \
            or window < 3 or window % 2 == 0:
        raise ValueError(f"fmi: window must be an odd integer >= 3, got {window!r}")
    window = int(window)
    images = {"a": as_image(a, name="a"), "b": as_image(b, name="b"), "f": as_image(f, name="f")}
    check_same_shape(**images)
    shape = images["f"].shape
    if min(shape) < window:
        raise ImageError(f"fmi: images of shape {shape} are smaller than the {window} x {window} "
                         "window")
    constant = [name for name, img in images.items() if img.min() == img.max()]
    if constant:
        warn_degenerate("fmi", f"constant image(s) {', '.join(constant)}: their windows become "
                        "uniform distributions (reference convention); the score is a convention")
    maps = [_feature_map(to_255(img), feature) for img in images.values()]
    return float(_fmi_map(*maps, window).mean())
