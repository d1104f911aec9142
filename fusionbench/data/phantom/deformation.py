"""The misalignment between the PAT and MRI frames: a small affine map and a diffeomorphism.

The displacement is integrated from a smooth stationary velocity field (scaling and squaring), so
the true field and its inverse are both known; :func:`misalignment` scales them to the preset's
largest displacement inside the body.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ...warp import warp
from .config import MISALIGN_PRESETS, PhantomConfig

__all__ = ["integrate_velocity", "misalignment"]


def integrate_velocity(v: np.ndarray, steps: int = 6) -> np.ndarray:
    """Scaling and squaring: displacement of exp(v) (Arsigny et al. 2006)."""
    u = v / 2 ** steps
    for _ in range(steps):
        u = u + np.stack([warp(u[i], u) for i in range(2)])
    return u


def misalignment(cfg: PhantomConfig, rng: np.random.Generator, body: np.ndarray):
    """``(flow_pat_to_mri, flow_mri_to_pat, max_disp_px)`` for the config's preset.

    The transform T maps MRI-frame points to PAT-frame points, ``T(x) = A(x + u(x))`` with A a
    small affine map about the image centre and u = exp(v) a diffeomorphic displacement obtained
    from a smooth stationary velocity field (6×6 control grid, cubic upsampling, scaling and
    squaring on a coarse grid). ``flow_true(x) = T(x) - x``; the inverse field uses exp(-v) and
    A⁻¹. Amplitudes are scaled so the largest displacement inside the body is the preset's.
    """
    from skimage.transform import resize

    n = cfg.size
    target = MISALIGN_PRESETS[cfg.misalign] * n / 256.0
    zeros = np.zeros((2, n, n), np.float32)
    if target == 0:
        return zeros, zeros.copy(), 0.0
    angle0 = rng.uniform(-1, 1) * np.deg2rad(3.0)
    scale0 = rng.uniform(-1, 1) * 0.03
    shift0 = rng.uniform(-1, 1, size=2) * 0.3 / cfg.px_mm
    coarse = 64
    ctrl = rng.standard_normal((2, 6, 6))
    v_coarse = np.stack([resize(c, (coarse, coarse), order=3, mode="edge") for c in ctrl])
    v_coarse *= 3.6 * coarse / 256 / np.abs(v_coarse).max()  # about 3.6 px at 256² when lam = 1

    centre = (n - 1) / 2
    grid = np.stack(np.meshgrid(np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64), indexing="ij"))

    def fields(lam):
        v = v_coarse * lam  # in coarse pixels
        fwd = integrate_velocity(v)
        inv = integrate_velocity(-v)
        up = lambda f: np.stack([resize(c, (n, n), order=3, mode="edge") for c in f]) * (n / coarse)  # noqa: E731
        u_f, u_i = up(fwd), up(inv)
        th, s = angle0 * lam, 1.0 + scale0 * lam
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * s
        t = shift0 * lam
        # flow_true(x) = A(x + u(x)) - x
        p = grid + u_f - centre
        ap = np.einsum("ij,jhw->ihw", rot, p) + centre + t[:, None, None]
        flow_true = ap - grid
        # flow_inv(y) = A^-1(y) + u_inv(A^-1 y) - y
        q = np.einsum("ij,jhw->ihw", np.linalg.inv(rot), grid - centre - t[:, None, None]) + centre
        u_at_q = np.stack([ndi.map_coordinates(u_i[i], q, order=1, mode="nearest") for i in range(2)])
        flow_inv = q + u_at_q - grid
        return flow_true.astype(np.float32), flow_inv.astype(np.float32)

    lam = 1.0
    ft, fi = fields(lam)
    region = ndi.binary_dilation(body, iterations=3)
    peak = float(np.hypot(*ft)[region].max())
    lam *= target / peak
    ft, fi = fields(lam)
    return ft, fi, float(np.hypot(*ft)[region].max())
