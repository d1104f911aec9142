"""Import public real PAT/MRI data into fusionbench folder datasets (``fusionbench data import``).

Nothing is downloaded: every importer reads a repository or folder the user already has on disk
and writes a folder the ``folder:PATH`` loader (:mod:`fusionbench.data.folder`) reads.

PAMRFuse v1 (:func:`import_pamrfuse_v1`, a checkout of github.com/zhongniuniu/PAMRFuse)::

    REPO/fusion_data/OursregPATMRI/uN.jpg, oN.jpg   registered pairs (u = PAT, o = MRI), 300x300
    REPO/reg_data/val2D/A/*.npy, B/*.npy            unaligned pairs in [-1, 1] (A = MRI, B = PAT)
    REPO/fusion_result/N.jpg                        PAMRFuse v1's own fusions of pair N, 296x296

  become::

    OUT/registered/{pat,mri}/N.png        8-bit gray PNG (the decoded JPEG values, lossless)
    OUT/registered/manifest.csv           id,pat,mri,source_pat,source_mri
    OUT/unaligned/{pat,mri}/NAME.png      16-bit gray PNG of (x + 1) / 2 (or .npy float32)
    OUT/unaligned/manifest.csv            id,pat,mri,source_pat,source_mri
    OUT/external/pamrfuse-v1/N.png        8-bit gray PNG at the native 296x296

  The unaligned layout follows the repository's own loader (``reg_trainer/datasets.py``,
  ``ValDataset``): ``sorted(glob("val2D/A/*"))`` and ``sorted(glob("val2D/B/*"))`` are paired by
  index; each file is a 2-D float array written by ``data_process/data2npy.py`` as
  ``(x - min) / (max - min) * 2 - 1``. When A/ and B/ hold the same stems the pairs are matched
  by stem (the same pairing) and named by it; otherwise they are paired in sorted order, as
  ``ValDataset`` does, and named by the A (MRI) stem; the manifest records both source files.

COCO polygons (:func:`import_coco`, e.g. SFE-GCN's PAT data, github.com/lzc-smu/SFEGCN
``data/space/train``)::

    OUT/pat/NAME.png          the image, gray 8-bit PNG (NAME = stem of the COCO file_name)
    OUT/labels_pat/NAME.png   uint8 label map with fusionbench organ ids (:data:`ORGANS`)
    OUT/manifest.csv          id,pat,labels_pat (labels_pat empty for an image without annotations)

  There is no MRI: ``folder:OUT`` loads it as a PAT-only dataset (cases with ``mri=None``) for the
  task evaluations of the PAT images, ``fusionbench run --dataset folder:OUT,split=auto --methods
  none --tasks contour,organs --out RUN`` (registration and fusion need pairs).

Gray conversion (:func:`read_gray`)
-----------------------------------
The published JPEGs are gray images. PAMRFuse v1's PAT files ``uN.jpg`` are 1-channel JPEGs; its
MRI files ``oN.jpg`` are 3-channel JPEGs whose decoded channels are identical (a gray image stored
as YCbCr has neutral chroma, so R = G = B after decoding; all 36 published MRI files decode with a
channel difference of 0). The rule:

* a 1-channel file, or a colour file whose channels are identical, is gray: its (first) channel is
  kept as stored, without any arithmetic -- lossless;
* channels that differ by at most :data:`GRAY_TOLERANCE` levels (the chroma noise of a gray image
  re-encoded by a colour JPEG encoder) are combined with the ITU-R BT.601 luma that
  ``read_image(to_gray=True)`` uses everywhere in fusionbench (Matlab's ``rgb2gray``), rounded to
  the stored integer type. For R = G = B every luminance rule -- BT.601, or scikit-image's BT.709
  ``rgb2gray`` that PAMRFuse v1's ``fusion_model/generate.py`` applies to the MRI -- returns that
  same gray value, so the weights only matter within the noise;
* channels differing by more are a colour image, not a gray copy: an error naming the file.

8-bit data stay 8-bit (PNG is lossless, so the PNG holds exactly the decoded JPEG values);
16-bit data stay 16-bit.

Unaligned npy values: ``(x + 1) / 2`` maps -1 -> 0 and 1 -> 1; values within
:data:`NPY_RANGE_TOLERANCE` outside [-1, 1] are clipped, values further out are an error (the file
is not in the repository's [-1, 1] convention). The 16-bit PNG rounds to k / 65535 (error at most
1 / 131070, far below the 1/255 steps of the 8-bit images the arrays were made from, and read back
unchanged by the folder loader's default ``intensity=auto``, which divides 16-bit data by 65535).
``unaligned_format="npy"`` keeps float32 instead; note that the folder loader's ``intensity=auto``
min-max rescales float .npy files, so use ``intensity=none`` with it.

Polygon rasterisation (:func:`rasterize_polygons`)
--------------------------------------------------
COCO coordinates are continuous image coordinates: pixel (row r, column c) covers
[c, c + 1) x [r, r + 1) and its centre is (x, y) = (c + 0.5, r + 0.5). A pixel is labelled when its
centre lies inside the polygon: the even-odd rule of :func:`polygon_mask`, a scanline fill that is
half-open (a centre exactly on a left or lower edge is inside, on a right or upper edge outside),
so polygons sharing an edge share no pixel. It gives the pixel set of ``skimage.draw.polygon`` at
the coordinates shifted by -0.5 except for centres exactly on an edge, about 40 times faster. So an
axis-aligned polygon with integer vertices labels exactly its area: the square (2, 2)-(6, 6)
labels the 16 pixels of rows 2-5 and columns 2-5. Parts outside the image are clipped.

Overlaps: an image's annotations are drawn in one pass, the organ drawn later winning: first every
annotation mapped to ``body`` (organs lie inside the body), then all others in the order the file
lists them (the order they were annotated). Categories map to organ names of :data:`ORGANS` by
:data:`COCO_DEFAULT_MAP` (SFE-GCN's body, liver, vert, vessel, kidney, spleen, and every organ name
to itself) updated by the caller's ``mapping``; ``ignore`` skips a category. A category used by an
annotation but not mapped is an error naming it; categories no annotation uses are ignored.
Segmentations must be polygons (a list of ``[x1, y1, x2, y2, ...]`` lists, or one flat list); RLE
segmentations (``iscrowd`` masks) are an error.

Errors: every problem -- a missing folder, an unreadable file, a pair with only one image, sizes
that differ within a pair or from the annotation file, a stale file in an output folder -- raises
:class:`fusionbench.data.ImageError` with one line naming the file. Inputs are checked (and the
PAMRFuse images read) before anything is written; an output folder may be re-imported into, but
holding a file this import would not write is an error (stale cases would join the dataset).
"""
from __future__ import annotations

