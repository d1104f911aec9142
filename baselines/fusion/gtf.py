"""GTF: gradient transfer fusion (Ma, Chen, Li, Huang 2016).

J. Ma, C. Chen, C. Li, J. Huang, "Infrared and visible image fusion via gradient transfer and total
variation minimization", Information Fusion 31, 100-109, 2016. The fused image x keeps the infrared
intensities and the visible gradients: ``min_x ||x - I||_1 + lam ||grad x - grad V||_1`` (isotropic
TV). With ``y = x - V`` this is l1-TV denoising of ``I - V``.

Reference implementation: VIFB ``methods/GTF/run_GTF.m`` calling ``irntv.m`` of NUMIPAD
(P. Rodriguez, B. Wohlberg, "Efficient minimization method for a generalized total variation
functional", IEEE TIP 18(2), 322-332, 2009): iteratively reweighted norm (IRN), 'l1tv' with the
substitution variant, threshold weights with adaptive epsilons, and a preconditioner-free PCG
per reweighting whose tolerance is the current relative residual over 5.
"""
from __future__ import annotations

import numpy as np

from baselines.classic import ClassicFusion
from baselines.matlab import im2uint8
from fusionbench.methods import register_method

__all__ = ["GTF", "irn_l1tv", "conjugate_gradient", "forward_dx", "forward_dy"]

#: NUMIPAD's fixed epsilons (irntvInputPars), used only when an adaptive histogram is degenerate.
_FIXED_EPS_F = 1e-2
_FIXED_EPS_R = 1e-4
_HIST_BINS = 1000


def forward_dx(v: np.ndarray) -> np.ndarray:
    """Horizontal forward difference, 0 in the last column (NUMIPAD ``Dx``)."""
    out = np.zeros_like(v)
    out[:, :-1] = v[:, 1:] - v[:, :-1]
    return out


def forward_dy(v: np.ndarray) -> np.ndarray:
    """Vertical forward difference, 0 in the last row (NUMIPAD ``Dy``)."""
    out = np.zeros_like(v)
    out[:-1] = v[1:] - v[:-1]
    return out


def _forward_dy_adjoint(w: np.ndarray) -> np.ndarray:
    """Transpose of :func:`forward_dy` (NUMIPAD ``DyT``)."""
    out = np.empty_like(w)
    out[0] = -w[0]
    out[1:-1] = w[:-2] - w[1:-1]
    out[-1] = w[-2]
    return out


def _forward_dx_adjoint(w: np.ndarray) -> np.ndarray:
    return _forward_dy_adjoint(w.T).T


