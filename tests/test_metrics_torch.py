"""Tests of fusionbench.metrics.torch: the batched torch path gives the numpy core's numbers.

Every comparison is against the public numpy API (``fusion_suite``, ``fmi``, ``fmi_features``)
evaluated here, at test time, so the two implementations cannot drift apart unnoticed.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusionbench.metrics.feature_mi import fmi, fmi_features  # noqa: E402
from fusionbench.metrics.fusion import SUITE_COLUMNS, fusion_suite  # noqa: E402
from fusionbench.metrics.torch import TORCH_COLUMNS, fusion_suite_batch  # noqa: E402
from fusionbench.scoring import score_fusion  # noqa: E402

#: float64 against numpy (the task's bar; observed differences are below 1e-9).
TOL = 1e-5
#: float32 against numpy, as documented in fusion_suite_batch (observed: 2e-6, the float32 rounding of the values).
FLOAT32_TOL = 1e-4


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def quantise(x: np.ndarray) -> np.ndarray:
    """8-bit grey levels k / 255 as float32, as saved images hold them."""
    return (np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def realistic_triplet(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A PAT / MRI / fused triplet as benchmarks/conftest.py::make_triplet builds it, any shape."""
    from scipy import ndimage as ndi
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    scene = transform.resize(data.camera().astype(np.float64) / 255.0, shape, anti_aliasing=True)
    depth = np.linspace(1.0, 0.35, shape[0])[:, None]  # light fluence falls off with depth
    pat = ndi.gaussian_filter(scene, 1.5) ** 1.5 * depth + 0.04 * rng.standard_normal(shape)
    mri = 0.15 + 0.7 * (1.0 - scene) ** 0.8 + 0.02 * rng.standard_normal(shape)
    pat, mri = quantise(pat), quantise(mri)
    return pat, mri, quantise((0.4 + 0.2 * rng.random()) * pat + 0.5 * mri)


