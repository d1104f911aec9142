"""Image panels of the HTML report and the paper figures, made from a run folder with NumPy alone.

* :func:`display_pat`: the PAT image as shown to people (the phantom's signed display mapping);
* :func:`checkerboard`: alternating tiles of two images (registration checks);
* :func:`edge_overlay`: an image in gray with the edges of another drawn over it in colour;
* :func:`crop`: the square a zoomed inset magnifies (:func:`fusionbench.report.figures.zoom_box`);
* :func:`body_box`: the square around the body (the MRI's foreground) that registration checks show;
* :func:`to_png`: 8-bit PNG bytes of a gray or RGB [0, 1] image, optionally enlarged (nearest).

Every function takes ``(H, W)`` float images in [0, 1] (RGB ``(H, W, 3)`` where it says so) and
returns new arrays; none reads or writes files except :func:`to_png`'s encoding.
"""
from __future__ import annotations

import io

import numpy as np

__all__ = ["display_pat", "checkerboard", "edge_overlay", "crop", "body_box", "to_png", "EDGE_COLOUR"]

#: The colour of the reference edges in :func:`edge_overlay` (green, as the task overlays' reference).
EDGE_COLOUR = (0.2, 1.0, 0.3)


def display_pat(pat: np.ndarray) -> np.ndarray:
    """The PAT image for figures: :func:`fusionbench.data.phantom.display` (signed stretch about
    mid-gray) when it keeps the shape, else the image unchanged; never raises."""
    try:
        from ..data.phantom import display

        shown = np.asarray(display(pat))
    except Exception:  # noqa: BLE001 - a display helper must never break a report
        return np.asarray(pat, dtype=np.float32)
    return shown if shown.shape[:2] == np.shape(pat)[:2] else np.asarray(pat, dtype=np.float32)


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(img, 0.0, 1.0)


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """``a`` on the dark squares and ``b`` on the light ones of a ``tiles`` x ``tiles`` board.

    The images must share their shape; the tiles split the rows and columns as evenly as integer
    pixel counts allow.
    """
    a, b = _gray(a), _gray(b)
    if a.shape != b.shape:
        raise ValueError(f"checkerboard: shapes differ, {a.shape} and {b.shape}")
    h, w = a.shape
    rows = (np.arange(h) * tiles) // max(h, 1)
    cols = (np.arange(w) * tiles) // max(w, 1)
    board = (rows[:, None] + cols[None, :]) % 2 == 0
    return np.where(board, a, b).astype(np.float32)


def _edges(img: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.feature import canny

    img = _gray(img)
    if float(img.max() - img.min()) == 0.0:
        return np.zeros(img.shape, dtype=bool)
    return canny(img, sigma=sigma)


def edge_overlay(base: np.ndarray, edges_of: np.ndarray, *, sigma: float | None = None,
                 colour: tuple[float, float, float] = EDGE_COLOUR) -> np.ndarray:
    """RGB: ``base`` in gray, the Canny edges of ``edges_of`` painted in ``colour`` (same shape).

    ``sigma`` (the Canny smoothing) defaults to 1/100 of the image side, at least 1.5 pixels, so
    the edges are the anatomy's outlines rather than texture.
    """
    base, other = _gray(base), _gray(edges_of)
    if base.shape != other.shape:
        raise ValueError(f"edge_overlay: shapes differ, {base.shape} and {other.shape}")
    sigma = max(1.5, min(base.shape) / 100.0) if sigma is None else sigma
    rgb = np.repeat(base[..., None] * 0.85, 3, axis=2)
    rgb[_edges(other, sigma)] = colour
    return rgb.astype(np.float32)


def crop(img: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """The ``(row0, col0, side)`` square of ``img`` (rows and columns clipped to the image)."""
    r0, c0, side = box
    return np.asarray(img)[max(r0, 0):r0 + side, max(c0, 0):c0 + side]


def body_box(image: np.ndarray, margin: float = 0.12) -> tuple[int, int, int]:
    """``(row0, col0, side)``: the smallest square holding the foreground of ``image`` (Otsu's
    threshold) grown by ``margin`` of its side on each side, kept inside the image; the whole image
    (its largest inscribed square) when the foreground is empty or fills it."""
    from skimage.filters import threshold_otsu

    img = _gray(image)
    h, w = img.shape
    full = (0, 0, min(h, w))
    if float(img.max() - img.min()) == 0.0:
        return full
    rows, cols = np.nonzero(img > threshold_otsu(img))
    if rows.size == 0:
        return full
    r_lo, r_hi, c_lo, c_hi = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = int(round(max(r_hi - r_lo, c_hi - c_lo) * (1 + 2 * margin)))
    side = max(8, min(side, h, w))
    r0 = int(np.clip(round((r_lo + r_hi - side) / 2), 0, h - side))
    c0 = int(np.clip(round((c_lo + c_hi - side) / 2), 0, w - side))
    return r0, c0, side


def to_png(img: np.ndarray, *, scale: int = 1) -> bytes:
    """8-bit PNG bytes of a [0, 1] gray ``(H, W)`` or RGB ``(H, W, 3)`` image, each pixel repeated
    ``scale`` times along both axes (an enlargement without interpolation)."""
    import imageio.v3 as iio

    arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if scale > 1:
        arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    iio.imwrite(buf, np.round(arr * 255).astype(np.uint8), extension=".png")
    return buf.getvalue()
