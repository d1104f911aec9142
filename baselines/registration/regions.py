"""The region where the registration similarity is measured: the fixed image's body and a margin.

On PAT/MRI pairs the water around the body is flat in both modalities (PAT mid-grey, MRI near
black) and fills most of the image, so an unmasked joint histogram is dominated by it; measuring
the similarity only around the body is the usual remedy (a fixed-image mask in ITK/elastix).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

__all__ = ["body_region"]


def body_region(fixed: np.ndarray, margin: int = 10) -> np.ndarray:
    """The fixed (MRI) image's body, Otsu-thresholded, holes filled, dilated by ``margin`` pixels.

    A constant image has no body to find: the whole image is returned.
    """
    fixed = np.asarray(fixed)
    if np.ptp(fixed) == 0:
        return np.ones(fixed.shape, bool)
    body = ndi.binary_fill_holes(fixed > threshold_otsu(fixed))
    return ndi.binary_dilation(body, iterations=margin) if margin else body