import csv
import io as _io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .case import ORGAN_IDS, ORGANS
from .io import (IMAGE_SUFFIXES, ColourImageError, ImageError, atomic_write_bytes, file_stem, file_suffix,
                 read_array, write_image)

__all__ = ["import_pamrfuse_v1", "import_coco", "read_gray", "rasterize_polygons", "polygon_mask", "parse_map",
           "ImportReport", "ImportedPart", "PAMRFUSE_PARTS", "COCO_DEFAULT_MAP", "GRAY_TOLERANCE",
           "NPY_RANGE_TOLERANCE"]

#: Largest channel difference (levels of the stored integer type) still read as a gray copy.
GRAY_TOLERANCE = 12
#: How far unaligned npy values may lie outside [-1, 1] before they are an error (clipped within).
NPY_RANGE_TOLERANCE = 1e-3
PAMRFUSE_PARTS = ("registered", "unaligned", "external")
PAMRFUSE_EXTERNAL_NAME = "pamrfuse-v1"
#: COCO category name -> organ name (of :data:`ORGANS`), before the caller's ``mapping``.
COCO_DEFAULT_MAP: dict[str, str] = {
    **{name: name for name in ORGANS.values() if name != "background"},
    "vert": "spine", "vessel": "vessels", "kidney": "kidneys",
}
IGNORE = "ignore"
_PICTURE_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s != ".npy")


@dataclass
class ImportedPart:
    """One folder an import wrote: ``count`` cases of ``sizes`` (H, W) under ``folder``."""

    name: str
    folder: Path
    count: int
    sizes: list[tuple[int, int]]
    what: str
    use: str
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        sizes = ", ".join(f"{h}x{w}" for h, w in self.sizes)
        text = f"{self.name}: {self.count} {self.what} ({sizes}) -> {self.folder}"
        return text + (f"  [{self.use}]" if self.use else "")


