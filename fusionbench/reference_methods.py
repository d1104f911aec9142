"""Reference rules every table carries: pixel average and maximum fusion, and the identity registration."""
from __future__ import annotations

import numpy as np

from .data.io import as_image, check_same_shape
from .methods import FusionMethod, RegistrationMethod, register_method


def _pair(pat, mri):
    pat, mri = as_image(pat, "pat"), as_image(mri, "mri")
    check_same_shape(pat=pat, mri=mri)
    return pat, mri


@register_method("average", kind="reference", reference="pixel-wise mean of the two sources")
class Average(FusionMethod):
    def fuse(self, pat, mri):
        pat, mri = _pair(pat, mri)
        return (0.5 * (pat + mri)).astype(np.float32)


@register_method("maximum", kind="reference", reference="pixel-wise maximum of the two sources")
class Maximum(FusionMethod):
    def fuse(self, pat, mri):
        pat, mri = _pair(pat, mri)
        return np.maximum(pat, mri)


@register_method("identity", kind="registration", in_all=False,  # every run scores it anyway
                 reference="no registration: the misaligned input (paper Table 1, first row)")
class Identity(RegistrationMethod):
    def register(self, moving, fixed):
        moving, fixed = _pair(moving, fixed)
        return moving.copy(), np.zeros((2, *fixed.shape), dtype=np.float32)
