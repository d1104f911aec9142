"""Feature mutual information (FMI) of a fused image, Haghighat's fast FMI, vectorised.

References
----------
.. [1] M. B. A. Haghighat, A. Aghagolzadeh, H. Seyedarabi, "A non-reference image fusion metric
       based on mutual information of image features", Computers and Electrical Engineering
       37(5):744-756, 2011. doi:10.1016/j.compeleceng.2011.07.012
.. [2] M. Haghighat, M. A. Razian, "Fast-FMI: non-reference image fusion metric", 8th Int. Conf.
       on Application of Information and Communication Technologies (AICT), 2014.

The reference implementation is Haghighat's Matlab ``fmi.m``, shipped unchanged by the ``tang``
(``analysis_fmi.m``) and ``mefb`` (``metricsFMI.m``) toolboxes; it loops over every window and takes
minutes on a 256 x 256 image. :func:`fmi` computes the same numbers with array operations on all
windows at once (see ``/work/shared/reference/metric-conventions.md``, row FMI).

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

Two details of the reference are reproduced on purpose: while scoring A, ``fmi.m`` overwrites its
F window with the min-max scaled one, so B is tested for identity against the *scaled* F window
unless A's window was identical (this makes FMI slightly asymmetric in A and B where F windows are
constant, e.g. all-zero edge windows); and a constant window's uniform distribution has exactly
zero correlation with anything (Matlab's summed mean is exactly 1/9 there).

Vectorisation: windows are the columns of (9, K) arrays, processed in cache-sized blocks. M puts
mass only on the cells where the bins' CDF intervals overlap, at most 17 of the 81 cells (the
segments between the merged breakpoints of both CDFs, each named by its right end, found from one
(8, 8) comparison per window). The entropy of the independent part ``(1 - phi) q p^T`` has a
closed form and reuses the marginal logarithms, so a window pair needs 17 new logarithms, not 81.
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
        ``"dct"``: the 2-D orthonormal DCT-II of the whole image (Matlab ``dct2``), same shape.
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
        return scipy.fft.dctn(x, type=2, norm="ortho")
    approx, (horizontal, vertical, diagonal) = dmey_dwt2(x)
    return _rerange(np.block([[approx, horizontal], [vertical, diagonal]]))


def _column_major_windows(feature_map: np.ndarray, window: int) -> np.ndarray:
    """All 'valid' window x window windows as columns of an (L, K) array, L = window**2.

    Row k of the result is element k of every window in Matlab's column-major ``(:)`` order; the
    windows run along the long axis so that every per-window statistic is a short loop of
    whole-row array operations.
    """
    windows = sliding_window_view(feature_map, (window, window))
    return windows.transpose(3, 2, 0, 1).reshape(window * window, -1)


def _min_max_windows(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-max scale each column to [0, 1]; a constant column becomes all ones (the reference).

    Returns the scaled columns and the (K,) mask of constant ones.
    """
    lo = windows.min(axis=0)
    span = windows.max(axis=0) - lo
    constant = span == 0
    span[constant] = 1.0
    scaled = (windows - lo) / span
    scaled[:, constant] = 1.0
    return scaled, constant


_TINY = np.finfo(np.float64).tiny


def _log2_floored(x: np.ndarray) -> np.ndarray:
    """``log2(max(x, tiny))``: finite (-1022) where x is 0.

    Every use multiplies it by the quantity that is 0 there, so the product is the reference's 0;
    flooring is cheaper than numpy's masked ``where=`` evaluation.
    """
    return np.log2(np.maximum(x, _TINY))


def _neg_x_log2_abs(x: np.ndarray) -> np.ndarray:
    """``-x log2|x|`` elementwise, 0 where x is 0 (Matlab's ``real(-x .* log2(x))``)."""
    logs = np.abs(x)
    np.maximum(logs, _TINY, out=logs)
    np.log2(logs, out=logs)
    logs *= x
    return np.negative(logs, out=logs)


