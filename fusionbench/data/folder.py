"""Users' own PAT/MRI pairs, or PAT images alone, from a folder (dataset spec ``folder:PATH``).

Layouts
-------
(a) Subfolders, files matched by stem (folder names case-insensitive)::

    PATH/pat/NAME.ext          moving image (required)
    PATH/mri/NAME.ext          fixed image (required)
    PATH/labels_mri/NAME.ext   integer label map in MRI space (optional)
    PATH/labels_pat/NAME.ext   integer label map in PAT space (optional)
    PATH/flow/NAME.npy         (2, H, W) float displacement that aligns PAT to MRI (optional)

    Split subfolders ``PATH/train/``, ``PATH/val/``, ``PATH/test/``, each laid out as above,
    give the train/val/test split.

(b) ``PATH/manifest.csv`` (or PATH is the CSV itself) with columns ``id, pat, mri`` and
    optionally ``labels_mri, labels_pat, flow, split``; paths relative to the CSV. Other
    columns go into ``Case.meta``. This is the layout
    :func:`fusionbench.data.phantom.write_phantom_folder` writes; a manifest wins over
    subfolders.

Optional files may be missing for some cases (partial annotation); their fields are then None.

PAT-only datasets (e.g. the output of ``fusionbench data import coco``): a ``pat/`` folder
without ``mri/`` (optional ``labels_pat/``), or a manifest without an ``mri`` column or with that
column empty on every row (``id,pat[,labels_pat,split]``). Their cases have ``mri=None``
(:class:`fusionbench.data.Case`); they serve the task evaluations of the PAT images (``fusionbench
run --methods none --tasks contour,organs``), not registration or fusion. ``labels_mri/``,
``flow/`` (or those manifest columns) need the MRI and are an error without it, and so is
``misalign=``. A dataset is either all pairs or all PAT-only: a manifest with the ``mri`` path
filled on some rows and empty on others, or split folders of which some have ``mri/`` and some
not, is an error naming the manifest or folders.

Formats: PNG, TIFF, JPEG, BMP, .npy, NIfTI (.nii, .nii.gz) and DICOM (.dcm file, or a
subfolder holding one series, named like a file stem: ``pat/NAME/``). A 3-D file is a volume
and is cut into 2-D slices with case ids ``NAME_z012``. The slice axis defaults to the format's
own (:class:`fusionbench.data.io.ArrayFile`): the last axis for NIfTI (the voxel k index,
axial for scanner-aligned data; slices are the stored ``data[:, :, k]`` without reorientation,
so PAT and MRI must be stored in the same orientation), axis 0 for DICOM frames or series,
TIFF pages and .npy stacks (Z, H, W). ``slice_axis=`` overrides it for both modalities. Label
volumes and flows (``(2, *volume_shape)``) are cut along the same axis.

Intensities (``intensity=``, see :func:`fusionbench.data.io.normalize_intensity`): ``"auto"``
(default) divides 8/16-bit unsigned data by their dtype's maximum (k/255, k/65535) and min-max
rescales float and signed data -- NIfTI, DICOM and float .npy -- over the whole file, so the
slices of one volume share one mapping. A signed PAT image maps its minimum to 0 and maximum to
1. ``"minmax"`` rescales every file, ``"none"`` requires data already in [0, 1].

Splits: the manifest's ``split`` column or the split subfolders. Without either, every case is
in ``"test"``; asking for ``"train"`` or ``"val"`` raises :class:`SplitError`, whose one-line
message says how to add a split. ``split_fractions=`` (dataset option ``split=auto`` or
``split=auto:TRAIN/VAL/TEST``) gives a folder without a split a deterministic one
(:func:`auto_split`): each pair goes by its id -- the file stem, or the manifest's ``id`` -- to
train, val or test according to a SHA-256 hash of that id, with the fractions
:data:`DEFAULT_SPLIT_FRACTIONS` (70 % train, 10 % val, 20 % test) by default. The hash of one id
does not depend on the other files, so adding or removing a pair never moves another pair between
splits, and listing order plays no part; the fractions hold in expectation (binomial counts: of 36 pairs
25.2 ± 2.7 train, 3.6 ± 1.8 val, 7.2 ± 2.4 test, mean ± s.d.). All slices of a volume share its file's split.
A folder that defines its own split and asks for ``split=auto`` is an error.

Ground truth on registered pairs: ``misalign=`` (dataset option ``misalign=mild|moderate|severe
[,seed=N]``) moves each PAT by the phantom's deformation model and records ``flow_true``
(:mod:`fusionbench.data.misalign`).

Every problem raises :class:`fusionbench.data.ImageError` naming the file.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..warp import check_flow
from .case import Case
from .io import (READABLE_SUFFIXES, ArrayFile, ColourImageError, ImageError, as_image, file_stem,
                 file_suffix, normalize_intensity, read_array)

__all__ = ["load_folder", "discover_pairs", "folder_files", "PairEntry", "SplitError", "SPLITS",
           "MANIFEST_NAME", "LOADER_VERSION", "DEFAULT_SPLIT_FRACTIONS", "auto_split", "parse_split_option"]

#: Bump when the loader maps the same files to different cases (part of dataset fingerprints).
LOADER_VERSION = "1"
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.csv"
IMAGE_ROLES = ("pat", "mri")
OPTIONAL_ROLES = ("labels_mri", "labels_pat", "flow")
#: Roles on the MRI's grid: a PAT-only case has none of them.
MRI_ROLES = ("mri", "labels_mri", "flow")
ROLES = IMAGE_ROLES + OPTIONAL_ROLES
MANIFEST_COLUMNS = ("id",) + ROLES + ("split",)
_PARTNER = {"pat": "MRI", "mri": "PAT"}
#: Train / val / test fractions of ``split=auto``.
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
#: Names the rule of :func:`auto_split` (part of dataset fingerprints): bump if it ever changes.
AUTO_SPLIT_RULE = "sha256(id)[:8] / 2**64, v1"


class SplitError(ValueError):
    """The requested split does not exist in a folder dataset (the message says how to add one)."""


@dataclass(frozen=True)
class PairEntry:
    """One PAT/MRI pair (or one PAT image of a PAT-only dataset) found in a folder, before any
    pixel is read.

    ``files`` maps role (``pat``, ``mri``, ``labels_mri``, ``labels_pat``, ``flow``) to a path;
    ``split`` is None when the dataset defines no split; ``meta`` holds extra manifest columns.
    """

    id: str
    files: dict[str, Path]
    split: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def has_mri(self) -> bool:
        return "mri" in self.files


# ---------------------------------------------------------------------------------------------
# splits for folders without one


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ImageError(f"split fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(values) != 3 or not all(math.isfinite(f) and f >= 0 for f in values) \
            or abs(sum(values) - 1.0) > 1e-6:
        raise ImageError(f"split fractions must be three numbers >= 0 summing to 1 (train, val, test), "
                         f"got {fractions!r}")
    return values


def parse_split_option(value) -> tuple[float, float, float]:
    """Fractions of the dataset option ``split=auto`` (the defaults) or ``split=auto:0.7/0.1/0.2``.

    A tuple or list of three fractions passes through (validated)."""
    if isinstance(value, (tuple, list)):
        return _check_fractions(value)
    text = str(value).strip().lower()
    if text == "auto":
        return DEFAULT_SPLIT_FRACTIONS
    if text.startswith("auto:") and len(text[5:].split("/")) == 3:
        try:
            return _check_fractions(text[5:].split("/"))
        except ImageError:
            pass
    raise ImageError(f"split={value}: expected split=auto (70/10/20 % train/val/test by file stem) or "
                     "split=auto:TRAIN/VAL/TEST with three fractions >= 0 summing to 1, e.g. "
                     "split=auto:0.7/0.1/0.2")


def auto_split(case_id: str, fractions=DEFAULT_SPLIT_FRACTIONS) -> str:
    """The split of ``case_id`` under ``split=auto``: ``u`` = the first 8 bytes of SHA-256 of the
    id (UTF-8) read as an unsigned big-endian integer over 2**64, uniform in [0, 1); train if
    ``u < f_train``, val if ``u < f_train + f_val``, else test. Depends on nothing but the id."""
    f_train, f_val, _ = _check_fractions(fractions)
    u = int.from_bytes(hashlib.sha256(str(case_id).encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    return "train" if u < f_train else "val" if u < f_train + f_val else "test"


# ---------------------------------------------------------------------------------------------
# discovery


def _subdirs_by_name(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.is_dir() and not p.name.startswith("."):
            key = p.name.lower()
            if key in found:
                raise ImageError(f"{folder}: folders {found[key].name}/ and {p.name}/ differ only in case")
            found[key] = p
    return found


def _list_role(folder: Path) -> dict[str, Path]:
    """Stem -> file (or DICOM series folder) in one role folder."""
    by_stem: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if not (p.is_dir() or file_suffix(p) in READABLE_SUFFIXES):
            continue
        stem = p.name if p.is_dir() else file_stem(p)
        if stem in by_stem:
            raise ImageError(f"{p}: two files for case {stem!r} ({by_stem[stem].name} and {p.name}); "
                             "keep one")
        by_stem[stem] = p
    return by_stem


def _pair_subfolders(root: Path, split: str | None) -> list[PairEntry]:
    dirs = _subdirs_by_name(root)
    paired = "mri" in dirs
    if not paired:
        for role in MRI_ROLES[1:]:
            if role in dirs:
                raise ImageError(f"{dirs[role]}: {dirs[role].name}/ without an mri/ folder ({role} lives on the "
                                 "MRI's grid); add the MRI images in mri/, or remove it for a PAT-only dataset")
    listed = {role: _list_role(dirs[role]) for role in ROLES if role in dirs}
    for role in IMAGE_ROLES if paired else ("pat",):
        if not listed[role]:
            raise ImageError(f"{dirs[role]}: no image files (readable: {', '.join(READABLE_SUFFIXES)}, "
                             "or DICOM series folders)")
    for role, other in (("pat", "mri"), ("mri", "pat")) if paired else ():
        unmatched = sorted(set(listed[role]) - set(listed[other]))
        if unmatched:
            first = listed[role][unmatched[0]]
            more = f" (and {len(unmatched) - 1} more unmatched in {dirs[role].name}/)" if len(unmatched) > 1 else ""
            raise ImageError(f"{first}: {dirs[role].name}/{first.name} has no {_PARTNER[role]} partner "
                             f"(expected {dirs[other].name}/{unmatched[0]}.<ext>){more}")
    stems = sorted(listed["pat"])
    for role in OPTIONAL_ROLES:
        for stem, p in listed.get(role, {}).items():
            if stem not in listed["pat"]:
                what = "PAT/MRI pair" if paired else "PAT image"
                raise ImageError(f"{p}: {dirs[role].name}/{p.name} has no {what} named {stem!r}")
            if role == "flow" and file_suffix(p) != ".npy":
                raise ImageError(f"{p}: flows must be .npy arrays of shape (2, H, W)")
    return [PairEntry(stem, {role: listed[role][stem] for role in listed if stem in listed[role]}, split)
            for stem in stems]


def _read_manifest(csv_path: Path) -> list[PairEntry]:
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ImageError(f"{csv_path}: unreadable manifest ({type(exc).__name__}: {exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ImageError(f"{csv_path}: empty manifest (expected a header id,pat,mri[,...] and one row per pair)")
    header = [h.strip().lower() for h in rows[0]]
    for col in ("id", "pat"):
        if col not in header:
            raise ImageError(f"{csv_path}: missing column {col!r} (header: {','.join(header)}; "
                             f"required id,pat and, for PAT/MRI pairs, mri; optional "
                             f"{','.join(OPTIONAL_ROLES)},split)")
    for col in header:
        if not col:
            raise ImageError(f"{csv_path}: empty column name in the header")
        if col not in MANIFEST_COLUMNS:
            close = difflib.get_close_matches(col, MANIFEST_COLUMNS, n=1, cutoff=0.75)
            if close:
                raise ImageError(f"{csv_path}: unknown column {col!r} (did you mean {close[0]!r}?)")
    if len(set(header)) != len(header):
        raise ImageError(f"{csv_path}: repeated column name in header {','.join(header)}")
    entries, seen = [], set()
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ImageError(f"{csv_path} line {line}: {len(row)} fields, header has {len(header)}")
        rec = {h: cell.strip() for h, cell in zip(header, row)}
        where = f"{csv_path} line {line}"
        case_id = rec["id"]
        if not case_id:
            raise ImageError(f"{where}: empty id")
        if case_id in seen:
            raise ImageError(f"{where}: duplicate id {case_id!r}")
        seen.add(case_id)
        files = {}
        for role in ROLES:
            value = rec.get(role, "")
            if not value:
                if role == "pat":
                    raise ImageError(f"{where} (id {case_id}): empty pat path")
                continue
            p = Path(value) if Path(value).is_absolute() else base / value
            if not p.exists():
                raise ImageError(f"{p}: {role} file of manifest {where} (id {case_id}) not found")
            if role == "flow" and file_suffix(p) != ".npy":
                raise ImageError(f"{p}: flows must be .npy arrays of shape (2, H, W)")
            files[role] = p
        if "mri" not in files:
            for role in MRI_ROLES[1:]:
                if role in files:
                    raise ImageError(f"{where} (id {case_id}): {role} given without an mri file ({role} lives "
                                     "on the MRI's grid; PAT-space labels go in labels_pat)")
        split = None
        if "split" in rec:
            split = rec["split"].lower()
            if split not in SPLITS:
                raise ImageError(f"{where} (id {case_id}): split {rec['split']!r} is not one of "
                                 f"{', '.join(SPLITS)}")
        meta = {h: v for h, v in rec.items() if h not in MANIFEST_COLUMNS}
        entries.append(PairEntry(case_id, files, split, meta))
    if not entries:
        raise ImageError(f"{csv_path}: manifest has a header but no rows")
    if len({e.has_mri for e in entries}) > 1:
        lines = {e.id: n for n, e in enumerate(entries, start=2)}
        pair = next(e for e in entries if e.has_mri)
        alone = next(e for e in entries if not e.has_mri)
        raise ImageError(f"{csv_path}: mixes PAT/MRI pairs and PAT-only rows (line {lines[pair.id]}, id "
                         f"{pair.id}, has an mri file; line {lines[alone.id]}, id {alone.id}, has none); a "
                         "dataset is all pairs (mri on every row) or all PAT-only (no mri column)")
    return entries


def discover_pairs(path: str | os.PathLike) -> list[PairEntry]:
    """Find the pairs of a folder dataset (see the module docstring) without reading pixels.

    Raises
    ------
    ImageError
        Missing folder, no recognised layout, a file without partner, duplicate stems, a bad
        manifest column or row. The message names the file.
    """
    root = Path(path)
    if not root.exists():
        raise ImageError(f"{root}: dataset folder not found")
    if root.is_file():
        if file_suffix(root) != ".csv":
            raise ImageError(f"{root}: expected a folder or a manifest .csv file")
        return _read_manifest(root)
    if (root / MANIFEST_NAME).is_file():
        return _read_manifest(root / MANIFEST_NAME)
    dirs = _subdirs_by_name(root)
    if "pat" in dirs or "mri" in dirs:
        if "pat" not in dirs:  # a pat/ folder alone is a PAT-only dataset; an mri/ alone is a mistake
            raise ImageError(f"{root}: has an mri/ folder but no pat/ folder")
        return _pair_subfolders(root, None)
    split_dirs = [s for s in SPLITS if s in dirs]
    if split_dirs:
        entries = [e for s in split_dirs for e in _split_folder(dirs[s], s)]
        seen: dict[str, str] = {}
        for e in entries:
            if e.id in seen:
                raise ImageError(f"{e.files['pat']}: case {e.id!r} is in both {seen[e.id]}/ and {e.split}/")
            seen[e.id] = e.split
        with_mri = sorted({e.split for e in entries if e.has_mri})
        without = sorted({e.split for e in entries if not e.has_mri})
        if with_mri and without:
            raise ImageError(f"{root}: split folders {', '.join(s + '/' for s in with_mri)} have an mri/ folder "
                             f"but {', '.join(s + '/' for s in without)} not; a dataset is all PAT/MRI pairs "
                             "or all PAT-only")
        return entries
    raise ImageError(f"{root}: no pat/ and mri/ folders, no {MANIFEST_NAME} and no train/val/test folders "
                     "(see fusionbench.data.folder for the layouts)")


def _split_folder(folder: Path, split: str) -> list[PairEntry]:
    dirs = _subdirs_by_name(folder)
    if "pat" not in dirs:
        raise ImageError(f"{folder}: split folder without a pat/ folder")
    return _pair_subfolders(folder, split)


def folder_files(path: str | os.PathLike) -> list[Path]:
    """Every file a folder dataset reads (manifest included), sorted; for fingerprints."""
    root = Path(path)
    files: set[Path] = set()
    if root.is_file():
        files.add(root)
    elif (root / MANIFEST_NAME).is_file():
        files.add(root / MANIFEST_NAME)
    for entry in discover_pairs(root):
        for p in entry.files.values():
            files.update(sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p])
    return sorted(files)


# ---------------------------------------------------------------------------------------------
# reading and slicing


def _normalise_resize(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    if isinstance(resize, (int, np.integer)):
        resize = (resize, resize)
    try:
        h, w = (int(v) for v in resize)
    except (TypeError, ValueError):
        raise ImageError(f"resize must be (H, W) or an int, got {resize!r}") from None
    if h < 2 or w < 2:
        raise ImageError(f"resize must be at least (2, 2), got {(h, w)}")
    return h, w


def _resize(arr: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    from skimage.transform import resize

    if arr.shape == shape:
        return arr
    downsampling = shape[0] < arr.shape[0] or shape[1] < arr.shape[1]
    out = resize(arr, shape, order=order, mode="edge", preserve_range=True,
                 anti_aliasing=bool(order > 0 and downsampling))
    return out.astype(arr.dtype)


def _resize_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    # Displacements are in pixels, so they scale with the grid (skimage maps pixel centres).
    scale = np.array([shape[0] / flow.shape[1], shape[1] / flow.shape[2]], np.float32)
    return np.stack([_resize(flow[c], shape, 1) * scale[c] for c in range(2)])


def _read_labels(path: Path) -> ArrayFile:
    try:
        loaded = read_array(path)
    except ColourImageError:
        raise ImageError(f"{path}: colour label map; expected an integer label image (one id per pixel)") from None
    lab = loaded.array
    if lab.dtype == bool:
        lab = lab.astype(np.uint8)
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.issubdtype(lab.dtype, np.floating) or not np.all(np.isfinite(lab)) \
                or np.any(lab != np.round(lab)):
            raise ImageError(f"{path}: label map must hold integer ids, got non-integer {lab.dtype} values")
        lab = lab.astype(np.int32)
    if lab.min() < 0:
        raise ImageError(f"{path}: negative label id {int(lab.min())}")
    return ArrayFile(loaded.path, lab, loaded.format, loaded.spacing, loaded.slice_axis)


def _read_flow(path: Path, expected: tuple[int, ...]) -> np.ndarray:
    try:
        flow = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ImageError(f"{path}: unreadable flow ({type(exc).__name__}: {exc})") from None
    if not np.issubdtype(flow.dtype, np.number) or np.issubdtype(flow.dtype, np.complexfloating):
        raise ImageError(f"{path}: flow dtype {flow.dtype}; expected real numbers")
    try:
        return check_flow(flow, tuple(expected), str(path))
    except ValueError as exc:
        raise ImageError(f"{exc} (channel 0 row shift, channel 1 column shift, on the MRI grid)") from None


def _slices(arr: np.ndarray, axis: int, path: Path) -> np.ndarray:
    """(n, H, W) view of a 2-D image (n = 1) or a volume cut along ``axis``."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise ImageError(f"{path}: {arr.ndim}-D array of shape {arr.shape}; expected a 2-D image or a 3-D volume")
    if not -3 <= axis < 3:
        raise ImageError(f"{path}: slice_axis {axis} out of range for a 3-D volume")
    return np.moveaxis(arr, axis, 0)