@dataclass
class ImportReport:
    """What an import wrote, printable line by line (:meth:`lines`)."""

    source: str
    out: Path
    parts: list[ImportedPart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"imported {self.source} into {self.out}"]
        for part in self.parts:
            out.append("  " + part.line())
            out.extend(f"    {note}" for note in part.notes)
        out.extend(f"  {note}" for note in self.notes)
        return out


# ---------------------------------------------------------------------------------------------
# shared helpers


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a gray integer (H, W) array by the module's gray rule (see above).

    Returns the stored 8- or 16-bit values (uint8 or uint16), unscaled.

    Raises
    ------
    ImageError
        Missing or unreadable file, a real colour image, a volume, another dtype. Names the file.
    """
    path = Path(path)
    try:
        arr = read_array(path).array  # 1 channel, or identical channels -> the first channel
    except ColourImageError:
        import imageio.v3 as iio

        rgb = np.asarray(iio.imread(path))[..., :3].astype(np.int64)
        spread = int((rgb.max(axis=-1) - rgb.min(axis=-1)).max())
        if spread > GRAY_TOLERANCE:
            raise ImageError(f"{path}: colour image (its channels differ by up to {spread} levels, more "
                             f"than the {GRAY_TOLERANCE} of JPEG noise on a gray copy); expected a gray "
                             "image") from None
        arr = read_array(path, to_gray=True).array  # BT.601 luma, rounded to the stored dtype
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D gray image, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: expected 8- or 16-bit image data, got {arr.dtype}")
    return arr


def _write_gray(path: Path, arr: np.ndarray) -> None:
    # as_image maps k -> k / 255 (k / 65535) and write_image rounds back to k: lossless.
    write_image(path, arr, bits=16 if arr.dtype == np.uint16 else 8)


def _shape_text(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _sort_key(stem: str):
    # Natural order: "2" before "10".
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", stem) if t]


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise ImageError(f"{path}: {what} not found")
    if not path.is_dir():
        raise ImageError(f"{path}: {what} is not a folder")
    return path


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _check_stale(folder: Path, planned: set[str]) -> None:
    """Refuse to write into ``folder`` when it holds a file this import would not write."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ImageError(f"{folder}: exists and is not a folder")
    for p in _visible_files(folder):
        if p.name not in planned:
            raise ImageError(f"{p}: in the output folder but not written by this import (it would join "
                             "the dataset); import into a new or empty folder")


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    text = _io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def _load_pairs(pairs, read, suffix: str, repo: Path, pat_label: str, mri_label: str):
    """Read every ``(case_id, pat_path, mri_path)``: the images to write by role and file name,
    their shapes and the manifest rows; a pair whose two images differ in size is an error."""
    files, shapes, rows = {"pat": {}, "mri": {}}, [], []
    for case_id, pat_path, mri_path in pairs:
        pat, mri = read(pat_path), read(mri_path)
        if pat.shape != mri.shape:
            raise ImageError(f"{pat_path}: {pat_label} {_shape_text(pat.shape)} and {mri_label} {mri_path.name} "
                             f"{_shape_text(mri.shape)} differ in size")
        files["pat"][case_id + suffix], files["mri"][case_id + suffix] = pat, mri
        shapes.append(pat.shape)
        rows.append({"id": case_id, "pat": f"pat/{case_id}{suffix}", "mri": f"mri/{case_id}{suffix}",
                     "source_pat": pat_path.relative_to(repo).as_posix(),
                     "source_mri": mri_path.relative_to(repo).as_posix()})
    return files, shapes, rows


def _sizes(shapes) -> list[tuple[int, int]]:
    return sorted({tuple(int(v) for v in s) for s in shapes})


# ---------------------------------------------------------------------------------------------
# PAMRFuse v1


