"""How much a set of images looks like another: the statistics of the phantom realism report.

Per image and modality, on the image resampled to a common side (256 px, so spectra and gradients
compare across sizes): the body's share of the frame width and area, intensities inside and outside
the body, the radially averaged power spectrum of the whole frame and the gradient magnitude
inside the body. Two sets are compared by the medians and 10th–90th percentiles of the per-image
summaries and by distances between the pooled distributions (1-D Wasserstein for intensities and
gradients; mean absolute difference of log10 power for spectra).

The body mask is ``labels > 0`` where labels exist, else :func:`fusionbench.data.misalign.body_mask`
of the MRI (the PAT of a registered pair shares it), else of the PAT itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance

from .case import Case
from .misalign import body_mask

__all__ = ["SIDE", "FREQS", "ImageStats", "image_stats", "case_stats", "compare", "realism_report", "SUMMARY_KEYS"]

#: Side (pixels) every image is resampled to before its statistics are taken.
SIDE = 256
#: Centres (cycles per pixel at :data:`SIDE`) of the radial spectrum's log-spaced bins.
_EDGES = np.geomspace(0.9 / SIDE, 0.5, 19)  # 18 bins, each holding at least 4 FFT frequencies
FREQS = np.sqrt(_EDGES[:-1] * _EDGES[1:])
_SUBSAMPLE = 4000  # pooled values kept per image and distribution (deterministic stride)


@dataclass
class ImageStats:
    """Statistics of one image of one modality."""

    body_width: float            # body bounding-box width / frame width
    body_area: float             # body pixels / frame pixels
    inside: np.ndarray           # intensities inside the body (subsampled)
    outside: np.ndarray          # intensities outside the body (subsampled)
    gradient: np.ndarray         # gradient magnitude inside the body (subsampled), per pixel at SIDE
    spectrum: np.ndarray         # log10 of the normalised radial power spectrum at FREQS
    summary: dict = field(default_factory=dict)


#: Per-image summaries the report compares (name → description).
SUMMARY_KEYS = {
    "body_width": "body width / frame width",
    "body_area": "body area / frame area",
    "inside_median": "median intensity inside the body",
    "inside_iqr": "interquartile range inside the body",
    "outside_median": "median intensity outside the body",
    "outside_iqr": "interquartile range outside the body",
    "contrast": "median inside - median outside",
    "gradient_median": "median gradient magnitude inside the body",
    "gradient_p90": "90th percentile of the gradient magnitude inside the body",
    "spectral_slope": "log-log slope of the radial power spectrum, 0.01-0.25 cycles/px",
    "high_freq_power": "share of power above 0.125 cycles/px",
}


def _resample(img: np.ndarray, order: int) -> np.ndarray:
    zoom = (SIDE / img.shape[0], SIDE / img.shape[1])
    if order == 0:
        return ndi.zoom(img.astype(np.uint8), zoom, order=0, grid_mode=True, mode="nearest") > 0
    if zoom[0] < 1:  # anti-alias before shrinking
        img = ndi.gaussian_filter(img, [0.5 / z for z in zoom])
    return ndi.zoom(img, zoom, order=1, grid_mode=True, mode="nearest")


def _stride(values: np.ndarray) -> np.ndarray:
    step = max(1, values.size // _SUBSAMPLE)
    return values[::step].astype(np.float32)


def _radial_spectrum(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(log10 power per bin, slope, share above 0.125 cycles/px)`` of a SIDE² image."""
    window = np.outer(np.hanning(SIDE), np.hanning(SIDE))
    power = np.abs(np.fft.fft2((img - img.mean()) * window)) ** 2
    f = np.fft.fftfreq(SIDE)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij")).ravel()
    power = power.ravel()
    total = power[radius > 0].sum() or 1.0
    which = np.digitize(radius, _EDGES) - 1
    ok = (which >= 0) & (which < FREQS.size)
    sums = np.bincount(which[ok], power[ok], minlength=FREQS.size)
    counts = np.bincount(which[ok], minlength=FREQS.size)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan) / total
    spectrum = np.log10(np.maximum(mean, 1e-20))
    band = (FREQS >= 0.01) & (FREQS <= 0.25) & np.isfinite(spectrum)
    slope = float(np.polyfit(np.log10(FREQS[band]), spectrum[band], 1)[0])
    high = float(power[radius > 0.125].sum() / total)
    return spectrum, slope, high


def image_stats(image: np.ndarray, body: np.ndarray) -> ImageStats:
    """Statistics of one [0, 1] image with its body mask (any size; resampled to :data:`SIDE`)."""
    image = np.asarray(image, dtype=np.float64)
    body = np.asarray(body, dtype=bool)
    if image.ndim != 2 or body.shape != image.shape:
        raise ValueError(f"image_stats needs a 2-D image and a body mask of its shape, got {image.shape} "
                         f"and {body.shape}")
    img = _resample(image, 1)
    mask = _resample(body, 0)
    if not mask.any() or mask.all():
        raise ValueError("image_stats: the body mask is empty or fills the frame")
    cols = np.flatnonzero(mask.any(axis=0))
    inside, outside = img[mask], img[~mask]
    grad = np.hypot(ndi.sobel(img, 0), ndi.sobel(img, 1)) / 8.0
    core = ndi.binary_erosion(mask, iterations=2)  # the skin edge itself is the body/background contrast
    gradient = grad[core if core.any() else mask]
    spectrum, slope, high = _radial_spectrum(img)
    q = np.percentile
    summary = {
        "body_width": (cols[-1] - cols[0] + 1) / SIDE, "body_area": float(mask.mean()),
        "inside_median": float(np.median(inside)), "inside_iqr": float(q(inside, 75) - q(inside, 25)),
        "outside_median": float(np.median(outside)), "outside_iqr": float(q(outside, 75) - q(outside, 25)),
        "gradient_median": float(np.median(gradient)), "gradient_p90": float(q(gradient, 90)),
        "spectral_slope": slope, "high_freq_power": high,
    }
    summary["contrast"] = summary["inside_median"] - summary["outside_median"]
    return ImageStats(summary["body_width"], summary["body_area"], _stride(np.sort(inside)),
                      _stride(np.sort(outside)), _stride(np.sort(gradient)), spectrum, summary)


