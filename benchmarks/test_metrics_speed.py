"""Speed of the fusion metrics (pytest-benchmark): each metric and the eight-column Table 2 suite
on 256 x 256 and 300 x 300 triplets, and CDDFuse's Python evaluator beside them where it is
importable.

Run with ``pytest benchmarks/test_metrics_speed.py --benchmark-only``. OpenCV, BLAS and numba are
held to one thread so the numbers are per core (the harness runs one case per process).

CDDFuse's ``utils/Evaluator.py`` (the evaluator the PAMRFuse+ code ships, byte-identical) is a
comparison only, never a dependency: set ``FUSIONBENCH_CDDFUSE_DIR`` to a checkout of
https://github.com/Zhaozixiang1228/MMIF-CDDFuse and the comparison tests run; otherwise they skip.
Its ``SSIM`` calls ``skimage.metrics.structural_similarity`` on float images without
``data_range``, which scikit-image >= 0.20 refuses; the comparison passes the value older
versions inferred for float images (2.0, the float dtype range), which does not change its cost.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import time

import cv2
import numpy as np
import pytest

from fusionbench.metrics import fusion

PAIR_METRICS = ["mi", "vif", "qabf", "ssim", "psnr"]
FUSED_METRICS = ["sf", "en", "sd", "ag"]
FMI_FEATURES = ["edge", "dct", "wavelet"]
TABLE2 = ("MI", "VIF", "Qabf", "SF", "SSIM", "FMI_pixel", "FMI_dct", "FMI_w")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        import threadpoolctl
        limits = threadpoolctl.threadpool_limits(1)
    except ImportError:  # scikit-learn brings it; without it BLAS keeps its own setting
        limits = None
    yield
    cv2.setNumThreads(previous)
    if limits is not None:
        limits.unregister()


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
    from fusionbench.metrics.feature_mi import fmi
    fmi(*triplet, feature=feature)  # compile (or load the cached kernel) outside the timing
    value = benchmark.pedantic(fmi, args=triplet, kwargs={"feature": feature}, rounds=5, iterations=1,
                               warmup_rounds=1)
    assert 0.0 <= value <= 1.0


def test_suite_without_fmi(benchmark, triplet):
    columns = [c for c in TABLE2 if not c.startswith("FMI")]
    result = benchmark(fusion.fusion_suite, *triplet, metrics=columns)
    assert list(result) == columns


def test_table2_suite(benchmark, triplet):
    fusion.fusion_suite(*triplet, metrics=TABLE2)
    result = benchmark.pedantic(fusion.fusion_suite, args=triplet, kwargs={"metrics": TABLE2}, rounds=5,
                                iterations=1, warmup_rounds=1)
    assert tuple(result) == TABLE2


# --------------------------------------------------------------------------------------------
# CDDFuse's evaluator, where a checkout is available.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cddfuse_evaluator():
    root = os.environ.get("FUSIONBENCH_CDDFUSE_DIR")
    if not root or not os.path.isfile(os.path.join(root, "utils", "Evaluator.py")):
        pytest.skip("set FUSIONBENCH_CDDFUSE_DIR to a CDDFuse checkout to compare with its evaluator")
    sys.path.insert(0, root)
    try:
        module = importlib.import_module("utils.Evaluator")
    except ImportError as error:
        pytest.skip(f"CDDFuse's evaluator does not import here: {error}")
    finally:
        sys.path.remove(root)
    from skimage.metrics import structural_similarity
    module.ssim = functools.partial(structural_similarity, data_range=2.0)
    return module.Evaluator


def _cddfuse_five(evaluator, pat, mri, fused):
    """MI, VIF, Qabf, SF, SSIM as CDDFuse's test scripts call them (0-255 float images)."""
    return (evaluator.MI(fused, pat, mri), evaluator.VIFF(fused, pat, mri), evaluator.Qabf(fused, pat, mri),
            evaluator.SF(fused), evaluator.SSIM(fused, pat, mri))


def _scaled(triplet):
    return [x.astype(np.float64) * 255.0 for x in triplet]


def test_cddfuse_evaluator_five(benchmark, triplet, cddfuse_evaluator):
    import warnings
    pat, mri, fused = _scaled(triplet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's "continuous values" warning on every MI call
        values = benchmark.pedantic(_cddfuse_five, args=(cddfuse_evaluator, pat, mri, fused), rounds=5,
                                    iterations=1, warmup_rounds=1)
    assert all(v == v for v in values)


def _best_of(function, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def test_table2_suite_against_cddfuse(benchmark, triplet, cddfuse_evaluator):
    """Both timed side by side in one process, best of 7 each; the ratio goes to extra_info."""
    import warnings
    scaled = _scaled(triplet)
    fusion.fusion_suite(*triplet, metrics=TABLE2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _best_of(lambda: _cddfuse_five(cddfuse_evaluator, *scaled), 7)
    ours = _best_of(lambda: fusion.fusion_suite(*triplet, metrics=TABLE2), 7)
    benchmark.extra_info.update(cddfuse_five_s=theirs, fusionbench_eight_s=ours, ratio=ours / theirs)
    print(f"\n{triplet[0].shape}: CDDFuse five {theirs * 1e3:.1f} ms, fusionbench eight {ours * 1e3:.1f} ms, "
          f"ratio {ours / theirs:.3f}")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
