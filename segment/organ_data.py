"""Data preparation of the organ task: stacking and checking images and label maps, the fixed
centre window, class weights and the training-data hash.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from fusionbench.data import ORGANS
from fusionbench.data.io import ImageError, as_image, as_label_map

__all__ = ["N_CLASSES", "stack_images", "stack_labels", "centre_window", "class_weights", "data_hash"]

#: Output classes of the organ models: background and every label of :data:`fusionbench.data.ORGANS`.
N_CLASSES = len(ORGANS)


def stack_images(images: Sequence, name: str) -> np.ndarray:
    """(N, H, W) float32 stack of images in [0, 1] of one shape (``name`` labels the errors)."""
    if len(images) == 0:
        raise ValueError(f"{name}: no images")
    arrays = [as_image(im, f"{name}[{i}]") for i, im in enumerate(images)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ImageError(f"{name}: images differ in shape {sorted(shapes)}")
    return np.stack(arrays)


def stack_labels(labels: Sequence, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """(N, H, W) int64 stack of label maps of ``shape`` with ids in ``[0, n_classes)``."""
    if len(labels) == 0:
        raise ValueError("labels: no label maps")
    out = []
    for i, lab in enumerate(labels):
        lab = as_label_map(lab, f"labels[{i}]")
        if lab.shape != shape:
            raise ImageError(f"labels[{i}]: shape {lab.shape} differs from image shape {shape}")
        if lab.min() < 0 or lab.max() >= n_classes:
            raise ImageError(f"labels[{i}]: label ids must lie in [0, {n_classes - 1}], got "
                             f"[{lab.min()}, {lab.max()}]")
        out.append(lab.astype(np.int64))
    return np.stack(out)


def centre_window(stack: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size`` x ``size`` window of an (..., H, W) array (a view); ``None``: unchanged.

    The window starts at ``((H - size) // 2, (W - size) // 2)``, so it is the same pixels for
    every image of one size.
    """
    if size is None:
        return stack
    h, w = stack.shape[-2:]
    if not 0 < int(size) <= min(h, w):
        raise ImageError(f"window size {size} does not fit images of {h}x{w}; choose a size of at most "
                         f"{min(h, w)} or size=None (whole image)")
    r0, c0 = (h - size) // 2, (w - size) // 2
    return stack[..., r0:r0 + size, c0:c0 + size]


def class_weights(labels, n_classes: int) -> np.ndarray:
    """Class weights ``sqrt(median_freq / freq)``, normalised to mean 1 over the classes present.

    ``freq`` is each class's pixel count in ``labels`` and the median is taken over the classes
    present; classes absent from ``labels`` get weight 0 (nothing to learn from). The square root
    softens plain inverse frequency (median-frequency balancing, Eigen & Fergus, ICCV 2015) so
    tiny organs count without dominating.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        raise ValueError(f"class_weights: expected a non-empty integer label array, got dtype {labels.dtype}, "
                         f"size {labels.size}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"class_weights: label ids must lie in [0, {n_classes - 1}], got "
                         f"[{labels.min()}, {labels.max()}]")
    freq = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)
    seen = freq > 0
    weights = np.zeros(n_classes)
    weights[seen] = np.sqrt(np.median(freq[seen]) / freq[seen])
    return (weights / weights[seen].mean()).astype(np.float32)


def data_hash(x: np.ndarray, y: np.ndarray) -> str:
    """Short SHA-256 of a training set (images as float32, labels as int64): a saved model's data key."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