class _WindowStats:
    """What one image's windows contribute to every comparison, computed once per image.

    Columns are windows. ``pdf``: the min-max scaled window divided by its sum (the reference's
    L-bin distribution); ``cdf``: (L + 1, K), a zero row then the running sum, accumulated bin by
    bin as the reference does; ``centred`` and ``centred_norm2`` for the Pearson correlation;
    ``mean`` and ``sd``: moments of the bin index 1..L under ``pdf`` (population SD; a variance
    rounded below 0 counts as 0, where Matlab would turn complex); ``log_pdf``: log2 of ``pdf``
    (floored at log2(tiny) for empty bins, always multiplied by pdf); ``entropy``: H(pdf) in bits.
    """

    def __init__(self, scaled: np.ndarray, constant: np.ndarray):
        n_bins, n_windows = scaled.shape
        self.pdf = pdf = scaled / scaled.sum(axis=0)
        self.cdf = cdf = np.empty((n_bins + 1, n_windows))
        cdf[0] = 0.0
        cdf[1] = pdf[0]
        for i in range(1, n_bins):  # row by row: contiguous, and the reference's summation order
            np.add(cdf[i], pdf[i], out=cdf[i + 1])
        self.centred = pdf - cdf[-1] / n_bins
        # A constant window's distribution is uniform: centred exactly, its correlation with
        # anything is 0 (the reference's pairwise-summed mean gives exact 1/9 here; a running
        # sum would leave 1e-17 residues whose "correlation" is arbitrary).
        self.centred[:, constant] = 0.0
        self.centred_norm2 = np.einsum("ij,ij->j", self.centred, self.centred)
        index = np.arange(1, n_bins + 1, dtype=np.float64)
        self.mean = index @ pdf
        variance = (index * index) @ pdf - self.mean * self.mean
        self.sd = np.sqrt(np.maximum(variance, 0.0))
        self.log_pdf = _log2_floored(pdf)  # only ever multiplied by pdf (or a product with it)
        self.entropy = -np.einsum("ij,ij->j", pdf, self.log_pdf)

    def subset(self, columns: np.ndarray) -> "_WindowStats":
        new = object.__new__(_WindowStats)
        for name, value in vars(self).items():
            setattr(new, name, value[..., columns])
        return new


