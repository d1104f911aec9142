"""Speed of the phantom generator (pytest-benchmark; not a correctness test).

Run: ``pytest benchmarks/test_phantom_speed.py --benchmark-only``.
"""
from __future__ import annotations

import dataclasses

import pytest

from fusionbench.data.phantom.pat_physics import ring_system
from fusionbench.data.phantom import LEVELS, VERSIONS, PhantomConfig, generate_case

CFG = PhantomConfig(size=256)
CONFIGS = {v: PhantomConfig(size=256, version=v) for v in VERSIONS}


@pytest.fixture(scope="module", autouse=True)
def warm_ring_system():
    for cfg in CONFIGS.values():  # built once per process, size and field of view, shared by all cases
        ring_system(cfg.size, cfg.fov_mm)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("level", LEVELS)
def test_generate_case_256(benchmark, level, version):
    case = benchmark(generate_case, CONFIGS[version], 7, level)
    assert case.shape == (256, 256)


def test_generate_case_256_fast_fluence(benchmark):
    case = benchmark(generate_case, dataclasses.replace(CFG, fluence="fast"), 7, "lower_abdomen")
    assert case.shape == (256, 256)


def test_ring_system_build_256(benchmark):
    benchmark.pedantic(lambda: ring_system.__wrapped__(256, 40.0), rounds=1, iterations=1)
