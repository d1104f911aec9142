"""The Case record (one PAT/MRI pair, or a PAT image alone, with optional ground truth) and the organ label ids."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..warp import check_flow
from .io import ImageError, as_image, as_label_map, check_same_shape

__all__ = ["Case", "ORGANS", "ORGAN_IDS"]

#: Label ids of the organ label maps (DESIGN §3; data notes §1b). 0 is water/background.
ORGANS: dict[int, str] = {
    0: "background",
    1: "body",
    2: "brain",
    3: "lung",
    4: "heart",
    5: "liver",
    6: "intestines",
    7: "kidneys",
    8: "spleen",
    9: "spine",
    10: "tumour",
    11: "vessels",
}
ORGAN_IDS: dict[str, int] = {v: k for k, v in ORGANS.items()}


@dataclass
class Case:
    """One PAT/MRI pair, or one PAT image (``mri`` None), with optional ground truth.

    ``pat`` (moving) and ``mri`` (fixed) are float32 (H, W) images in [0, 1]. ``labels_mri`` is an
    int label map in MRI space (ids of :data:`ORGANS`), ``labels_pat`` the same anatomy in PAT
    space, ``flow_true`` the float32 (2, H, W) displacement (pixels; channel 0 rows, 1 columns) with
    ``warp(pat, flow_true)`` aligned to ``mri``. ``roi`` is a boolean mask of where
    ``flow_true`` is meaningful when there are no label maps (e.g. the body of a real pair moved
    by ``misalign=``): endpoint errors are measured inside it.

    A PAT-only case (``mri=None``, e.g. an annotated PAT image of ``fusionbench data import coco``)
    has no MRI space, so ``labels_mri`` and ``flow_true`` must be None; its ``shape`` is the PAT's.
    Such cases serve the task evaluations of the PAT images; registration and fusion need pairs.
    """

    id: str
    pat: np.ndarray
    mri: np.ndarray | None = None
    labels_mri: np.ndarray | None = None
    labels_pat: np.ndarray | None = None
    flow_true: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    roi: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.pat = as_image(self.pat, name=f"{self.id}/pat")
        if self.mri is None:
            for key in ("labels_mri", "flow_true"):
                if getattr(self, key) is not None:
                    raise ImageError(f"{self.id}/{key}: given for a PAT-only case (mri is None); "
                                     f"{key} lives in MRI space and needs the MRI image")
        else:
            self.mri = as_image(self.mri, name=f"{self.id}/mri")
            check_same_shape(pat=self.pat, mri=self.mri)
        shape = self.shape
        for key in ("labels_mri", "labels_pat"):
            lab = getattr(self, key)
            if lab is not None:
                lab = as_label_map(lab, f"{self.id}/{key}")
                if lab.shape != shape:
                    raise ImageError(f"{self.id}/{key}: shape {lab.shape} differs from image shape {shape}")
                setattr(self, key, lab)
        if self.flow_true is not None:
            try:
                self.flow_true = check_flow(self.flow_true, shape, f"{self.id}/flow_true")
            except ValueError as exc:
                raise ImageError(str(exc)) from None
        if self.roi is not None:
            roi = np.asarray(self.roi)
            if roi.shape != shape:
                raise ImageError(f"{self.id}/roi: shape {roi.shape} differs from image shape {shape}")
            self.roi = roi.astype(bool)

    @property
    def has_mri(self) -> bool:
        """False for a PAT-only case."""
        return self.mri is not None

    @property
    def shape(self) -> tuple[int, int]:
        return self.pat.shape if self.mri is None else self.mri.shape
