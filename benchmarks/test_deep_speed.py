"""Speed of the deep fusion baselines on CPU (pytest-benchmark): inference and training steps.

Not a correctness test: nothing here asserts a time. Every registered fusion method of kind
cnn/gan/transformer is timed fusing one 256x256 pair on CPU (shipped weights if present, else
random ones: the cost is the same); methods built on ``TrainableFusion`` are also timed for one
training step on a batch of their own default size, drawn from a small synthetic training set
(the natural images are left out so the set-up stays quick). Run with

    .venv/bin/pytest benchmarks/test_deep_speed.py --benchmark-only

and pin threads (``OMP_NUM_THREADS``, ``torch.set_num_threads`` via ``FUSIONBENCH_BENCH_THREADS``)
when comparing machines.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

import baselines.fusion  # noqa: F401  (registers the methods even without installed entry points)
from baselines.fusion._deep import TrainableFusion, TrainingData
from fusionbench.data import Case
from fusionbench.methods import create_method, get_method_info, list_methods

DEEP_KINDS = ("cnn", "gan", "transformer")
DEEP = [n for k in DEEP_KINDS for n in list_methods(kind=k) if get_method_info(n).role == "fusion"]
TRAINABLE = [n for n in DEEP if isinstance(get_method_info(n).factory, type)
             and issubclass(get_method_info(n).factory, TrainableFusion)]

torch.set_num_threads(int(os.environ.get("FUSIONBENCH_BENCH_THREADS", torch.get_num_threads())))


def _pair(size: int = 256, seed: int = 2024) -> tuple[np.ndarray, np.ndarray]:
    """A PAT-like (bright blobs on dark) and MRI-like (textured body) pair."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:size, 0:size] / (size - 1.0)
    body = ((r - 0.5) ** 2 + (c - 0.5) ** 2 < 0.16).astype(np.float64)
    pat = 0.05 + 0.7 * np.exp(-((r - 0.4) ** 2 + (c - 0.55) ** 2) / 0.002) * body
    mri = body * (0.35 + 0.15 * np.sin(20 * r) * np.cos(14 * c)) + 0.05
    pat += 0.03 * rng.random((size, size))
    mri += 0.03 * rng.random((size, size))
    return np.clip(pat, 0, 1).astype(np.float32), np.clip(mri, 0, 1).astype(np.float32)


PAT, MRI = _pair()


def _create(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # missing shipped weights / VGG: same cost
        return create_method(name, device="cpu")


@pytest.mark.parametrize("name", DEEP)
def test_fuse_256_cpu(benchmark, name):
    method = _create(name)
    method.fuse(PAT, MRI)  # warm-up
    fused = benchmark.pedantic(method.fuse, args=(PAT, MRI), rounds=3, iterations=1)
    assert fused.shape == (256, 256) and fused.dtype == np.float32


@pytest.mark.parametrize("name", TRAINABLE)
def test_train_step_cpu(benchmark, name):
    method = _create(name)
    cases = [Case(id=f"b{i}", pat=p, mri=m) for i, (p, m) in enumerate(_pair(256, s) for s in range(4))]
    data = TrainingData(cases, natural=False)
    rng = np.random.default_rng(0)
    method.train_step(method.sample_batch(data, rng))  # warm-up, creates the optimisers
    batch = method.sample_batch(data, rng)
    terms = benchmark.pedantic(method.train_step, args=(batch,), rounds=3, iterations=1)
    benchmark.extra_info["batch"] = method.train_settings.get("batch")
    benchmark.extra_info["patch"] = method.train_settings.get("patch")
    assert np.isfinite(terms["loss"])
