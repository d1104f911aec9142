"""MWGF: multi-scale weighted gradient-based fusion (Zhou, Li, Wang, Information Fusion 20, 2014).

Z. Zhou, S. Li, B. Wang, "Multi-scale weighted gradient-based fusion for multi-focus images",
Information Fusion 20 (2014) 60-72. Transcribed from the authors' Matlab code
(``MWGF_Image_Fusion_Codes``: ``MWGFusion.m``, ``GradientMethod.m``, ``WeightGradient.m``,
``MergeWeights.m``, ``GradientMixWeightModify.m``, ``RecByGraInitial.m``) with the parameters of
its registered-image demo, on double images on the 0..255 scale:

1. Gradients ``dx = f(i,j) - f(i,j-1)``, ``dy = f(i,j) - f(i-1,j)``, outer frame set to 0.
2. Structure saliency at scale ``sigma``: the structure tensor smoothed by a ``fspecial`` Gaussian
   of odd size ``>= ceil(6 sigma)`` ('symmetric' borders), eigenvalues ``l1, l2`` and
   ``w = sqrt((sqrt l1 + sqrt l2)**2 + alpha (sqrt l1 - sqrt l2)**2)``.
3. "oppo" test: saliency (sigma 6, alpha 0.5) of the gradients shrunk by Matlab's bicubic
   ``imresize(., 0.25)``; when source 1 wins on more than half the pixels, the roles in step 4
   are swapped, so the detected "focused" region is always the minority source's.
4. Weights (``MergeWeights`` method 2): large-scale (sigma 4) decision ``wL1 > wL2 + 0.8``, closed
   with Matlab's ``strel('disk', 9)`` (its radial decomposition, not a Euclidean disk), largest
   8-connected component, holes filled, border strips shorter than 13 px removed; eroded
   (square 6) = source 1, outside the dilation (square 9) = source 2, the band between gets a soft
   weight from the small-scale (sigma 0.5) saliencies; 3x3 median (zero padding).
5. Fused gradient: principal eigenvector of ``sum_k (w_k g_k)(w_k g_k)^T`` scaled by the square root
   of its eigenvalue, its sign set to agree with ``w1 g1 + w2 g2``.
6. Poisson reconstruction: 500 steps of ``f += 0.1 (lap(round f) - div g)`` from
   ``f0 = w1 f1 + w2 f2``, clipped to [0, 255] (5-point Laplacian, replicate borders, on the
   int16-rounded image as the reference); output ``round(clip(f))``, i.e. 8-bit values.

Conventions and deviations, written down:

* Inputs are float [0, 1] images scaled by 255 (not rounded to integers first).
* Where the reference indexes an empty set for a soft-weight threshold (it raises an index error,
  e.g. when both sources are identical, so no focused region exists), the threshold is taken over
  the whole saliency map instead; it only affects the band, which is then usually empty.
* Role mapping: the reference treats the two sources symmetrically up to the "oppo" swap and the
  ordering of ties; PAT takes source 1 (the infrared slot) by default.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage
from scipy.special import expit

from baselines.classic import ClassicFusion
from baselines.matlab import gaussian_blur, imresize, matlab_round
from fusionbench.methods import register_method

__all__ = ["MWGF", "mwgf_fuse", "zhou_gradients", "structure_saliency", "matlab_disk", "merge_weights",
           "fuse_gradients", "poisson_reconstruct"]

_EPS = np.finfo(np.float64).eps  # Matlab's eps


# --------------------------------------------------------------------------------------------
# Gradients and structure saliency
# --------------------------------------------------------------------------------------------

def zhou_gradients(img) -> tuple[np.ndarray, np.ndarray]:
    """Backward differences ``(dx, dy)`` with a zero 1-pixel frame (``GradientMethod(., 'zhou')``)."""
    img = np.asarray(img, dtype=np.float64)
    dx = np.zeros_like(img)
    dy = np.zeros_like(img)
    dx[1:-1, 1:-1] = img[1:-1, 1:-1] - img[1:-1, :-2]
    dy[1:-1, 1:-1] = img[1:-1, 1:-1] - img[:-2, 1:-1]
    return dx, dy


def structure_saliency(dx, dy, sigma: float, alpha: float = 0.5) -> np.ndarray:
    """Structure saliency ``w`` of a gradient field at scale ``sigma`` (``WeightGradient``, 'eigdecxq').

    Parameters
    ----------
    dx, dy : ndarray
        Gradient components.
    sigma : float
        Gaussian scale of the structure tensor; window ``ceil(6 sigma)`` rounded up to odd.
    alpha : float
        Weight of the anisotropy term.

    Returns
    -------
    ndarray
        ``sqrt((sqrt l1 + sqrt l2)**2 + alpha (sqrt l1 - sqrt l2)**2)`` with ``l1, l2`` the
        magnitudes of the tensor's eigenvalues (complex square roots as Matlab when the
        discriminant rounds below zero).
    """
    win = int(math.ceil(6 * sigma))
    win += 1 - win % 2
    jxx = gaussian_blur(dx * dx, sigma, size=win, boundary="symmetric")
    jxy = gaussian_blur(dx * dy, sigma, size=win, boundary="symmetric")
    jyy = gaussian_blur(dy * dy, sigma, size=win, boundary="symmetric")
    b = -(jxx + jyy)
    c = jxx * jyy - jxy * jxy
    root = np.sqrt((b * b - 4.0 * c).astype(np.complex128))
    s1 = np.sqrt(np.abs((-b + root) / 2.0))
    s2 = np.sqrt(np.abs((-b - root) / 2.0))
    return np.sqrt((s1 + s2) ** 2 + alpha * (s1 - s2) ** 2)


# --------------------------------------------------------------------------------------------
# Morphology with Matlab's structuring elements
# --------------------------------------------------------------------------------------------

def matlab_disk(radius: int) -> np.ndarray:
    """Neighbourhood of Matlab's ``strel('disk', radius)`` (default N = 4 radial decomposition).

    Minkowski sum of periodic lines along (1,0), (1,1), (0,1), (-1,1) with repetitions
    ``floor(k / |v|)``, ``k = 2 r / (cot(pi/8) + 1/sin(pi/8))`` (Adams 1993; Jones & Soille 1996),
    plus horizontal and vertical lines when that falls short of the radius; radii below 3 use the
    Euclidean disk.
    """
    r = int(radius)
    if r < 3:
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        return xx ** 2 + yy ** 2 <= r * r
    theta = math.pi / 8
    k = 2 * r / (1 / math.tan(theta) + 1 / math.sin(theta))
    nhood = np.ones((1, 1), dtype=bool)
    for v in ((1, 0), (1, 1), (0, 1), (-1, 1)):
        rp = int(math.floor(k / math.hypot(*v)))
        line = np.zeros((2 * rp * abs(v[0]) + 1, 2 * rp * abs(v[1]) + 1), dtype=bool)
        p = np.arange(-rp, rp + 1)
        line[p * v[0] + rp * abs(v[0]), p * v[1] + rp * abs(v[1])] = True
        nhood = _dilate_full(nhood, line)
    reach = (nhood.shape[0] - 1) // 2
    length = 2 * (r - reach - 1) + 1
    if length >= 3:
        nhood = _dilate_full(nhood, np.ones((1, length), dtype=bool))
        nhood = _dilate_full(nhood, np.ones((length, 1), dtype=bool))
    return nhood


def _dilate_full(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'full' binary dilation of ``a`` by the centred odd-sized ``b`` (output grows by ``b``'s extent)."""
    pad = [((s - 1) // 2,) * 2 for s in b.shape]
    return ndimage.binary_dilation(np.pad(a, pad), structure=b)


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Mask of the largest 8-connected component and the component count.

    Ties go to the component met first in column-major order, as Matlab's ``bwlabel`` numbers them.
    """
    labels_t, count = ndimage.label(mask.T, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros_like(mask), 0
    sizes = np.bincount(labels_t.ravel())[1:]
    return (labels_t == (1 + int(np.argmax(sizes)))).T, count


def _delete_border_lines(mask: np.ndarray, min_len: int = 13) -> np.ndarray:
    """``DeleteLine``: clear runs of ones shorter than ``min_len`` that touch the border.

    Per column, a leading run (starting at row 0) cleared through the first zero when that zero is
    at 1-based row < ``min_len``; then a trailing run; then the same per row on the result.
    """
    out = mask.astype(bool).copy()
    for arr in (out, out.T):  # columns, then rows (the transpose is a view, edits land in ``out``)
        n = arr.shape[0]
        idx = np.arange(n)[:, None]
        zero = ~arr
        has_zero = zero.any(axis=0)
        first_zero = np.argmax(zero, axis=0)
        lead = arr[0] & has_zero & (first_zero < min_len - 1)
        arr[(idx <= first_zero) & lead] = False
        zero = ~arr
        has_zero, has_one = zero.any(axis=0), arr.any(axis=0)
        last_zero = n - 1 - np.argmax(zero[::-1], axis=0)
        trail = arr[-1] & has_zero & has_one & ((n - 1 - last_zero) < min_len)
        arr[(idx >= last_zero) & trail] = False
    return out


def _kth_largest(values: np.ndarray, fraction: float, fallback: np.ndarray) -> float:
    """``sort(values, 'descend')(ceil(numel * fraction))``; over ``fallback`` when ``values`` is empty."""
    if values.size == 0:
        values = fallback.ravel()
    k = max(1, int(math.ceil(values.size * fraction)))
    return float(np.partition(values, values.size - k)[values.size - k])


def merge_weights(wl1, wl2, ws1, ws2, oppo: bool, per: float = 0.5, margin: float = 6.0,
                  base_threshold: float = 0.8) -> np.ndarray:
    """Weight of source 1 before the median filter (``MergeWeights`` method 2)."""
    if oppo:
        base = wl2 > wl1 + _EPS + base_threshold
        ws1, ws2 = ws2, ws1
    else:
        base = wl1 > wl2 + _EPS + base_threshold
    disk = matlab_disk(9)
    # imclose: dilation sees zeros outside the image, erosion ones.
    base = ndimage.binary_dilation(base, structure=disk, border_value=0)
    base = ndimage.binary_erosion(base, structure=disk, border_value=1)
    region, _ = _largest_component(base)
    background, count = _largest_component(~region)
    # With no background component Matlab's maxindex stays 0 and ``L == 0`` selects everything.
    region = ~background if count else np.zeros_like(region)
    region = _delete_border_lines(region)
    erode_size, dilate_size = int(math.ceil(margin)), int(math.ceil(margin * 1.4))
    # Matlab centres an even square at floor((n+1)/2): the 6x6 erosion spans offsets -2..+3.
    # Matlab erodes with min over x + offsets; scipy's origin -1 gives that window for even sizes.
    inner = ndimage.binary_erosion(region, structure=np.ones((erode_size, erode_size)), border_value=1,
                                   origin=-1 if erode_size % 2 == 0 else 0)
    outer = ndimage.binary_dilation(region, structure=np.ones((dilate_size, dilate_size)), border_value=0)
    sure2 = ~outer
    band = outer & ~inner
    w1 = inner.astype(np.float64)
    diff = ws1 - ws2
    thre2 = _kth_largest(ws2[(diff < 0) & inner], per, ws2)
    thre1 = _kth_largest(ws1[(diff > 0) & sure2], per, ws1)
    pick = (diff >= 0) & band
    e1 = 5.0 * (ws1[pick] - thre1) / (thre1 + _EPS)
    d1 = (ws2[pick] - ws1[pick]) / (ws2[pick] + ws1[pick] + _EPS)
    # (1 + e^a) / (1 + e^a + e^d) written as a logistic function, so large a cannot overflow.
    w1[pick] = expit(np.logaddexp(0.0, e1) - d1)
    pick = (diff < 0) & band
    e2 = 5.0 * (ws2[pick] - thre2) / (thre2 + _EPS)
    d2 = (ws1[pick] - ws2[pick]) / (ws2[pick] + ws1[pick] + _EPS)
    w1[pick] = 1.0 - expit(np.logaddexp(0.0, e2) - d2)
    return 1.0 - w1 if oppo else w1


# --------------------------------------------------------------------------------------------
# Gradient fusion and Poisson reconstruction
# --------------------------------------------------------------------------------------------

def fuse_gradients(g1: tuple[np.ndarray, np.ndarray], g2: tuple[np.ndarray, np.ndarray],
                   w1: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal direction of the weighted gradients, sign-aligned with ``w1 g1 + w2 g2``.

    ``GradientMixWeight`` + ``ModifyOri`` (modify = 5): ``C = sum_k (w_k g_k)(w_k g_k)^T``, the
    fused gradient is ``sqrt(lambda_max)`` times the unit eigenvector ``(v, 1)/|(v, 1)|`` with
    ``v = (C11 - C22 + sqrt((C11 - C22)^2 + 4 C12^2)) / (2 C12 + eps)``.
    """
    ax1, ay1 = g1[0] * w1, g1[1] * w1
    ax2, ay2 = g2[0] * w2, g2[1] * w2
    c11 = ax1 * ax1 + ax2 * ax2
    c12 = ax1 * ay1 + ax2 * ay2
    c22 = ay1 * ay1 + ay2 * ay2
    root = np.sqrt((c11 - c22) ** 2 + 4.0 * c12 * c12)
    lam = (c11 + c22 + root) / 2.0
    num, den = c11 - c22 + root, 2.0 * c12 + _EPS
    # (v + i) / sqrt(v^2 + 1) with v = num/den, written without the division (no overflow).
    norm = np.hypot(num, den)
    scale = np.sqrt(lam) * np.sign(den) / np.where(norm > 0, norm, 1.0)
    gx, gy = scale * num, scale * den
    ref_x = w1 * g1[0] + w2 * g2[0]
    ref_y = w1 * g1[1] + w2 * g2[1]
    sign = np.sign(gx * ref_x + gy * ref_y + _EPS)
    return sign * gx, sign * gy


def poisson_reconstruct(f0: np.ndarray, gx: np.ndarray, gy: np.ndarray, iterations: int = 500,
                        step: float = 0.1) -> np.ndarray:
    """``RecoverByGra``: ``f <- clip(f + step (lap(round f) - div g), 0, 255)``, ``iterations`` times.

    ``div g`` uses forward differences with zero padding (``LaplaceZ``); ``lap`` is the 5-point
    Laplacian with replicate borders of the image rounded as Matlab's ``int16()``.
    """
    div = -gx - gy
    div[:, :-1] += gx[:, 1:]
    div[:-1, :] += gy[1:, :]
    lap_kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)
    f = np.asarray(f0, dtype=np.float64).copy()
    for _ in range(int(iterations)):
        # round(f) of values in [0, 255] is an exact small integer, so float32 filtering is exact.
        lap = cv2.filter2D(np.floor(f + 0.5).astype(np.float32), -1, lap_kernel,
                           borderType=cv2.BORDER_REPLICATE)
        f += step * (lap - div)
        np.clip(f, 0.0, 255.0, out=f)
    return f


def mwgf_fuse(img1, img2, large_sigma: float = 4.0, small_sigma: float = 0.5, alpha: float = 0.5,
              per: float = 0.5, iterations: int = 500) -> np.ndarray:
    """MWGF on two double images on the 0..255 scale (``MWGFusion`` with the registered-image demo
    parameters); returns the rounded, clipped fused image as float64 (integer values 0..255).

    Parameters
    ----------
    img1, img2 : ndarray, 2-D, same shape
        Sources (0..255).
    large_sigma, small_sigma, alpha : float
        Saliency scales and anisotropy weight (``para.Scale``).
    per : float
        Quantile of the soft-weight thresholds (``para.Merge.per``); margin = 1.5 large_sigma.
    iterations : int
        Poisson iterations (``para.Rec.iter``).
    """
    img1 = np.asarray(img1, dtype=np.float64)
    img2 = np.asarray(img2, dtype=np.float64)
    if img1.shape != img2.shape:
        raise ValueError(f"mwgf_fuse: shape mismatch {img1.shape} vs {img2.shape}")
    if min(img1.shape) < 3:
        raise ValueError(f"mwgf_fuse: images must be at least 3x3, got {img1.shape}")
    g1, g2 = zhou_gradients(img1), zhou_gradients(img2)
    # The oppo test runs WeightGradient on the top-level parameter struct: its defaults sigma 6,
    # alpha 0.5, on gradients shrunk by imresize (real and imaginary parts separately).
    small1 = [imresize(d, scale=0.25) for d in g1]
    small2 = [imresize(d, scale=0.25) for d in g2]
    wt1, wt2 = structure_saliency(*small1, 6.0, 0.5), structure_saliency(*small2, 6.0, 0.5)
    oppo = np.count_nonzero(wt1 > wt2 + _EPS) / wt1.size > 0.5
    wl1, wl2 = structure_saliency(*g1, large_sigma, alpha), structure_saliency(*g2, large_sigma, alpha)
    ws1, ws2 = structure_saliency(*g1, small_sigma, alpha), structure_saliency(*g2, small_sigma, alpha)
    w1 = merge_weights(wl1, wl2, ws1, ws2, oppo, per=per, margin=1.5 * large_sigma)
    w1 = ndimage.median_filter(w1, size=3, mode="constant", cval=0.0)  # ordfilt2(., 5, ones(3))
    w2 = 1.0 - w1
    gx, gy = fuse_gradients(g1, g2, w1, w2)
    fused = poisson_reconstruct(w1 * img1 + w2 * img2, gx, gy, iterations)
    return matlab_round(np.clip(fused, 0.0, 255.0))


@register_method("mwgf", kind="traditional",
                 reference="Zhou, Li, Wang, Inf. Fusion 20 (2014) 60-72 (authors' Matlab MWGF code)")
class MWGF(ClassicFusion):
    """Multi-scale weighted gradient-based fusion; see the module docstring.

    Parameters
    ----------
    iterations : int
        Poisson reconstruction steps (reference 500).
    roles : dict, optional
        Slot mapping, default ``{"ir": "pat", "vis": "mri"}`` (PAT is source 1).
    """

    def __init__(self, iterations: int = 500, roles: dict[str, str] | None = None):
        if int(iterations) != iterations or iterations < 0:
            raise ValueError(f"mwgf: iterations must be a non-negative integer, got {iterations}")
        super().__init__(roles=roles, iterations=int(iterations), large_sigma=4.0, small_sigma=0.5,
                         alpha=0.5, per=0.5)
        self.iterations = int(iterations)

    def _fuse_ir_vis(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        return mwgf_fuse(255.0 * ir, 255.0 * vis, iterations=self.iterations) / 255.0
