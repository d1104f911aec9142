"""Data: the Case record, organ label ids, image I/O, the phantom and users' folders."""
from __future__ import annotations

from .case import ORGAN_IDS, ORGANS, Case
from .datasets import dataset_fingerprint, load_dataset, parse_dataset_spec
from .folder import SplitError, load_folder
from .io import ImageError, as_image, check_same_shape, read_image, write_image

__all__ = ["Case", "ORGANS", "ORGAN_IDS", "ImageError", "SplitError", "as_image", "check_same_shape",
           "dataset_fingerprint", "load_dataset", "load_folder", "parse_dataset_spec", "read_image",
           "write_image"]
