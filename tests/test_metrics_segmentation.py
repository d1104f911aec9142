"""Tests of fusionbench.metrics.segmentation: hand-computed values and medpy / scikit-image agreement."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from medpy.metric import binary as medpy_binary
from scipy import ndimage as ndi

from fusionbench.data.io import ImageError
from fusionbench.metrics.segmentation import (
    dsc,
    hausdorff,
    hd95,
    iou,
    msd,
    multilabel_dsc,
    multilabel_hausdorff,
    multilabel_hd95,
    multilabel_iou,
    multilabel_msd,
    per_label,
    surface_distances,
)


def square(shape, top, left, size) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def disc(shape, center, radius) -> np.ndarray:
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius ** 2


def blob(seed: int, shape=(40, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 3.0) > 0.5


# --- overlap ------------------------------------------------------------------------------------

def test_overlap_of_offset_squares_by_hand():
    # Two 4 x 4 squares offset by (1, 2): intersection 3 x 2 = 6, sizes 16 + 16, union 26.
    a, b = square((10, 10), 1, 1, 4), square((10, 10), 2, 3, 4)
    assert dsc(a, b) == pytest.approx(100 * 2 * 6 / 32)
    assert iou(a, b) == pytest.approx(100 * 6 / 26)


def test_identical_and_disjoint_masks():
    a = blob(0)
    assert dsc(a, a) == 100.0
    assert iou(a, a) == 100.0
    assert hausdorff(a, a) == 0.0
    assert hd95(a, a) == 0.0
    assert msd(a, a) == 0.0
    b = square((10, 10), 0, 0, 3)
    c = square((10, 10), 5, 5, 3)
    assert dsc(b, c) == 0.0
    assert iou(b, c) == 0.0


def test_overlap_matches_medpy_and_dice_iou_identity():
    for seed in range(4):
        a, b = blob(seed), blob(seed + 10)
        assert dsc(a, b) == pytest.approx(100 * medpy_binary.dc(a, b), rel=1e-12)
        assert iou(a, b) == pytest.approx(100 * medpy_binary.jc(a, b), rel=1e-12)
        d, j = dsc(a, b) / 100, iou(a, b) / 100
        assert d == pytest.approx(2 * j / (1 + j), rel=1e-12)


def test_masks_accept_integer_and_label_inputs():
    a, b = blob(1), blob(2)
    assert dsc(a.astype(np.uint8), b.astype(np.int64) * 7) == pytest.approx(dsc(a, b))
    assert hausdorff(a.astype(np.float32), b) == pytest.approx(hausdorff(a, b))


def test_empty_masks_overlap():
    empty = np.zeros((8, 8), bool)
    with pytest.warns(RuntimeWarning, match="both masks are empty"):
        assert dsc(empty, empty) == 100.0
    with pytest.warns(RuntimeWarning, match="both masks are empty"):
        assert iou(empty, empty) == 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one empty mask is an ordinary miss: 0, no warning
        assert dsc(empty, square((8, 8), 2, 2, 3)) == 0.0


@pytest.mark.parametrize("metric", [hausdorff, hd95, msd])
def test_distance_to_empty_mask_is_inf_with_warning(metric):
    empty, full = np.zeros((8, 8), bool), square((8, 8), 2, 2, 3)
    with pytest.warns(RuntimeWarning, match="pred mask is empty"):
        assert metric(empty, full) == np.inf
    with pytest.warns(RuntimeWarning, match="ref mask is empty"):
        assert metric(full, empty) == np.inf
    with pytest.warns(RuntimeWarning, match="both masks are empty"):
        assert metric(empty, empty) == 0.0


# --- distances ----------------------------------------------------------------------------------

def test_hausdorff_of_two_single_pixels():
    a, b = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    a[1, 2] = True
    b[4, 6] = True  # offset (3, 4)
    assert hausdorff(a, b) == pytest.approx(5.0)
    assert hd95(a, b) == pytest.approx(5.0)
    assert msd(a, b) == pytest.approx(5.0)
    assert hausdorff(a, b, spacing=(2.0, 0.5)) == pytest.approx(np.hypot(6.0, 2.0))


def test_distances_of_concentric_discs_approximate_radius_difference():
    shape, center = (81, 81), (40, 40)
    inner, outer = disc(shape, center, 12), disc(shape, center, 20)
    # Discrete circles: surface pixels lie within about one pixel of the ideal radius.
    assert hausdorff(inner, outer) == pytest.approx(8.0, abs=1.0)
    assert hd95(inner, outer) == pytest.approx(8.0, abs=1.0)
    assert msd(inner, outer) == pytest.approx(8.0, abs=0.6)
    assert hd95(inner, outer) <= hausdorff(inner, outer)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.25)])
def test_distances_match_medpy(seed, spacing):
    a, b = blob(seed), blob(seed + 20)
    assert hausdorff(a, b, spacing=spacing) == pytest.approx(medpy_binary.hd(a, b, voxelspacing=spacing), rel=1e-12)
    assert hd95(a, b, spacing=spacing) == pytest.approx(medpy_binary.hd95(a, b, voxelspacing=spacing), rel=1e-12)
    assert msd(a, b, spacing=spacing) == pytest.approx(medpy_binary.assd(a, b, voxelspacing=spacing), rel=1e-12)


def test_hausdorff_matches_scikit_image_on_surfaces():
    from skimage.metrics import hausdorff_distance

    a, b = blob(5), blob(6)
    surface = lambda m: m & ~ndi.binary_erosion(m, ndi.generate_binary_structure(2, 1))  # noqa: E731
    assert hausdorff(a, b) == pytest.approx(hausdorff_distance(surface(a), surface(b)), rel=1e-12)


def test_msd_is_pooled_not_mean_of_directional_means():
    # A 1-pixel pred next to a 5 x 5 ref: pooled and averaged-directional means differ.
    pred, ref = np.zeros((12, 12), bool), square((12, 12), 3, 3, 5)
    pred[5, 10] = True
    to_ref, to_pred = surface_distances(pred, ref)
    assert to_ref.size == 1 and to_ref[0] == 3.0
    assert to_pred.size == 16
    assert msd(pred, ref) == pytest.approx((to_ref.sum() + to_pred.sum()) / 17)
    assert msd(pred, ref) != pytest.approx((to_ref.mean() + to_pred.mean()) / 2)


def test_distances_scale_with_isotropic_spacing():
    a, b = blob(7), blob(8)
    for metric in (hausdorff, hd95, msd):
        assert metric(a, b, spacing=(0.3, 0.3)) == pytest.approx(0.3 * metric(a, b), rel=1e-12)
        assert metric(a, b, spacing=2.0) == pytest.approx(2.0 * metric(a, b), rel=1e-12)


def test_metrics_are_symmetric():
    a, b = blob(9), blob(10)
    for metric in (dsc, iou, hausdorff, hd95, msd):
        assert metric(a, b) == pytest.approx(metric(b, a), rel=1e-12)


def test_surface_includes_image_border():
    full = np.ones((6, 6), bool)
    to_ref, _ = surface_distances(full, full)
    assert to_ref.size == 20  # the ring of border pixels, as medpy (erosion with border 0)


@pytest.mark.parametrize("spacing, match", [
    ((1.0, 0.0), "positive"), ((1.0, np.nan), "positive"), ((1.0, 1.0, 1.0), "two numbers"), ("ab", "two numbers"),
])
def test_bad_spacing_rejected(spacing, match):
    a = blob(11)
    with pytest.raises(ValueError, match=match):
        hausdorff(a, a, spacing=spacing)


def test_bad_masks_rejected():
    a = blob(12)
    with pytest.raises(ImageError, match="shape mismatch"):
        dsc(a, a[:-1])
    with pytest.raises(ImageError, match="2-D"):
        dsc(a[None], a[None])
    with pytest.raises(ImageError, match="NaN"):
        msd(np.full(a.shape, np.nan), a)
    with pytest.raises(ImageError, match="empty mask"):
        surface_distances(np.zeros_like(a), a)


# --- multi-label --------------------------------------------------------------------------------

def label_maps():
    ref = np.zeros((30, 30), np.int64)
    ref[2:12, 2:12] = 3
    ref[15:25, 15:25] = 5
    pred = np.zeros_like(ref)
    pred[3:13, 2:12] = 3  # shifted by one row
    pred[15:25, 15:25] = 5
    pred[0, 29] = 9  # false positive label
    return pred, ref


def test_per_label_scores_each_label():
    pred, ref = label_maps()
    scores = multilabel_dsc(pred, ref)
    assert set(scores) == {3, 5, 9}  # background 0 excluded
    assert scores[3] == pytest.approx(100 * 2 * 90 / 200)
    assert scores[5] == 100.0
    assert scores[9] == 0.0
    assert multilabel_iou(pred, ref)[3] == pytest.approx(100 * 90 / 110)
    assert multilabel_hausdorff(pred, ref, labels=[3, 5])[3] == pytest.approx(1.0)
    assert multilabel_hd95(pred, ref, labels=[5]) == {5: 0.0}
    assert multilabel_msd(pred, ref, labels=[3], spacing=(2.0, 1.0))[3] == pytest.approx(
        medpy_binary.assd(pred == 3, ref == 3, voxelspacing=(2.0, 1.0)))


def test_per_label_absent_from_both_is_nan_without_calling_metric():
    pred, ref = label_maps()
    calls = []

    def spy(p, r, **kw):
        calls.append(kw)
        return 1.0

    scores = per_label(spy, pred, ref, labels=[3, 4], spacing=(1, 1))
    assert scores[3] == 1.0
    assert np.isnan(scores[4])
    assert calls == [{"spacing": (1, 1)}]


def test_per_label_present_in_one_only_is_inf_with_warning():
    pred, ref = label_maps()
    with pytest.warns(RuntimeWarning, match="ref mask is empty"):
        assert per_label("hausdorff", pred, ref, labels=[9]) == {9: np.inf}


def test_per_label_rejects_bad_input():
    pred, ref = label_maps()
    with pytest.raises(ValueError, match="unknown metric"):
        per_label("dice", pred, ref)
    with pytest.raises(ValueError, match="integer"):
        per_label("dsc", pred.astype(float), ref)
    with pytest.raises(ImageError, match="shape mismatch"):
        per_label("dsc", pred[:-1], ref)


# --- properties ---------------------------------------------------------------------------------

masks = arrays(bool, st.tuples(st.integers(8, 20), st.integers(8, 20)))


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(0, 2**32 - 1))
def test_ranges_and_no_nan(pred, seed):
    ref = np.random.default_rng(seed).random(pred.shape) > 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty draws are allowed here
        d, j = dsc(pred, ref), iou(pred, ref)
        h, h95, m = hausdorff(pred, ref), hd95(pred, ref), msd(pred, ref)
    assert 0 <= j <= d <= 100
    assert not any(np.isnan(v) for v in (d, j, h, h95, m))
    assert 0 <= m <= h and 0 <= h95 <= h
    if pred.any() and ref.any():
        assert np.isfinite(h)
        assert h == pytest.approx(medpy_binary.hd(pred, ref), rel=1e-12)
