"""MSVD: multi-resolution singular value decomposition fusion (Naidu 2011).

V. P. S. Naidu, "Image fusion technique using multi-resolution singular value decomposition",
Defence Science Journal 61(5), 479-484, 2011. Reference implementation: the author's
``MSVD.m``/``IMSVD.m`` with VIFB's ``run_MSVD.m`` (one decomposition level).
"""
from __future__ import annotations

import numpy as np

from baselines.classic import ClassicFusion
from baselines.matlab import im2uint8, imresize, mat2gray
from fusionbench.methods import register_method

__all__ = ["MSVD", "msvd_decompose", "msvd_reconstruct", "msvd_fuse"]


def _stack_blocks(x: np.ndarray) -> np.ndarray:
    """4 x (HW/4) matrix of the non-overlapping 2x2 blocks, each in Matlab column-major order."""
    m, n = x.shape[0] // 2, x.shape[1] // 2
    # element k = dr + 2*dc of block (i, j) is x[2i + dr, 2j + dc]
    return x.reshape(m, 2, n, 2).transpose(3, 1, 0, 2).reshape(4, m * n)


def _unstack_blocks(a: np.ndarray, shape) -> np.ndarray:
    m, n = shape[0] // 2, shape[1] // 2
    return a.reshape(2, 2, m, n).transpose(2, 1, 3, 0).reshape(2 * m, 2 * n)


def _left_singular_vectors(a: np.ndarray) -> np.ndarray:
    """U of the SVD of the 4 x N block matrix, with a fixed sign convention.

    U is computed as the eigenvectors of the 4x4 Gram matrix A A^T, ordered by decreasing
    eigenvalue (a stable sort, so equal eigenvalues keep LAPACK's order; a zero input gives the
    identity). Each column's sign makes its largest-magnitude entry positive (the first one on
    ties). Matlab's ``svd`` leaves the signs to LAPACK; since the fusion averages U of the two
    images, a fixed convention makes the result reproducible.
    """
    evals, evecs = np.linalg.eigh(a @ a.T)
    u = evecs[:, np.argsort(-evals, kind="stable")]
    pivot = np.argmax(np.abs(u), axis=0)
    signs = np.where(u[pivot, np.arange(4)] < 0, -1.0, 1.0)
    return u * signs


def msvd_decompose(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One MSVD level of an even-sized image: ``(T, U)`` with ``T = U^T A``.

    Rows of T, by decreasing singular value, are the LL, LH, HL and HH sub-bands (each
    flattened over the blocks).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] % 2 or x.shape[1] % 2:
        raise ValueError(f"msvd_decompose: need an even-sized 2-D image, got shape {x.shape}")
    a = _stack_blocks(x)
    u = _left_singular_vectors(a)
    return u.T @ a, u


def msvd_reconstruct(t: np.ndarray, u: np.ndarray, shape) -> np.ndarray:
    """Inverse of :func:`msvd_decompose`: unstack ``U T`` into an image of ``shape``."""
    return _unstack_blocks(u @ t, shape)


def msvd_fuse(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Naidu's fusion rule on two even-sized images, before the final ``mat2gray``.

    LL: mean of the two; LH, HL, HH: per coefficient the one of larger magnitude (ties go to
    ``x1``); basis: ``U = (U1 + U2) / 2``.
    """
    t1, u1 = msvd_decompose(x1)
    t2, u2 = msvd_decompose(x2)
    fused = np.where(np.abs(t1) >= np.abs(t2), t1, t2)
    fused[0] = 0.5 * (t1[0] + t2[0])
    return msvd_reconstruct(fused, 0.5 * (u1 + u2), x1.shape)


@register_method("msvd", kind="traditional",
                 reference="Naidu, Def. Sci. J. 61(5) 2011 (MSVD); VIFB MSVD.m/IMSVD.m/run_MSVD.m")
class MSVD(ClassicFusion):
    """Multi-resolution SVD fusion, one level, as VIFB's ``run_MSVD``.

    Conventions of the reference kept: image 1 is the IR/functional source (PAT by default) and
    wins ties of the detail rule; the fused image is min-max normalised (``mat2gray``) and
    quantised with ``im2uint8``. Odd sizes are first resized to even with Matlab bicubic
    ``imresize``; unlike VIFB (which returns the even-sized image), the result is resized back so
    that the output has the input's shape. The SVD sign convention is documented in
    :func:`_left_singular_vectors`.

    Parameters
    ----------
    roles : dict, optional
        Slot -> modality, default ``{"ir": "pat", "vis": "mri"}``.
    """

    def __init__(self, roles=None):
        super().__init__(roles)

    def _fuse_ir_vis(self, ir, vis):
        shape = ir.shape
        even = (shape[0] + shape[0] % 2, shape[1] + shape[1] % 2)
        if even != shape:
            ir, vis = imresize(ir, even), imresize(vis, even)
        fused = mat2gray(msvd_fuse(ir, vis))
        if even != shape:
            fused = imresize(fused, shape)
        return im2uint8(fused) / 255.0
