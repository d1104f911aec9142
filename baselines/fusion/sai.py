"""SAI: structure-aware image fusion (Li, Xie, Zhou, Han, Zhan 2018).

W. Li, Y. Xie, H. Zhou, Y. Han, K. Zhan, "Structure-aware image fusion", Optik 172, 1-11, 2018.
Reference implementation: the authors' ``IJF.m``, ``smoothing.m`` and ``RF.m`` (the domain-transform
recursive filter of Gastal & Oliveira, "Domain transform for edge-aware image and video
processing", SIGGRAPH 2011).
"""
from __future__ import annotations

import math

import numpy as np

from baselines.classic import ClassicFusion
from baselines.filters import box_mean, box_sum
from baselines.matlab import to_uint8
from fusionbench.methods import register_method

__all__ = ["SAI", "self_guided_smoothing", "structure_map", "recursive_filter"]


def self_guided_smoothing(img: np.ndarray, r: int, eps: float) -> np.ndarray:
    """``mean + var / (var + eps) * (img - mean)`` over (2r+1)^2 windows (the reference's ``smoothing.m``).

    This is the guided filter with the image as its own guide but without the second averaging
    of the linear coefficients, exactly as the reference writes it.
    """
    mean = box_mean(img, r)
    var = box_mean(img * img, r) - mean * mean
    return mean + var / (var + eps) * (img - mean)


def structure_map(img: np.ndarray) -> np.ndarray:
    """``|conv2(G, [1 -1], 'same')| + |conv2(G, [1; -1], 'same')|``.

    The forward difference with Matlab's zero padding: the last column (row) holds ``|G|``.
    """
    dx = np.diff(img, axis=1, append=0.0)
    dy = np.diff(img, axis=0, append=0.0)
    return np.abs(dx) + np.abs(dy)


def _recursive_pass_rows(f: np.ndarray, weights: np.ndarray) -> None:
    """In-place causal then anti-causal first-order recursion along axis 0 (one step per row)."""
    for i in range(1, f.shape[0]):
        f[i] += weights[i] * (f[i - 1] - f[i])
    for i in range(f.shape[0] - 2, -1, -1):
        f[i] += weights[i + 1] * (f[i + 1] - f[i])


def recursive_filter(img, joint, sigma_s: float, sigma_r: float, iterations: int = 1) -> np.ndarray:
    """Domain-transform recursive filter (Gastal & Oliveira 2011), as the reference ``RF.m``.

    The domain-transform derivatives are ``1 + sigma_s/sigma_r * |d joint|`` (forward
    differences, 0 at the first column/row); iteration ``i`` uses
    ``sigma_H_i = sigma_s * sqrt(3) * 2^(N-i-1) / sqrt(4^N - 1)`` and the feedback
    ``a = exp(-sqrt(2) / sigma_H_i)``; each iteration filters rows (left-right, right-left) then
    columns. The recursion is sequential along the filtered axis and vectorised across the other.

    Parameters
    ----------
    img : ndarray, 2-D
        Image to filter.
    joint : ndarray, 2-D
        Edge-defining (joint) image.
    sigma_s, sigma_r : float
        Spatial and range standard deviations.
    iterations : int
        Number of iterations N.
    """
    img = np.asarray(img, dtype=np.float64)
    joint = np.asarray(joint, dtype=np.float64)
    ratio = sigma_s / sigma_r
    dhdx = np.ones_like(joint)
    dhdx[:, 1:] += ratio * np.abs(np.diff(joint, axis=1))
    dvdy = np.ones_like(joint)
    dvdy[1:, :] += ratio * np.abs(np.diff(joint, axis=0))
    dhdx_t = np.ascontiguousarray(dhdx.T)
    out = img.copy()
    n = int(iterations)
    for i in range(n):
        sigma_i = sigma_s * math.sqrt(3.0) * 2.0 ** (n - i - 1) / math.sqrt(4.0 ** n - 1.0)
        a = math.exp(-math.sqrt(2.0) / sigma_i)
        horizontal = np.ascontiguousarray(out.T)
        _recursive_pass_rows(horizontal, a ** dhdx_t)
        out = np.ascontiguousarray(horizontal.T)
        _recursive_pass_rows(out, a ** dvdy)
    return out


@register_method("sai", kind="traditional",
                 reference="Li, Xie, Zhou, Han, Zhan, Optik 172 (2018), structure-aware image fusion; "
                           "authors' IJF.m")
class SAI(ClassicFusion):
    """Structure-aware image fusion.

    Both sources are smoothed by self-guided filtering (radius ``r``, ``eps``); the sign of the
    local mean of the difference of their structure maps gives a binary map favouring source A
    (the IR/functional slot, PAT by default), which is refined ``iterations`` times by the
    domain-transform recursive filter guided by A itself; ``F = IA*A + (1-IA)*B`` is quantised
    with Matlab's ``uint8(255*F)``.

    Parameters
    ----------
    r : int
        Window radius of the smoothing and of the map averaging (reference 3).
    eps : float
        Smoothing regularisation (reference 0.01).
    sigma_s, sigma_r : float
        Recursive filter parameters (reference 10 and 0.2).
    iterations : int
        Number of binarise-and-filter refinements (reference 3).
    roles : dict, optional
        Slot -> modality, default ``{"ir": "pat", "vis": "mri"}``.
    """

    def __init__(self, r: int = 3, eps: float = 0.01, sigma_s: float = 10.0, sigma_r: float = 0.2,
                 iterations: int = 3, roles=None):
        if not eps > 0 or not sigma_s > 0 or not sigma_r > 0 or int(iterations) < 1:
            raise ValueError("SAI: eps, sigma_s, sigma_r must be > 0 and iterations >= 1")
        super().__init__(roles, r=int(r), eps=float(eps), sigma_s=float(sigma_s),
                         sigma_r=float(sigma_r), iterations=int(iterations))

    def _fuse_ir_vis(self, ir, vis):
        p = self.params
        r = p["r"]
        diff = structure_map(self_guided_smoothing(ir, r, p["eps"])) - \
            structure_map(self_guided_smoothing(vis, r, p["eps"]))
        weight = (box_sum(diff, r) > 0).astype(np.float64)  # same sign as the box mean
        for _ in range(p["iterations"]):
            weight = recursive_filter((weight > 0.5).astype(np.float64), ir, p["sigma_s"], p["sigma_r"], 1)
        fused = weight * ir + (1.0 - weight) * vis
        return to_uint8(255.0 * fused) / 255.0
