"""Shared scaffolding of the classic two-source fusion baselines: the base class and its role mapping."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from fusionbench.data.io import as_image, check_same_shape
from fusionbench.methods import FusionMethod

__all__ = ["ClassicFusion", "DEFAULT_ROLES"]

#: Role mapping of the asymmetric IR/visible methods (DESIGN §3): PAT in the infrared/functional
#: slot, MRI in the visible/anatomical slot.
DEFAULT_ROLES = {"ir": "pat", "vis": "mri"}


class ClassicFusion(FusionMethod):
    """Base of the classic two-source baselines: input checks, role mapping and the recorded config.

    Subclasses implement :meth:`_fuse_ir_vis` on float64 [0, 1] arrays in the reference's slots
    (``ir`` = first/infrared/functional source, ``vis`` = second/visible/anatomical source) and
    return a float image in [0, 1]. ``roles`` maps slots to modalities; the default puts PAT in the
    IR slot and MRI in the visible slot, ``{"ir": "mri", "vis": "pat"}`` swaps them.
    """

    kind = "traditional"

    def __init__(self, roles: dict[str, str] | None = None, **params: Any):
        roles = dict(DEFAULT_ROLES if roles is None else roles)
        if sorted(roles) != ["ir", "vis"] or sorted(roles.values()) != ["mri", "pat"]:
            raise ValueError(f"{type(self).__name__}: roles must map 'ir' and 'vis' to 'pat' and 'mri', "
                             f"got {roles}")
        self.roles = roles
        self.params = params

    def config(self) -> dict[str, Any]:
        return {**self.params, "roles": dict(self.roles), **dict(getattr(self, "_config", {}))}

    def fuse(self, pat, mri) -> np.ndarray:
        pat = as_image(pat, "pat")
        mri = as_image(mri, "mri")
        check_same_shape(pat=pat, mri=mri)
        by_role = {"pat": pat.astype(np.float64), "mri": mri.astype(np.float64)}
        fused = self._fuse_ir_vis(by_role[self.roles["ir"]], by_role[self.roles["vis"]])
        return np.clip(fused, 0.0, 1.0).astype(np.float32)

    def _fuse_ir_vis(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        raise NotImplementedError

def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
