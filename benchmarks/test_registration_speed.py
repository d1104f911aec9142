"""Speed of the registration baselines on CPU (pytest-benchmark): one 256² PAT→MRI pair each.

Not a correctness test: nothing here asserts a time. ``mi-bspline`` runs its full affine +
B-spline optimisation (single ITK thread, as in the harness); the learned methods time inference
with their shipped weights, or random ones when none are shipped (the cost is the same), and
``p2m+vm`` includes its P2M translation. One VoxelMorph training step (batch 4 at the working
size) is timed too. Run with

    .venv/bin/pytest benchmarks/test_registration_speed.py --benchmark-only
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import baselines.registration  # noqa: F401  (registers the methods)
from baselines.registration.voxelmorph import VoxelMorph
from fusionbench.data import Case
from fusionbench.methods import create_method
from pamrfuse.method import WEIGHTS_DIR as PAMRFUSE_WEIGHTS

torch.set_num_threads(int(os.environ.get("FUSIONBENCH_BENCH_THREADS", torch.get_num_threads())))

METHODS = ["identity", "mi-bspline", "voxelmorph", "p2m+vm"]


@pytest.mark.parametrize("name", METHODS)
def test_register_256(benchmark, triplet_256, name):
    if name == "p2m+vm" and not (PAMRFUSE_WEIGHTS / "pamrfuse_lite" / "provenance.json").exists():
        pytest.skip("p2m+vm needs the shipped PAMRFuse+ lite weights")
    pat, mri, _ = triplet_256
    method = create_method(name, **({"device": "cpu"} if name in ("voxelmorph", "p2m+vm") else {}))
    warped, flow = benchmark(method.register, pat, mri)
    assert warped.shape == pat.shape and flow.shape == (2, *pat.shape)


def test_voxelmorph_train_step(benchmark, triplet_256):
    pat, mri, _ = triplet_256
    cases = [Case(id=f"c{i}", pat=np.roll(pat, i, axis=1), mri=mri) for i in range(4)]
    vm = VoxelMorph(steps=1, weights=None, device="cpu")
    benchmark(vm._train, cases)
