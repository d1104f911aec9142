"""Known misalignment of registered real pairs: ground truth for registration on real images.

Dataset option ``folder:PATH,misalign=mild|moderate|severe[,seed=N]``
(:func:`fusionbench.data.folder.load_folder` with ``misalign=``). Each PAT image of an already
registered pair is moved by the phantom's own deformation model
(:func:`fusionbench.data.phantom.deformation.misalignment`: a small affine map about the image
centre composed with a diffeomorphism integrated from a smooth stationary velocity field, scaled so
that the largest displacement inside the body is the preset of
:data:`fusionbench.data.phantom.config.MISALIGN_PRESETS` -- 2 / 6 / 12 px at 256², scaled with
the image side), exactly as the phantom generator moves its PAT frame:

- ``pat = warp(pat_registered, flow_mri_to_pat)`` (bilinear, border repeated),
- ``labels_pat = warp(labels_mri, flow_mri_to_pat, order=0)`` (nearest neighbour),
- ``flow_true`` such that ``warp(pat, flow_true)`` is aligned to the MRI again (the
  :class:`fusionbench.data.Case` convention), up to interpolation error.

So registration methods get endpoint errors (``EPE_mean``, ``EPE_p95``) and, where label maps
exist, warped-label Dice on real images. The MRI is untouched.

Body mask (where the preset's largest displacement is measured): ``labels_mri > 0`` when the case
has MRI labels; otherwise from the MRI (:func:`body_mask`): Gaussian smoothing (σ = 1 px), a
threshold halfway between the background's median and Otsu's threshold (Otsu alone separates the
bright organs of a T2 image from the body's own dark tissue), largest connected component,
closing with a disk of radius 6 % of the image side (bridges dark tissue reaching the skin),
holes filled.

Randomness: one stream per case, seeded by the option ``seed`` (default 0) and the case id
(:func:`case_rng`), so a case's field does not depend on which other cases the folder holds or on
their order, differs between cases, and is the same at every level (the levels scale one field,
as in the phantom, whose deformation stream does not depend on the preset either).

Non-square images: the field is drawn on the square of the larger side (at least 32 px) with the
image centred in it and cropped back -- displacements do not depend on where the grid's origin
lies, so the crop is exact. Sides above 1024 px are refused (pass ``resize=``).
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import ndimage as ndi

from ..warp import warp
from .case import Case
from .io import ImageError

__all__ = ["MISALIGN_VERSION", "MISALIGN_LEVELS", "misalign_case", "misalignment_field", "body_mask", "case_rng",
           "check_level"]

#: Bump when the same registered pair, level and seed give another field or moved PAT
#: (dataset fingerprints; the phantom's GENERATOR_VERSION covers its deformation model).
MISALIGN_VERSION = "1"
#: The levels the ``misalign=`` option accepts (the phantom's presets but ``none``).
MISALIGN_LEVELS = ("mild", "moderate", "severe")
_MIN_SIDE, _MAX_SIDE = 32, 1024
_CLOSING = 0.06  # radius of the body mask's closing disk, as a fraction of the image side


def check_level(level) -> str:
    """The validated level name (lower case)."""
    name = str(level).strip().lower() if isinstance(level, str) else level
    if name not in MISALIGN_LEVELS:
        raise ImageError(f"misalign={level!r}: expected one of {', '.join(MISALIGN_LEVELS)}")
    return name


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The per-case random stream: SHA-256 of the seed and the case id (stable across runs)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ImageError(f"misalign seed must be an integer, got {seed!r}")
    digest = hashlib.sha256(f"fusionbench.misalign\0{int(seed)}\0{case_id}".encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


def body_mask(mri: np.ndarray, labels_mri: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """``(mask, source)``: ``labels_mri > 0`` if given and non-empty (source ``"labels_mri"``),
    else the largest connected component of the MRI smoothed with σ = 1 px above the threshold
    halfway between Otsu's and the median of the pixels below it (the background), closed with a
    disk of radius 6 % of the image side, holes filled (source ``"otsu"``). A flat MRI gives the
    whole image (source ``"image"``)."""
    if labels_mri is not None and np.any(labels_mri > 0):
        return np.asarray(labels_mri) > 0, "labels_mri"
    from skimage.filters import threshold_otsu

    smooth = ndi.gaussian_filter(np.asarray(mri, np.float64), 1.0)
    if np.ptp(smooth) < 1e-6:
        return np.ones(smooth.shape, bool), "image"
    otsu = threshold_otsu(smooth)
    # Halfway between the background's median and Otsu's threshold: Otsu alone splits the body's
    # own dark tissue (muscle, spine) from its bright organs on T2 images and cuts bays into it.
    level = 0.5 * (otsu + float(np.median(smooth[smooth <= otsu])))
    labels, n = ndi.label(smooth > level)
    if n == 0:
        return np.ones(smooth.shape, bool), "image"
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    # Closing bridges dark tissue (spine, lung, bowel gas) that reaches the skin, where the
    # threshold alone cuts bays into the body; padding keeps the image border from eroding it.
    r = max(2, round(_CLOSING * max(largest.shape)))
    disk = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
    closed = ndi.binary_closing(np.pad(largest, r + 1), structure=disk)[r + 1:-r - 1, r + 1:-r - 1]
    return ndi.binary_fill_holes(closed), "otsu"


def misalignment_field(body: np.ndarray, level: str, rng: np.random.Generator):
    """``(flow_true, flow_mri_to_pat, max_disp_px)`` of the phantom's model on ``body``'s grid.

    ``flow_true`` maps the moved PAT back onto the MRI (``warp(moved, flow_true) ≈ registered``),
    ``flow_mri_to_pat`` moves the registered PAT (``moved = warp(registered, flow_mri_to_pat)``).
    """
    from .phantom.config import PhantomConfig
    from .phantom.deformation import misalignment

    level = check_level(level)
    body = np.asarray(body, bool)
    h, w = body.shape
    n = max(h, w, _MIN_SIDE)
    if n > _MAX_SIDE:
        raise ImageError(f"misalign={level}: image of {h}x{w} px; the deformation model takes sides up to "
                         f"{_MAX_SIDE} px (add resize=HxW to the dataset spec)")
    r0, c0 = (n - h) // 2, (n - w) // 2
    square = np.zeros((n, n), bool)
    square[r0:r0 + h, c0:c0 + w] = body
    # The phantom's px_mm (fov 40 mm over the side) keeps its affine shift in the same proportion
    # to the image side as in the phantom at any size. Pinned to the 1.2 look (its 40 mm field of
    # view) so that the fields, and the dataset fingerprints that stand for them, do not change
    # with the phantom's default look.
    flow_true, flow_inv, max_disp = misalignment(PhantomConfig(size=n, misalign=level, version="1.2"), rng, square)
    crop = (slice(None), slice(r0, r0 + h), slice(c0, c0 + w))
    return (np.ascontiguousarray(flow_true[crop]), np.ascontiguousarray(flow_inv[crop]), float(max_disp))


def misalign_case(case: Case, level: str, seed: int = 0) -> Case:
    """A copy of a registered case with its PAT moved and the true flow recorded (module docstring).

    ``labels_pat`` becomes ``labels_mri`` warped like the PAT (nearest neighbour). A case with
    ``labels_pat`` but no ``labels_mri`` is registered, so its labels are MRI-space labels: they
    become ``labels_mri`` and are warped into ``labels_pat``. ``meta`` gains ``misalign``,
    ``misalign_seed``, ``max_disp_px``, ``body_mask`` (its source) and ``flow_mri_to_pat``.

    Raises
    ------
    ImageError
        The case already has a ``flow_true`` (it is not a registered pair), a bad level or seed.
    """
    level = check_level(level)
    if case.flow_true is not None:
        raise ImageError(f"{case.meta.get('pat_file', case.id)}: misalign={level} moves registered pairs, "
                         f"but case {case.id!r} has a flow file (its pair is not registered); drop the flow "
                         "or the misalign option")
    rng = case_rng(seed, case.id)
    labels_mri = case.labels_mri if case.labels_mri is not None else case.labels_pat
    body, source = body_mask(case.mri, labels_mri)
    flow_true, flow_inv, max_disp = misalignment_field(body, level, rng)
    pat = np.clip(warp(case.pat, flow_inv), 0.0, 1.0)
    labels_pat = None if labels_mri is None else warp(labels_mri, flow_inv, order=0)
    meta = {**case.meta, "misalign": level, "misalign_seed": int(seed), "max_disp_px": max_disp,
            "body_mask": source, "flow_mri_to_pat": flow_inv}
    return Case(case.id, pat, case.mri, labels_mri=labels_mri, labels_pat=labels_pat, flow_true=flow_true,
                meta=meta, roi=body)