def case_stats(case: Case) -> dict[str, ImageStats]:
    """``{"pat": ..., "mri": ...}`` for the modalities the case has (see the module docstring)."""
    out = {}
    for modality in ("pat", "mri"):
        image = getattr(case, modality)
        if image is None:
            continue
        labels = getattr(case, f"labels_{modality}")
        if labels is not None and np.any(labels > 0):
            body = labels > 0
        elif case.mri is not None:
            body, _ = body_mask(case.mri, case.labels_mri)
        else:
            body, _ = body_mask(case.pat)
        out[modality] = image_stats(image, body)
    return out


def _percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    return float(np.median(v)), float(np.percentile(v, 10)), float(np.percentile(v, 90))


def compare(sets: dict[str, Iterable[ImageStats]]) -> list[dict]:
    """Rows of the realism table for one modality: each summary's median and 10th–90th percentile
    per set, then the distances of every set from the first one (the reference, e.g. the real
    images) under ``distance_to_<first>``."""
    names = list(sets)
    stats = {k: list(v) for k, v in sets.items()}
    if any(not v for v in stats.values()):
        raise ValueError("compare: every set needs at least one image")
    rows = []
    for key, text in SUMMARY_KEYS.items():
        row = {"statistic": key, "description": text}
        for name in names:
            med, lo, hi = _percentiles([s.summary[key] for s in stats[name]])
            row[name] = med
            row[f"{name}_p10"], row[f"{name}_p90"] = lo, hi
        rows.append(row)
    ref = names[0]
    pooled = {name: {kind: np.concatenate([getattr(s, kind) for s in stats[name]])
                     for kind in ("inside", "outside", "gradient")} for name in names}
    spectra = {name: np.nanmean([s.spectrum for s in stats[name]], axis=0) for name in names}
    for kind, text in (("inside", "Wasserstein distance of intensities inside the body"),
                       ("outside", "Wasserstein distance of intensities outside the body"),
                       ("gradient", "Wasserstein distance of gradient magnitudes inside the body")):
        row = {"statistic": f"W1_{kind}", "description": text}
        for name in names:
            row[name] = float(wasserstein_distance(pooled[ref][kind], pooled[name][kind]))
        rows.append(row)
    row = {"statistic": "spectrum_log10_gap", "description": "mean |log10 power gap| of the radial spectra"}
    for name in names:
        row[name] = float(np.nanmean(np.abs(spectra[name] - spectra[ref])))
    rows.append(row)
    return rows


def realism_report(sets: dict[str, Sequence[Case]], out_dir, *, reference: str | None = None,
                   log=print) -> list[dict]:
    """Compare sets of cases modality by modality; write ``realism.csv`` and ``realism.png``.

    Parameters
    ----------
    sets : dict of name → cases
        E.g. ``{"phantom 2.0": ..., "real pairs": ..., "real PAT": ...}``; a PAT-only set takes
        part in the PAT comparison only.
    out_dir : path-like
        Folder for the outputs (created).
    reference : str, optional
        The set the distances are measured from (default: the first set other than the first,
        i.e. the first real set when the phantom comes first).

    Returns
    -------
    list of dict
        The table's rows, each with its ``modality``.
    """
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = {name: [case_stats(c) for c in cases] for name, cases in sets.items()}
    rows: list[dict] = []
    per_modality = {}
    for modality in ("pat", "mri"):
        have = {name: [s[modality] for s in st if modality in s] for name, st in stats.items()}
        have = {k: v for k, v in have.items() if v}
        if len(have) < 2:
            continue
        names = list(have)
        ref = reference if reference in have else names[1 if len(names) > 1 else 0]
        ordered = {ref: have[ref], **{k: v for k, v in have.items() if k != ref}}
        per_modality[modality] = ordered
        for row in compare(ordered):
            rows.append({"modality": modality, "reference": ref, **row})
    if not rows:
        raise ValueError("realism_report: no modality is present in two sets")
    import csv

    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "realism.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    _figure(per_modality, out / "realism.png")
    return rows


def _figure(per_modality: dict[str, dict[str, list[ImageStats]]], path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    kinds = (("inside", "intensity inside the body"), ("outside", "intensity outside the body"),
             ("gradient", "gradient magnitude inside the body"), ("spectrum", "radial power spectrum"))
    fig, axes = plt.subplots(len(per_modality), 4, figsize=(16, 3.4 * len(per_modality)), squeeze=False)
    for r, (modality, sets) in enumerate(per_modality.items()):
        for c, (kind, title) in enumerate(kinds):
            ax = axes[r, c]
            for name, st in sets.items():
                if kind == "spectrum":
                    ax.loglog(FREQS, 10 ** np.nanmean([s.spectrum for s in st], axis=0), label=name)
                    ax.set_xlabel("cycles / pixel (at 256²)")
                    continue
                values = np.concatenate([getattr(s, kind) for s in st])
                top = 0.25 if kind == "gradient" else 1.0
                ax.hist(values, bins=80, range=(0, top), density=True, histtype="step", label=name)
            ax.set_title(f"{modality.upper()}: {title}", fontsize=10)
        axes[r, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