def _load_entry(entry: PairEntry, *, resize, to_gray: bool, intensity: str, slice_axis: int | None) -> list[Case]:
    roles = IMAGE_ROLES if entry.has_mri else ("pat",)
    images = {role: read_array(entry.files[role], to_gray=to_gray) for role in roles}
    pat, mri = images["pat"], images.get("mri")
    # The MRI's grid names the slices, the spacing and the flows; a PAT-only case has only the PAT's.
    ref_role = "mri" if mri is not None else "pat"
    ref = images[ref_role]
    if mri is not None and pat.array.ndim != mri.array.ndim:
        raise ImageError(f"{pat.path}: PAT has shape {pat.array.shape} but its MRI partner {mri.path} "
                         f"has shape {mri.array.shape} (both must be 2-D images or both volumes)")
    axes = {role: (slice_axis if slice_axis is not None else f.slice_axis) for role, f in images.items()}
    stacks = {role: _slices(normalize_intensity(f.array, intensity, name=f.path), axes[role], f.path)
              for role, f in images.items()}
    if mri is not None:
        if len(stacks["pat"]) != len(stacks["mri"]):
            raise ImageError(f"{pat.path}: {len(stacks['pat'])} slices but its MRI partner {mri.path} has "
                             f"{len(stacks['mri'])}")
        if stacks["pat"].shape != stacks["mri"].shape and resize is None:
            raise ImageError(f"{pat.path}: PAT slice shape {stacks['pat'].shape[1:]} differs from MRI "
                             f"{mri.path} {stacks['mri'].shape[1:]} (pass resize=(H, W) / --resize HxW "
                             "to bring both to one size)")
    extras: dict[str, np.ndarray] = {}
    for role in ("labels_mri", "labels_pat"):
        if role in entry.files:
            image = images[role.split("_")[1]]
            lab = _read_labels(entry.files[role])
            if lab.array.shape != image.array.shape:
                raise ImageError(f"{lab.path}: label map shape {lab.array.shape} differs from "
                                 f"{image.path} {image.array.shape}")
            extras[role] = _slices(lab.array, axes[role.split("_")[1]], lab.path)
    if "flow" in entry.files:
        flow = _read_flow(entry.files["flow"], mri.array.shape)
        extras["flow_true"] = (flow[:, None] if flow.ndim == 3 else
                               np.moveaxis(flow, 1 + axes["mri"] % 3, 1)).swapaxes(0, 1)
    volume = ref.array.ndim == 3
    n = len(stacks[ref_role])
    width = max(3, len(str(n - 1)))
    target = _normalise_resize(resize)
    spacing = _in_plane_spacing(ref, axes[ref_role])
    spacing_k = spacing
    cases = []
    for k in range(n):
        pat_k = stacks["pat"][k]
        mri_k = stacks["mri"][k] if mri is not None else None
        ref_k = stacks[ref_role][k]
        fields = {key: v[k] for key, v in extras.items()}
        meta = {"source": "folder", "split": entry.split or "test",
                **{f"{role}_file": str(p) for role, p in entry.files.items()}, **entry.meta}
        if volume:
            meta.update(slice=k, slice_axis=axes[ref_role])
        if target is not None and (pat_k.shape != target or ref_k.shape != target):
            meta["resized_from"] = {role: stacks[role][k].shape for role in roles}
            if "labels_pat" in fields:
                fields["labels_pat"] = _resize(fields["labels_pat"], target, 0)
            if "labels_mri" in fields:
                fields["labels_mri"] = _resize(fields["labels_mri"], target, 0)
            if "flow_true" in fields:
                fields["flow_true"] = _resize_flow(fields["flow_true"], target)
            if spacing is not None:
                spacing_k = (spacing[0] * ref_k.shape[0] / target[0], spacing[1] * ref_k.shape[1] / target[1])
            pat_k = np.clip(_resize(pat_k, target, 1), 0, 1)
            if mri_k is not None:
                mri_k = np.clip(_resize(mri_k, target, 1), 0, 1)
        if spacing is not None:
            meta["pixel_spacing_mm"] = spacing_k
        case_id = f"{entry.id}_z{k:0{width}d}" if volume else entry.id
        cases.append(Case(case_id, as_image(pat_k, name=pat.path),
                          None if mri_k is None else as_image(mri_k, name=mri.path), meta=meta, **fields))
    return cases


