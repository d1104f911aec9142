"""VSMWLS: visual saliency map and weighted least squares fusion (Ma, Zhou, Wang, Zong 2017).

J. Ma, Z. Zhou, B. Wang, H. Zong, "Infrared and visible image fusion based on visual saliency map
and weighted least square optimization", Infrared Physics & Technology 82, 8-17, 2017.
Reference implementation: VIFB ``methods/VSMWLS`` (``WLS_Fusion.m``, ``RollingGuidanceFilter_Guided.m``,
``Visual_Weight_Map.m``, ``Solve_Optimal.m``, ``gaussFilter.m``, ``guidedfilter.m``), whose readme
says some parameters differ from the paper; the code is followed.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from baselines.classic import ClassicFusion
from baselines.filters import guided_filter
from baselines.matlab import gaussian_blur, im2uint8, mat2gray, matlab_round, to_uint8
from fusionbench.methods import register_method

__all__ = ["VSMWLS", "rolling_guidance_filter", "rgf_decompose", "visual_saliency_map", "solve_wls_detail"]


def _gauss_filter(img: np.ndarray, sigma: float) -> np.ndarray:
    """The reference ``gaussFilter.m``: window ``2*uint8(3*sigma)+1``, replicate borders."""
    size = 2 * int(matlab_round(min(3.0 * sigma, 255.0))) + 1
    return gaussian_blur(img, sigma, size, "replicate")


def rolling_guidance_filter(img: np.ndarray, sigma_s: float, sigma_r: float, iterations: int = 4) -> np.ndarray:
    """Rolling guidance filter with the guided filter as joint filter (the reference's variant).

    Zhang, Shen, Xu, Jia, "Rolling guidance filter", ECCV 2014: start from a Gaussian blur of the
    input (``sigma_s``), then repeatedly filter the *input* guided by the current result with a
    guided filter of radius ``sigma_s`` and ``eps = sigma_r**2``. (OpenCV's
    ``ximgproc.rollingGuidanceFilter`` uses a joint bilateral filter instead.)
    """
    if int(sigma_s) != sigma_s:
        raise ValueError(f"rolling_guidance_filter: sigma_s is also the guided-filter radius and must be "
                         f"an integer, got {sigma_s}")
    res = _gauss_filter(img, sigma_s)
    for _ in range(iterations):
        res = guided_filter(res, img, int(sigma_s), sigma_r ** 2)
    return res


def rgf_decompose(img: np.ndarray, levels: int = 4, sigma_s: float = 2.0, sigma_r: float = 0.05,
                  iterations: int = 4, base_sigma: float = 2.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Multi-scale decomposition of ``WLS_Fusion.m``: ``levels`` detail layers and a base layer.

    ``G1 = img``, ``G(k+1) = RGF(G(k), sigma_s * 2**(k-1))`` for k < levels, a final Gaussian
    (``base_sigma``) gives the base; detail layer k is ``G(k) - G(k+1)``. The layers sum back to
    ``img`` exactly.
    """
    layers = [np.asarray(img, dtype=np.float64)]
    sigma = sigma_s
    for _ in range(levels - 1):
        layers.append(rolling_guidance_filter(layers[-1], sigma, sigma_r, iterations))
        sigma *= 2
    layers.append(_gauss_filter(layers[-1], base_sigma))
    details = [layers[k] - layers[k + 1] for k in range(levels)]
    return details, layers[-1]


def visual_saliency_map(img: np.ndarray) -> np.ndarray:
    """Histogram-contrast (LC) saliency of ``uint8(255*img)``, min-max normalised (``Visual_Weight_Map.m``).

    Zhai & Shah 2006: the saliency of grey level v is ``sum_u hist(u) * |v - u|``.
    """
    levels = to_uint8(255.0 * np.asarray(img, dtype=np.float64))
    hist = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    grey = np.arange(256.0)
    table = np.abs(grey[:, None] - grey[None, :]) @ hist
    return mat2gray(table[levels])


def solve_wls_detail(target: np.ndarray, detail_ir: np.ndarray, detail_vis: np.ndarray,
                     lam: float = 0.01, radius: int = 3, small: float = 1e-6) -> np.ndarray:
    """Weighted least squares detail layer of ``Solve_Optimal.m``.

    Minimises ``sum (D - M)^2 + lam * sum a^-1 (D - L_ir)^2`` with
    ``a = |mean_(2r+1)^2(L_vis)| + small`` (replicate borders). The reference builds the sparse
    system ``(2I + lam (A + A^T)) d = 2m + lam (A + A^T) l_ir`` with ``A = diag(1/a)`` and solves it
    with ``\\``; the matrix is diagonal, so the solution is the per-pixel
    ``D = (M + lam A L_ir) / (1 + lam A)``, computed here directly (the tests check it against
    the sparse solve).
    """
    # imfilter(L_vis, ones(k)/k^2, 'replicate') for odd k
    a = np.abs(ndimage.uniform_filter(np.asarray(detail_vis, dtype=np.float64), 2 * radius + 1,
                                      mode="nearest")) + small
    inv_a = 1.0 / a
    return (target + lam * inv_a * detail_ir) / (1.0 + lam * inv_a)


@register_method("vsmwls", kind="traditional",
                 reference="Ma, Zhou, Wang, Zong, Infrared Phys. Technol. 82 (2017); VIFB VSMWLS code")
class VSMWLS(ClassicFusion):
    """Visual-saliency-map base fusion and WLS-optimised detail fusion.

    Parameters
    ----------
    levels : int
        Decomposition levels (reference 4).
    sigma_s : float
        Spatial scale of the first rolling guidance filter, doubled per level (reference 2).
    sigma_r : float
        Range parameter of the rolling guidance filter (reference 0.05).
    iterations : int
        Rolling guidance iterations (reference 4).
    lam : float
        WLS weight lambda (reference 0.01).
    weight_sigma : float
        Gaussian smoothing of the detail selection maps (reference 2, window 2*floor(3 sigma)+1,
        'symmetric' borders).
    roles : dict, optional
        Slot -> modality, default ``{"ir": "pat", "vis": "mri"}`` (the WLS term keeps IR detail
        where visible detail is weak).
    """

    def __init__(self, levels: int = 4, sigma_s: float = 2.0, sigma_r: float = 0.05, iterations: int = 4,
                 lam: float = 0.01, weight_sigma: float = 2.0, roles=None):
        if int(levels) < 2:
            raise ValueError(f"VSMWLS: levels must be >= 2, got {levels}")
        super().__init__(roles, levels=int(levels), sigma_s=float(sigma_s), sigma_r=float(sigma_r),
                         iterations=int(iterations), lam=float(lam), weight_sigma=float(weight_sigma))

    def _fuse_ir_vis(self, ir, vis):
        p = self.params
        kw = dict(levels=p["levels"], sigma_s=p["sigma_s"], sigma_r=p["sigma_r"], iterations=p["iterations"])
        details_ir, base_ir = rgf_decompose(ir, **kw)
        details_vis, base_vis = rgf_decompose(vis, **kw)
        w_ir, w_vis = visual_saliency_map(ir), visual_saliency_map(vis)
        base = (0.5 + 0.5 * (w_ir - w_vis)) * base_ir + (0.5 + 0.5 * (w_vis - w_ir)) * base_vis
        # finest layer: larger magnitude wins, ties to IR
        detail = np.where(np.abs(details_ir[0]) < np.abs(details_vis[0]), details_vis[0], details_ir[0])
        size = 2 * int(np.floor(3 * p["weight_sigma"])) + 1
        for k in range(p["levels"] - 1, 0, -1):
            choose_vis = gaussian_blur((np.abs(details_ir[k]) < np.abs(details_vis[k])).astype(np.float64),
                                       p["weight_sigma"], size, "symmetric")
            target = choose_vis * details_vis[k] + (1.0 - choose_vis) * details_ir[k]
            detail = detail + solve_wls_detail(target, details_ir[k], details_vis[k], p["lam"])
        return im2uint8(base + detail) / 255.0
