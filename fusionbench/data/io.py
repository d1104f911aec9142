"""Reading images and checking arrays: the one place where data enter fusionbench.

Every public function of the project converts its image arguments with :func:`as_image`, so
float conversion, range checks and error messages live here only (DESIGN §3).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = ["ImageError", "ColourImageError", "as_image", "as_mask", "as_label_map", "check_same_shape",
           "read_image", "read_array", "ArrayFile", "normalize_intensity", "INTENSITY_MODES", "file_suffix", "file_stem", "write_image",
           "atomic_write_bytes"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".jpg", ".jpeg", ".bmp")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".dicom")
READABLE_SUFFIXES = IMAGE_SUFFIXES + VOLUME_SUFFIXES


class ImageError(ValueError):
    """An input image is unusable; the message names the image (or file) and the problem."""


class ColourImageError(ImageError):
    """A colour image where a gray one (or a label map) is needed."""


def _label(name: str | os.PathLike | None) -> str:
    return f"{name}: " if name else ""


def as_image(x, name: str | os.PathLike | None = None, *, allow_constant: bool = True) -> np.ndarray:
    """Convert ``x`` to a float32 (H, W) image in [0, 1], or raise :class:`ImageError`.

    Integer arrays are divided by their dtype's maximum (uint8 k -> k/255, uint16 k -> k/65535),
    so 8-bit data map exactly to k/255. Float arrays must already lie in [0, 1] (a tolerance of
    1e-6 is clipped). Booleans become 0/1.

    Parameters
    ----------
    x : array_like
        The image.
    name : str, optional
        Used in error messages (a file name or a role such as ``"pat"``).
    allow_constant : bool
        If False, a constant image is rejected.
    """
    label = _label(name)
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ImageError(f"{label}unsupported dtype {arr.dtype}; expected a numeric gray image")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageError(f"{label}complex dtype {arr.dtype}; expected a real gray image")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        raise ColourImageError(f"{label}colour image of shape {arr.shape}; expected a gray (H, W) image "
                               "(convert it to gray first, e.g. with --to-gray)")
    if arr.ndim != 2:
        raise ImageError(f"{label}expected a 2-D (H, W) image, got shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) == 0:
        raise ImageError(f"{label}empty image (shape {arr.shape})")
    if arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0 and arr.min() < 0:
            raise ImageError(f"{label}negative values in integer image of dtype {arr.dtype}")
        out = (arr.astype(np.float64) / float(info.max)).astype(np.float32)
    else:
        if not np.all(np.isfinite(arr)):
            n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ImageError(f"{label}{n_bad} NaN/Inf value(s) in image")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ImageError(f"{label}float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                             "(rescale it, or save it as an integer image)")
        out = np.clip(arr, 0.0, 1.0).astype(np.float32)
    if not allow_constant and out.max() == out.min():
        raise ImageError(f"{label}constant image (all pixels {float(out.flat[0]):.4g})")
    return out


def as_mask(x, name: str | os.PathLike | None = None) -> np.ndarray:
    """Boolean (H, W) mask: nonzero pixels are foreground (as medpy), checked like an image."""
    return as_image(x, name=name) > 0


def as_label_map(x, name: str | os.PathLike | None = None) -> np.ndarray:
    """A non-empty 2-D integer (or boolean) label map, returned unconverted; else :class:`ImageError`."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.size == 0:
        raise ImageError(f"{_label(name)}expected a non-empty 2-D (H, W) label map, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ImageError(f"{_label(name)}label map must be integer, got {arr.dtype}")
    return arr


def check_same_shape(**images: np.ndarray) -> None:
    """Raise :class:`ImageError` unless all named images share one shape."""
    shapes = {k: np.shape(v) for k, v in images.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ImageError(f"shape mismatch: {desc}")


def _rgb_to_gray(arr: np.ndarray) -> np.ndarray:
    # ITU-R BT.601 luma, the weights of Matlab's rgb2gray and OpenCV's cvtColor.
    rgb = arr[..., :3].astype(np.float64)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    if np.issubdtype(arr.dtype, np.integer):
        return np.round(gray).astype(arr.dtype)
    return gray


INTENSITY_MODES = ("auto", "minmax", "none")


def normalize_intensity(arr: np.ndarray, mode: str = "auto", *, name: str | os.PathLike | None = None
                        ) -> np.ndarray:
    """Map stored values of any shape to float32 in [0, 1] by one documented rule.

    This is the one place where file values become [0, 1] intensities; a volume is passed whole,
    so all its slices share one mapping and keep their relative brightness.

    Parameters
    ----------
    arr : ndarray
        Stored values (a 2-D image or a 3-D volume), colour already resolved.
    mode : {"auto", "minmax", "none"}
        ``"none"``: the convention of :func:`as_image` -- unsigned and non-negative integers are
        divided by their dtype's maximum (uint8 k -> k/255, uint16 k -> k/65535), floats must
        already lie in [0, 1]. ``"auto"``: unsigned integers and booleans as in ``"none"`` (the
        image-file convention of 8/16-bit PNG and TIFF); floats and signed integers are
        measurement values (NIfTI and DICOM data after their rescale slope/intercept, float .npy)
        and are min-max rescaled over the whole array, ``(x - min) / (max - min)``. A signed PAT
        image therefore maps its minimum to 0 and its maximum to 1; zero lands at
        ``-min / (max - min)``, not necessarily at 0.5. ``"minmax"``: min-max for every dtype.
    name : str or path-like, optional
        Named in error messages.

    Returns
    -------
    ndarray, float32
        Same shape as ``arr``, values in [0, 1]. A constant array has no range to stretch: under
        min-max it maps to 0 with a :class:`UserWarning`.

    Raises
    ------
    ImageError
        Unknown mode, non-numeric data, NaN/Inf, or values that ``"none"`` cannot accept.
    """
    label = _label(name)
    if mode not in INTENSITY_MODES:
        raise ImageError(f"{label}unknown intensity mode {mode!r}; expected one of {', '.join(INTENSITY_MODES)}")
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageError(f"{label}unsupported dtype {arr.dtype}; expected real gray values")
    if arr.size == 0:
        raise ImageError(f"{label}empty array (shape {arr.shape})")
    stretch = mode == "minmax" or (mode == "auto" and not (
        arr.dtype == bool or np.issubdtype(arr.dtype, np.unsignedinteger)))
    if not stretch:
        if arr.dtype == bool:
            return arr.astype(np.float32)
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)):
            lo, hi = float(arr.min()), float(arr.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise ImageError(f"{label}float values must lie in [0, 1] with intensity='none', got "
                                 f"[{lo:.4g}, {hi:.4g}] (use intensity='auto' to min-max rescale)")
        flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr[None]
        return as_image(flat, name=name).reshape(arr.shape)
    values = arr.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise ImageError(f"{label}{int(values.size - np.count_nonzero(finite))} NaN/Inf value(s)")
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        warnings.warn(f"{label}constant data (all values {lo:.4g}); min-max maps it to 0", stacklevel=2)
        return np.zeros(arr.shape, np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


@dataclass(frozen=True)
class ArrayFile:
    """What :func:`read_array` found in one file (or DICOM series folder).

    Attributes
    ----------
    path : Path
        The file or series folder.
    array : ndarray
        Stored values with colour resolved: (H, W) for an image, 3-D for a volume. NIfTI and
        DICOM values are physical (scaling slope/intercept applied, float64).
    format : str
        ``"png"``, ``"tiff"``, ``"npy"``, ``"nifti"``, ``"dicom"``, ... (the reader used).
    spacing : tuple of float or None
        Millimetres per array axis, where the file records it (NIfTI zooms, DICOM PixelSpacing).
    slice_axis : int
        The axis along which a volume of this format is cut into slices by default: the last
        axis for NIfTI (the voxel k index, axial for scanner-aligned data), axis 0 for DICOM
        frames/series, TIFF pages and .npy stacks (Z, H, W).
    """

    path: Path
    array: np.ndarray
    format: str
    spacing: tuple[float, ...] | None = None
    slice_axis: int = 0


def file_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix of ``path``, counting ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def file_stem(path: str | os.PathLike) -> str:
    """File name without its suffix (``.nii.gz`` removed whole)."""
    name = Path(path).name
    return name[: len(name) - len(file_suffix(path))]


def _read_nifti(path: Path) -> ArrayFile:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float64))
    zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    while data.ndim > 2 and data.shape[-1] == 1:  # (X, Y, 1) and (X, Y, Z, 1) are lower-dimensional
        data, zooms = data[..., 0], zooms[:-1]
    if data.ndim > 3:
        raise ImageError(f"{path}: {data.ndim}-D NIfTI of shape {data.shape}; expected a 2-D image "
                         "or a 3-D volume (split time series or channels into separate files)")
    return ArrayFile(path, data, "nifti", zooms, slice_axis=data.ndim - 1)


