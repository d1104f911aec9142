"""Compact torch layers, one idea each (after VoxelMorph's ``SpatialTransformer`` and ``VecInt``).

``warp_torch`` is the differentiable twin of :func:`fusionbench.warp.warp`: same field layout
(B, 2, H, W) in pixels, channel 0 rows, channel 1 columns, output sampled at ``x + flow(x)``,
bilinear, border padding. A test holds the two to the same numbers.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``) picks CUDA when present, else CPU; ``"cpu"``, ``"cuda"`` and
    ``"cuda:N"`` are taken as they are. An unknown name, or CUDA on a machine without it, is a
    ``ValueError`` that says so, not an error deep inside the first tensor operation."""
    name = "auto" if device is None else str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA device is available (use cpu or auto)")
    return torch.device(name)


def to_tensor(img: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) float array -> (1, 1, H, W) float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None].to(device)


def _base_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    rows = torch.arange(h, device=device, dtype=dtype)
    cols = torch.arange(w, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"))  # (2, H, W)


def warp_torch(img: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``img`` (B, C, H, W) at ``grid + flow`` with ``flow`` (B, 2, H, W) in pixels."""
    if flow.shape[1] != 2 or flow.shape[-2:] != img.shape[-2:]:
        raise ValueError(f"flow of shape {tuple(flow.shape)} does not fit image {tuple(img.shape)}")
    h, w = img.shape[-2:]
    pos = _base_grid(h, w, flow.device, flow.dtype).unsqueeze(0) + flow
    # grid_sample wants (x, y) = (column, row) normalised to [-1, 1] with align_corners=True.
    norm_r = 2.0 * pos[:, 0] / max(h - 1, 1) - 1.0
    norm_c = 2.0 * pos[:, 1] / max(w - 1, 1) - 1.0
    grid = torch.stack([norm_c, norm_r], dim=-1)
    return F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=True)


class SpatialTransformer(nn.Module):
    """Warps a batch of images by a batch of displacement fields (``warp_torch`` as a module)."""

    def __init__(self, mode: str = "bilinear"):
        super().__init__()
        self.mode = mode

    def forward(self, img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return warp_torch(img, flow, self.mode)


class VecInt(nn.Module):
    """Integrates a stationary velocity field by scaling and squaring (Arsigny et al., MICCAI 2006).

    ``steps`` squarings of ``v / 2**steps`` give the displacement of the diffeomorphism exp(v).
    """

    def __init__(self, steps: int = 7):
        super().__init__()
        if steps < 0:
            raise ValueError("steps must be >= 0")
        self.steps = steps

    def forward(self, velocity: torch.Tensor) -> torch.Tensor:
        disp = velocity / (2 ** self.steps)
        for _ in range(self.steps):
            disp = disp + warp_torch(disp, disp)
        return disp
