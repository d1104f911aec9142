"""Helpers shared by every trainable method: seeding, parameter counts and state-dict files (their
provenance is :mod:`fusionbench.weights`'s)."""
from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from fusionbench.data.io import atomic_write_bytes


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def parameter_count(module: nn.Module | Iterable[nn.Parameter]) -> int:
    """Number of parameters (trainable or not) of a module, or of an iterable of parameters."""
    params = module.parameters() if isinstance(module, nn.Module) else module
    return sum(p.numel() for p in params)


def save_state(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict (tensors moved to the CPU) atomically."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def state_digest(module: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a module's parameters and buffers, by name, as float32 on the CPU.

    Independent of device, of the dtype the weights were stored in and of how they were loaded, so
    two modules get the same digest exactly when their parameters and buffers hold the same values.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved by :func:`save_state`, read with ``weights_only=True`` (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file not found")
    return torch.load(path, map_location="cpu", weights_only=True)