def _histogram_cutoff(values: np.ndarray, fraction: float) -> tuple[np.ndarray, int] | None:
    """Bin centres of Matlab ``hist(values, linspace(min, max, 1000))`` and the first bin whose
    cumulative fraction exceeds ``fraction``; None when all values are equal (no histogram)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return None
    centres = np.linspace(lo, hi, _HIST_BINS)
    edges = 0.5 * (centres[1:] + centres[:-1])
    counts = np.bincount(np.searchsorted(edges, values.ravel(), side="right"), minlength=_HIST_BINS)
    cumulative = np.cumsum(counts) / values.size
    return centres, int(np.argmax(cumulative > fraction))


def _fidelity_weights(residual: np.ndarray, cutoff: float) -> np.ndarray:
    """``fF_adapt_substitute`` for p = 1: ``sqrt(1/2) * max(|r|, eps_F)^(1/2)``, eps_F adaptive."""
    absr = np.abs(residual)
    found = _histogram_cutoff(absr, cutoff)
    if found is None:
        eps_f = max(float(absr.flat[0]), _FIXED_EPS_F)
    else:
        centres, pos = found
        eps_f = centres[min(pos + 1, _HIST_BINS - 1)]
    return np.sqrt(0.5) * np.sqrt(np.where(absr >= eps_f, absr, eps_f))


def _regularisation_weights(u: np.ndarray, cutoff: float) -> np.ndarray:
    """``fR_adapt`` for q = 1: ``2 * max(|grad u|^2, eps_R)^(-1/2)``, eps_R adaptive."""
    grad2 = forward_dx(u) ** 2 + forward_dy(u) ** 2
    found = _histogram_cutoff(grad2, cutoff)
    if found is None:
        eps_r = max(float(grad2.flat[0]), _FIXED_EPS_R)
    else:
        centres, pos = found
        eps_r = centres[pos] if centres[pos] > 0 else centres[min(pos + 1, _HIST_BINS - 1)]
    return 2.0 / np.sqrt(np.where(grad2 >= eps_r, grad2, eps_r))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum's own loop, not BLAS: a threaded BLAS dot on a busy machine costs milliseconds
    return float(np.einsum("i,i->", a, b))


def conjugate_gradient(apply, rhs: np.ndarray, x0: np.ndarray, rtol: float, maxiter: int) -> tuple[np.ndarray, int]:
    """Unpreconditioned conjugate gradients with Matlab ``pcg``'s stopping rule.

    Stops when ``||rhs - A x|| <= rtol * ||rhs||``, confirmed on the explicitly recomputed
    residual, or after ``maxiter`` iterations; a starting point that already meets the
    tolerance is returned with 0 iterations.

    Returns
    -------
    x : ndarray
        The last iterate.
    iterations : int
    """
    x = x0.copy()
    r = rhs - apply(x)
    target = rtol * np.sqrt(_dot(rhs, rhs))
    if np.sqrt(_dot(r, r)) <= target:
        return x, 0
    p = np.zeros_like(x)
    rho_old = 1.0
    for it in range(1, maxiter + 1):
        rho = _dot(r, r)
        p = r.copy() if it == 1 else r + (rho / rho_old) * p
        q = apply(p)
        pq = _dot(p, q)
        if pq <= 0:  # A is positive definite; this only happens at round-off level
            return x, it
        alpha = rho / pq
        x += alpha * p
        r -= alpha * q
        rho_old = rho
        if np.sqrt(_dot(r, r)) <= target:
            r = rhs - apply(x)
            if np.sqrt(_dot(r, r)) <= target:
                return x, it
    return x, maxiter


def irn_l1tv(data: np.ndarray, lam: float, loops: int = 5, eps_r_cutoff: float = 0.01,
             eps_f_cutoff: float = 0.05, pcg_maxiter: int = 500, residual_scaling: float = 5.0,
             initial: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """l1-TV denoising ``min_u ||u - s||_1 + lam * TV(u)`` by NUMIPAD's IRN, substitution variant.

    Each of ``loops`` reweightings solves, by conjugate gradients started at the previous
    solution, ``(I + lam W_F (Dx^T W_R Dx + Dy^T W_R Dy) W_F) v = s / W_F`` and sets
    ``u = W_F v``. W_F (fidelity, ``sqrt(|u - s| / 2)`` thresholded at the 5th percentile) and
    W_R (TV, ``2 / |grad u|`` thresholded at the 1st percentile of ``|grad u|^2``) come from the
    current ``u``; on the first loop, when ``u`` still equals ``s``, W_F is the constant
    ``2 * sqrt(0.1)`` as in NUMIPAD. The CG tolerance (relative residual) is the relative residual
    of the starting point divided by ``residual_scaling``; a loop whose starting point already
    meets it ends the iteration.

    Parameters
    ----------
    data : ndarray, 2-D
        The observation s.
    lam : float
        TV weight.
    loops : int
        Reweighting iterations (NUMIPAD/VIFB: 5).
    eps_r_cutoff, eps_f_cutoff : float
        Percentile cutoffs (as fractions) of the adaptive epsilons (VIFB: 0.01 and 0.05).
    pcg_maxiter : int
        Maximum CG iterations per loop (500).
    residual_scaling : float
        NUMIPAD's ``rrs`` (5).
    initial : ndarray, optional
        Starting point (default ``data``, as VIFB's ``U0 = I - V``).

    Returns
    -------
    u : ndarray
        The solution.
    cg_iterations : list of int
        CG iterations used in each loop.
    """
    s = np.asarray(data, dtype=np.float64)
    if s.ndim != 2 or min(s.shape) < 2:
        raise ValueError(f"irn_l1tv: need a 2-D array of at least 2x2, got shape {s.shape}")
    u = s.copy() if initial is None else np.asarray(initial, dtype=np.float64).copy()
    shape, n = s.shape, s.size
    iterations: list[int] = []
    for k in range(loops):
        if k == 0 and np.abs(u - s).sum() < 0.05 / n:
            wf = np.full(shape, 2.0 * np.sqrt(0.1))
        else:
            wf = _fidelity_weights(u - s, eps_f_cutoff)
        wr = _regularisation_weights(u, eps_r_cutoff)

        def apply(x, wf=wf, wr=wr):
            x = x.reshape(shape)
            y = wf * x
            tv = _forward_dx_adjoint(wr * forward_dx(y)) + _forward_dy_adjoint(wr * forward_dy(y))
            return (x + lam * wf * tv).ravel()

        rhs = (s / wf).ravel()
        norm_rhs = np.sqrt(_dot(rhs, rhs))
        if norm_rhs == 0:  # s = 0: the minimiser is 0 (Matlab's pcg returns x = 0 here)
            u = np.zeros(shape)
            iterations.append(0)
            break
        v0 = (u / wf).ravel()
        start_residual = apply(v0) - rhs
        tol = np.sqrt(_dot(start_residual, start_residual)) / norm_rhs / residual_scaling
        v, count = conjugate_gradient(apply, rhs, v0, tol, pcg_maxiter)
        u = wf * v.reshape(shape)
        iterations.append(count)
        if count == 0:
            break
    return u, iterations


@register_method("gtf", kind="traditional",
                 reference="Ma, Chen, Li, Huang, Inf. Fusion 31 (2016), gradient transfer fusion; "
                           "VIFB run_GTF.m with NUMIPAD irntv.m")
class GTF(ClassicFusion):
    """Gradient transfer and total variation minimisation fusion.

    ``x = V + argmin_y ||y - (I - V)||_1 + lam TV(y)``, solved by NUMIPAD's IRN as VIFB's
    ``run_GTF`` configures it, then ``im2uint8``. I is the IR/functional slot (PAT by default,
    whose intensities are kept), V the visible/anatomical slot (MRI, whose gradients are kept).

    Parameters
    ----------
    lam : float
        TV weight lambda (VIFB 4; larger keeps more visible gradient).
    loops : int
        IRN reweighting loops (5).
    eps_r_cutoff, eps_f_cutoff : float
        Adaptive epsilon cutoffs (0.01, 0.05).
    pcg_maxiter : int
        Maximum conjugate-gradient iterations per loop (500).
    roles : dict, optional
        Slot -> modality, default ``{"ir": "pat", "vis": "mri"}``.
    """

    def __init__(self, lam: float = 4.0, loops: int = 5, eps_r_cutoff: float = 0.01,
                 eps_f_cutoff: float = 0.05, pcg_maxiter: int = 500, roles=None):
        if not lam > 0 or int(loops) < 1:
            raise ValueError(f"GTF: need lam > 0 and loops >= 1, got lam={lam}, loops={loops}")
        super().__init__(roles, lam=float(lam), loops=int(loops), eps_r_cutoff=float(eps_r_cutoff),
                         eps_f_cutoff=float(eps_f_cutoff), pcg_maxiter=int(pcg_maxiter))

    def _fuse_ir_vis(self, ir, vis):
        p = self.params
        y, _ = irn_l1tv(ir - vis, p["lam"], p["loops"], p["eps_r_cutoff"], p["eps_f_cutoff"], p["pcg_maxiter"])
        return im2uint8(y + vis) / 255.0
