"""NSCT fusion: nonsubsampled contourlet transform with averaged lowpass and max-abs-with-consistency highpass.

Reference method of the paper's Table 2 ("NSCT", Yang, Li & Sun, ICIG 2007), fused as Shutao Li's
group implements it in Yu Liu's multi-scale-transform toolbox (``nsct_fuse.m``, shipped in VIFB's
``methods/LP_SR``; Li, Yang & Hu, "Performance comparison of different multi-resolution transforms
for image fusion", Information Fusion 12(2), 2011):

* NSCT with pyramid filter ``'pyrexc'``, directional filter ``'vk'`` and directional levels
  ``[2, 3, 3, 4]`` (coarse to fine), see :mod:`baselines.transforms.nsct`;
* lowpass subband: the average of the two sources;
* each directional subband: activity ``a = 3x3 maximum of |c|`` over the symmetrically extended
  subband (Rockinger's ``es2``: whole-sample mirror, corners zero), decision map ``a1 > a2``, then a
  consistency check that keeps source 1 where more than 4 of the 3x3 neighbours (on the extended
  map) chose it, source 2 elsewhere (ties go to source 2);
* inverse NSCT. The reference works on double 0..255 images and its callers save ``uint8(F)``
  (round half away from zero, saturate); ``quantize=True`` (the default) reproduces that rounding,
  ``quantize=False`` returns the unrounded inverse transform, clipped to [0, 1].

Roles: source 1 of ``nsct_fuse`` is the infrared image in VIFB's wrappers; PAT takes that slot by
default (``roles={"ir": "pat", "vis": "mri"}``). The rule is symmetric except for ties.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from baselines.classic import ClassicFusion
from baselines.matlab import to_uint8
from baselines.transforms.nsct import DEFAULT_LEVELS, nsct_dec, nsct_rec
from fusionbench.methods import register_method

__all__ = ["NSCTFusion", "nsct_fuse", "select_max_abs_consistent"]


def _activity(band: np.ndarray) -> np.ndarray:
    """3x3 maximum of |band| on the ``es2``-extended grid (one sample larger on every side)."""
    ext = np.pad(np.abs(band), [(0, 0)] * (band.ndim - 2) + [(1, 1), (1, 1)], mode="reflect")
    ext[..., 0, 0] = ext[..., 0, -1] = ext[..., -1, 0] = ext[..., -1, -1] = 0.0  # es2 leaves corners 0
    # ordfilt2 pads with zeros; the 3x3 maximum is separable: rows, then columns.
    padded = np.pad(ext, [(0, 0)] * (band.ndim - 2) + [(1, 1), (1, 1)])
    rows = np.maximum(np.maximum(padded[..., :-2, :], padded[..., 1:-1, :]), padded[..., 2:, :])
    return np.maximum(np.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def select_max_abs_consistent(band1, band2) -> np.ndarray:
    """Boolean map: True where ``nsct_fuse`` takes the coefficient of source 1.

    Parameters
    ----------
    band1, band2 : ndarray, shape (..., H, W)
        Subbands of the two sources (leading axes are independent subbands).

    Returns
    -------
    ndarray of bool, shape (..., H, W)
        ``sum_{3x3}[a1 > a2] > 4`` with ``a = 3x3 max |c|`` on the extended grid; the 'valid'
        part of the vote has the subband's shape.
    """
    band1 = np.asarray(band1, dtype=np.float64)
    band2 = np.asarray(band2, dtype=np.float64)
    chose1 = (_activity(band1) > _activity(band2)).astype(np.int16)
    votes = ndimage.correlate(chose1, np.ones((1,) * (band1.ndim - 2) + (3, 3), np.int16), mode="constant")
    return votes[..., 1:-1, 1:-1] > 4


def nsct_fuse(img1, img2, levels: Sequence[int] = DEFAULT_LEVELS, dfilt: str = "vk",
              pfilt: str = "pyrexc") -> np.ndarray:
    """Fuse two registered images in the NSCT domain (``nsct_fuse.m``), unrounded.

    Parameters
    ----------
    img1, img2 : ndarray, 2-D, same shape
        Sources on any common scale (the reference uses double 0..255); ``img1`` wins the
        consistency vote only with a strict majority.
    levels : sequence of int
        Directional levels per pyramid level, coarse to fine.
    dfilt, pfilt : str
        Filter families (see :func:`baselines.transforms.nsct.nsct_dec`).

    Returns
    -------
    ndarray of float64
        The inverse NSCT of the fused coefficients (not clipped, not rounded).
    """
    img1 = np.asarray(img1, dtype=np.float64)
    img2 = np.asarray(img2, dtype=np.float64)
    if img1.shape != img2.shape:
        raise ValueError(f"nsct_fuse: shape mismatch {img1.shape} vs {img2.shape}")
    c1 = nsct_dec(img1, levels, dfilt, pfilt)
    c2 = nsct_dec(img2, levels, dfilt, pfilt)
    fused = [(c1[0] + c2[0]) / 2.0]
    for b1, b2 in zip(c1[1:], c2[1:]):
        stack1, stack2 = np.asarray(b1), np.asarray(b2)  # (n_dirs, H, W), or (H, W) without a DFB
        take1 = select_max_abs_consistent(stack1, stack2)
        chosen = np.where(take1, stack1, stack2)
        fused.append(list(chosen) if isinstance(b1, list) else chosen)
    return nsct_rec(fused, dfilt, pfilt)


@register_method("nsct", kind="traditional",
                 reference="Yang, Li, Sun, ICIG 2007; Li, Yang, Hu, Inf. Fusion 12(2) 2011 (nsct_fuse.m, "
                           "NSCT toolbox of da Cunha, Zhou, Do 2006)")
class NSCTFusion(ClassicFusion):
    """NSCT fusion (Table 2 "NSCT"); see the module docstring for the rules and conventions.

    Parameters
    ----------
    levels : sequence of int
        Directional levels per pyramid level, coarse to fine (default ``(2, 3, 3, 4)``).
    quantize : bool
        Round to 8 bits as the reference's ``uint8(F)`` output (default True).
    roles : dict, optional
        Slot mapping, default ``{"ir": "pat", "vis": "mri"}`` (PAT is source 1).
    """

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS, quantize: bool = True,
                 roles: dict[str, str] | None = None):
        levels = tuple(int(v) for v in levels)
        if not levels or any(v < 0 for v in levels):
            raise ValueError(f"nsct: levels must be a non-empty sequence of non-negative ints, got {levels}")
        super().__init__(roles=roles, levels=list(levels), quantize=bool(quantize),
                         dfilt="vk", pfilt="pyrexc")
        self.levels = levels
        self.quantize = bool(quantize)

    def _fuse_ir_vis(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        fused = nsct_fuse(255.0 * ir, 255.0 * vis, self.levels)
        if self.quantize:
            return to_uint8(fused) / 255.0
        return np.clip(fused / 255.0, 0.0, 1.0)