def _modality_values(ds) -> np.ndarray:
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    arr = ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        return arr  # colour: no modality LUT; resolved by the caller
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def _dicom_spacing(ds) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing")
    if spacing is None:
        try:
            spacing = ds.PerFrameFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            try:
                spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
            except (AttributeError, IndexError, KeyError):
                return None
    return float(spacing[0]), float(spacing[1])


def _slice_position(ds) -> float | None:
    # Distance along the slice normal; the robust sort key for a series (instance numbers lie).
    pos, ori = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if pos is None or ori is None:
        return None
    normal = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:], float))
    return float(np.dot(normal, np.asarray(pos, float)))


def _read_dicom_file(path: Path) -> ArrayFile:
    import pydicom

    ds = pydicom.dcmread(str(path))
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM file without pixel data")
    arr = _modality_values(ds)
    spacing = _dicom_spacing(ds)
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    if spacing is not None and arr.ndim - colour == 3:
        thickness = ds.get("SpacingBetweenSlices", ds.get("SliceThickness"))
        spacing = (float(thickness) if thickness else float("nan"), *spacing)
    return ArrayFile(path, arr, "dicom-rgb" if colour else "dicom", spacing, slice_axis=0)


def _read_dicom_series(folder: Path) -> ArrayFile:
    import pydicom

    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")
    if not files:
        raise ImageError(f"{folder}: empty folder (a DICOM series folder must hold the slice files)")
    slices, series = [], set()
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as exc:
            raise ImageError(f"{f}: unreadable DICOM file in series folder {folder} "
                             f"({type(exc).__name__}: {exc})") from None
        if "PixelData" not in ds:
            raise ImageError(f"{f}: DICOM file without pixel data in series folder {folder}")
        if int(ds.get("SamplesPerPixel", 1)) > 1 or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ImageError(f"{f}: a series folder must hold single-frame gray slices")
        series.add(ds.get("SeriesInstanceUID"))
        slices.append((f, ds))
    if len(series) > 1:
        raise ImageError(f"{folder}: {len(series)} DICOM series mixed in one folder; put each series "
                         "in its own folder")
    positions = [_slice_position(ds) for _, ds in slices]
    if all(p is not None for p in positions):
        order = np.argsort(positions, kind="stable")
    else:
        order = np.argsort([int(ds.get("InstanceNumber", i)) for i, (_, ds) in enumerate(slices)],
                           kind="stable")
    arrays = []
    for i in order:
        f, ds = slices[i]
        arr = _modality_values(ds)
        if arrays and arr.shape != arrays[0].shape:
            raise ImageError(f"{f}: slice shape {arr.shape} differs from {arrays[0].shape} of the "
                             f"other slices in {folder}")
        arrays.append(arr)
    spacing = _dicom_spacing(slices[order[0]][1])
    if spacing is not None:
        gaps = np.diff(np.sort([p for p in positions if p is not None]))
        spacing = (float(np.median(gaps)) if gaps.size else float("nan"), *spacing)
    return ArrayFile(folder, np.stack(arrays), "dicom", spacing, slice_axis=0)


