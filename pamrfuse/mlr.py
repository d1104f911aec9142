"""MLR: multi-level refinement registration (Zhong et al. 2024, §2.3; spec §3).

MRRN of UMF-CMGR (Wang et al., IJCAI 2022): a shared two-level feature extractor, then at each
level a coarse estimator (matching cost + target features -> flow, paper's M_C) and a dilated
refinement network added to the coarse flow (paper Eq. 2, ``phi_r = M_R(phi_c) + phi_c``).
The 2-input form (target = pseudo-MRI, moving = MRI) is the paper's and the default; the code's
third PAT branch (same weights, level-1 flows summed) is ``pat_branch=True`` (spec §7 item 6).

Flows are (B, 2, H, W) displacements in pixels, channel 0 rows, channel 1 columns, defined on the
target grid: ``warp_torch(moving, flow)`` is the moving image resampled into the target frame
(the project's one convention, :mod:`fusionbench.nn.layers`). Sampling grids are built from the
runtime shape, so any size divisible by 4 works (spec §3.5, §7 item 18).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.nn.layers import warp_torch

__all__ = ["MLR", "resize_flow_x2", "matching_cost"]


def _cb(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 4, 2, 1) if stride == 2 else nn.Conv2d(cin, cout, 3, 1, 1)
    return nn.Sequential(conv, nn.LeakyReLU(0.2, True))


def _dil(cin: int, cout: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, dilation, dilation=dilation), nn.LeakyReLU(0.1, True))


def resize_flow_x2(flow: torch.Tensor) -> torch.Tensor:
    """Upsample a pixel displacement ×2: magnitudes double, bilinear with ``align_corners=True``."""
    return F.interpolate(2.0 * flow, scale_factor=2, mode="bilinear", align_corners=True)


def matching_cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel L1 distance across channels (B, 1, H, W)."""
    return (a - b).abs().sum(dim=1, keepdim=True)


class _Estimator(nn.Module):
    """Coarse flow estimator: cb(in,48) -> cb(48,32) -> cb(32,16) -> 3×3 flow head."""

    def __init__(self, cin: int):
        super().__init__()
        self.body = nn.Sequential(_cb(cin, 48), _cb(48, 32), _cb(32, 16))
        self.head = nn.Conv2d(16, 2, 3, 1, 1)

    def forward(self, x):
        feat = self.body(x)
        return self.head(feat), feat


class _Refiner(nn.Module):
    """Dilated refinement (dilations 1, 2, 4) of a flow, returned as a residual added to it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(_dil(2, 48, 1), _dil(48, 48, 2), _dil(48, 32, 4))
        self.head = nn.Conv2d(32, 2, 3, 1, 1)

    def forward(self, flow):
        return flow + self.head(self.body(flow))


class MLR(nn.Module):
    """Two-level coarse-to-fine registration network; 170,904 parameters.

    Parameters
    ----------
    pat_branch : bool
        Add the released code's second branch (target = real PAT, same weights) and sum the
        level-1 flows of both branches (spec §3.4). Off by default (the paper).
    """

    def __init__(self, pat_branch: bool = False):
        super().__init__()
        self.pat_branch = pat_branch
        self.level1 = nn.Sequential(_cb(1, 16, 2), _cb(16, 16), _cb(16, 16))
        self.level2 = nn.Sequential(_cb(16, 32, 2), _cb(32, 32), _cb(32, 32))
        self.est2 = _Estimator(1 + 32)
        self.ref2 = _Refiner()
        self.est1 = _Estimator(1 + 16 + 2 + 16)
        self.ref1 = _Refiner()

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.level1(x)
        return f1, self.level2(f1)

    def _branch(self, t1, t2, m1, m2) -> tuple[torch.Tensor, torch.Tensor]:
        phi_c2, feat2 = self.est2(torch.cat([matching_cost(t2, m2), t2], 1))
        phi_r2 = self.ref2(phi_c2)
        up = resize_flow_x2(phi_r2)
        # The released code upsamples the decoder features with the flow's ×2 as well (spec §3.1);
        # reproduced so that its weights would load, harmless for training from scratch.
        x = torch.cat([matching_cost(t1, warp_torch(m1, up)), t1, up, resize_flow_x2(feat2)], 1)
        phi_c1 = self.est1(x)[0] + up
        return self.ref1(phi_c1), phi_r2

    def forward(self, target: torch.Tensor, moving: torch.Tensor, pat: torch.Tensor | None = None) -> dict:
        """Register ``moving`` (B,1,H,W) to ``target``; returns flow (full res), flow1, flow2, warped."""
        h, w = target.shape[-2:]
        if h % 4 or w % 4 or moving.shape != target.shape:
            raise ValueError(f"MLR needs equal target/moving shapes with H, W divisible by 4, got "
                             f"{tuple(target.shape)} and {tuple(moving.shape)}")
        m1, m2 = self.features(moving)
        t1, t2 = self.features(target)
        flow1, flow2 = self._branch(t1, t2, m1, m2)
        if self.pat_branch:
            if pat is None:
                raise ValueError("MLR(pat_branch=True) needs the PAT image as third input")
            p1, p2 = self.features(pat)
            flow1_p, flow2_p = self._branch(p1, p2, m1, m2)
            flow1, flow2 = flow1 + flow1_p, flow2 + flow2_p
        flow = resize_flow_x2(flow1)
        return {"flow": flow, "flow1": flow1, "flow2": flow2, "warped": warp_torch(moving, flow)}