def _registered_pairs(folder: Path) -> tuple[list[tuple[str, Path, Path]], int]:
    """(id, PAT file, MRI file) of ``OursregPATMRI``, and the number of non-image files skipped."""
    found: dict[str, dict[str, Path]] = {}
    skipped = 0
    for p in _visible_files(folder):
        if p.is_dir() or file_suffix(p) not in _PICTURE_SUFFIXES:
            skipped += 1
            continue
        m = re.fullmatch(r"([uo])(.+)", file_stem(p))
        if not m:
            raise ImageError(f"{p}: unexpected image name (expected uN.<ext> = PAT and oN.<ext> = MRI)")
        role = "pat" if m.group(1) == "u" else "mri"
        slot = found.setdefault(m.group(2), {})
        if role in slot:
            raise ImageError(f"{p}: two {role.upper()} files for pair {m.group(2)!r} ({slot[role].name} and "
                             f"{p.name}); keep one")
        slot[role] = p
    if not found:
        raise ImageError(f"{folder}: no uN/oN image pairs")
    pairs = []
    for case_id in sorted(found, key=_sort_key):
        slot = found[case_id]
        for role, other, prefix in (("pat", "mri", "o"), ("mri", "pat", "u")):
            if other not in slot:
                raise ImageError(f"{slot[role]}: {role.upper()} image of pair {case_id!r} without its "
                                 f"{other.upper()} partner ({prefix}{case_id}.<ext>)")
        pairs.append((case_id, slot["pat"], slot["mri"]))
    return pairs, skipped