def _resolve_colour(arr: np.ndarray, path: Path, to_gray: bool, is_colour: bool) -> np.ndarray:
    if is_colour:
        if not to_gray:
            channels = arr.reshape(-1, arr.shape[-1])[:, :3]
            if np.all(channels == channels[:, :1]):
                return arr[..., 0]  # an RGB file with three equal channels is a gray image
            raise ColourImageError(f"{path}: colour image (shape {arr.shape}); expected gray "
                             "(pass --to-gray / to_gray=True to convert)")
        return _rgb_to_gray(arr)
    return arr


def read_array(path: str | os.PathLike, *, to_gray: bool = False) -> ArrayFile:
    """Read the stored array of one image or volume file, or of a DICOM series folder.

    Formats: 8/16-bit PNG, TIFF (pages = slices), JPEG, BMP, .npy, NIfTI (.nii, .nii.gz, via
    nibabel) and DICOM (.dcm single- or multi-frame file, or a folder holding one series, via
    pydicom). Nothing is rescaled here except the physical scaling NIfTI and DICOM define; use
    :func:`normalize_intensity` to map values to [0, 1].

    Colour: a PNG/TIFF/JPEG/BMP/.npy array whose last axis has 3 or 4 entries, or a DICOM with
    SamplesPerPixel > 1, is colour. It is rejected unless ``to_gray`` (ITU-R BT.601 luma, as
    Matlab's ``rgb2gray``); an RGB file with three equal channels is accepted as gray. Store
    gray stacks as (Z, H, W) so they are not mistaken for colour.

    Raises
    ------
    ImageError
        Missing or unreadable file, unsupported suffix, colour without ``to_gray``, empty array.
        The message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    suffix = file_suffix(path)
    if path.is_dir():
        loaded = _read_dicom_series(path)
    elif not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    else:
        try:
            if suffix == ".npy":
                loaded = ArrayFile(path, np.load(path, allow_pickle=False), "npy")
            elif suffix in (".tif", ".tiff"):
                import tifffile

                loaded = ArrayFile(path, tifffile.imread(path), "tiff")
            elif suffix in (".nii", ".nii.gz"):
                loaded = _read_nifti(path)
            elif suffix in (".dcm", ".dicom"):
                loaded = _read_dicom_file(path)
            elif suffix in IMAGE_SUFFIXES:
                import imageio.v3 as iio

                loaded = ArrayFile(path, iio.imread(path), suffix.lstrip(".").replace("jpeg", "jpg"))
            else:
                raise ImageError(f"{path}: unsupported image suffix {suffix!r} "
                                 f"(expected one of {', '.join(READABLE_SUFFIXES)})")
        except ImageError:
            raise
        except Exception as exc:  # every reader has its own exception types
            raise ImageError(f"{path}: unreadable file ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(loaded.array)
    if loaded.format.startswith("dicom"):
        is_colour = loaded.format == "dicom-rgb"
        loaded = replace(loaded, format="dicom")
    else:
        is_colour = loaded.format != "nifti" and arr.ndim >= 3 and arr.shape[-1] in (3, 4)
    arr = _resolve_colour(arr, path, to_gray, is_colour)
    if loaded.format in ("png", "tiff", "jpg", "bmp") and arr.ndim == 3 and arr.shape[-1] == 2:
        arr = arr[..., 0]  # gray + alpha
    if arr.size == 0:
        raise ImageError(f"{path}: empty array (shape {arr.shape})")
    if is_colour and loaded.spacing is not None:
        loaded = replace(loaded, spacing=loaded.spacing[: arr.ndim])
    return replace(loaded, array=arr)


def read_image(path: str | os.PathLike, *, to_gray: bool = False, raw: bool = False,
               intensity: str = "none") -> np.ndarray:
    """Read one gray 2-D image file (8/16-bit PNG, TIFF, JPEG, BMP, .npy, 2-D NIfTI or DICOM).

    Parameters
    ----------
    path : path-like
        The file.
    to_gray : bool
        Convert an RGB(A) file to gray (BT.601 luma) instead of rejecting it.
    raw : bool
        Return the stored array unconverted (for label maps and flows); otherwise a float32
        image in [0, 1].
    intensity : {"none", "auto", "minmax"}
        How stored values become [0, 1] (see :func:`normalize_intensity`). The default
        ``"none"`` is the strict rule of :func:`as_image`: integers by dtype (k/255, k/65535),
        floats must already lie in [0, 1].

    Raises
    ------
    ImageError
        Missing or unreadable file, unsupported suffix, colour image without ``to_gray``,
        a volume, NaN/Inf, empty image. The message names the file.
    """
    loaded = read_array(path, to_gray=to_gray)
    arr = loaded.array
    if raw:
        return arr
    if arr.ndim != 2:
        raise ImageError(f"{loaded.path}: expected a 2-D image, got shape {arr.shape} "
                         "(volumes are split into slices by fusionbench.data.folder.load_folder)")
    return as_image(normalize_intensity(arr, intensity, name=loaded.path), name=loaded.path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_image(path: str | os.PathLike, img: np.ndarray, *, bits: int = 8) -> None:
    """Write a [0, 1] float image as an 8- or 16-bit PNG/TIFF (rounded), or .npy float32, atomically."""
    import io as _io

    path = Path(path)
    img = as_image(img, name=path)
    suffix = path.suffix.lower()
    buf = _io.BytesIO()
    if suffix == ".npy":
        np.save(buf, img)
    else:
        scale = 255 if bits == 8 else 65535
        dtype = np.uint8 if bits == 8 else np.uint16
        q = np.round(img.astype(np.float64) * scale).astype(dtype)
        if suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(buf, q)
        else:
            import imageio.v3 as iio

            buf.write(iio.imwrite("<bytes>", q, extension=suffix or ".png"))
    atomic_write_bytes(path, buf.getvalue())
