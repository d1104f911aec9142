"""Speed of the batched torch scoring path (pytest-benchmark): images per second for a batch of 64
realistic 256 x 256 triplets, all twelve fusion columns, on the CPU and on CUDA.

Run with ``pytest benchmarks/test_metrics_torch_speed.py --benchmark-only -s``. The CPU runs with
one torch thread (per-core numbers, as the harness runs one case per process); the images/s
figure is printed and stored in the benchmark's ``extra_info`` (``images_per_second``). The CUDA
benchmarks are skipped without a GPU; their inputs start on the GPU and each round waits for it.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_triplet  # noqa: E402  (benchmarks/conftest.py)
from fusionbench.metrics.torch import TORCH_COLUMNS, fusion_suite_batch  # noqa: E402

BATCH = 64
SIZE = 256


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, f) arrays of shape (64, 256, 256): 64 different triplets (noise seeds)."""
    triplets = [make_triplet(SIZE, seed) for seed in range(BATCH)]
    return tuple(np.stack(images) for images in zip(*triplets))


@pytest.fixture
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _report(benchmark, label: str) -> None:
    rate = BATCH / benchmark.stats.stats.mean
    benchmark.extra_info.update(images_per_second=rate, batch=BATCH, size=SIZE)
    print(f"\n{label}: {rate:.2f} images/s ({BATCH} triplets of {SIZE} x {SIZE}, {len(TORCH_COLUMNS)} metrics)")


def test_cpu_one_thread(benchmark, batch, one_torch_thread):
    result = benchmark.pedantic(fusion_suite_batch, args=batch, kwargs={"device": "cpu"}, rounds=1,
                                iterations=1)
    assert list(result) == list(TORCH_COLUMNS) and result["MI"].shape == (BATCH,)
    _report(benchmark, "CPU, one thread, float64")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_cuda(benchmark, batch, dtype):
    on_gpu = [torch.from_numpy(x).cuda() for x in batch]

    def scored():
        out = fusion_suite_batch(*on_gpu, dtype=dtype)
        torch.cuda.synchronize()
        return out

    result = benchmark.pedantic(scored, rounds=3, iterations=1, warmup_rounds=1)
    assert result["FMI_w"].device.type == "cuda"
    _report(benchmark, f"CUDA, {dtype}")
