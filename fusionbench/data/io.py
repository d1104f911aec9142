"""Reading images and checking arrays: the one place where data enter fusionbench.

Every public function of the project converts its image arguments with :func:`as_image`, so
float conversion, range checks and error messages live here only (DESIGN §3).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["ImageError", "as_image", "check_same_shape", "read_image", "write_image", "atomic_write_bytes"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".jpg", ".jpeg", ".bmp")


class ImageError(ValueError):
    """An input image is unusable; the message names the image (or file) and the problem."""


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
        raise ImageError(f"{label}colour image of shape {arr.shape}; expected a gray (H, W) image "
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


def read_image(path: str | os.PathLike, *, to_gray: bool = False, raw: bool = False) -> np.ndarray:
    """Read one gray image file (8/16-bit PNG, TIFF, JPEG, BMP or .npy).

    Parameters
    ----------
    path : path-like
        The file.
    to_gray : bool
        Convert an RGB(A) file to gray (BT.601 luma) instead of rejecting it.
    raw : bool
        Return the stored array unconverted (for label maps and flows); otherwise a float32
        image in [0, 1] as :func:`as_image` makes it.

    Raises
    ------
    ImageError
        Missing or unreadable file, unsupported suffix, colour image without ``to_gray``,
        NaN/Inf, empty image. The message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        elif suffix in IMAGE_SUFFIXES:
            import imageio.v3 as iio

            arr = iio.imread(path)
        else:
            raise ImageError(f"{path}: unsupported image suffix {suffix!r} "
                             f"(expected one of {', '.join(IMAGE_SUFFIXES)})")
    except ImageError:
        raise
    except Exception as exc:  # every reader has its own exception types
        raise ImageError(f"{path}: unreadable file ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if not to_gray:
            channels = arr.reshape(-1, arr.shape[-1])[:, :3]
            if np.all(channels == channels[:, :1]):
                arr = arr[..., 0]  # an RGB file with three equal channels is a gray image
            else:
                raise ImageError(f"{path}: colour image (shape {arr.shape}); expected gray "
                                 "(pass --to-gray / to_gray=True to convert)")
        else:
            arr = _rgb_to_gray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 2:  # gray + alpha
        arr = arr[..., 0]
    if raw:
        if arr.size == 0:
            raise ImageError(f"{path}: empty array")
        return arr
    return as_image(arr, name=path)


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
