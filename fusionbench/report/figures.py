"""Figures of a run: fused images side by side with a zoomed inset, and registration checks.

:func:`fusion_case_figure` and :func:`registration_case_figure` draw one case each at the width of
a paper column (:data:`COLUMN_INCHES`, :data:`FIGURE_DPI`), panels wrapped four to a row so they
stay legible (the style of the seed paper's Figs. 7-9); :func:`fused_grid` draws several cases in
one wide grid (one row per case).

Rows are cases, columns the two sources (PAT as acquired, MRI) and then every fusion method in
table order; each panel carries an inset magnifying the same region (by default a square of a
quarter of the image side around the centre of the MRI's intensity mass, where the anatomy is), and
the region is outlined in the panel. Images are read back from the run folder, so the figure can be
rebuilt from disk alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.io import read_image
from .panels import display_pat

__all__ = ["fused_grid", "zoom_box", "scale_box", "RunImages", "panel_figure", "fusion_case_figure",
           "registration_panels", "registration_case_figure", "COLUMN_INCHES", "FIGURE_DPI"]

#: Width of a paper column (inches) and the resolution of the column figures.
COLUMN_INCHES = 3.5
FIGURE_DPI = 300


def zoom_box(image: np.ndarray, fraction: float = 0.25) -> tuple[int, int, int]:
    """``(row0, col0, side)`` of a square of ``fraction`` of the image side around its intensity centroid."""
    from scipy import ndimage as ndi

    h, w = image.shape
    side = max(4, int(round(min(h, w) * fraction)))
    if image.sum() > 0:
        cr, cc = ndi.center_of_mass(image)
    else:
        cr, cc = h / 2, w / 2
    r0 = int(np.clip(round(cr - side / 2), 0, h - side))
    c0 = int(np.clip(round(cc - side / 2), 0, w - side))
    return r0, c0, side


def scale_box(box: tuple[int, int, int], shape: Sequence[int], to_shape: Sequence[int]) -> tuple[int, int, int]:
    """``box`` (see :func:`zoom_box`) of an image of ``shape`` moved to the same place in an image
    of ``to_shape`` (a fused image made at another size, e.g. an external method's)."""
    r0, c0, side = box
    fr, fc = to_shape[0] / shape[0], to_shape[1] / shape[1]
    new_side = max(1, min(int(round(side * min(fr, fc))), to_shape[0], to_shape[1]))
    return (int(np.clip(round(r0 * fr), 0, to_shape[0] - new_side)),
            int(np.clip(round(c0 * fc), 0, to_shape[1] - new_side)), new_side)


def fused_grid(run_dir: str | Path, methods: Sequence[str], cases: Sequence[str], out_path: str | Path,
               *, zoom: float = 0.25, panel_inches: float = 1.6) -> Path | None:
    """Draw the grid to ``out_path`` (PNG, 150 dpi): a row per case (labelled on the left), columns
    PAT, MRI and ``methods``; returns it, or None when nothing could be drawn."""
    run_dir = Path(run_dir)
    images = RunImages(run_dir)
    cases = [c for c in cases if images.mri(c) is not None]
    if not cases:
        return None
    columns = ["PAT", "MRI", *methods]
    panels = []
    for i, case in enumerate(cases):
        mri = images.mri(case)
        box = zoom_box(mri, zoom)
        for col in columns:
            img = images.pat(case) if col == "PAT" else mri if col == "MRI" else images.fused(col, case)
            own = box if img is None else scale_box(box, mri.shape, img.shape)
            panels.append((col if i == 0 else "", img, own))
    return panel_figure(panels, out_path, ncols=len(columns), row_labels=list(cases),
                        width_in=panel_inches * len(columns) + 0.2, max_side_in=panel_inches, dpi=150,
                        font=8.0)


# ------------------------------------------------------------------------ column figures

class RunImages:
    """The images of a run folder, read on demand: sources (PAT display-mapped), registered PAT
    (``registered/METHOD/CASE.npy``, display-mapped) and fused images; None where a file is missing
    or unreadable (a failed case), so a figure shows the gap instead of stopping."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._sources: dict[str, dict[str, np.ndarray | None]] = {}

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            if path.suffix == ".npy":
                return np.clip(np.load(path).astype(np.float32), 0.0, 1.0)
            return read_image(path)
        except (OSError, ValueError):
            return None

    def _source(self, case: str) -> dict[str, np.ndarray | None]:
        if case not in self._sources:
            if len(self._sources) > 2:
                self._sources.pop(next(iter(self._sources)))
            pat = self._read(self.run_dir / "sources" / case / "pat.png")
            self._sources[case] = {"pat": None if pat is None else display_pat(pat),
                                   "mri": self._read(self.run_dir / "sources" / case / "mri.png")}
        return self._sources[case]

    def pat(self, case: str) -> np.ndarray | None:
        return self._source(case)["pat"]

    def mri(self, case: str) -> np.ndarray | None:
        return self._source(case)["mri"]

    def registered(self, method: str, case: str) -> np.ndarray | None:
        img = self._read(self.run_dir / "registered" / method / f"{case}.npy")
        return None if img is None else display_pat(img)

    def fused(self, method: str, case: str) -> np.ndarray | None:
        return self._read(self.run_dir / "fused" / method / f"{case}.png")


def _fit(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` (gray or RGB, [0, 1]) as an RGB ``side`` x ``side`` tile: scaled to fit, centred on
    white; enlarged by pixel repetition (nearest), reduced with antialiasing."""
    from skimage.transform import resize

    img = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    h, w = img.shape[:2]
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        if scale >= 1:
            rows = np.minimum((np.arange(nh) / scale).astype(int), h - 1)
            cols = np.minimum((np.arange(nw) / scale).astype(int), w - 1)
            img = img[rows][:, cols]
        else:
            img = resize(img, (nh, nw, 3), order=1, anti_aliasing=True, preserve_range=True)
    tile = np.ones((side, side, 3), dtype=np.float32)
    r0, c0 = (side - nh) // 2, (side - nw) // 2
    tile[r0:r0 + nh, c0:c0 + nw] = img
    return tile


_YELLOW = np.array([1.0, 0.85, 0.0], dtype=np.float32)


def _outline(tile: np.ndarray, r0: int, c0: int, r1: int, c1: int, width: int, colour) -> None:
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, tile.shape[0]), min(c1, tile.shape[1])
    tile[r0:r0 + width, c0:c1] = colour
    tile[r1 - width:r1, c0:c1] = colour
    tile[r0:r1, c0:c0 + width] = colour
    tile[r0:r1, c1 - width:c1] = colour


