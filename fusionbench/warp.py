"""The project's one warp (DESIGN §3).

A displacement field ``flow`` is float32 (2, H, W) in pixels, channel 0 = row shift, channel 1 =
column shift. ``warp(img, flow)`` samples ``img`` at ``(r + flow[0], c + flow[1])``: the output at
pixel (r, c) is the input at the displaced position (backward mapping), the convention of MONAI's
``Warp`` and VoxelMorph's ``SpatialTransformer``. Outside the image the border value is repeated.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["warp", "identity_grid", "compose", "check_flow", "resize_flow"]


def check_flow(flow: np.ndarray, shape: tuple[int, int], name: str = "flow") -> np.ndarray:
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape != (2, *shape):
        raise ValueError(f"{name}: shape {flow.shape}, expected (2, {shape[0]}, {shape[1]})")
    if not np.all(np.isfinite(flow)):
        raise ValueError(f"{name}: NaN/Inf in displacement field")
    return flow


def _linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Half-pixel centres: output pixel i covers input coordinate (i + 0.5) * n_in / n_out - 0.5, the
    # geometry of area (box) resampling, clamped at the first pixel like torch's bilinear resize.
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def resize_flow(flow: np.ndarray, shape: tuple[int, int], name: str = "flow") -> np.ndarray:
    """A flow found on another grid, brought to ``shape``: resampled bilinearly with half-pixel
    centres (the grid of images reduced by area averaging, as the learned registrations feed their
    networks) and its displacements scaled by the size ratio of each axis."""
    flow = np.asarray(flow, dtype=np.float64)
    flow = check_flow(flow, tuple(flow.shape[1:]), name).astype(np.float64)
    (h_in, w_in), (h, w) = flow.shape[1:], tuple(shape)
    if (h_in, w_in) == (h, w):
        return flow.astype(np.float32)
    r0, r1, fr = _linear_weights(h_in, h)
    c0, c1, fc = _linear_weights(w_in, w)
    rows = flow[:, r0, :] * (1 - fr)[None, :, None] + flow[:, r1, :] * fr[None, :, None]
    out = rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]
    out *= np.array([h / h_in, w / w_in])[:, None, None]
    return out.astype(np.float32)


def identity_grid(shape: tuple[int, int]) -> np.ndarray:
    """(2, H, W) float64 array of pixel coordinates (rows, columns)."""
    return np.stack(np.meshgrid(np.arange(shape[0], dtype=np.float64),
                                np.arange(shape[1], dtype=np.float64), indexing="ij"))


def warp(img: np.ndarray, flow: np.ndarray, *, order: int = 1, mode: str = "nearest") -> np.ndarray:
    """Sample ``img`` at ``grid + flow``.

    Parameters
    ----------
    img : (H, W) array
        Image or label map (use ``order=0`` for labels).
    flow : (2, H, W) array
        Displacement in pixels (rows, columns).
    order : int
        Interpolation order: 1 bilinear (default), 0 nearest.
    mode : str
        ``scipy.ndimage`` boundary mode; ``"nearest"`` repeats the border ("border padding").
    """
    img = np.asarray(img)
    flow = check_flow(flow, img.shape)
    coords = identity_grid(img.shape) + flow
    out = ndi.map_coordinates(img.astype(np.float64) if order > 0 else img, coords, order=order,
                              mode=mode, prefilter=False)
    return out.astype(img.dtype if order == 0 else np.float32)


def compose(flow_a: np.ndarray, flow_b: np.ndarray) -> np.ndarray:
    """Field equivalent to warping by ``flow_a`` and then by ``flow_b``.

    ``warp(warp(x, flow_a), flow_b) ≈ warp(x, compose(flow_a, flow_b))``: the composed field is
    ``flow_b + flow_a ∘ (id + flow_b)``.
    """
    flow_b = np.asarray(flow_b, dtype=np.float32)
    shape = flow_b.shape[1:]
    a = check_flow(flow_a, shape, "flow_a")
    moved = np.stack([warp(a[i], flow_b) for i in range(2)])
    return (flow_b + moved).astype(np.float32)
