"""BGR (IFEVIP): infrared feature extraction and visual information preservation (Zhang et al. 2017).

Y. Zhang, L. Zhang, X. Bai, L. Zhang, "Infrared and visual image fusion through infrared feature
extraction and visual information preservation", Infrared Physics & Technology 83, 227-237, 2017.
Reference implementation: VIFB ``methods/IFEVIP`` (``run_IFEVIP.m``, ``BGR_Fuse.m``,
``QuadReconstructRefined.m``), by the first author; its README notes that the Bezier matrix printed
in the paper is wrong and the code's is right. The code is followed, uint8 arithmetic included.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from baselines.classic import ClassicFusion, _warn
from baselines.matlab import gaussian_blur, gray_entropy, im2uint8, imresize, to_uint8
from fusionbench.methods import register_method

__all__ = ["BGR", "quadtree_decompose", "bezier_background", "reconstruct_background"]

#: Cubic Bezier basis matrix of ``QuadReconstructRefined.m`` (symmetric).
BEZIER_MATRIX = np.array([[-1.0, 3.0, -3.0, 1.0],
                          [3.0, -6.0, 3.0, 0.0],
                          [-3.0, 3.0, 0.0, 0.0],
                          [1.0, 0.0, 0.0, 0.0]])


def quadtree_decompose(img: np.ndarray, threshold: float, min_size: int) -> list[tuple[int, int, int]]:
    """Leaves ``(row, col, size)`` of Matlab's ``qtdecomp(img, threshold, min_size)`` on a square image.

    A block is split into four while ``max - min > threshold`` and its quarters are at least
    ``min_size`` wide. ``threshold`` is on the image's own scale (Matlab multiplies the fractional
    threshold by 255 for uint8 images; the caller does that). The side must be ``min_size`` times
    a power of two.
    """
    img = np.asarray(img, dtype=np.float64)
    side = img.shape[0]
    if img.shape[0] != img.shape[1] or side % min_size or (side // min_size) & (side // min_size - 1):
        raise ValueError(f"quadtree_decompose: need a square image of min_size * 2^k pixels, got {img.shape}")
    leaves: list[tuple[int, int, int]] = []
    active = np.ones((1, 1), dtype=bool)  # blocks of the current size still to be tested
    size = side
    while active.any():
        n = side // size
        blocks = img.reshape(n, size, n, size)
        spread = blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))
        split = active & (spread > threshold) & (size // 2 >= min_size)
        for r, c in np.argwhere(active & ~split):
            leaves.append((int(r) * size, int(c) * size, size))
        active = np.kron(split, np.ones((2, 2), dtype=bool))
        size //= 2
    return leaves


def bezier_background(window: np.ndarray) -> np.ndarray:
    """Bicubic Bezier patch over an (s+1)x(s+1) window, as ``QuadReconstructRefined.m``.

    The 4x4 control points are the window samples at the (deliberately non-uniform) 0-based
    offsets ``0, 2k-1, 3k-1, 4k`` with ``k = s/4``; the patch is ``(U M) P (U M)^T`` with
    ``U = [u^3, u^2, u, 1]``, ``u = 0..1`` in s+1 steps.
    """
    windows = np.asarray(window, dtype=np.float64)
    single = windows.ndim == 2
    windows = windows[None] if single else windows
    dim = windows.shape[-1]
    k = (dim - 1) // 4
    idx = np.array([0, 2 * k - 1, 3 * k - 1, 4 * k])
    control = windows[:, idx[:, None], idx[None, :]]
    u = np.linspace(0.0, 1.0, dim)
    left = np.stack([u ** 3, u ** 2, u, np.ones_like(u)], axis=1) @ BEZIER_MATRIX
    patches = left @ control @ left.T
    return patches[0] if single else patches


def reconstruct_background(eroded: np.ndarray, leaves: list[tuple[int, int, int]]) -> np.ndarray:
    """Piecewise Bezier background over the quadtree leaves (``QuadReconstructRefined.m``).

    The eroded image is padded by one replicated row and column; each leaf of size s gets the
    patch of its (s+1)x(s+1) window; larger blocks are written first so that smaller ones
    overwrite the shared one-pixel borders, and within a size the blocks go in Matlab's
    column-major order.
    """
    padded = np.pad(np.asarray(eroded, dtype=np.float64), ((0, 1), (0, 1)), mode="edge")
    canvas = np.zeros_like(padded)
    for size in sorted({s for _, _, s in leaves}, reverse=True):
        blocks = sorted((c, r) for r, c, s in leaves if s == size)
        windows = np.stack([padded[r:r + size + 1, c:c + size + 1] for c, r in blocks])
        patches = bezier_background(windows)
        for (c, r), patch in zip(blocks, patches):
            canvas[r:r + size + 1, c:c + size + 1] = patch
    return canvas[:-1, :-1]


@register_method("bgr", kind="traditional",
                 reference="Zhang, Zhang, Bai, Zhang, Infrared Phys. Technol. 83 (2017) (IFEVIP); "
                           "VIFB BGR_Fuse.m")
class BGR(ClassicFusion):
    """Background reconstruction fusion (VIFB's IFEVIP): IR bright features added to the visible image.

    The IR image (PAT by default) is resized to ``quad_size``², quadtree-decomposed, grey-eroded
    with a ``quad_min``² square and turned into a smooth Bezier background; the IR feature is
    ``uint8(IR - uint8(background))``; ``add = feature + (IR - VIS) * H(IR)/H(VIS)`` (entropies in
    bits); ``fused = uint8(VIS + uint8(add * ratio))`` with ``ratio = min(255 / m, std_ratio)``, m
    the mean of the top ``max_ratio`` fraction of ``max(add, 0) + VIS``. Inputs are quantised
    to uint8 (``im2uint8``) first, as the reference reads 8-bit files; uint8 saturation and
    Matlab rounding are kept throughout.

    Parameters
    ----------
    quad_size : int
        Side of the resized IR image for the quadtree (512).
    quad_min : int
        Smallest quadtree block and erosion size (32).
    quad_threshold : float
        Split threshold as a fraction of 255 (0.2).
    gauss_size : int
        Gaussian window of the background smoothing, sigma = gauss_size / 2 (9).
    max_ratio : float
        Fraction of brightest pixels averaged for the gain (0.001).
    std_ratio : float
        Upper bound of the gain (0.8).
    roles : dict, optional
        Slot -> modality, default ``{"ir": "pat", "vis": "mri"}``.
    """

    def __init__(self, quad_size: int = 512, quad_min: int = 32, quad_threshold: float = 0.2,
                 gauss_size: int = 9, max_ratio: float = 0.001, std_ratio: float = 0.8, roles=None):
        super().__init__(roles, quad_size=int(quad_size), quad_min=int(quad_min),
                         quad_threshold=float(quad_threshold), gauss_size=int(gauss_size),
                         max_ratio=float(max_ratio), std_ratio=float(std_ratio))
        # validates the quadtree geometry once, at construction
        quadtree_decompose(np.zeros((self.params["quad_size"],) * 2), 0.0, self.params["quad_min"])

    def background(self, ir_u8: np.ndarray) -> np.ndarray:
        """Smooth background estimate of the uint8 IR image, float on the 0..255 scale."""
        p = self.params
        size, minimum = p["quad_size"], p["quad_min"]
        big = imresize(ir_u8, (size, size))
        leaves = quadtree_decompose(big, p["quad_threshold"] * 255.0, minimum)
        # imerode with strel('square', 32): Matlab centres an even square at offset 15 (0-based),
        # scipy at 16, hence origin -1; pixels outside the image do not take part.
        eroded = ndimage.minimum_filter(big, size=minimum, mode="nearest", origin=-1 if minimum % 2 == 0 else 0)
        bg = reconstruct_background(eroded, leaves)
        bg = imresize(bg, ir_u8.shape)
        return gaussian_blur(bg, p["gauss_size"] / 2.0, p["gauss_size"], "zero")

    def _fuse_ir_vis(self, ir, vis):
        p = self.params
        ir_u8, vis_u8 = im2uint8(ir), im2uint8(vis)
        ir_d, vis_d = ir_u8.astype(np.float64), vis_u8.astype(np.float64)
        feature = np.clip(ir_d - to_uint8(self.background(ir_u8)), 0, 255)  # uint8 minus uint8
        h_ir, h_vis = gray_entropy(ir_u8), gray_entropy(vis_u8)
        if h_vis == 0:
            # The reference divides by zero here (Inf/NaN output); a constant visible image
            # carries no information to weigh against, so the entropy ratio is taken as 1.
            _warn("BGR: the visible-slot image is constant (entropy 0); using entropy ratio 1")
            entropy_ratio = 1.0
        else:
            entropy_ratio = h_ir / h_vis
        add = feature + (ir_d - vis_d) * entropy_ratio
        boosted = np.maximum(add, 0.0) + vis_d
        n_top = max(1, int(np.floor(p["max_ratio"] * boosted.size + 0.5)))
        top_mean = float(np.partition(boosted.ravel(), boosted.size - n_top)[-n_top:].mean())
        gain = p["std_ratio"] if top_mean <= 0 else min(255.0 / top_mean, p["std_ratio"])
        fused = np.minimum(vis_d + to_uint8(add * gain), 255.0)  # uint8 + uint8 saturates
        return fused / 255.0
