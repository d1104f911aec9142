"""Names and intensity scales of the fusion-metric conventions (the field's reference toolboxes).

``/work/shared/reference/metric-conventions.md`` (mirrored in the docs) describes each toolbox:

``tang``
    Tang's Matlab *Evaluation-for-Image-Fusion* toolbox (the seed paper's metric set).
``vifb``
    The VIFB benchmark's Matlab metrics.
``mefb``
    The MEFB benchmark's Matlab metrics.
``cddfuse``
    The Python ``Evaluator`` shipped with CDDFuse (and PAMRFuse+).
``paper``
    The default: per metric the variant that reproduces the seed paper's Table 2.

The toolboxes read 8-bit files, so a toolbox convention sees our [0, 1] image ``x`` as the 8-bit
values ``x * 255`` (exact for 8-bit data, which :func:`fusionbench.data.io.as_image` stores as
k/255). :func:`to_255` gives that scale, and :func:`to_levels` the integer grey levels a saved
8-bit file would hold.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["CONVENTIONS", "check_convention", "unsupported", "to_255", "to_levels", "warn_degenerate"]

CONVENTIONS = ("paper", "tang", "vifb", "mefb", "cddfuse")

# A float32 k/255 times 255 lies within ~2e-5 of k; anything closer than this is 8-bit data.
_SNAP_TOLERANCE = 1e-4


def check_convention(convention: str, metric: str) -> str:
    """Return ``convention`` if it is a known name, else raise a ``ValueError`` naming the choices."""
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise ValueError(f"{metric}: unknown convention {convention!r}; "
                         f"expected one of {', '.join(map(repr, CONVENTIONS))}")
    return convention


def unsupported(metric: str, convention: str, why: str) -> ValueError:
    """The error for a metric that a toolbox does not define."""
    return ValueError(f"{metric}: the {convention!r} toolbox has no such metric ({why})")


def to_255(x: np.ndarray) -> np.ndarray:
    """``x`` (in [0, 1]) on the 0-255 scale as float64; 8-bit data come out as exact integers."""
    y = x.astype(np.float64) * 255.0
    levels = np.rint(y)
    if np.max(np.abs(y - levels), initial=0.0) < _SNAP_TOLERANCE:
        return levels
    return y


def to_levels(x: np.ndarray) -> np.ndarray:
    """The 8-bit grey levels (0..255, int64) of ``x``: what a saved 8-bit file would hold."""
    return np.rint(x.astype(np.float64) * 255.0).astype(np.int64)


def warn_degenerate(metric: str, message: str) -> None:
    """Warn that ``metric`` met an input for which its definition gives no number."""
    warnings.warn(f"{metric}: {message}", RuntimeWarning, stacklevel=3)
