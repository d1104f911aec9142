"""Which published variant of each Table-2 metric reproduces the seed paper's magnitudes on real images?

The seed paper (PAMRFuse+, Zhong et al. 2024) reports eight fusion metrics in its Table 2 (MI, VIF,
Qabf, SF, SSIM, FMI_pixel, FMI_dct, FMI_w). The field computes each of them in several ways (bits
or nats, sum or mean over the two sources, 0-255 or [0, 1] intensities, SSIM window and constants,
FMI feature and window). This script scores the fused images of the seven classic methods the
paper also ran (BGR, GTF, MWGF, MSVD, NSCT, SAI, VSMWLS) on real registered PAT/MRI pairs with
every variant it can name, takes per method the mean over the pairs (the paper's Table 2 reports
means) and then the median over the seven methods, and compares that with the median of the
paper's rows for the same seven methods. ``docs/conventions.md`` (section "The `paper` default on
real images") holds the table this prints and the choice it supports.

The fused images come from the harness, e.g. on PAMRFuse v1's 36 registered pairs imported with
``fusionbench data import pamrfuse-v1``::

    fusionbench run --methods bgr,gtf,mwgf,msvd,nsct,sai,vsmwls \\
        --dataset folder:REGISTERED --registration identity --jobs 2 --out RUN

    OMP_NUM_THREADS=1 python research/paper_convention.py RUN --jobs 2 --extra-cases 12 \\
        --cache RUN/paper_convention.json

``RUN/sources/CASE/{pat,mri}.png`` and ``RUN/fused/METHOD/CASE.png`` are read with
:func:`fusionbench.data.io.read_image`. Every variant is computed on every pair except the slow
extras (FMI with window 5, Matlab's ``gradient`` feature, a rows-only DCT, PyWavelets' 62-tap
``dmey``; a JPEG-saved fused image), which run on the first ``--extra-cases`` pairs only and are
printed next to their full-set counterpart on the same subset ("@sub"). The rows
``METRIC/default`` score the package's default convention as it is now (``fusion_suite(a, b, f)``);
:data:`DEFAULT_BEFORE` names the variant that was the default before this study. ``--cache``
keeps the per-triplet values (a rerun computes only what is missing; delete the ``*/default``
entries after changing a default).

Every variant key names what it computes, whatever the default: the named toolbox conventions
are called by name, the others are written here from their definitions (the references are
named next to each). A check at start-up asserts that the re-derived SSIM variants reproduce the
package's named conventions on the first triplet. "per-method factor" is the median over the
seven methods of max(ours/paper, paper/ours) against each method's own paper row (MWGF and SAI
behave differently on the paper's data: it reports dark blotches for them).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

METHODS = ("bgr", "gtf", "mwgf", "msvd", "nsct", "sai", "vsmwls")

#: The seed paper's Table 2 ("Aligned Method: P2M + Voxelmorph"), rows of the seven classic methods.
PAPER_ROWS = {
    #          MI      VIF     Qabf    SF      SSIM    FMI_pixel FMI_dct FMI_w
    "bgr":    (2.8405, 0.7860, 0.5202, 0.0402, 0.9284, 0.8917, 0.2080, 0.2031),
    "gtf":    (1.7997, 0.5441, 0.3401, 0.0301, 0.8478, 0.8904, 0.2317, 0.1493),
    "mwgf":   (2.0958, 0.7941, 0.5440, 0.0390, 0.9048, 0.9025, 0.2127, 0.1975),
    "msvd":   (2.4940, 0.6187, 0.2753, 0.0283, 0.8884, 0.8822, 0.1896, 0.1668),
    "nsct":   (2.2099, 0.6541, 0.5004, 0.0395, 0.9407, 0.8987, 0.2156, 0.1983),
    "sai":    (2.2028, 0.7558, 0.5456, 0.0384, 0.8946, 0.8996, 0.2065, 0.1975),
    "vsmwls": (2.3324, 0.7026, 0.4307, 0.0354, 0.9256, 0.8828, 0.2051, 0.1980),
}
METRICS = ("MI", "VIF", "Qabf", "SF", "SSIM", "FMI_pixel", "FMI_dct", "FMI_w")

#: Variant key -> (metric, description); keys name what is computed, whatever the default is.
VARIANTS = {
    "MI/bits-sum": ("MI", "bits, sum over sources, exact 256-bin histograms "
                          "(Tang's definition without its 254/255 merge)"),
    "MI/tang": ("MI", "`tang`: bits, sum, uint8 254/255 merge in the joint histogram"),
    "MI/cddfuse": ("MI", "`cddfuse`: nats (sklearn mutual_info_score of the grey levels), sum"),
    "MI/vifb": ("MI", "`vifb`: nats, each image min-max quantised, sum"),
    "MI/bits-mean": ("MI", "bits, mean over sources"),
    "MI/nats-mean": ("MI", "nats, mean over sources"),
    "VIF/sheikh-sum": ("VIF", "`tang` = `cddfuse` ('VIFF'): Sheikh pixel VIF, sigma_n^2 = 2, on 0-255, sum"),
    "VIF/sheikh-mean": ("VIF", "Sheikh pixel VIF on 0-255, mean over sources"),
    "VIF/sheikh-unit-sum": ("VIF", "Sheikh pixel VIF, sigma_n^2 = 2 on [0, 1] data, sum"),
    "VIF/mefb": ("VIF", "`mefb`: Han et al. 2013 VIFF (the paper's citation), one value"),
    "Qabf/tang": ("Qabf", "`tang` = `cddfuse`: Xydeas-Petrovic"),
    "Qabf/vifb": ("Qabf", "`vifb` = `mefb` (255 x scale; differs at exact ties only)"),
    "SF/tang-unit": ("SF", "Tang's formula on [0, 1]"),
    "SF/tang": ("SF", "`tang` = `cddfuse`: the same on 0-255"),
    "SF/vifb": ("SF", "`vifb` = `mefb`: m n denominators, on 0-255"),
    "SF/vifb-unit": ("SF", "VIFB's formula on [0, 1]"),
    "SSIM/matlab-unit-mean": ("SSIM", "Matlab ssim, L = 1 on [0, 1], mean over sources"),
    "SSIM/tang": ("SSIM", "`tang`: Matlab ssim, L = 1 on 0-255, mean"),
    "SSIM/matlab-unit-sum": ("SSIM", "Matlab ssim, L = 1 on [0, 1], sum"),
    "SSIM/tang-sum": ("SSIM", "Matlab ssim, L = 1 on 0-255, sum"),
    "SSIM/vifb": ("SSIM", "`vifb`: Wang ssim_index, valid, L = 255, sum"),
    "SSIM/vifb-mean": ("SSIM", "Wang ssim_index, valid, L = 255, mean"),
    "SSIM/cddfuse": ("SSIM", "`cddfuse`: skimage 0.19 defaults on 0-255 (7x7 uniform, data_range 2), sum"),
    "SSIM/cddfuse-mean": ("SSIM", "skimage 0.19 defaults on 0-255, mean"),
    "SSIM/cddfuse-unit": ("SSIM", "CDDFuse's Evaluator fed [0, 1] floats (data_range 2), sum"),
    "SSIM/skimage-dr255-sum": ("SSIM", "skimage 7x7 uniform, data_range 255 on 0-255, sum"),
    "SSIM/skimage-dr255-mean": ("SSIM", "skimage 7x7 uniform, data_range 255 on 0-255, mean"),
    "FMI_pixel/edge": ("FMI_pixel", "`tang` = `mefb`: Haghighat fast FMI, edge feature (the code default), w = 3"),
    "FMI_pixel/none": ("FMI_pixel", "Haghighat fast FMI, raw pixels ('none'), w = 3"),
    "FMI_dct/dct": ("FMI_dct", "`tang` = `mefb`: Haghighat fast FMI, dct2 feature, w = 3"),
    "FMI_w/dmey": ("FMI_w", "`tang` = `mefb`: Haghighat fast FMI, Matlab 102-tap dmey DWT, w = 3"),
}
#: The slow variants, on the --extra-cases subset: key -> (metric, description, the full-set variant
#: to compare with on the same subset).
EXTRA_VARIANTS = {
    "FMI_pixel/gradient": ("FMI_pixel", "Haghighat's 'gradient' feature (Matlab gradient: d/dx), w = 3",
                           "FMI_pixel/edge"),
    "FMI_pixel/edge-w5": ("FMI_pixel", "edge feature, w = 5", "FMI_pixel/edge"),
    "FMI_dct/w5": ("FMI_dct", "dct2 feature, w = 5", "FMI_dct/dct"),
    "FMI_dct/dct-rows": ("FMI_dct", "1-D DCT-II along rows only (scipy dct(x), as some Python ports)", "FMI_dct/dct"),
    "FMI_dct/jpeg75": ("FMI_dct", "dct2 feature, w = 3, fused image saved as JPEG (quality 75, Matlab's default)",
                       "FMI_dct/dct"),
    "FMI_w/w5": ("FMI_w", "Matlab dmey, w = 5", "FMI_w/dmey"),
    "FMI_w/pywt-dmey": ("FMI_w", "PyWavelets' 62-tap dmey (Python ports), symmetric, w = 3", "FMI_w/dmey"),
    "FMI_w/jpeg75": ("FMI_w", "Matlab dmey, w = 3, fused image saved as JPEG (quality 75)", "FMI_w/dmey"),
    "SSIM/cddfuse-jpeg75": ("SSIM", "`cddfuse` SSIM, fused image saved as JPEG (quality 75)", "SSIM/cddfuse"),
}
#: The `paper` default before this study (issue 21), by variant key.
DEFAULT_BEFORE = {"MI": "MI/bits-sum", "VIF": "VIF/sheikh-sum", "Qabf": "Qabf/tang", "SF": "SF/tang-unit",
                  "SSIM": "SSIM/matlab-unit-mean", "FMI_pixel": "FMI_pixel/edge", "FMI_dct": "FMI_dct/dct",
                  "FMI_w": "FMI_w/dmey"}
#: Rows "METRIC/default": the package's default convention now (``fusion_suite(a, b, f)``).
DEFAULT_KEYS = {f"{m}/default": m for m in METRICS}


# --------------------------------------------------------------------------------------------
# Variants written from their definitions (no convention= names them)
# --------------------------------------------------------------------------------------------

def _gauss(n: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(n) - (n - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim_matlab(x: np.ndarray, y: np.ndarray, L: float) -> float:
    """Matlab ``ssim(x, y)``: 11 x 11 Gaussian (sigma 1.5), replicate padding, K = (0.01, 0.03),
    DynamicRange ``L``, mean of the full map (Wang et al. 2004's formula)."""
    from scipy.ndimage import correlate1d

    g = _gauss()

    def blur(z):
        return correlate1d(correlate1d(z, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return float(np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))))