def _panel_tile(img: np.ndarray, side: int, box: tuple[int, int, int] | None, line: int) -> np.ndarray:
    """The panel as drawn: the image fitted to the tile, the box outlined and magnified at the
    lower right (40 % of the tile, framed)."""
    tile = _fit(img, side)
    if box is None:
        return tile
    h, w = img.shape[:2]
    scale = side / max(h, w)
    off_r, off_c = (side - round(h * scale)) // 2, (side - round(w * scale)) // 2
    r0, c0, bside = box
    _outline(tile, off_r + round(r0 * scale), off_c + round(c0 * scale), off_r + round((r0 + bside) * scale),
             off_c + round((c0 + bside) * scale), line, _YELLOW)
    inset_side = int(round(side * 0.4))
    inset = _fit(img[r0:r0 + bside, c0:c0 + bside], inset_side)
    _outline(inset, 0, 0, inset_side, inset_side, line, _YELLOW)
    tile[side - inset_side:, side - inset_side:] = inset
    return tile


def panel_figure(panels: Sequence[tuple | None], out_path: str | Path, *,
                 box: tuple[int, int, int] | None = None, ncols: int = 4, width_in: float = COLUMN_INCHES,
                 dpi: int = FIGURE_DPI, row_labels: Sequence[str] | None = None,
                 max_side_in: float = 1.75, font: float = 6.5) -> Path:
    """Titled square panels, ``ncols`` to a row, ``width_in`` inches wide, to a PNG at ``dpi``.

    A panel is ``(title, image)`` or ``(title, image, box)``: the image gray ``(H, W)`` or RGB
    ``(H, W, 3)`` in [0, 1], or None ("failed"); an empty title takes no room when the whole row
    has none; a None panel leaves its place blank. With a ``box`` (see :func:`zoom_box`; the
    panel's own, else the ``box`` argument) the panel outlines it and magnifies it in an inset at
    its lower right. ``row_labels`` (one per row) are written up the left margin. Panels are at
    most ``max_side_in`` inches wide (a figure of few panels is narrower than ``width_in``); titles
    are ``font`` points, smaller where a long one would overrun its panel.

    The panels are composed as one image at the output's resolution and drawn by Matplotlib with
    their text, which keeps a figure of many panels quick to write.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("panel_figure: no panels")
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    px = lambda inches: int(round(inches * dpi))  # noqa: E731
    gap, title_h = px(0.03), px(font / 72 * 1.45)
    left = px(font / 72 * 1.6) if row_labels else 0
    side = min(px(max_side_in), (px(width_in) - left - (ncols - 1) * gap) // ncols)
    line = max(1, round(dpi / 150))
    titled = [any(p and p[0] for p in panels[r * ncols:(r + 1) * ncols]) for r in range(nrows)]
    heights = [side + (title_h if t else 0) for t in titled]
    tops = [sum(heights[:r]) + r * gap for r in range(nrows)]
    width, height = left + ncols * side + (ncols - 1) * gap, sum(heights) + (nrows - 1) * gap
    canvas = np.ones((height, width, 3), dtype=np.float32)
    texts = []  # (x, y in pixels from the top left, text, size, rotation)
    for k, panel in enumerate(panels):
        if panel is None:
            continue
        title, img = panel[0], panel[1]
        pbox = panel[2] if len(panel) > 2 else box
        r, c = divmod(k, ncols)
        x0, y0 = left + c * (side + gap), tops[r] + (title_h if titled[r] else 0)
        if img is None:
            canvas[y0:y0 + side, x0:x0 + side] = 0.93
            texts.append((x0 + side / 2, y0 + side / 2, "failed", font, 0))
        else:
            canvas[y0:y0 + side, x0:x0 + side] = _panel_tile(img, side, pbox, line)
        if title:  # shrink a long title to the panel's width (about 0.6 em per character)
            size = min(font, side / dpi * 72 / (0.62 * len(title)))
            texts.append((x0 + side / 2, y0 - title_h * 0.45, title, size, 0))
        if row_labels and c == 0 and r < len(row_labels) and row_labels[r]:
            size = min(font, side / dpi * 72 / (0.62 * len(row_labels[r])))
            texts.append((left * 0.45, y0 + side / 2, row_labels[r], size, 90))
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest", extent=(0, width, height, 0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for x, y, text, size, rotation in texts:
        ax.text(x, y, text, fontsize=size, ha="center", va="center", rotation=rotation)
    return _save(fig, out_path, dpi)


def _save(fig, out_path: str | Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path


def fusion_case_figure(images: RunImages, methods: Sequence[str], case: str, out_path: str | Path, *,
                       registration: str | None = None, zoom: float = 0.25, **kw) -> Path | None:
    """One case: PAT, MRI, the PAT after ``registration`` (when the run kept it) and each method's
    fused image, all with the same zoomed inset; None when the case has no MRI source."""
    mri = images.mri(case)
    if mri is None:
        return None
    panels = [("PAT", images.pat(case)), ("MRI", mri)]
    if registration and registration != "identity":
        reg = images.registered(registration, case)
        if reg is not None:
            panels.append((f"PAT ({registration})", reg))
    box = zoom_box(mri, zoom)
    for m in methods:
        img = images.fused(m, case)
        panels.append((m, img, box if img is None else scale_box(box, mri.shape, img.shape)))
    return panel_figure(panels, out_path, box=box, **kw)


def registration_panels(images: RunImages, methods: Sequence[str], case: str
                        ) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """Per registration method (``identity`` = before registration): ``(method, checkerboard of
    the registered PAT and the MRI, MRI edges over the registered PAT)``, both cropped to the
    body (:func:`fusionbench.report.panels.body_box` of the MRI); Nones where an image is missing."""
    from .panels import body_box, checkerboard, crop, edge_overlay

    mri = images.mri(case)
    box = None if mri is None else body_box(mri)
    out = []
    for m in methods:
        moved = images.pat(case) if m == "identity" else images.registered(m, case)
        if mri is None or moved is None or moved.shape[:2] != mri.shape[:2]:
            out.append((m, None, None))
            continue
        moved_c, mri_c = crop(moved, box), crop(mri, box)
        out.append((m, checkerboard(moved_c, mri_c), edge_overlay(moved_c, mri_c)))
    return out


def registration_case_figure(images: RunImages, methods: Sequence[str], case: str, out_path: str | Path, *,
                             ncols: int = 4, **kw) -> Path | None:
    """One case: a column per registration method (``identity`` titled "before"), the checkerboard
    of PAT and MRI above the MRI's edges drawn on the PAT, ``ncols`` methods to a band; None when
    nothing could be drawn."""
    found = registration_panels(images, methods, case)
    if not found or all(board is None for _, board, _ in found):
        return None
    if len(found) == 1:  # one method (a run without registration): its two panels side by side
        m, board, edges = found[0]
        return panel_figure([("checkerboard", board), ("MRI edges", edges)], out_path, ncols=2,
                            row_labels=["before" if m == "identity" else m], **kw)
    panels, labels = [], []
    ncols = max(1, min(ncols, len(found)))
    for start in range(0, len(found), ncols):
        band = found[start:start + ncols]
        blank = [None] * (ncols - len(band))
        panels += [("before" if m == "identity" else m, board) for m, board, _ in band] + blank
        panels += [("", edges) for _, _, edges in band] + blank
        labels += ["checkerboard", "MRI edges"]
    return panel_figure(panels, out_path, ncols=ncols, row_labels=labels, **kw)