def _pair_values(x: _WindowStats, f: _WindowStats) -> np.ndarray:
    """Haghighat's normalised MI ``2 MI / (H_X + H_F)`` of each window pair (0 where MI is 0).

    The joint distribution is ``phi * B + (1 - phi) * q p^T`` with B the Frechet-Hoeffding bound
    coupling (comonotone for c >= 0, countermonotone for c < 0). B gives cell (i, j) the overlap
    of F's CDF interval i with X's CDF interval j (X's intervals mirrored, 1 - P, for the
    countermonotone bound), so it is non-zero only on the 2L - 1 segments into which the merged
    interior CDF values of both sides cut [0, 1]. Each segment is named by its right end: a
    breakpoint Q_k of F (its X bin is the number of X breakpoints below Q_k), a breakpoint R_l of
    X (its F bin is the number of F breakpoints at or below R_l), or 1. The joint entropy is the
    closed-form entropy of ``(1 - phi) q p^T`` plus a correction on those segments only.
    """
    n_bins, n_windows = f.pdf.shape
    n_inner = n_bins - 1
    co = np.einsum("ij,ij->j", x.centred, f.centred)
    norm = np.sqrt(x.centred_norm2 * f.centred_norm2)
    corr = np.divide(co, norm, out=np.zeros_like(co), where=co != 0)
    counter = corr < 0

    # X's bins in the order the bound coupling meets them: reversed for the countermonotone one,
    # whose breakpoints are then 1 - P. Both with a leading 0, so row m is "below bin m".
    x_pdf = np.where(counter, x.pdf[::-1], x.pdf)
    x_cdf = np.where(counter, 1.0 - x.cdf[::-1], x.cdf)
    x_breaks, f_breaks = x_cdf[1:-1], f.cdf[1:-1]

    # below[k, l]: X breakpoint l lies strictly below F breakpoint k.
    below = (x_breaks[None, :, :] < f_breaks[:, None, :]).view(np.uint8)
    count_type = np.uint8 if n_inner < 256 else np.int32
    x_bin = below.sum(axis=1, dtype=count_type)  # X bin of the segment ending at Q_k
    f_bin = n_inner - below.sum(axis=0, dtype=np.intp)  # F bin of the segment ending at R_l
    offsets = np.arange(n_windows)
    x_flat = np.multiply(x_bin, n_windows, dtype=np.intp)
    x_flat += offsets
    f_flat = f_bin * n_windows
    f_flat += offsets

    n_segments = 2 * n_bins - 1
    mass = np.empty((n_segments, n_windows))
    indep = np.empty((n_segments, n_windows))
    log_indep = np.empty((n_segments, n_windows))
    at_f, at_x = slice(0, n_inner), slice(n_inner, 2 * n_inner)
    np.subtract(f_breaks, np.maximum(f.cdf[:-2], np.take(x_cdf, x_flat)), out=mass[at_f])
    np.subtract(x_breaks, np.maximum(x_cdf[:-2], np.take(f.cdf, f_flat)), out=mass[at_x])
    np.subtract(1.0, np.maximum(f_breaks[-1], x_breaks[-1]), out=mass[-1])
    np.maximum(mass[-1], 0.0, out=mass[-1])  # a CDF may end a rounding error above 1
    np.multiply(f.pdf[:-1], np.take(x_pdf, x_flat), out=indep[at_f])
    np.multiply(np.take(f.pdf, f_flat), x_pdf[:-1], out=indep[at_x])
    np.multiply(f.pdf[-1], x_pdf[-1], out=indep[-1])
    x_log_pdf = np.where(counter, x.log_pdf[::-1], x.log_pdf)
    np.add(f.log_pdf[:-1], np.take(x_log_pdf, x_flat), out=log_indep[at_f])
    np.add(np.take(f.log_pdf, f_flat), x_log_pdf[:-1], out=log_indep[at_x])
    np.add(f.log_pdf[-1], x_log_pdf[-1], out=log_indep[-1])

    # Hoeffding: the covariance of the bin indices I (of F) and J (of X) under the bound coupling.
    # In coupling order, X bin m has index m + 1, or L - m when reversed.
    x_bin = x_bin.astype(np.float64)
    j_at_f = np.where(counter, n_bins - x_bin, x_bin + 1.0)
    j_at_x = np.where(counter, np.arange(n_bins, 1, -1)[:, None], np.arange(1, n_bins)[:, None])
    j_at_f *= np.arange(1, n_bins)[:, None]
    joint_moment = np.einsum("ij,ij->j", j_at_f, mass[at_f])
    j_at_x *= f_bin + 1
    joint_moment += np.einsum("ij,ij->j", j_at_x, mass[at_x])
    joint_moment += n_bins * np.where(counter, 1, n_bins) * mass[-1]
    bound_cov = joint_moment - x.mean * f.mean
    mixable = (corr != 0) & (x.sd > 0) & (f.sd > 0) & (bound_cov != 0)
    phi = np.divide(corr * x.sd * f.sd, bound_cov, out=np.zeros_like(corr), where=mixable)
    weight_indep = 1.0 - phi

    marginal_sum = x.entropy + f.entropy
    # Entropy of the independent part (1 - phi) q p^T alone, in closed form ...
    log_weight = _log2_floored(np.abs(weight_indep))  # only ever multiplied by weight_indep
    joint_entropy = weight_indep * (marginal_sum - log_weight)
    # ... corrected on the segments, the only cells where the bound coupling adds mass:
    # + g(phi * mass + indep) - g(indep) with g(v) = -v log2|v|, g(indep) from the marginal logs.
    indep *= weight_indep
    log_indep += log_weight
    log_indep *= indep
    mass *= phi
    mass += indep
    correction = _neg_x_log2_abs(mass)
    correction += log_indep
    joint_entropy += correction.sum(axis=0)

    mutual_info = marginal_sum - joint_entropy
    defined = (mutual_info != 0) & (marginal_sum != 0)
    return np.divide(2.0 * mutual_info, marginal_sum, out=np.zeros_like(mutual_info), where=defined)