def _in_plane_spacing(f: ArrayFile, axis: int) -> tuple[float, float] | None:
    if f.spacing is None or len(f.spacing) != f.array.ndim:
        return None
    spacing = list(f.spacing)
    if f.array.ndim == 3:
        del spacing[axis % 3]
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        return None
    return float(spacing[0]), float(spacing[1])


def load_folder(path: str | os.PathLike, *, split: str | None = None, resize=None, to_gray: bool = False,
                intensity: str = "auto", slice_axis: int | None = None, split_fractions=None,
                misalign: str | None = None, misalign_seed: int | None = None) -> list[Case]:
    """Load a user's PAT/MRI pairs or PAT-only images (layouts, formats and conventions: the
    module docstring).

    Parameters
    ----------
    path : path-like
        The dataset folder, or a manifest .csv file.
    split : {"train", "val", "test"}, optional
        Only the cases of this split; None returns every case (``meta["split"]`` says which).
    resize : (int, int) or int, optional
        Resize every slice to (H, W): images bilinearly (anti-aliased when shrinking), label
        maps by nearest neighbour, flows bilinearly with displacements scaled by the size ratio.
        Needed when a PAT and its MRI partner differ in shape. A flow file lives on the MRI
        grid (shape ``(2, *mri_shape)``) and is scaled with the MRI's size ratio.
    to_gray : bool
        Convert colour files to gray (BT.601 luma) instead of rejecting them.
    intensity : {"auto", "minmax", "none"}
        How stored values become [0, 1], per file (:func:`fusionbench.data.io.normalize_intensity`).
    slice_axis : int, optional
        Axis along which volumes are cut; default the format's own (last for NIfTI, first for
        DICOM, TIFF and .npy).
    split_fractions : (float, float, float), optional
        Give a folder without a split the deterministic split of :func:`auto_split` with these
        train/val/test fractions (dataset option ``split=auto``: :data:`DEFAULT_SPLIT_FRACTIONS`).
    misalign : {"mild", "moderate", "severe"}, optional
        The pairs are registered: move each PAT by the phantom's deformation model and record
        ``flow_true`` (:func:`fusionbench.data.misalign.misalign_case`), after any resize.
    misalign_seed : int, optional
        Seed of ``misalign`` (default 0); each case's field comes from this seed and its id.

    Returns
    -------
    list of Case
        Sorted by id; ``meta`` holds ``split``, the source files, ``slice`` for volume slices,
        ``pixel_spacing_mm`` where the MRI file (the PAT file of a PAT-only dataset) records it
        and ``resized_from`` if resized. Cases of a PAT-only dataset have ``mri=None``.

    Raises
    ------
    ImageError
        Any unusable file or layout, naming the file.
    SplitError
        ``split`` is not defined by this dataset, or holds no case.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
    _normalise_resize(resize)
    if slice_axis is not None and not isinstance(slice_axis, (int, np.integer)):
        raise ImageError(f"slice_axis must be an int, got {slice_axis!r}")
    if misalign is not None:
        from .misalign import check_level

        misalign = check_level(misalign)
    elif misalign_seed is not None:
        raise ImageError(f"misalign_seed={misalign_seed!r} without misalign= (the seed is misalign's)")
    fractions = None if split_fractions is None else parse_split_option(split_fractions)
    entries = discover_pairs(path)
    if fractions is not None:
        own = sorted({e.split for e in entries if e.split is not None})
        if own:
            raise ImageError(f"{path}: split=auto, but the dataset defines its own split ({', '.join(own)}: "
                             "split folders or a 'split' column); drop split=auto")
        entries = [dataclasses.replace(e, split=auto_split(e.id, fractions)) for e in entries]
    if misalign is not None and entries and not entries[0].has_mri:
        raise ImageError(f"{path}: misalign= needs PAT/MRI pairs (it moves each PAT away from its MRI); "
                         "this dataset is PAT-only (no mri)")
    if split is not None:
        if all(e.split is None for e in entries):
            if split != "test":
                raise SplitError(
                    f"{path}: the dataset defines no {split!r} split (without one every case is 'test'); "
                    f"add one with the dataset spec folder:{path},split=auto (70/10/20 % train/val/test "
                    f"by file stem) or a 'split' column (train/val/test) in {MANIFEST_NAME}")
        else:
            chosen = [e for e in entries if e.split == split]
            if not chosen:
                counts = {s: sum(e.split == s for e in entries) for s in SPLITS}
                raise SplitError(f"{path}: no case in split {split!r} (cases per split: "
                                 + ", ".join(f"{s} {c}" for s, c in counts.items()) + ")")
            entries = chosen
    cases = [c for e in entries for c in _load_entry(e, resize=resize, to_gray=to_gray,
                                                       intensity=intensity, slice_axis=slice_axis)]
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ImageError(f"{path}: case id {dup!r} occurs twice (a volume slice id clashes with another case)")
    if misalign is not None:
        from .misalign import misalign_case

        seed = 0 if misalign_seed is None else misalign_seed
        cases = [misalign_case(c, misalign, seed) for c in cases]
    return sorted(cases, key=lambda c: c.id)
