"""The PAMRFuse+ network as one module (P2M, MLR and DFDF from a preset) and its training input.

:class:`PAMRFuseNet` is what the weights files hold; :func:`prepare_arrays` turns cases into the
arrays it trains on (:mod:`pamrfuse.trainer`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.nn.layers import warp_torch

from .dfdf import DFDF
from .mlr import MLR
from .p2m import P2M
from .presets import PAMRFuseConfig

__all__ = ["PAMRFuseNet", "prepare_arrays"]


class PAMRFuseNet(nn.Module):
    """P2M (optional) + MLR (optional) + DFDF, built from a :class:`PAMRFuseConfig`."""

    def __init__(self, cfg: PAMRFuseConfig):
        super().__init__()
        self.cfg = cfg
        self.p2m = P2M(cfg.ngf, cfg.n_res_blocks, cfg.ndf, cfg.d_layers) if cfg.use_p2m else None
        self.mlr = MLR(pat_branch=cfg.mlr_pat_branch) if cfg.use_mlr else None
        self.dfdf = DFDF(cfg.dim, cfg.heads, cfg.enc_blocks, cfg.dec_blocks, cfg.detail_layers,
                         cfg.fuse_detail_layers, residual=cfg.decoder_residual)

    def pseudo_mri(self, pat: torch.Tensor) -> torch.Tensor:
        """The registration target in the PAT frame: P2M's pseudo-MRI, or PAT itself without P2M."""
        return self.p2m(pat) if self.p2m is not None else pat

    def register(self, pat: torch.Tensor, mri: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        """MLR on (target = pseudo-MRI, moving = MRI); adds ``registered_pat = warp(PAT, -flow)``."""
        if self.mlr is None:
            zero = torch.zeros(pat.shape[0], 2, *pat.shape[-2:], device=pat.device, dtype=pat.dtype)
            return {"flow": zero, "warped": mri, "registered_pat": pat, "target": pat}
        target = self.pseudo_mri(pat) if target is None else target
        out = self.mlr(target, mri, pat if self.cfg.mlr_pat_branch else None)
        out["registered_pat"] = warp_torch(pat, -out["flow"])
        out["target"] = target
        return out


def prepare_arrays(cases: Sequence[Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack the cases' PAT and MRI as float32 (N, 1, size, size), area-resampled."""
    if not cases:
        raise ValueError("PAMRFuse+ training needs at least one case")
    pats, mris = [], []
    for c in cases:
        for img, out in ((c.pat, pats), (c.mri, mris)):
            t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
            if t.shape[-2:] != (size, size):
                t = F.interpolate(t, size=(size, size), mode="area")
            out.append(t[0])
    return torch.stack(pats).numpy(), torch.stack(mris).numpy()
