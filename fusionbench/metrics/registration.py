"""Registration metrics (paper Table 1): image similarity between the registered pair and, on the
phantom, errors against the ground-truth deformation.

Similarity (:func:`mi`, :func:`nmi`, :func:`ncc`) compares two float images in [0, 1] (registered
PAT and MRI). Intensities are quantised on the **fixed range [0, 1]** into ``bins`` equal bins
(bin ``min(floor(v * bins), bins - 1)``), so with the default 256 bins an 8-bit image (values
k/255) puts grey level k in bin k: the histogram is that of the raw 8-bit values, as the
``vifb``/``cddfuse`` toolboxes count them. MI is in **nats** by default (the registration table's
toolbox); the fusion MI (:mod:`fusionbench.metrics.fusion`) is in bits: the two tables of the
paper use different toolboxes.

Ground-truth errors take displacement fields as :mod:`fusionbench.warp` defines them: float
(2, H, W) in pixels, channel 0 the row shift, channel 1 the column shift, the warped image
sampling the moving image at ``x + flow(x)``.

Degenerate inputs (a constant image, for which a correlation or a normalised MI is 0/0) return
the documented value with a ``RuntimeWarning``, never NaN.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np

from ..data.io import ImageError, as_image, as_label_map, as_mask, check_same_shape
from ..warp import check_flow, warp

__all__ = [
    "mi",
    "nmi",
    "ncc",
    "endpoint_error",
    "jacobian_determinant",
    "folding_fraction",
    "warped_label_dice",
]

NMI_NORMALIZATIONS = ("arithmetic", "geometric", "joint", "studholme")


def _as_pair(x, y, mask) -> tuple[np.ndarray, np.ndarray]:
    """The two images as float64 1-D arrays of the pixels inside ``mask``."""
    x = as_image(x, name="x")
    y = as_image(y, name="y")
    check_same_shape(x=x, y=y)
    x, y = x.astype(np.float64), y.astype(np.float64)
    if mask is None:
        return x.ravel(), y.ravel()
    mask = _region(mask, x.shape)
    return x[mask], y[mask]


def _region(mask, shape: tuple[int, ...]) -> np.ndarray:
    mask = as_mask(mask, "mask")
    if mask.shape != tuple(shape):
        raise ImageError(f"mask: shape {mask.shape} differs from image shape {tuple(shape)}")
    if not mask.any():
        raise ImageError("mask: selects no pixels")
    return mask


def _joint_histogram(x: np.ndarray, y: np.ndarray, bins: int) -> np.ndarray:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
    ix = np.minimum((x * bins).astype(np.intp), bins - 1)
    iy = np.minimum((y * bins).astype(np.intp), bins - 1)
    counts = np.bincount(ix * bins + iy, minlength=bins * bins)
    return counts.reshape(bins, bins) / x.size


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _entropies(x, y, bins: int, mask) -> tuple[float, float, float]:
    """H(X), H(Y), H(X, Y) in nats."""
    x, y = _as_pair(x, y, mask)
    joint = _joint_histogram(x, y, bins)
    return _entropy(joint.sum(axis=1)), _entropy(joint.sum(axis=0)), _entropy(joint.ravel())


def mi(x, y, *, bins: int = 256, base: float = np.e, mask=None) -> float:
    """Mutual information of two images from their joint intensity histogram.

    ``MI = H(X) + H(Y) - H(X, Y)`` with plug-in entropies of the ``bins`` x ``bins`` joint
    histogram of intensities quantised on [0, 1] (Viola & Wells 1997; Maes et al. 1997).

    Parameters
    ----------
    x, y : (H, W) array_like
        Images in [0, 1] (or integer images, scaled by their dtype's maximum).
    bins : int
        Bins per image (256: one bin per 8-bit grey level).
    base : float
        Logarithm base: e (default, nats, the registration table's convention) or 2 (bits).
    mask : (H, W) array_like, optional
        Only pixels where it is nonzero are counted.

    Returns
    -------
    float
        >= 0, higher is better; ``MI(x, x)`` is the entropy of ``x``. 0 when either image is
        constant (no information to share).
    """
    if not np.isfinite(base) or base <= 0 or base == 1:
        raise ValueError(f"base: expected a positive logarithm base other than 1, got {base!r}")
    hx, hy, hxy = _entropies(x, y, bins, mask)
    # Plug-in MI is a KL divergence, so >= 0; clip the rounding of the entropy sum.
    return max(hx + hy - hxy, 0.0) / np.log(base)


def nmi(x, y, *, bins: int = 256, normalization: str = "arithmetic", mask=None) -> float:
    """Normalised mutual information.

    Normalisations of ``MI = H(X) + H(Y) - H(X, Y)`` (entropies as in :func:`mi`; the ratios do
    not depend on the log base):

    * ``"arithmetic"`` (default): ``2 MI / (H(X) + H(Y))``, scikit-learn's
      ``normalized_mutual_info_score`` (Strehl & Ghosh 2002), in [0, 1];
    * ``"geometric"``: ``MI / sqrt(H(X) H(Y))``, in [0, 1];
    * ``"joint"``: ``MI / H(X, Y)``, in [0, 1];
    * ``"studholme"``: ``(H(X) + H(Y)) / H(X, Y)`` (Studholme et al. 1999), scikit-image's
      ``normalized_mutual_information``, in [1, 2].

    The paper's NMI of about 0.11 alongside an MI of about 0.3 rules out Studholme's form.

    Parameters
    ----------
    x, y : (H, W) array_like
        Images in [0, 1].
    bins : int
        Bins per image, on the fixed range [0, 1].
    normalization : str
        One of ``"arithmetic"``, ``"geometric"``, ``"joint"``, ``"studholme"``.
    mask : (H, W) array_like, optional
        Only pixels where it is nonzero are counted.

    Returns
    -------
    float
        Higher is better. Two constant images (all entropies 0, the ratio 0/0) give the value
        of identical images, 1 (2 for ``"studholme"``), with a ``RuntimeWarning``, as
        scikit-learn does for two single-cluster labelings. One constant image gives 0 (1 for
        ``"studholme"``).
    """
    if normalization not in NMI_NORMALIZATIONS:
        raise ValueError(f"normalization: {normalization!r}; expected one of {', '.join(NMI_NORMALIZATIONS)}")
    hx, hy, hxy = _entropies(x, y, bins, mask)
    if hxy == 0.0:
        both_constant = 2.0 if normalization == "studholme" else 1.0
        warnings.warn(f"nmi: both images are constant; returning {both_constant} (identical images)",
                      RuntimeWarning, stacklevel=2)
        return both_constant
    if normalization == "studholme":
        # In [1, 2] since max(H(X), H(Y)) <= H(X, Y) <= H(X) + H(Y); clip the rounding of the ratio.
        return float(min(max((hx + hy) / hxy, 1.0), 2.0))
    mutual = max(hx + hy - hxy, 0.0)
    if mutual == 0.0:
        return 0.0
    denominator = {"arithmetic": (hx + hy) / 2.0, "geometric": np.sqrt(hx * hy), "joint": hxy}[normalization]
    return float(min(mutual / denominator, 1.0))


def ncc(x, y, *, mask=None) -> float:
    """Normalised cross-correlation: Pearson's correlation coefficient over all pixels.

    ``NCC = Σ (x - x̄)(y - ȳ) / sqrt(Σ (x - x̄)² Σ (y - ȳ)²)`` over the whole image (or the
    mask): the global CC of the registration literature, not a windowed local NCC.

    Parameters
    ----------
    x, y : (H, W) array_like
        Images in [0, 1].
    mask : (H, W) array_like, optional
        Only pixels where it is nonzero are counted.

    Returns
    -------
    float
        In [-1, 1], higher is better. A constant image has no correlation (0/0): 0 with a
        ``RuntimeWarning``, never NaN.
    """
    x, y = _as_pair(x, y, mask)
    xc, yc = x - x.mean(), y - y.mean()
    norm = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    if norm == 0.0:
        warnings.warn("ncc: constant image, correlation undefined; returning 0", RuntimeWarning, stacklevel=2)
        return 0.0
    return float(np.clip(np.dot(xc, yc) / norm, -1.0, 1.0))


def _as_flow(flow, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    arr = np.asarray(flow)
    if arr.ndim != 3 or arr.shape[0] != 2 or min(arr.shape) == 0:
        raise ValueError(f"{name}: shape {arr.shape}, expected a (2, H, W) displacement field "
                         "(channel 0 rows, channel 1 columns)")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: dtype {arr.dtype}, expected real numbers")
    # check_flow validates (shape, NaN/Inf); the computation keeps the caller's precision.
    check_flow(arr, tuple(arr.shape[1:]) if shape is None else tuple(shape), name)
    return arr.astype(np.float64)


def endpoint_error(flow, flow_true, mask=None) -> dict[str, float]:
    """Endpoint error of a recovered displacement field against the true one, in pixels.

    ``EPE(x) = || flow(x) - flow_true(x) ||_2`` (Baker et al. 2011), summarised over the pixels
    of ``mask`` (the body mask on the phantom) or of the whole image.

    Parameters
    ----------
    flow, flow_true : (2, H, W) array_like
        Displacements in pixels, channel 0 rows, channel 1 columns (:mod:`fusionbench.warp`).
    mask : (H, W) array_like, optional
        Pixels to include (nonzero).

    Returns
    -------
    dict
        ``{"mean": ..., "p95": ..., "max": ...}`` in pixels, each >= 0, lower is better; ``p95``
        is ``numpy.percentile(..., 95)`` (linear interpolation).
    """
    flow_true = _as_flow(flow_true, "flow_true")
    flow = _as_flow(flow, "flow", flow_true.shape[1:])
    error = np.hypot(flow[0] - flow_true[0], flow[1] - flow_true[1])
    if mask is not None:
        error = error[_region(mask, error.shape)]
    return {"mean": float(error.mean()), "p95": float(np.percentile(error, 95)), "max": float(error.max())}


def jacobian_determinant(flow) -> np.ndarray:
    """Jacobian determinant of the map ``φ(x) = x + flow(x)``.

    ``det J = (1 + ∂u_r/∂r)(1 + ∂u_c/∂c) - (∂u_r/∂c)(∂u_c/∂r)`` with ``u = flow``; the
    derivatives are ``numpy.gradient`` (second-order central differences inside, first-order
    one-sided on the border), as VoxelMorph's evaluation computes it. ``det J > 0`` where the
    map preserves orientation, ``<= 0`` where it folds.

    Parameters
    ----------
    flow : (2, H, W) array_like
        Displacement in pixels, channel 0 rows, channel 1 columns; H, W >= 2.

    Returns
    -------
    (H, W) float64 array
        1 everywhere for the zero field; ``(1 + s)**2`` for the scaling ``flow = s (x - x0)``.
    """
    flow = _as_flow(flow, "flow")
    if min(flow.shape[1:]) < 2:
        raise ValueError(f"flow: spatial shape {flow.shape[1:]} too small for derivatives (need >= 2 x 2)")
    drow_dr, drow_dc = np.gradient(flow[0])
    dcol_dr, dcol_dc = np.gradient(flow[1])
    return (1.0 + drow_dr) * (1.0 + dcol_dc) - drow_dc * dcol_dr


def folding_fraction(flow, mask=None) -> float:
    """Share of pixels where the deformation folds: ``det J <= 0`` (:func:`jacobian_determinant`).

    Parameters
    ----------
    flow : (2, H, W) array_like
        Displacement in pixels.
    mask : (H, W) array_like, optional
        Pixels to include (nonzero).

    Returns
    -------
    float
        A fraction in [0, 1] (not percent), lower is better; 0 for any smooth small
        deformation.
    """
    det = jacobian_determinant(flow)
    folded = det <= 0
    if mask is not None:
        folded = folded[_region(mask, det.shape)]
    return float(np.mean(folded))


def warped_label_dice(labels_moving, labels_fixed, flow, *,
                      labels: Iterable[int] | None = None) -> dict[int | str, float]:
    """Dice, in percent, of the moving label map warped by ``flow`` against the fixed labels.

    The moving labels are resampled with nearest neighbour (``fusionbench.warp.warp(...,
    order=0)``, border padding), then each label's Dice ``200 |W ∩ F| / (|W| + |F|)`` is taken, in
    percent like :func:`fusionbench.metrics.segmentation.dsc`.

    Parameters
    ----------
    labels_moving : (H, W) integer array_like
        Labels in the moving (PAT) space.
    labels_fixed : (H, W) integer array_like
        Labels in the fixed (MRI) space.
    flow : (2, H, W) array_like
        The displacement that aligns moving to fixed (pixels).
    labels : iterable of int, optional
        Labels to score; default every label present in ``labels_fixed`` except background 0.

    Returns
    -------
    dict
        Label -> Dice in [0, 100] (higher is better), and ``"mean"``: the mean over the scored
        labels present in ``labels_fixed``. A requested label absent from both maps scores
        ``nan`` (shown as "/") and is left out of the mean; one absent from the fixed map but
        present after warping scores 0 and is also left out of the mean. If no scored label is
        present in the fixed map, ``"mean"`` is ``nan`` with a ``RuntimeWarning``.
    """
    labels_moving = as_label_map(labels_moving, "labels_moving")
    labels_fixed = as_label_map(labels_fixed, "labels_fixed")
    check_same_shape(labels_moving=labels_moving, labels_fixed=labels_fixed)
    flow = _as_flow(flow, "flow", labels_fixed.shape)
    warped = warp(labels_moving, flow, order=0)
    fixed_present = set(np.unique(labels_fixed).tolist())
    if labels is None:
        labels = sorted(fixed_present - {0})
    scores: dict[int | str, float] = {}
    in_fixed = []
    for label in labels:
        label = int(label)
        w, f = warped == label, labels_fixed == label
        size_sum = np.count_nonzero(w) + np.count_nonzero(f)
        scores[label] = float("nan") if size_sum == 0 else 200.0 * np.count_nonzero(w & f) / size_sum
        if label in fixed_present:
            in_fixed.append(scores[label])
    if in_fixed:
        scores["mean"] = float(np.mean(in_fixed))
    else:
        warnings.warn("warped_label_dice: no scored label is present in labels_fixed; mean is NaN",
                      RuntimeWarning, stacklevel=2)
        scores["mean"] = float("nan")
    return scores