def _read_npy_pair_image(path: Path) -> np.ndarray:
    """A reg_data .npy in [-1, 1] as float32 (x + 1) / 2 in [0, 1]."""
    arr = np.asarray(read_array(path).array)
    if arr.ndim > 2:
        arr = arr.squeeze()
    if arr.ndim != 2 or arr.size == 0:
        raise ImageError(f"{path}: expected a 2-D array (H, W), got shape {np.shape(read_array(path).array)}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageError(f"{path}: expected real numbers in [-1, 1], got dtype {arr.dtype}")
    values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ImageError(f"{path}: NaN/Inf values")
    lo, hi = float(values.min()), float(values.max())
    if lo < -1 - NPY_RANGE_TOLERANCE or hi > 1 + NPY_RANGE_TOLERANCE:
        raise ImageError(f"{path}: values [{lo:.4g}, {hi:.4g}] lie outside [-1, 1] (PAMRFuse v1's reg_data "
                         "convention)")
    return np.clip((values + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


def _unaligned_pairs(folder: Path) -> tuple[list[tuple[str, Path, Path]], str]:
    """(id, PAT = B file, MRI = A file) of ``reg_data/val2D``, and how they were paired."""
    files = {}
    for sub in ("A", "B"):
        d = _require_dir(folder / sub, f"PAMRFuse v1 unaligned {'MRI' if sub == 'A' else 'PAT'} folder")
        listed = []
        for p in _visible_files(d):  # ValDataset: sorted(glob("%s/A/*" % root))
            if p.is_dir() or file_suffix(p) != ".npy":
                raise ImageError(f"{p}: not a .npy array (reg_data/val2D/{sub}/ holds the .npy images)")
            listed.append(p)
        if not listed:
            raise ImageError(f"{d}: no .npy files")
        files[sub] = listed
    a, b = files["A"], files["B"]
    a_stems, b_stems = [file_stem(p) for p in a], [file_stem(p) for p in b]
    if sorted(a_stems) == sorted(b_stems):
        by_b = dict(zip(b_stems, b))
        pairs = [(s, by_b[s], p) for s, p in zip(a_stems, a)]
        how = "matched by file name"
    else:
        if len(a) != len(b):
            longer, sub, partner = (a, "A", "B (PAT)") if len(a) > len(b) else (b, "B", "A (MRI)")
            other_stems = set(b_stems if sub == "A" else a_stems)
            lonely = next((p for p in longer if file_stem(p) not in other_stems), longer[-1])
            raise ImageError(f"{lonely}: no {partner} partner (A/ holds {len(a)} files, B/ {len(b)}; "
                             "reg_trainer/datasets.py pairs A[i] with B[i] in sorted order)")
        pairs = [(file_stem(pa), pb, pa) for pa, pb in zip(a, b)]
        how = "paired in sorted order as reg_trainer/datasets.py ValDataset does (file names differ)"
    pairs.sort(key=lambda t: _sort_key(t[0]))
    return pairs, how


def import_pamrfuse_v1(repo: str | os.PathLike, out: str | os.PathLike, *,
                       parts: tuple[str, ...] | list[str] = PAMRFUSE_PARTS,
                       unaligned_format: str = "png16") -> ImportReport:
    """Import a checkout of PAMRFuse v1 (github.com/zhongniuniu/PAMRFuse) into folder datasets.

    Parameters
    ----------
    repo : path-like
        The cloned repository (holding ``fusion_data/``, ``reg_data/``, ``fusion_result/``).
    out : path-like
        Output folder; ``registered/``, ``unaligned/`` and ``external/pamrfuse-v1/`` are written in it.
    parts : sequence of {"registered", "unaligned", "external"}
        Which parts to import (default all three).
    unaligned_format : {"png16", "npy"}
        Storage of the unaligned pairs' (x + 1) / 2 values (see the module docstring).

    Returns
    -------
    ImportReport
        The folders written, counts and sizes.

    Raises
    ------
    ImageError
        One line naming the file or folder (see the module docstring).
    """
    repo, out = Path(repo), Path(out)
    parts = tuple(dict.fromkeys(parts))
    for part in parts:
        if part not in PAMRFUSE_PARTS:
            raise ImageError(f"unknown part {part!r}; expected some of {', '.join(PAMRFUSE_PARTS)}")
    if not parts:
        raise ImageError(f"no part to import; expected some of {', '.join(PAMRFUSE_PARTS)}")
    if unaligned_format not in ("png16", "npy"):
        raise ImageError(f"unknown unaligned format {unaligned_format!r}; expected png16 or npy")
    _require_dir(repo, "PAMRFuse v1 repository")
    report = ImportReport("PAMRFuse v1", out)
    jobs = []  # (folder, {name: writer}) collected first, written after every input was read

    registered_ids = None
    if "registered" in parts:
        folder = _require_dir(repo / "fusion_data" / "OursregPATMRI", "PAMRFuse v1 registered-pair folder")
        pairs, skipped = _registered_pairs(folder)
        files, shapes, rows = _load_pairs(pairs, read_gray, ".png", repo, "PAT", "MRI")
        dest = out / "registered"
        jobs.append((dest, files, rows))
        registered_ids = [r["id"] for r in rows]
        part = ImportedPart("registered", dest, len(rows), _sizes(shapes), "PAT/MRI pairs, 8-bit gray PNG",
                            f"--dataset folder:{dest}")
        if skipped:
            part.notes.append(f"skipped {skipped} non-image entries of {folder}")
        report.parts.append(part)

    if "unaligned" in parts:
        folder = _require_dir(repo / "reg_data" / "val2D", "PAMRFuse v1 unaligned-pair folder")
        pairs, how = _unaligned_pairs(folder)
        suffix = ".png" if unaligned_format == "png16" else ".npy"
        files, shapes, rows = _load_pairs(pairs, _read_npy_pair_image, suffix, repo, "PAT (B)", "MRI (A)")
        dest = out / "unaligned"
        jobs.append((dest, files, rows))
        what = ("PAT/MRI pairs, 16-bit gray PNG of (x+1)/2" if suffix == ".png"
                else "PAT/MRI pairs, float32 .npy of (x+1)/2 (read with intensity=none)")
        spec = f"folder:{dest}" + (",intensity=none" if suffix == ".npy" else "")
        part = ImportedPart("unaligned", dest, len(rows), _sizes(shapes), what, f"--dataset {spec}",
                            [f"A (MRI) and B (PAT) {how}"])
        report.parts.append(part)

    if "external" in parts:
        folder = _require_dir(repo / "fusion_result", "PAMRFuse v1 fused-image folder")
        images, skipped, shapes = {}, 0, []
        for p in _visible_files(folder):
            if p.is_dir() or file_suffix(p) not in _PICTURE_SUFFIXES:
                skipped += 1
                continue
            stem = file_stem(p)
            if f"{stem}.png" in images:
                raise ImageError(f"{p}: two fused images for case {stem!r}; keep one")
            if registered_ids is not None and stem not in registered_ids:
                raise ImageError(f"{p}: fused image {stem!r} has no registered pair "
                                 f"(u{stem}/o{stem} in fusion_data/OursregPATMRI)")
            images[f"{stem}.png"] = read_gray(p)
            shapes.append(images[f"{stem}.png"].shape)
        if not images:
            raise ImageError(f"{folder}: no fused images")
        dest = out / "external" / PAMRFUSE_EXTERNAL_NAME
        jobs.append((dest, {"": images}, None))
        part = ImportedPart("external", dest, len(images), _sizes(shapes),
                            "fused images of PAMRFuse v1, 8-bit gray PNG, native size",
                            f"--external {PAMRFUSE_EXTERNAL_NAME}={dest}")
        if registered_ids is not None:
            missing = [i for i in registered_ids if f"{i}.png" not in images]
            part.notes.append(f"{len(registered_ids) - len(missing)} of {len(registered_ids)} registered pairs "
                              "have a fused image" + (f" (missing: {', '.join(missing[:5])}"
                                                      f"{' ...' if len(missing) > 5 else ''})" if missing else ""))
        if skipped:
            part.notes.append(f"skipped {skipped} non-image entries of {folder}")
        report.parts.append(part)

    for dest, groups, rows in jobs:  # check every destination before writing any
        for sub, images in groups.items():
            _check_stale(dest / sub if sub else dest, set(images))
        if rows is not None:
            _check_stale(dest, {"manifest.csv", *groups})
    for dest, groups, rows in jobs:
        for sub, images in groups.items():
            for name, arr in images.items():
                if arr.dtype == np.float32:
                    write_image(dest / sub / name, arr, bits=16)
                else:
                    _write_gray(dest / sub / name, arr)
        if rows is not None:
            _write_csv(dest / "manifest.csv", ["id", "pat", "mri", "source_pat", "source_mri"], rows)
    return report


# ---------------------------------------------------------------------------------------------
# COCO polygons


def parse_map(items) -> dict[str, str]:
    """``["NAME=ORGAN", ...]`` -> {category name: organ name or "ignore"}; checks the organ names."""
    mapping: dict[str, str] = {}
    for item in items or []:
        name, sep, organ = str(item).partition("=")
        name, organ = name.strip(), organ.strip().lower()
        if not sep or not name or not organ:
            raise ImageError(f"--map {item!r}: expected NAME=ORGAN (e.g. vert=spine)")
        if organ != IGNORE and organ not in ORGAN_IDS:
            raise ImageError(f"--map {item!r}: unknown organ {organ!r}; expected one of "
                             f"{', '.join(ORGANS.values())} or {IGNORE}")
        mapping[name] = organ
    return mapping


def _polygons(seg, where: str) -> list[np.ndarray]:
    if isinstance(seg, dict):
        raise ImageError(f"{where}: RLE segmentation (a mask, e.g. iscrowd) is not supported; only polygons")
    if not isinstance(seg, list) or not seg:
        raise ImageError(f"{where}: segmentation must be a non-empty list of polygons [x1, y1, x2, y2, ...]")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seg):
        seg = [seg]  # one flat polygon
    polys = []
    for poly in seg:
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in poly):
            raise ImageError(f"{where}: a polygon must be a list of numbers [x1, y1, x2, y2, ...]")
        if len(poly) % 2 or len(poly) < 6:
            raise ImageError(f"{where}: polygon of {len(poly)} numbers; expected x, y pairs of at least 3 points")
        xy = np.asarray(poly, np.float64).reshape(-1, 2)
        if not np.all(np.isfinite(xy)):
            raise ImageError(f"{where}: NaN/Inf polygon coordinate")
        polys.append(xy)
    return polys


def polygon_mask(shape: tuple[int, int], xy: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centres (c + 0.5, r + 0.5) lie inside polygon ``xy``.

    ``xy`` is (N, 2) of COCO x (column) and y (row) coordinates. An even-odd scanline fill, exact
    and half-open: on the row of centre y, an edge counts when y lies in [min(y0, y1), max(y0, y1)),
    and the pixels between two successive crossings x_in <= x_out are those with
    x_in <= c + 0.5 < x_out. A centre on a left edge is inside, on a right edge outside, so polygons
    that share an edge never share a pixel and an axis-aligned polygon with integer vertices labels
    exactly its area. Parts outside the image are clipped.
    """
    h, w = shape
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(0, int(np.ceil(y0.min() - 0.5)))
    r_hi = min(h, int(np.ceil(y0.max() - 0.5)))  # rows r_lo .. r_hi - 1 have centres inside [min y, max y)
    mask = np.zeros(shape, bool)
    if r_hi <= r_lo:
        return mask
    yc = (np.arange(r_lo, r_hi) + 0.5)[:, None]
    crosses = (np.minimum(y0, y1) <= yc) & (yc < np.maximum(y0, y1))  # never true for horizontal edges
    dy = np.where(y1 == y0, 1.0, y1 - y0)
    xs = np.where(crosses, x0 + (yc - y0) / dy * (x1 - x0), np.inf)
    xs.sort(axis=1)  # each row has an even number of crossings, then inf
    starts = np.clip(np.ceil(xs[:, 0::2] - 0.5), 0, w)
    stops = np.clip(np.ceil(xs[:, 1::2] - 0.5), 0, w)
    n = min(starts.shape[1], stops.shape[1])
    starts, stops = starts[:, :n], stops[:, :n]
    valid = np.isfinite(starts) & np.isfinite(stops) & (stops > starts)
    rows = np.broadcast_to(np.arange(r_hi - r_lo)[:, None], starts.shape)[valid]
    edges = np.zeros((r_hi - r_lo, w + 1), np.int32)
    np.add.at(edges, (rows, starts[valid].astype(np.int64)), 1)
    np.add.at(edges, (rows, stops[valid].astype(np.int64)), -1)
    mask[r_lo:r_hi] = np.cumsum(edges, axis=1)[:, :w] > 0
    return mask


def rasterize_polygons(shape: tuple[int, int], shapes: list[tuple[int, list[np.ndarray]]]) -> np.ndarray:
    """Draw ``(label id, [polygon (N, 2) of x, y])`` in order onto a uint8 map (later wins).

    COCO convention: pixel (r, c) has its centre at (x, y) = (c + 0.5, r + 0.5) and is labelled when
    that centre lies inside the polygon (:func:`polygon_mask`; see the module docstring).
    """
    out = np.zeros(shape, np.uint8)
    for label, polys in shapes:
        for xy in polys:
            out[polygon_mask(shape, xy)] = label
    return out


def _load_coco(path: Path) -> dict:
    if not path.exists():
        raise ImageError(f"{path}: annotation file not found")
    if not path.is_file():
        raise ImageError(f"{path}: annotation path is not a file")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ImageError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"{path}: unreadable annotation file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ImageError(f"{path}: not a COCO annotation file (expected a JSON object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ImageError(f"{path}: not a COCO annotation file (no {key!r} list)")
    return data


def import_coco(images: str | os.PathLike, annotations: str | os.PathLike, out: str | os.PathLike, *,
                mapping: dict[str, str] | None = None) -> ImportReport:
    """Turn COCO polygon annotations of PAT images into gray images and organ label maps.

    Parameters
    ----------
    images : path-like
        Folder of the images; a COCO ``file_name`` is looked up as ``images/file_name``, then as
        ``images/<its base name>``.
    annotations : path-like
        The COCO JSON file (``images``, ``annotations``, ``categories``).
    out : path-like
        Output folder: ``pat/NAME.png``, ``labels_pat/NAME.png``, ``manifest.csv``.
    mapping : dict, optional
        Category name -> organ name of :data:`ORGANS` (or ``"ignore"``), on top of
        :data:`COCO_DEFAULT_MAP`.

    Returns
    -------
    ImportReport

    Raises
    ------
    ImageError
        One line naming the file (see the module docstring).
    """
    images_dir, ann_path, out = Path(images), Path(annotations), Path(out)
    _require_dir(images_dir, "image folder")
    data = _load_coco(ann_path)
    cmap = {**COCO_DEFAULT_MAP, **(mapping or {})}
    for name, organ in cmap.items():
        if organ != IGNORE and organ not in ORGAN_IDS:
            raise ImageError(f"mapping {name}={organ}: unknown organ {organ!r}")

    categories: dict = {}
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise ImageError(f"{ann_path}: category without an id and a name: {str(cat)[:80]}")
        categories[cat["id"]] = cat["name"]

    entries: dict = {}  # image id -> (case id, file, declared (h, w) or None)
    stems: dict[str, str] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise ImageError(f"{ann_path}: image entry without an id and a file_name: {str(img)[:80]}")
        rel = img["file_name"]
        stem = file_stem(rel)
        if stem in stems:
            raise ImageError(f"{ann_path}: images {stems[stem]!r} and {rel!r} have the same name {stem!r}")
        if img["id"] in entries:
            raise ImageError(f"{ann_path}: image id {img['id']} listed twice")
        stems[stem] = rel
        p = images_dir / rel
        if not p.is_file() and (images_dir / Path(rel).name).is_file():
            p = images_dir / Path(rel).name
        if not p.is_file():
            raise ImageError(f"{images_dir / rel}: image {rel!r} of {ann_path.name} not found")
        declared = None
        if "height" in img and "width" in img:
            declared = (int(img["height"]), int(img["width"]))
        entries[img["id"]] = (stem, p, declared)
    if not entries:
        raise ImageError(f"{ann_path}: no images")

    per_image: dict = {i: [] for i in entries}
    unmapped: dict[str, int] = {}
    counts: dict[str, int] = {}
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise ImageError(f"{ann_path}: annotation #{k} is not an object")
        image_id, cat_id = ann.get("image_id"), ann.get("category_id")
        where = f"{ann_path}: annotation id {ann.get('id', f'#{k}')}"
        if image_id not in entries:
            raise ImageError(f"{where}: image_id {image_id!r} is not among the images")
        where += f" (image {entries[image_id][1].name})"
        if cat_id not in categories:
            raise ImageError(f"{where}: category_id {cat_id!r} is not among the categories")
        name = categories[cat_id]
        organ = cmap.get(name)
        if organ is None:
            unmapped[name] = unmapped.get(name, 0) + 1
            continue
        counts[name] = counts.get(name, 0) + 1
        if organ == IGNORE:
            continue
        per_image[image_id].append((organ, _polygons(ann.get("segmentation"), where)))
    if unmapped:
        name, n = next(iter(unmapped.items()))
        raise ImageError(f"{ann_path}: category {name!r} ({n} annotations) has no organ; pass --map {name}=ORGAN "
                         f"(organs: {', '.join(v for v in ORGANS.values() if v != 'background')}) or "
                         f"--map {name}={IGNORE}")

    order = sorted(entries, key=lambda i: _sort_key(entries[i][0]))
    planned_pat = {f"{entries[i][0]}.png" for i in order}
    planned_lab = {f"{entries[i][0]}.png" for i in order if per_image[i]}
    _check_stale(out / "pat", planned_pat)
    _check_stale(out / "labels_pat", planned_lab)
    _check_stale(out, {"manifest.csv", "pat", "labels_pat"})
    rows, shapes, organ_pixels = [], [], {}
    for i in order:
        stem, path, declared = entries[i]
        img = read_gray(path)
        if declared is not None and img.shape != declared:
            raise ImageError(f"{path}: image is {_shape_text(img.shape)} but {ann_path.name} says "
                             f"{_shape_text(declared)} (height x width)")
        shapes.append(img.shape)
        _write_gray(out / "pat" / f"{stem}.png", img)
        row = {"id": stem, "pat": f"pat/{stem}.png", "labels_pat": ""}
        if per_image[i]:
            drawn = sorted(per_image[i], key=lambda t: t[0] != "body")  # stable: body first, then file order
            labels = rasterize_polygons(img.shape, [(ORGAN_IDS[o], polys) for o, polys in drawn])
            for lab, n in zip(*np.unique(labels, return_counts=True)):
                organ_pixels[ORGANS[int(lab)]] = organ_pixels.get(ORGANS[int(lab)], 0) + int(n)
            write_image(out / "labels_pat" / f"{stem}.png", labels)
            row["labels_pat"] = f"labels_pat/{stem}.png"
        rows.append(row)
    _write_csv(out / "manifest.csv", ["id", "pat", "labels_pat"], rows)

    labelled = sum(1 for r in rows if r["labels_pat"])
    report = ImportReport(f"COCO annotations {ann_path}", out)
    part = ImportedPart("images", out, len(rows), _sizes(shapes), "PAT images, gray PNG + uint8 label maps", "",
                        [f"{labelled} with a label map (labels_pat/), {len(rows) - labelled} without annotations"])
    used = ", ".join(f"{name}->{cmap[name]} {n}" for name, n in sorted(counts.items()))
    part.notes.append(f"annotations per category (category->organ count): {used or 'none'}")
    total = sum(organ_pixels.values())
    if total:
        part.notes.append("pixel share per label: " + ", ".join(
            f"{ORGAN_IDS[name]} {name} {100 * n / total:.1f}%"
            for name, n in sorted(organ_pixels.items(), key=lambda t: ORGAN_IDS[t[0]])))
    part.notes.append("no MRI: a PAT-only folder (manifest id,pat,labels_pat); evaluate it with fusionbench run "
                      f"--dataset folder:{out},split=auto --methods none --tasks contour,organs --out RUN")
    report.parts.append(part)
    return report
