"""Figures of a run: a grid of the fused images of a few cases, with a zoomed inset.

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

__all__ = ["fused_grid", "zoom_box"]


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


def _display_pat(pat: np.ndarray) -> np.ndarray:
    try:
        from ..data.phantom import display
    except ImportError:
        return pat
    try:
        shown = np.asarray(display(pat))
    except Exception:  # noqa: BLE001 - a display helper must never break a report
        return pat
    return shown if shown.shape[:2] == pat.shape else pat


def fused_grid(run_dir: str | Path, methods: Sequence[str], cases: Sequence[str], out_path: str | Path,
               *, zoom: float = 0.25, panel_inches: float = 1.6) -> Path | None:
    """Draw the grid to ``out_path`` (PNG); returns it, or None when nothing could be drawn."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    cases = [c for c in cases if (run_dir / "sources" / c / "mri.png").exists()]
    if not cases:
        return None
    columns = ["PAT", "MRI", *methods]
    fig, axes = plt.subplots(len(cases), len(columns), squeeze=False,
                             figsize=(panel_inches * len(columns), panel_inches * len(cases) + 0.3))
    for i, case in enumerate(cases):
        mri = read_image(run_dir / "sources" / case / "mri.png")
        box = zoom_box(mri, zoom)
        for j, col in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == "PAT":
                img = _display_pat(read_image(run_dir / "sources" / case / "pat.png"))
            elif col == "MRI":
                img = mri
            else:
                path = run_dir / "fused" / col / f"{case}.png"
                img = read_image(path) if path.exists() else None
            if i == 0:
                ax.set_title(col, fontsize=8)
            if j == 0:
                ax.set_ylabel(case, fontsize=7)
            if img is None:
                ax.text(0.5, 0.5, "failed", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            kw = {"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}
            ax.imshow(img, interpolation="nearest", **kw)
            r0, c0, side = box
            inset = ax.inset_axes([0.58, 0.0, 0.42, 0.42])
            inset.imshow(img[r0:r0 + side, c0:c0 + side], interpolation="nearest", **kw)
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_edgecolor("yellow")
            ax.add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), side, side, fill=False, edgecolor="yellow",
                                       linewidth=0.8))
    fig.tight_layout(pad=0.2)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp, dpi=150)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path
