"""Speed of the fusion metrics (pytest-benchmark): each metric on 256 x 256 and 300 x 300
triplets, and the whole eight-column suite on one 256 x 256 triplet.

Run with ``pytest benchmarks/test_metrics_speed.py --benchmark-only``. OpenCV is held to one
thread here so the numbers are per core (the harness runs one case per process). The bar
(DESIGN section 8): all eight Table 2 metrics, FMI included, in less time than CDDFuse's Python
evaluator needs for MI, VIF, Qabf, SF and SSIM alone (0.3-0.45 s).
"""
from __future__ import annotations

import cv2
import pytest

from fusionbench.metrics import fusion

PAIR_METRICS = ["mi", "vif", "qabf", "ssim", "psnr"]
FUSED_METRICS = ["sf", "en", "sd", "ag"]
FMI_FEATURES = ["edge", "dct", "wavelet"]


@pytest.fixture(autouse=True, scope="module")
def one_opencv_thread():
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(previous)


@pytest.mark.parametrize("name", PAIR_METRICS)
def test_pair_metric(benchmark, triplet, name):
    metric = getattr(fusion, name)
    value = benchmark(metric, *triplet)
    assert value == value  # not NaN


@pytest.mark.parametrize("name", FUSED_METRICS)
def test_fused_metric(benchmark, triplet, name):
    metric = getattr(fusion, name)
    value = benchmark(metric, triplet[2])
    assert value == value


@pytest.mark.parametrize("feature", FMI_FEATURES)
def test_fmi(benchmark, triplet, feature):
    fmi_module = pytest.importorskip("fusionbench.metrics.feature_mi")
    value = benchmark.pedantic(fmi_module.fmi, args=triplet, kwargs={"feature": feature}, rounds=3, iterations=1,
                               warmup_rounds=1)
    assert value == value


def test_suite_without_fmi(benchmark, triplet_256):
    columns = [c for c in fusion.SUITE_COLUMNS if not c.startswith("FMI")]
    result = benchmark(fusion.fusion_suite, *triplet_256, metrics=columns)
    assert list(result) == columns


def test_fusion_suite(benchmark, triplet_256):
    pytest.importorskip("fusionbench.metrics.feature_mi")
    result = benchmark.pedantic(fusion.fusion_suite, args=triplet_256, rounds=3, iterations=1, warmup_rounds=1)
    assert tuple(result) == fusion.SUITE_COLUMNS
