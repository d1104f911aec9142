"""Fused images made elsewhere, scored as rows of the same tables (``--external NAME=DIR``).

What VIFB does with each method's output folder: a Matlab toolbox or another repository writes
one fused image per pair, and the run scores it next to the registered methods, after the same
registration and with the same metrics. Files are matched to the dataset's cases by file stem
(``CASE.png``, ``CASE.jpg``, ... for the case id ``CASE``) and read by the one image reader
(RGB files of gray are converted with :func:`fusionbench.data.io.read_image`'s ``to_gray``).

Some tools return fused images of another size than their inputs. Such a size difference is an
error unless the option says how the tool made it: ``size=resize`` scores the pair resized to the
fused image's size (bilinear with half-pixel centres, OpenCV's ``INTER_LINEAR``: what PAMRFuse v1
does, which resizes its 300² inputs to 296² before fusing), ``size=crop`` the pair's centre crop
of that size (the pixels a network with valid convolutions keeps), and ``size=pad`` extends the
fused image to the pair's size by repeating its border. Everything is checked before a run starts: a missing case, a wrong size or an unreadable
file is one line naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.io import READABLE_SUFFIXES, ImageError, file_stem, file_suffix, read_image

__all__ = ["ExternalError", "ExternalFusion", "parse_external", "SIZE_MODES"]

SIZE_MODES = ("resize", "crop", "pad")


class ExternalError(ValueError):
    """An external folder does not fit the dataset; the message names the file and the fix."""


@dataclass
class ExternalFusion:
    """One ``--external NAME=DIR[,size=resize|crop|pad]`` folder, indexed against a dataset's cases."""

    name: str
    folder: Path
    size: str | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        return f"external: {self.folder}" + (f" (size={self.size})" if self.size else "")

    def index(self, cases) -> None:
        """Find, read and size-check the fused image of every case; raise :class:`ExternalError`."""
        if not self.folder.is_dir():
            raise ExternalError(f"--external {self.name}: {self.folder} is not a folder")
        by_stem: dict[str, list[Path]] = {}
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and file_suffix(path) in READABLE_SUFFIXES:
                by_stem.setdefault(file_stem(path), []).append(path)
        self.files = {}
        for case in cases:
            found = by_stem.get(case.id, [])
            if not found:
                raise ExternalError(f"{self.folder / case.id}.*: no fused image for case {case.id!r} "
                                    f"(--external {self.name} needs one file per test case, named by case id)")
            if len(found) > 1:
                raise ExternalError(f"{found[0]}: case {case.id!r} has {len(found)} files in {self.folder} "
                                    f"({', '.join(p.name for p in found)}); keep one")
            self.check(found[0], self.read(found[0]).shape, case.shape)
            self.files[case.id] = found[0]

    @staticmethod
    def read(path: Path) -> np.ndarray:
        try:
            return read_image(path, to_gray=True)
        except ImageError as exc:
            raise ExternalError(str(exc)) from None

    def check(self, path: Path, shape: tuple[int, int], pair_shape: tuple[int, int]) -> None:
        if tuple(shape) == tuple(pair_shape):
            return
        (h, w), (ph, pw) = shape, pair_shape
        if self.size is None:
            raise ExternalError(
                f"{path}: fused image of {h}x{w} for a {ph}x{pw} pair; add ,size=resize (the tool resized "
                f"its inputs), ,size=crop (valid convolutions: the pair's centre {h}x{w}) or ,size=pad "
                f"(--external {self.name}={self.folder},size=resize)")
        if self.size == "resize":
            return
        if h > ph or w > pw or (ph - h) % 2 or (pw - w) % 2:
            raise ExternalError(f"{path}: fused image of {h}x{w} cannot be centred on a {ph}x{pw} pair "
                                f"(size={self.size} needs a smaller image and even margins)")

    def fused_for(self, case_id: str, pat: np.ndarray, mri: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fused, pat, mri)`` on one grid: the sources cropped or the fused image padded."""
        fused = self.read(self.files[case_id])
        if fused.shape == mri.shape:
            return fused, pat, mri
        if self.size == "resize":
            import cv2

            size = (fused.shape[1], fused.shape[0])
            return fused, *(np.clip(cv2.resize(np.ascontiguousarray(x, np.float32), size,
                                               interpolation=cv2.INTER_LINEAR), 0, 1) for x in (pat, mri))
        dh, dw = (mri.shape[0] - fused.shape[0]) // 2, (mri.shape[1] - fused.shape[1]) // 2
        if self.size == "crop":
            window = (slice(dh, dh + fused.shape[0]), slice(dw, dw + fused.shape[1]))
            return fused, np.ascontiguousarray(pat[window]), np.ascontiguousarray(mri[window])
        return np.pad(fused, ((dh, dh), (dw, dw)), mode="edge"), pat, mri


def parse_external(text: str) -> ExternalFusion:
    """``NAME=DIR[,size=resize|crop|pad]`` -> :class:`ExternalFusion` (not yet indexed)."""
    name, sep, rest = text.partition("=")
    name = name.strip().lower()
    if not sep or not name or not rest.strip():
        raise ExternalError(f"--external {text!r}: expected NAME=DIR[,size=resize|crop|pad]")
    folder, *options = rest.split(",")
    size = None
    for option in options:
        key, _, value = option.partition("=")
        if key.strip() != "size" or value.strip() not in SIZE_MODES:
            raise ExternalError(f"--external {text!r}: unknown option {option!r} "
                                f"(expected size={'|'.join(SIZE_MODES)})")
        size = value.strip()
    return ExternalFusion(name=name, folder=Path(folder).expanduser(), size=size)
