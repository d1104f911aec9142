"""Tests of fusionbench.metrics.registration: hand-computed values, invariants, reference toolboxes."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from fusionbench.data.io import ImageError
from fusionbench.metrics.registration import (
    endpoint_error,
    folding_fraction,
    jacobian_determinant,
    mi,
    ncc,
    nmi,
    warped_label_dice,
)


def smooth_image(seed: int, shape=(48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.random(shape), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * 255) / 255  # 8-bit grey levels spanning exactly [0, 1]


def histogram_entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --- mutual information -------------------------------------------------------------------------

def test_mi_hand_computed_4x4():
    # Joint counts [[6, 2], [2, 6]] over 16 pixels: p = [[3/8, 1/8], [1/8, 3/8]], marginals 1/2.
    x = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=float)
    y = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=float)
    expected = 0.75 * np.log(1.5) - 0.25 * np.log(2.0)
    assert mi(x, y) == pytest.approx(expected, abs=1e-12)
    assert mi(x, y, base=2) == pytest.approx(expected / np.log(2), abs=1e-12)
    assert mi(x, y, bins=2) == pytest.approx(expected, abs=1e-12)
    # NMI from the same entropies: H(X) = H(Y) = ln 2, H(X, Y) = 2 ln 2 - MI.
    hxy = 2 * np.log(2) - expected
    assert nmi(x, y) == pytest.approx(expected / np.log(2), abs=1e-12)
    assert nmi(x, y, normalization="geometric") == pytest.approx(expected / np.log(2), abs=1e-12)
    assert nmi(x, y, normalization="joint") == pytest.approx(expected / hxy, abs=1e-12)
    assert nmi(x, y, normalization="studholme") == pytest.approx(2 * np.log(2) / hxy, abs=1e-12)


def test_mi_of_identical_images_is_entropy_in_nats():
    img = smooth_image(0)
    counts = np.bincount(np.round(img * 255).astype(int).ravel(), minlength=256)
    assert mi(img, img) == pytest.approx(histogram_entropy(counts), rel=1e-12)
    assert nmi(img, img) == pytest.approx(1.0, abs=1e-12)
    assert nmi(img, img, normalization="geometric") == pytest.approx(1.0, abs=1e-12)
    assert nmi(img, img, normalization="joint") == pytest.approx(1.0, abs=1e-12)
    assert nmi(img, img, normalization="studholme") == pytest.approx(2.0, abs=1e-12)


def test_mi_uint8_grey_levels_map_to_their_own_bins():
    # 256 bins on [0, 1] put level k in bin k: MI equals the MI of the raw 8-bit labels.
    x, y = smooth_image(1), smooth_image(2)
    kx, ky = np.round(x * 255).astype(int), np.round(y * 255).astype(int)
    joint = np.bincount((kx * 256 + ky).ravel(), minlength=256 * 256)
    expected = (histogram_entropy(np.bincount(kx.ravel())) + histogram_entropy(np.bincount(ky.ravel()))
                - histogram_entropy(joint))
    assert mi(x, y) == pytest.approx(expected, rel=1e-12)
    assert mi((x * 255).round().astype(np.uint8), (y * 255).round().astype(np.uint8)) == pytest.approx(expected, rel=1e-9)


def test_mi_matches_medpy_in_bits():
    from medpy.metric.image import mutual_information

    x, y = smooth_image(3), smooth_image(4)
    # medpy bins each image over [min - w/2, max + w/2] with 256 bins: one bin per 8-bit level here.
    assert mi(x, y, base=2) == pytest.approx(mutual_information(x, y, bins=256), rel=1e-10)


def test_nmi_studholme_matches_scikit_image():
    from skimage.metrics import normalized_mutual_information

    x, y = smooth_image(5), smooth_image(6)
    # scikit-image bins over each image's own range; both span [0, 1] here so the bins coincide.
    assert nmi(x, y, normalization="studholme") == pytest.approx(
        normalized_mutual_information(x, y, bins=256), rel=1e-10)


def test_nmi_arithmetic_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    x, y = smooth_image(7), smooth_image(8)
    labels_x, labels_y = np.round(x * 255).astype(int).ravel(), np.round(y * 255).astype(int).ravel()
    for norm in ("arithmetic", "geometric"):
        assert nmi(x, y, normalization=norm) == pytest.approx(
            metrics.normalized_mutual_info_score(labels_x, labels_y, average_method=norm), rel=1e-10)


def test_mi_is_symmetric_and_invariant_to_intensity_relabelling():
    x, y = smooth_image(9), smooth_image(10)
    assert mi(x, y) == pytest.approx(mi(y, x), rel=1e-12)
    assert nmi(x, y) == pytest.approx(nmi(y, x), rel=1e-12)
    # Inverting the grey levels is a bijection of the bins: MI unchanged.
    assert mi(1 - x, y) == pytest.approx(mi(x, y), rel=1e-9)


def test_mi_mask_restricts_the_pixels():
    x, y = smooth_image(11), smooth_image(12)
    mask = np.zeros(x.shape, bool)
    mask[5:30, 3:25] = True
    assert mi(x, y, mask=mask) == pytest.approx(mi(x[5:30, 3:25], y[5:30, 3:25]), rel=1e-12)
    assert ncc(x, y, mask=mask) == pytest.approx(ncc(x[5:30, 3:25], y[5:30, 3:25]), rel=1e-12)


def test_mi_fewer_bins_gives_less_information():
    x, y = smooth_image(13), smooth_image(14)
    assert mi(x, x, bins=16) < mi(x, x, bins=256)
    assert mi(x, x, bins=16) == pytest.approx(np.log(16), abs=0.5)


def test_mi_and_nmi_of_constant_images():
    x = smooth_image(15)
    const = np.full_like(x, 0.5)
    assert mi(x, const) == 0.0
    assert nmi(x, const) == 0.0
    assert nmi(x, const, normalization="studholme") == pytest.approx(1.0)
    with pytest.warns(RuntimeWarning, match="both images are constant"):
        assert nmi(const, const) == 1.0
    with pytest.warns(RuntimeWarning, match="both images are constant"):
        assert nmi(const, const, normalization="studholme") == 2.0


@pytest.mark.parametrize("kwargs, match", [
    ({"bins": 1}, "bins"), ({"bins": 2.5}, "bins"), ({"base": 1}, "base"), ({"base": -2}, "base"),
])
def test_mi_rejects_bad_parameters(kwargs, match):
    x = smooth_image(16)
    with pytest.raises(ValueError, match=match):
        mi(x, x, **kwargs)


def test_nmi_rejects_unknown_normalization():
    x = smooth_image(17)
    with pytest.raises(ValueError, match="normalization"):
        nmi(x, x, normalization="max")


def test_similarity_rejects_bad_images():
    x = smooth_image(18)
    with pytest.raises(ImageError, match="shape mismatch"):
        mi(x, x[:-1])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        ncc(x, bad)
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        nmi(x, x * 3)
    with pytest.raises(ImageError, match="no pixels"):
        mi(x, x, mask=np.zeros(x.shape, bool))
    with pytest.raises(ImageError, match="mask: shape"):
        ncc(x, x, mask=np.ones((3, 3), bool))


# --- NCC ----------------------------------------------------------------------------------------

def test_ncc_known_values():
    x = smooth_image(19)
    assert ncc(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ncc(x, 1 - x) == pytest.approx(-1.0, abs=1e-12)
    assert ncc(x, 0.5 * x + 0.25) == pytest.approx(1.0, abs=1e-12)
    y = smooth_image(20)
    # as_image stores float32, so compare with the correlation of the float32 pixels.
    x32, y32 = x.astype(np.float32).ravel(), y.astype(np.float32).ravel()
    assert ncc(x, y) == pytest.approx(np.corrcoef(x32, y32)[0, 1], abs=1e-12)
    assert ncc(x, y) == pytest.approx(ncc(y, x), abs=1e-15)


def test_ncc_constant_image_is_zero_with_warning():
    x = smooth_image(21)
    with pytest.warns(RuntimeWarning, match="constant"):
        assert ncc(x, np.zeros_like(x)) == 0.0


# --- endpoint error -----------------------------------------------------------------------------

def test_endpoint_error_of_known_flows():
    shape = (10, 12)
    truth = np.zeros((2, *shape), np.float32)
    flow = np.zeros_like(truth)
    flow[0], flow[1] = 3.0, 4.0  # a 3-4-5 triangle everywhere
    assert endpoint_error(flow, truth) == {"mean": 5.0, "p95": 5.0, "max": 5.0}
    assert endpoint_error(truth, truth) == {"mean": 0.0, "p95": 0.0, "max": 0.0}
    # Error 1 on a quarter of the pixels, 0 elsewhere; the mask picks the erroneous part only.
    flow = np.zeros_like(truth)
    flow[1, :5, :6] = 1.0
    err = endpoint_error(flow, truth)
    assert err["mean"] == pytest.approx(0.25)
    assert err["max"] == 1.0
    assert err["p95"] == 1.0
    mask = np.zeros(shape, bool)
    mask[:5, :6] = True
    assert endpoint_error(flow, truth, mask=mask)["mean"] == 1.0
    assert endpoint_error(flow, truth, mask=~mask)["max"] == 0.0


def test_endpoint_error_p95_is_linear_percentile():
    truth = np.zeros((2, 1, 21), np.float32)
    flow = truth.copy()
    flow[0, 0] = np.arange(21)  # errors 0..20; 95th percentile by linear interpolation = 19
    assert endpoint_error(flow, truth)["p95"] == pytest.approx(19.0)


@pytest.mark.parametrize("flow, match", [
    (np.zeros((10, 12)), r"\(2, H, W\)"),
    (np.zeros((3, 10, 12)), r"\(2, H, W\)"),
    (np.zeros((2, 10, 11)), "expected"),
])
def test_endpoint_error_rejects_bad_shapes(flow, match):
    with pytest.raises(ValueError, match=match):
        endpoint_error(flow, np.zeros((2, 10, 12)))


def test_endpoint_error_rejects_nan():
    flow = np.zeros((2, 4, 4))
    flow[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        endpoint_error(flow, np.zeros((2, 4, 4)))


# --- Jacobian and folding -----------------------------------------------------------------------

def test_jacobian_of_identity_and_translation_is_one():
    flow = np.zeros((2, 9, 7))
    np.testing.assert_array_equal(jacobian_determinant(flow), 1.0)
    flow[0], flow[1] = 2.5, -1.0
    np.testing.assert_allclose(jacobian_determinant(flow), 1.0)


@pytest.mark.parametrize("s", [0.1, -0.3, 0.5])
def test_jacobian_of_pure_scaling(s):
    grid = np.stack(np.meshgrid(np.arange(16.0), np.arange(20.0), indexing="ij"))
    flow = s * (grid - np.array([7.0, 9.0])[:, None, None])
    np.testing.assert_allclose(jacobian_determinant(flow), (1 + s) ** 2, rtol=1e-12)


def test_jacobian_of_shear_and_anisotropic_scaling():
    grid = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0), indexing="ij"))
    # phi(r, c) = (r + 0.5 c, 2 c): det [[1, 0.5], [0, 2]] = 2.
    flow = np.stack([0.5 * grid[1], grid[1]])
    np.testing.assert_allclose(jacobian_determinant(flow), 2.0, rtol=1e-12)
    # phi(r, c) = (c, r): a reflection, det -1.
    flow = np.stack([grid[1] - grid[0], grid[0] - grid[1]])
    np.testing.assert_allclose(jacobian_determinant(flow), -1.0, rtol=1e-12)


def test_folding_fraction_identity_and_fold():
    assert folding_fraction(np.zeros((2, 16, 16))) == 0.0
    # Column map c -> c + u(c) with u = 0, -2, -4, -6 on columns 4..7 and 0 elsewhere. Central
    # differences give d(phi)/dc = 1 + u' = 0, -1, -1 on columns 4, 5, 6 (folded: det <= 0) and
    # 3, 4 on columns 7, 8: 3 of 16 columns fold.
    u = np.zeros(16)
    u[4:8] = [0.0, -2.0, -4.0, -6.0]
    flow = np.zeros((2, 10, 16))
    flow[1] = u
    dphi = 1 + np.gradient(u)
    np.testing.assert_array_equal(dphi[3:9], [1, 0, -1, -1, 3, 4])
    expected = 3 / 16
    assert folding_fraction(flow) == pytest.approx(expected)
    det = jacobian_determinant(flow)
    np.testing.assert_allclose(det, np.broadcast_to(dphi, (10, 16)))
    mask = np.zeros((10, 16), bool)
    mask[:, :3] = True
    assert folding_fraction(flow, mask=mask) == 0.0


def test_folding_fraction_of_reflection_is_one():
    grid = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij"))
    assert folding_fraction(np.stack([np.zeros((8, 8)), 7 - 2 * grid[1]])) == 1.0


def test_jacobian_rejects_tiny_fields():
    with pytest.raises(ValueError, match="too small"):
        jacobian_determinant(np.zeros((2, 1, 5)))


# --- warped label Dice --------------------------------------------------------------------------

def test_warped_label_dice_recovers_known_translation():
    fixed = np.zeros((32, 32), np.int64)
    fixed[4:14, 6:18] = 1
    fixed[18:28, 10:20] = 5
    fixed[20:24, 12:16] = 10
    # warp samples moving at x + flow: moving shifted by (+2, -3) is aligned by flow = (2, -3).
    moving = np.roll(fixed, (2, -3), axis=(0, 1))
    flow = np.zeros((2, 32, 32), np.float32)
    flow[0], flow[1] = 2, -3
    scores = warped_label_dice(moving, fixed, flow)
    assert scores == {1: 100.0, 5: 100.0, 10: 100.0, "mean": 100.0}
    # Without the flow: label 1 (10 x 12) shifted by (2, -3) keeps an 8 x 9 overlap.
    scores = warped_label_dice(moving, fixed, np.zeros_like(flow))
    assert scores[1] == pytest.approx(200 * 72 / 240)
    assert scores["mean"] == pytest.approx(np.mean([scores[1], scores[5], scores[10]]))


def test_warped_label_dice_absent_labels():
    fixed = np.zeros((8, 8), np.int32)
    fixed[2:6, 2:6] = 3
    moving = fixed.copy()
    moving[0, 0] = 7  # present only in moving
    scores = warped_label_dice(moving, fixed, np.zeros((2, 8, 8)), labels=[3, 4, 7])
    assert scores[3] == 100.0
    assert np.isnan(scores[4])  # absent from both: shown as "/"
    assert scores[7] == 0.0
    assert scores["mean"] == 100.0  # only labels present in the fixed map
    with pytest.warns(RuntimeWarning, match="no scored label"):
        assert np.isnan(warped_label_dice(moving, fixed, np.zeros((2, 8, 8)), labels=[4])["mean"])


def test_warped_label_dice_rejects_float_labels():
    with pytest.raises(ValueError, match="integer"):
        warped_label_dice(np.zeros((4, 4)), np.zeros((4, 4), int), np.zeros((2, 4, 4)))


# --- properties ---------------------------------------------------------------------------------

images = arrays(np.float64, st.tuples(st.integers(8, 24), st.integers(8, 24)),
                elements=st.floats(0, 1, allow_nan=False))


@settings(max_examples=30, deadline=None)
@given(images, st.integers(0, 2**32 - 1))
def test_similarity_ranges_never_nan(x, seed):
    y = np.random.default_rng(seed).random(x.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws are allowed here
        values = {"mi": mi(x, y), "ncc": ncc(x, y)}
        values.update({n: nmi(x, y, normalization=n) for n in ("arithmetic", "geometric", "joint", "studholme")})
    assert all(np.isfinite(v) for v in values.values())
    assert values["mi"] >= 0
    assert -1 <= values["ncc"] <= 1
    for n in ("arithmetic", "geometric", "joint"):
        assert 0 <= values[n] <= 1
    assert 1 - 1e-12 <= values["studholme"] <= 2 + 1e-12
    assert values["mi"] <= min(mi(x, x), mi(y, y)) + 1e-9


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 5.0))
def test_folding_and_epe_ranges(seed, amplitude):
    rng = np.random.default_rng(seed)
    flow = amplitude * ndi.gaussian_filter(rng.standard_normal((2, 16, 16)), (0, 1.5, 1.5))
    frac = folding_fraction(flow)
    assert 0.0 <= frac <= 1.0
    err = endpoint_error(flow, np.zeros_like(flow))
    assert 0.0 <= err["mean"] <= err["p95"] <= err["max"]
    assert err["max"] == pytest.approx(np.hypot(flow[0], flow[1]).max())
