"""The one pipeline: register (when the method needs aligned input), then fuse.

Every place that turns a PAT/MRI pair into a fused image goes through these functions: the
harness (registration once per case, shared by the fusion methods, then each fusion), the task
step (the train split fused the way the test split was) and users (:class:`Pipeline`). Each step
checks what a method returns, so a wrong shape, a NaN flow or an out-of-range image is an error
that names the method, never a silently wrong number downstream.
"""
from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np

from .data.io import as_image, check_same_shape
from .warp import check_flow

__all__ = ["register_step", "fuse_step", "Pipeline"]


def register_step(method, pat: np.ndarray, mri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``method.register(pat, mri)`` with its output checked: ``(registered PAT, flow)``."""
    name = getattr(method, "name", "") or type(method).__name__
    registered, flow = method.register(pat, mri)
    registered = as_image(registered, f"{name} registered output")
    check_same_shape(registered=registered, mri=mri)
    return registered, check_flow(flow, mri.shape, f"{name} flow")


def fuse_step(method, pat: np.ndarray, mri: np.ndarray) -> np.ndarray:
    """``method.fuse(pat, mri)`` with its output checked: a float32 image in [0, 1] of MRI's shape."""
    name = getattr(method, "name", "") or type(method).__name__
    fused = as_image(method.fuse(pat, mri), f"{name} fused output")
    check_same_shape(fused=fused, mri=mri)
    return fused


@dataclass
class Pipeline:
    """One fusion method after its registration.

    A joint method (``needs_alignment = False``) registers itself; a fusion method that needs
    aligned input fuses the PAT warped by ``registration`` (none: the input as it is).
    """

    fusion: Any
    registration: Any = None

    def registrar(self):
        if not getattr(self.fusion, "needs_alignment", True):
            return self.fusion
        return self.registration

    def run(self, pat: np.ndarray, mri: np.ndarray) -> dict[str, Any]:
        """``{"fused", "registered", "flow", "seconds": {"registration", "fusion"}}`` (the
        registration entries only when a registration ran)."""
        pat, mri = as_image(pat, "pat"), as_image(mri, "mri")
        check_same_shape(pat=pat, mri=mri)
        out: dict[str, Any] = {"seconds": {}}
        registrar = self.registrar()
        if registrar is not None:
            t0 = perf_counter()
            pat, out["flow"] = register_step(registrar, pat, mri)
            out["registered"] = pat
            out["seconds"]["registration"] = perf_counter() - t0
        t0 = perf_counter()
        out["fused"] = fuse_step(self.fusion, pat, mri)
        out["seconds"]["fusion"] = perf_counter() - t0
        return out