# Windows per block: keeps a block's (17, n) float64 temporaries inside the L2 cache.
_BLOCK = 4096


def _fmi_map(feature_a: np.ndarray, feature_b: np.ndarray, feature_f: np.ndarray,
             window: int) -> np.ndarray:
    """Per-window FMI, shape (m - window + 1, n - window + 1), of three feature maps."""
    out_shape = (feature_a.shape[0] - window + 1, feature_a.shape[1] - window + 1)
    a = _column_major_windows(feature_a, window)
    b = _column_major_windows(feature_b, window)
    f = _column_major_windows(feature_f, window)
    values = np.ones(a.shape[1])
    for first in range(0, a.shape[1], _BLOCK):
        block = slice(first, first + _BLOCK)
        values[block] = _block_values(a[:, block], b[:, block], f[:, block])
    return values.reshape(out_shape)


def _block_values(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Window values ``(fmi_AF + fmi_BF) / 2`` of one block of windows (columns)."""
    same_af = (a == f).all(axis=0)
    f_scaled, f_constant = _min_max_windows(f)
    # Reference quirk, reproduced: fmi.m overwrites its F window with the min-max scaled one while
    # scoring A, so B is tested for identity against the *scaled* F window unless A's was identical.
    same_bf = (b == np.where(same_af, f, f_scaled)).all(axis=0)
    value_af = np.ones(a.shape[1])
    value_bf = np.ones(a.shape[1])
    todo_af, todo_bf = ~same_af, ~same_bf
    todo = todo_af | todo_bf
    if not todo.any():
        return value_af
    if not todo.all():
        a, b, f_scaled, f_constant = a[:, todo], b[:, todo], f_scaled[:, todo], f_constant[todo]
        todo_af, todo_bf = todo_af[todo], todo_bf[todo]
    stats_f = _WindowStats(f_scaled, f_constant)
    for source, todo_source, value in ((a, todo_af, value_af), (b, todo_bf, value_bf)):
        if not todo_source.any():
            continue
        scores = np.ones(len(todo_source))
        if todo_source.all():
            scores = _pair_values(_WindowStats(*_min_max_windows(source)), stats_f)
        else:
            scores[todo_source] = _pair_values(
                _WindowStats(*_min_max_windows(source[:, todo_source])), stats_f.subset(todo_source))
        value[todo] = scores
    return 0.5 * (value_af + value_bf)


def fmi(a, b, f, *, feature: str = "edge", window: int = 3, convention: str = "paper") -> float:
    """Feature mutual information of a fused image ``f`` with its sources ``a`` and ``b``.

    Haghighat's normalised FMI [1]_ in its fast form [2]_, as computed by Haghighat's ``fmi.m``
    in the ``tang`` and ``mefb`` toolboxes, window by window as the module docstring describes,
    with every branch of the reference reproduced (identical windows score 1; constant windows
    become uniform distributions; the correlation sign picks the upper or lower Frechet bound;
    phi = 0 for zero correlation or zero index variance; a negative joint cell enters as
    ``-j log2|j|``; 0 where MI is exactly 0; and the reference's reuse of the scaled F window in
    the B identity test). Values agree with the reference to rounding (about 1e-12).

    .. warning::
       **The paper's "FMI_pixel" is edge-feature FMI, and it barely ranks.** Haghighat's code
       defaults to the ``edge`` feature although its help text says raw pixels, so the toolboxes'
       "FMI_pixel" column is ``feature="edge"`` (this function's default), not ``"pixel"``.
       Most 3 x 3 windows of Sobel edge maps are all zero in both images and score a perfect 1,
       so edge-feature FMI is about 0.9 **even for a constant (black) fused image**. Report it
       for comparability with published tables, but never let it decide a ranking alone.

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
        distribution when phi > 1, so a single window may fall slightly outside.

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
        ``"pixel"`` and a constant ``f``, every window where a source is not identical to ``f``
        scores 0; with ``"edge"`` a constant ``f`` scores about 0.9 (see the warning above).

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
