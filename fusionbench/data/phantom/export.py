"""The phantom for people: a display mapping of PAT images, a preview grid and a folder of files."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ...warp import warp
from ..case import Case
from ..io import as_image, atomic_write_bytes, write_image
from .cache import load_phantom
from .config import PhantomConfig

__all__ = ["display", "LABEL_COLOURS", "preview_grid", "write_phantom_folder"]


def display(pat_image: np.ndarray, mode: str = "signed", percentile: float = 99.5) -> np.ndarray:
    """Map a stored PAT image (zero at 0.5) to a [0, 1] gray image for figures; data are unchanged.

    Parameters
    ----------
    pat_image : (H, W) array
        A PAT image as stored (signed values with zero at mid-gray).
    mode : {"signed", "positive", "abs"}
        ``"signed"``: symmetric contrast stretch about mid-gray (zero stays at 0.5);
        ``"positive"``: negative lobes clipped to black, as many MSOT viewers show;
        ``"abs"``: magnitude (envelope-like).
    percentile : float
        Percentile of ``|signed|`` mapped to full scale.
    """
    img = as_image(pat_image, name="pat")
    signed = 2.0 * img - 1.0
    top = float(np.percentile(np.abs(signed), percentile)) or 1.0
    if mode == "signed":
        out = 0.5 + 0.5 * signed / top
    elif mode == "positive":
        out = signed / top
    elif mode == "abs":
        out = np.abs(signed) / top
    else:
        raise ValueError(f"display mode must be 'signed', 'positive' or 'abs', got {mode!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


#: One colour per label id of ORGANS (background black, body dark red, ...), for previews.
LABEL_COLOURS = np.array([
    (0, 0, 0), (120, 40, 40), (90, 140, 255), (170, 220, 255), (230, 40, 60), (150, 90, 30),
    (250, 200, 60), (60, 200, 90), (200, 60, 220), (240, 240, 240), (255, 120, 0), (255, 0, 0),
], dtype=np.float32) / 255


def _label_rgb(labels: np.ndarray) -> np.ndarray:
    return LABEL_COLOURS[np.clip(labels, 0, len(LABEL_COLOURS) - 1)]


def preview_grid(cases: list[Case], max_rows: int = 8) -> np.ndarray:
    """RGB uint8 grid, one row per case: MRI | PAT (as stored) | MRI labels | PAT labels |
    PAT warped by ``flow_true`` with the MRI label outlines (alignment check)."""
    from skimage.segmentation import find_boundaries

    rows = []
    for case in cases[:max_rows]:
        gray = lambda im: np.repeat(im[..., None], 3, axis=2)  # noqa: E731
        aligned = gray(warp(case.pat, case.flow_true))
        aligned[find_boundaries(case.labels_mri, mode="inner")] = (1.0, 0.2, 0.2)
        tiles = [gray(case.mri), gray(case.pat), _label_rgb(case.labels_mri), _label_rgb(case.labels_pat), aligned]
        sep = np.ones((case.shape[0], 2, 3), np.float32)
        rows.append(np.concatenate(sum(([t, sep] for t in tiles), [])[:-1], axis=1))
        rows.append(np.ones((2, rows[-1].shape[1], 3), np.float32))
    grid = np.concatenate(rows[:-1], axis=0)
    return np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)


def write_phantom_folder(out_dir, *, n: int = 64, size: int = 256, misalign: str = "moderate", seed: int = 0,
                         split: str = "test", cache_dir=None, jobs: int | None = None, progress: bool = False,
                         version: str | None = None) -> Path:
    """Write ``n`` phantom pairs of ``split`` as files a person (or ``folder:`` loader) can read.

    Layout: ``pat/ID.png`` and ``mri/ID.png`` (8-bit; PAT zero at mid-gray), ``labels_mri/ID.png``
    and ``labels_pat/ID.png`` (8-bit label ids), ``flow/ID.npy`` (float32 (2, H, W), PAT -> MRI),
    ``manifest.csv`` (id,pat,mri,labels_mri,labels_pat,flow,split; paths relative to the folder)
    and ``preview.png`` (``version``: the phantom's look, default :data:`.config.DEFAULT_VERSION`).
    The test split has ``4·ceil(n/4)`` pairs; the first ``n`` are written.
    """
    import imageio.v3 as iio

    extra = {} if version is None else {"version": version}
    cfg = PhantomConfig.from_params(n=n, size=size, misalign=misalign, seed=seed, **extra)
    cases = load_phantom(split, cfg, cache_dir=cache_dir, jobs=jobs, progress=progress)[:n]
    out = Path(out_dir)
    rows = []
    for case in cases:
        rel = {"pat": f"pat/{case.id}.png", "mri": f"mri/{case.id}.png", "labels_mri": f"labels_mri/{case.id}.png",
               "labels_pat": f"labels_pat/{case.id}.png", "flow": f"flow/{case.id}.npy"}
        write_image(out / rel["pat"], case.pat)
        write_image(out / rel["mri"], case.mri)
        write_image(out / rel["labels_mri"], case.labels_mri.astype(np.uint8))
        write_image(out / rel["labels_pat"], case.labels_pat.astype(np.uint8))
        buf = io.BytesIO()
        np.save(buf, case.flow_true.astype(np.float32))
        atomic_write_bytes(out / rel["flow"], buf.getvalue())
        rows.append({"id": case.id, **rel, "split": case.meta["split"]})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["id", "pat", "mri", "labels_mri", "labels_pat", "flow", "split"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "manifest.csv", text.getvalue().encode())
    atomic_write_bytes(out / "preview.png", iio.imwrite("<bytes>", preview_grid(cases), extension=".png"))
    return out
