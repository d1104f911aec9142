"""Helpers shared by every trainable method: seeding, data hashing, weight files with provenance."""
from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from fusionbench.data.io import atomic_write_bytes


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cases_hash(cases: Sequence[Any]) -> str:
    """Content hash of training cases (ids and pixels), so weights know what they were trained on."""
    h = hashlib.sha256()
    for case in cases:
        h.update(str(case.id).encode())
        h.update(np.ascontiguousarray(case.pat, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(case.mri, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def save_weights(path: str | Path, state: dict[str, torch.Tensor], provenance: dict[str, Any]) -> None:
    """Write ``state`` (float16 where it saves space without hurting inference) and provenance JSON."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    atomic_write_bytes(path, buf.getvalue())
    record = {**provenance, "saved": time.strftime("%Y-%m-%d %H:%M:%S"), "file": path.name,
              "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(record, indent=2).encode())


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a state dict saved by :func:`save_weights` (tensors only: ``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: weight file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return state, meta