def noise_triplet(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = quantise(rng.random(shape)), quantise(rng.random(shape))
    return a, b, quantise(0.5 * a + 0.5 * b + 0.05 * rng.standard_normal(shape))


def float_triplet(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Not 8-bit: smooth float32 images, which the 0-255 scale does not snap to integers."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    a, b = (ndi.gaussian_filter(rng.random(shape), 2.0).astype(np.float32) for _ in range(2))
    return a, b, (0.5 * a + 0.5 * b).astype(np.float32)


def constant_region_triplet(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat regions where the metrics' degenerate branches fire: black PAT background, saturated
    MRI, a constant fused block (constant windows, all-zero edge windows, flat SSIM/VIF windows)."""
    a, b, f = (x.copy() for x in realistic_triplet(shape, seed))
    h, w = shape
    a[:, : w // 3] = 0.0
    b[: h // 4] = 1.0
    f[h // 2:, w // 2:] = 128 / 255
    f[: h // 4, : w // 3] = 0.0
    return a, b, f


def stack(triplets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.stack(images) for images in zip(*triplets))


def numpy_rows(triplets) -> list[dict[str, float]]:
    return [fusion_suite(*t, convention="paper") for t in triplets]


def assert_close(got: torch.Tensor, expected: list[float], tol: float, what: str) -> None:
    got = got.detach().cpu().numpy().astype(np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, what
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol, err_msg=what)


# --------------------------------------------------------------------------------------------
# Equality with numpy
# --------------------------------------------------------------------------------------------

SMALL = (32, 40)


@pytest.fixture(scope="module")
def small_batch():
    """Five different 32 x 40 triplets: realistic ones, noise, and one with constant regions."""
    triplets = [realistic_triplet(SMALL, 0), realistic_triplet(SMALL, 1), noise_triplet(SMALL, 2),
                constant_region_triplet(SMALL, 3), realistic_triplet(SMALL, 4)[::-1]]
    return triplets, numpy_rows(triplets), fusion_suite_batch(*stack(triplets))


@pytest.fixture(scope="module")
def square_batch():
    """Four 64 x 64 triplets: realistic, with constant regions, noise, and not 8-bit."""
    triplets = [realistic_triplet((64, 64), 5), constant_region_triplet((64, 64), 6), noise_triplet((64, 64), 7),
                float_triplet((64, 64), 8)]
    return triplets, numpy_rows(triplets), fusion_suite_batch(*stack(triplets))


def test_columns_are_the_suite_columns():
    assert TORCH_COLUMNS == SUITE_COLUMNS


@pytest.mark.parametrize("column", SUITE_COLUMNS)
def test_batch_equals_numpy_32x40(small_batch, column):
    _, expected, got = small_batch
    assert list(got) == list(SUITE_COLUMNS)
    assert_close(got[column], [row[column] for row in expected], TOL, column)


@pytest.mark.parametrize("column", SUITE_COLUMNS)
def test_batch_equals_numpy_64x64(square_batch, column):
    _, expected, got = square_batch
    assert_close(got[column], [row[column] for row in expected], TOL, column)


def test_256x256_equals_numpy():
    """The paper's crop size (one triplet: the torch CPU path takes about a second)."""
    triplet = constant_region_triplet((256, 256), 8)
    expected = fusion_suite(*triplet)
    got = fusion_suite_batch(*triplet)
    for column in SUITE_COLUMNS:
        assert_close(got[column], [expected[column]], TOL, column)


def test_batch_equals_one_at_a_time(small_batch):
    triplets, _, batched = small_batch
    for i, triplet in enumerate(triplets):
        single = fusion_suite_batch(*triplet)
        for column in SUITE_COLUMNS:
            assert single[column].shape == (1,)
            assert_close(single[column], [float(batched[column][i])], 1e-12, f"{column} of triplet {i}")


def test_fmi_features_and_fmi_agree_with_the_public_numpy_api(square_batch):
    """The FMI columns are ``fmi(feature=...)`` of the numpy core, feature by feature."""
    triplets, _, got = square_batch
    for column, feature in (("FMI_pixel", "edge"), ("FMI_dct", "dct"), ("FMI_w", "wavelet")):
        assert_close(got[column], [fmi(*t, feature=feature) for t in triplets], TOL, column)


def test_constant_windows_are_centred_by_the_left_to_right_mean():
    """Two different constant windows correlate exactly 1 and score 1 (the corrected rule).

    A has a vertical step, B and F are black. F's edge windows are all zero; where A's window
    holds an edge pixel, A's score is about 0, and B (all zero) is tested against F's *scaled*
    window (all ones, the reference's quirk): both constant, not identical, so B scores 1. Every
    other window is identical in A and F, and then B in F, so scores 1. FMI_pixel is therefore
    1 - (share of windows touching an edge of A) / 2.
    """
    a = np.zeros((24, 28), dtype=np.float32)
    a[:, 14:] = 0.8
    b = f = np.zeros_like(a)
    edges = fmi_features(a, "edge")
    windows = np.lib.stride_tricks.sliding_window_view(edges, (3, 3)).reshape(-1, 9)
    touched = np.mean(windows.max(axis=1) > 0)
    assert 0 < touched < 1 and not np.any(windows.min(axis=1) > 0)
    got = float(fusion_suite_batch(a, b, f, metrics=["FMI_pixel"])["FMI_pixel"][0])
    assert got == pytest.approx(1.0 - touched / 2, abs=1e-12)
    with pytest.warns(RuntimeWarning):  # the numpy core warns about the constant images
        assert got == pytest.approx(fmi(a, b, f, feature="edge"), abs=TOL)


def test_flat_dmey_supports_are_exactly_flat():
    """A flat stretch of the image gives exactly constant dmey coefficients, as Matlab's direct
    convolution: FMI's per-window min-max scaling would stretch rounding noise to [0, 1]."""
    from fusionbench.metrics.torch import _dmey_analysis

    x = torch.full((1, 4, 300), 51.0, dtype=torch.float64)
    x[..., 151:] = torch.arange(149, dtype=torch.float64)
    low, high = _dmey_analysis(x)
    # Outputs 0..75 see only the flat stretch with their non-zero taps (75: all but the zero tap).
    assert torch.unique(low[..., :76]).numel() == 1
    assert torch.unique(high[..., :75]).numel() == 1


def test_fmi_w_flat_stretch_ending_under_the_zero_tap():
    a, b, f = realistic_triplet((64, 300), 9)
    a = a.copy()
    a[:, :151] = 0.2  # flat stretch whose end falls under the low-pass filter's zero tap
    got = float(fusion_suite_batch(a, b, f, metrics=["FMI_w"])["FMI_w"][0])
    assert got == pytest.approx(fmi(a, b, f, feature="wavelet"), abs=TOL)


# --------------------------------------------------------------------------------------------
# Inputs, precision and devices
# --------------------------------------------------------------------------------------------

def test_inputs_as_tensors_arrays_and_uint8_agree(small_batch):
    """All 8-bit data: the uint8 levels are the same images."""
    triplets, _, expected = small_batch
    a, b, f = stack(triplets)
    as_uint8 = [np.rint(x * 255).astype(np.uint8) for x in (a, b, f)]
    for inputs in ([torch.from_numpy(x) for x in (a, b, f)], as_uint8, [x.astype(np.float64) for x in (a, b, f)]):
        got = fusion_suite_batch(*inputs, metrics=["MI", "SSIM", "FMI_dct"])
        for column, value in got.items():
            assert value.dtype == torch.float64 and value.device.type == "cpu"
            assert_close(value, expected[column].tolist(), 1e-12, column)


def test_float32_agrees_to_the_documented_tolerance(square_batch):
    triplets, expected, _ = square_batch
    got = fusion_suite_batch(*stack(triplets), dtype=torch.float32)
    for column in SUITE_COLUMNS:
        assert got[column].dtype == torch.float32
        assert_close(got[column], [row[column] for row in expected], FLOAT32_TOL, column)


def test_metric_selection_is_case_insensitive_and_in_table_order():
    a, b, f = realistic_triplet(SMALL, 0)
    got = fusion_suite_batch(a, b, f, metrics=["ssim", "MI", "fmi_W"])
    assert list(got) == ["MI", "SSIM", "FMI_w"]


@pytest.mark.parametrize("kwargs, message", [
    ({"convention": "tang"}, "'tang'"),
    ({"metrics": ["MI", "NIQE"]}, "unknown metric 'NIQE'"),
    ({"device": "tpu"}, "device must be"),
    ({"device": "cuda:x"}, "device must be"),
    ({"dtype": torch.float16}, "dtype must be"),
])
def test_bad_arguments_raise_one_line_value_errors(kwargs, message):
    a, b, f = realistic_triplet(SMALL, 0)
    with pytest.raises(ValueError, match=message) as info:
        fusion_suite_batch(a, b, f, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_value_error():
    a, b, f = realistic_triplet(SMALL, 0)
    with pytest.raises(ValueError, match="no CUDA device"):
        fusion_suite_batch(a, b, f, device="cuda")


def test_bad_images_raise_value_errors():
    a, b, f = realistic_triplet(SMALL, 0)
    with pytest.raises(ValueError, match="shape mismatch"):
        fusion_suite_batch(a, b, f[:, :-1])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        fusion_suite_batch(a[None, None], b[None, None], f[None, None])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fusion_suite_batch(a * 2, b, f)
    with pytest.raises(ValueError, match="SSIM needs images of at least 7 x 7"):
        fusion_suite_batch(a[:6], b[:6], f[:6], metrics=["SSIM"])
    assert fusion_suite_batch(a[:6], b[:6], f[:6], metrics=["MI"])["MI"].shape == (1,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_equals_numpy(square_batch):
    triplets, expected, _ = square_batch
    got = fusion_suite_batch(*stack(triplets), device="cuda")
    for column in SUITE_COLUMNS:
        assert got[column].device.type == "cuda"
        assert_close(got[column], [row[column] for row in expected], TOL, column)


# --------------------------------------------------------------------------------------------
# The harness's scoring
# --------------------------------------------------------------------------------------------

def _rows_by_metric(rows):
    assert all(r["group"] == "fusion" and r["seconds"] >= 0 for r in rows)
    return {r["metric"]: r["value"] for r in rows}


def test_score_fusion_torch_rows_equal_numpy_rows():
    triplet = constant_region_triplet((48, 52), 10)
    numpy_rows_ = score_fusion(*triplet)
    torch_rows = score_fusion(*triplet, backend="torch")
    assert [r["metric"] for r in torch_rows] == [r["metric"] for r in numpy_rows_]
    expected = _rows_by_metric(numpy_rows_)
    for metric, value in _rows_by_metric(torch_rows).items():
        assert value == pytest.approx(expected[metric], abs=TOL), metric


def test_score_fusion_uses_torch_on_cuda_with_the_paper_convention(monkeypatch):
    """The CUDA branch, exercised on the CPU: the batched call is redirected to the CPU."""
    import fusionbench.metrics.torch as torch_metrics

    calls = []
    real = torch_metrics.fusion_suite_batch

    def on_cpu(*args, device=None, **kwargs):
        calls.append(device)
        return real(*args, device="cpu", **kwargs)

    monkeypatch.setattr(torch_metrics, "fusion_suite_batch", on_cpu)
    triplet = realistic_triplet((40, 40), 11)
    metrics = ["MI", "Qabf", "FMI_pixel", "PSNR"]
    rows = score_fusion(*triplet, metrics=metrics, device="cuda")
    assert calls == ["cuda"]
    expected = _rows_by_metric(score_fusion(*triplet, metrics=metrics, backend="numpy"))
    assert [r["metric"] for r in rows] == metrics
    seconds = {r["seconds"] for r in rows}
    assert len(seconds) == 1  # one batched call, its time split evenly
    for metric, value in _rows_by_metric(rows).items():
        assert value == pytest.approx(expected[metric], abs=TOL), metric
    score_fusion(*triplet, metrics=metrics, device="cpu")
    score_fusion(*triplet, metrics=["MI"], device="cuda", convention="tang")
    assert calls == ["cuda"]  # CPU runs and other conventions keep the numpy core


def test_runner_passes_the_run_device_to_the_scoring(monkeypatch):
    import fusionbench.metrics.torch as torch_metrics
    from fusionbench import runner

    calls = []
    real = torch_metrics.fusion_suite_batch
    monkeypatch.setattr(torch_metrics, "fusion_suite_batch",
                        lambda *a, device=None, **kw: calls.append(device) or real(*a, device="cpu", **kw))

    class Average:
        def fuse(self, pat, mri):
            return 0.5 * pat + 0.5 * mri

    pat, mri, _ = realistic_triplet((40, 40), 12)
    task = runner._Task("fuse", "average", "case", pat, mri)
    context = {"methods": {"average": Average()}, "convention": "paper", "metrics": ["MI", "SSIM"],
               "device": "cuda"}
    result = runner._execute(context, task)
    assert result["status"] == "ok", result.get("error")
    assert calls == ["cuda"]
    assert [r["metric"] for r in result["rows"] if r["group"] == "fusion"] == ["MI", "SSIM"]


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        score_fusion(*realistic_triplet(SMALL, 0), backend="jax")