def ssim_wang_valid(x: np.ndarray, y: np.ndarray) -> float:
    """Wang's ``ssim_index`` (VIFB): the same window, 'valid' positions only, L = 255."""
    from scipy.ndimage import correlate1d

    g = _gauss()

    def blur(z):
        return correlate1d(correlate1d(z, g, axis=0), g, axis=1)[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return float(np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))))


def ssim_skimage(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """scikit-image's ``structural_similarity`` with its (0.19) defaults: 7 x 7 uniform window,
    sample covariance; ``data_range`` 2 is what 0.19 assumed for float input."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(x, y, data_range=data_range))


def fmi_on_maps(ma: np.ndarray, mb: np.ndarray, mf: np.ndarray, window: int = 3) -> float:
    """Haghighat's FMI of three precomputed feature maps, through ``fmi(feature="pixel")``.

    The three maps are mapped to [0, 1] by one common positive affine map: every window is min-max
    scaled by the metric anyway, and a common map keeps equal windows equal (the reference's
    identity rule).
    """
    from fusionbench.metrics.feature_mi import fmi

    lo = min(m.min() for m in (ma, mb, mf))
    hi = max(m.max() for m in (ma, mb, mf))
    scale = (hi - lo) or 1.0
    return fmi(*((m - lo) / scale for m in (ma, mb, mf)), feature="pixel", window=window)


def gradient_feature(x255: np.ndarray) -> np.ndarray:
    """Matlab ``gradient(I)`` with one output: the x (column) derivative, central differences
    inside, one-sided at the borders (Haghighat's 'gradient' feature)."""
    return np.gradient(x255, axis=1)


def dct_rows_feature(x255: np.ndarray) -> np.ndarray:
    """A 1-D DCT-II along each row only (``scipy.fft.dct(x)``, last axis, no normalisation): what a
    Python port that calls a 1-D ``dct`` for Matlab's ``dct2`` computes."""
    import scipy.fft

    return scipy.fft.dct(x255, type=2)


def pywt_dmey_feature(x255: np.ndarray) -> np.ndarray:
    """One-level DWT with PyWavelets' built-in (62-tap) ``dmey``, sub-bands tiled [cA cH; cV cD],
    min-max scaled to [0, 1]: what Python ports of ``fmi.m`` compute."""
    import pywt

    ca, (ch, cv, cd) = pywt.dwt2(x255, "dmey", mode="symmetric")
    tiled = np.block([[ca, ch], [cv, cd]])
    return (tiled - tiled.min()) / (tiled.max() - tiled.min())


def jpeg(x: np.ndarray, quality: int = 75) -> np.ndarray:
    """``x`` (in [0, 1]) written as an 8-bit JPEG of the given quality and read back (uint8)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.rint(x * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


# --------------------------------------------------------------------------------------------
# One triplet
# --------------------------------------------------------------------------------------------

def score_triplet(a: np.ndarray, b: np.ndarray, f: np.ndarray, *, extra: bool, skip=()) -> dict[str, float]:
    """Every variant of :data:`VARIANTS` (and of :data:`EXTRA_VARIANTS` if ``extra``) for one
    triplet of [0, 1] images, leaving out the keys in ``skip``."""
    from fusionbench.metrics.feature_mi import fmi
    from fusionbench.metrics.fusion import fusion_suite, mi, qabf, sf, ssim, vif

    a64, b64, f64 = (x.astype(np.float64) for x in (a, b, f))
    a255, b255, f255 = (np.rint(x * 255) for x in (a64, b64, f64))
    out: dict[str, float] = {}

    def put(key, fn):
        if key not in skip:
            out[key] = float(fn())

    ln2 = math.log(2.0)
    put("MI/bits-sum", lambda: mi(a, b, f, convention="cddfuse") / ln2)  # exact histograms, nats -> bits
    put("MI/tang", lambda: mi(a, b, f, convention="tang"))
    put("MI/cddfuse", lambda: mi(a, b, f, convention="cddfuse"))
    put("MI/vifb", lambda: mi(a, b, f, convention="vifb"))
    put("MI/bits-mean", lambda: mi(a, b, f, convention="cddfuse") / ln2 / 2)
    put("MI/nats-mean", lambda: mi(a, b, f, convention="cddfuse") / 2)
    put("VIF/sheikh-sum", lambda: vif(a, b, f, convention="tang"))
    put("VIF/sheikh-mean", lambda: vif(a, b, f, convention="tang") / 2)
    # vif() reads [0, 1] images as x * 255; images divided by 255 give Sheikh's VIF on [0, 1] data.
    put("VIF/sheikh-unit-sum", lambda: vif(a64 / 255, b64 / 255, f64 / 255, convention="tang"))
    put("VIF/mefb", lambda: vif(a, b, f, convention="mefb"))
    put("Qabf/tang", lambda: qabf(a, b, f, convention="tang"))
    put("Qabf/vifb", lambda: qabf(a, b, f, convention="vifb"))
    put("SF/tang-unit", lambda: sf(f, convention="tang") / 255)
    put("SF/tang", lambda: sf(f, convention="tang"))
    put("SF/vifb", lambda: sf(f, convention="vifb"))
    put("SF/vifb-unit", lambda: sf(f, convention="vifb") / 255)
    put("SSIM/matlab-unit-mean", lambda: (ssim_matlab(f64, a64, 1.0) + ssim_matlab(f64, b64, 1.0)) / 2)
    put("SSIM/tang", lambda: ssim(a, b, f, convention="tang"))
    put("SSIM/matlab-unit-sum", lambda: ssim_matlab(f64, a64, 1.0) + ssim_matlab(f64, b64, 1.0))
    put("SSIM/tang-sum", lambda: 2 * ssim(a, b, f, convention="tang"))
    put("SSIM/vifb", lambda: ssim(a, b, f, convention="vifb"))
    put("SSIM/vifb-mean", lambda: ssim(a, b, f, convention="vifb") / 2)
    put("SSIM/cddfuse", lambda: ssim(a, b, f, convention="cddfuse"))
    put("SSIM/cddfuse-mean", lambda: ssim(a, b, f, convention="cddfuse") / 2)
    put("SSIM/cddfuse-unit", lambda: ssim_skimage(f64, a64, 2) + ssim_skimage(f64, b64, 2))
    put("SSIM/skimage-dr255-sum", lambda: ssim_skimage(f255, a255, 255) + ssim_skimage(f255, b255, 255))
    put("SSIM/skimage-dr255-mean", lambda: (ssim_skimage(f255, a255, 255) + ssim_skimage(f255, b255, 255)) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        put("FMI_pixel/edge", lambda: fmi(a, b, f, feature="edge", convention="tang"))
        put("FMI_pixel/none", lambda: fmi(a, b, f, feature="pixel", convention="tang"))
        put("FMI_dct/dct", lambda: fmi(a, b, f, feature="dct", convention="tang"))
        put("FMI_w/dmey", lambda: fmi(a, b, f, feature="wavelet", convention="tang"))
        if extra:
            fj = jpeg(f64)
            put("FMI_pixel/gradient", lambda: fmi_on_maps(*(gradient_feature(x) for x in (a255, b255, f255))))
            put("FMI_pixel/edge-w5", lambda: fmi(a, b, f, feature="edge", window=5, convention="tang"))
            put("FMI_dct/w5", lambda: fmi(a, b, f, feature="dct", window=5, convention="tang"))
            put("FMI_dct/dct-rows", lambda: fmi_on_maps(*(dct_rows_feature(x) for x in (a255, b255, f255))))
            put("FMI_dct/jpeg75", lambda: fmi(a, b, fj, feature="dct", convention="tang"))
            put("FMI_w/w5", lambda: fmi(a, b, f, feature="wavelet", window=5, convention="tang"))
            put("FMI_w/pywt-dmey", lambda: fmi(*(pywt_dmey_feature(x) for x in (a255, b255, f255)),
                                               feature="pixel", convention="tang"))
            put("FMI_w/jpeg75", lambda: fmi(a, b, fj, feature="wavelet", convention="tang"))
            put("SSIM/cddfuse-jpeg75", lambda: ssim(a, b, fj, convention="cddfuse"))
        if not set(DEFAULT_KEYS) <= set(skip):
            for metric, value in fusion_suite(a, b, f, metrics=list(METRICS)).items():
                out[f"{metric}/default"] = value
    return out


def check_rederived_variants(a, b, f) -> None:
    """The variants written here agree with the package's named conventions where both exist."""
    from fusionbench.metrics.fusion import ssim, vif

    a64, b64, f64 = (x.astype(np.float64) for x in (a, b, f))
    a255, b255, f255 = (np.rint(x * 255) for x in (a64, b64, f64))
    pairs = [
        (ssim(a, b, f, convention="tang"), (ssim_matlab(f255, a255, 1.0) + ssim_matlab(f255, b255, 1.0)) / 2,
         "SSIM tang"),
        (ssim(a, b, f, convention="vifb"), ssim_wang_valid(a255, f255) + ssim_wang_valid(b255, f255), "SSIM vifb"),
        (ssim(a, b, f, convention="cddfuse"), ssim_skimage(f255, a255, 2) + ssim_skimage(f255, b255, 2),
         "SSIM cddfuse"),
    ]
    for ours, theirs, what in pairs:
        assert math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=1e-9), (what, ours, theirs)
    assert vif(a64 / 255, b64 / 255, f64 / 255, convention="tang") > 0


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def _load(run: Path, case: str, method: str):
    from fusionbench.data.io import read_image

    src = run / "sources" / case
    return (read_image(src / "pat.png"), read_image(src / "mri.png"),
            read_image(run / "fused" / method / f"{case}.png"))


def _job(args):
    run, case, method, extra, skip = args
    a, b, f = _load(Path(run), case, method)
    t0 = time.perf_counter()
    values = score_triplet(a, b, f, extra=extra, skip=set(skip))
    return case, method, values, time.perf_counter() - t0


def _paper_median(metric: str) -> float:
    return statistics.median(PAPER_ROWS[m][METRICS.index(metric)] for m in METHODS)


def _row(cache: dict, key: str, metric: str, what: str, subset: list[str]) -> dict | None:
    if not subset:
        return None
    means = {}
    for method in METHODS:
        vals = [cache.get(f"{method}/{c}", {}).get(key) for c in subset]
        if any(v is None for v in vals):
            return None
        means[method] = float(np.mean(vals))
    med = statistics.median(means.values())
    paper = _paper_median(metric)
    # How far each method's mean lies from its own row of the paper: the median factor over methods.
    factor = math.exp(statistics.median(abs(math.log(means[m] / PAPER_ROWS[m][METRICS.index(metric)]))
                                         if means[m] > 0 else math.inf for m in METHODS))
    return {"variant": key, "metric": metric, "what": what, "n_cases": len(subset), "median": med,
            "paper_median": paper, "ratio": med / paper, "within_1_5": 1 / 1.5 <= med / paper <= 1.5,
            "per_method_factor": factor, "per_method": means}


def summarise(cache: dict, cases: list[str], extra_cases: list[str]) -> list[dict]:
    """Per variant: per method the mean over its cases, the median over the seven methods, the
    paper's median, their ratio, and the median over methods of each method's factor from its own
    paper row. Extra variants come with their full-set counterpart on the same subset ("@sub")."""
    rows = []
    for key, (metric, what) in {**VARIANTS, **{k: (m, f"the default now: {METRIC_FUNCTIONS[m]}")
                                             for k, m in DEFAULT_KEYS.items()}}.items():
        row = _row(cache, key, metric, what, cases)
        if row:
            rows.append(row)
    bases = dict.fromkeys(base for _, _, base in EXTRA_VARIANTS.values())
    for base in bases:
        row = _row(cache, base, VARIANTS[base][0], "the same on the subset", extra_cases)
        if row:
            row["variant"] = base + "@sub"
            rows.append(row)
        for key, (metric, what, b) in EXTRA_VARIANTS.items():
            row = _row(cache, key, metric, what, extra_cases) if b == base else None
            if row:
                rows.append(row)
    return rows


METRIC_FUNCTIONS = {"MI": "mi()", "VIF": "vif()", "Qabf": "qabf()", "SF": "sf()", "SSIM": "ssim()",
                    "FMI_pixel": "fmi(feature='edge')", "FMI_dct": "fmi(feature='dct')",
                    "FMI_w": "fmi(feature='wavelet')"}


def print_tables(rows: list[dict]) -> None:
    by_key = {r["variant"]: r for r in rows}
    print("Defaults, before and after (median over the seven classic methods of their mean over the pairs):\n")
    print("| metric | paper median (7 classic rows) | before | ratio | after | ratio |")
    print("|---|---|---|---|---|---|")
    for metric in METRICS:
        before, after = by_key.get(DEFAULT_BEFORE[metric]), by_key.get(f"{metric}/default")
        cells = [f"{r['median']:.4g} | {r['ratio']:.2f}" if r else "- | -" for r in (before, after)]
        print(f"| {metric} | {_paper_median(metric):.4g} | {cells[0]} | {cells[1]} |")
    print("\nEvery variant:\n")
    print("| metric | variant | pairs | our median | paper median | ratio | within 1.5x | per-method factor |")
    print("|---|---|---|---|---|---|---|---|")
    for metric in METRICS:
        for r in rows:
            if r["metric"] == metric:
                print(f"| {metric} | `{r['variant']}`: {r['what']} | {r['n_cases']} | {r['median']:.4g} | "
                      f"{r['paper_median']:.4g} | {r['ratio']:.2f} | {'yes' if r['within_1_5'] else 'no'} | "
                      f"{r['per_method_factor']:.2f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a `fusionbench run --out` folder with the seven classic methods")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--cases", type=int, default=None, help="use only the first N cases (sorted by id)")
    p.add_argument("--extra-cases", type=int, default=12,
                   help="run the slow FMI/JPEG extras on the first N cases (default 12; 0: none)")
    p.add_argument("--cache", type=Path, default=None, help="JSON file of per-triplet values (read and updated)")
    p.add_argument("--json", type=Path, default=None, help="write the summary rows here")
    args = p.parse_args(argv)

    cases = sorted((d.name for d in (args.run / "sources").iterdir() if d.is_dir()),
                   key=lambda s: (len(s), s))
    if args.cases:
        cases = cases[:args.cases]
    extra_cases = cases[:args.extra_cases]
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}

    a, b, f = _load(args.run, cases[0], METHODS[0])
    check_rederived_variants(a, b, f)

    todo = []
    for case in cases:
        want = set(VARIANTS) | set(DEFAULT_KEYS) | (set(EXTRA_VARIANTS) if case in extra_cases else set())
        for method in METHODS:
            have = set(cache.get(f"{method}/{case}", {}))
            if want - have:
                todo.append((str(args.run), case, method, case in extra_cases, sorted(have)))
    t0 = time.perf_counter()
    seconds = []
    if todo:
        print(f"scoring {len(todo)} triplets with {args.jobs} job(s)", file=sys.stderr)
        pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
        results = pool.map(_job, todo) if pool else map(_job, todo)
        for i, (case, method, values, sec) in enumerate(results, 1):
            cache.setdefault(f"{method}/{case}", {}).update(values)
            seconds.append(sec)
            if args.cache and (i % 14 == 0 or i == len(todo)):
                args.cache.write_text(json.dumps(cache, indent=0, sort_keys=True))
            if i % 14 == 0:
                print(f"  {i}/{len(todo)}  {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if pool:
            pool.shutdown()
    rows = summarise(cache, cases, extra_cases)
    print_tables(rows)
    if seconds:
        print(f"\n{len(seconds)} triplets scored in {time.perf_counter() - t0:.0f} s wall with {args.jobs} job(s); "
              f"{np.mean(seconds):.1f} s per triplet on one core", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
