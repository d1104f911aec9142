"""Speed of every registered "traditional" fusion method on a 256x256 pair (pytest-benchmark).

Not a correctness test: nothing here asserts a time. Methods registered later (e.g. NSCT, MWGF)
are picked up automatically. The target is under 1 s per pair on one core, so pin the numeric
libraries to one thread when measuring:

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
        .venv/bin/pytest benchmarks/test_baseline_speed.py --benchmark-only
"""
from __future__ import annotations

import numpy as np
import pytest

import baselines.fusion  # noqa: F401  (registers the methods even without installed entry points)
from fusionbench.methods import create_method, list_methods


def _pair(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic PAT-like / MRI-like pair: bright blobs on dark vs smooth anatomy with texture."""
    rng = np.random.default_rng(2024)
    r, c = np.mgrid[0:size, 0:size] / (size - 1.0)
    body = ((r - 0.5) ** 2 + (c - 0.5) ** 2 < 0.16).astype(np.float64)
    pat = 0.05 + 0.7 * np.exp(-((r - 0.4) ** 2 + (c - 0.55) ** 2) / 0.002) * body
    pat += 0.4 * np.exp(-((r - 0.6) ** 2 + (c - 0.35) ** 2) / 0.004) * body
    mri = body * (0.35 + 0.15 * np.sin(20 * r) * np.cos(14 * c)) + 0.05
    pat += 0.03 * rng.random((size, size))
    mri += 0.03 * rng.random((size, size))
    return (np.clip(pat, 0, 1).astype(np.float32), np.clip(mri, 0, 1).astype(np.float32))


PAT, MRI = _pair()


@pytest.mark.parametrize("name", list_methods(kind="traditional"))
def test_fuse_256(benchmark, name):
    method = create_method(name)
    method.fuse(PAT, MRI)  # warm-up: imports, caches
    fused = benchmark.pedantic(method.fuse, args=(PAT, MRI), rounds=5, iterations=1)
    assert fused.shape == (256, 256) and fused.dtype == np.float32
