"""Graph-search body contour: known shapes recovered, hard smoothness, exact DP, clear errors."""
import itertools

import numpy as np
import pytest
from skimage.draw import ellipse

from fusionbench.data.io import ImageError
from fusionbench.metrics.segmentation import dsc
from segment.contour import (ContourSegmenter, contour_mask, largest_component_centre, optimal_closed_path,
                             region_cost, segment_body)

SHAPE = (128, 128)


def _ellipse_mask(centre=(66, 60), axes=(40, 30), rotation=0.3, shape=SHAPE):
    mask = np.zeros(shape, bool)
    rr, cc = ellipse(*centre, *axes, shape=shape, rotation=rotation)
    mask[rr, cc] = True
    return mask


def _pat_like(mask, seed=0):
    """Signed PAT-like image stored with zero at 0.5: bright skin rim, weak textured interior,
    a weak negative lobe outside the skin, arc streaks and noise in the water."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    shape = mask.shape
    inside = ndi.distance_transform_edt(mask)
    outside = ndi.distance_transform_edt(~mask)
    signed = np.where(mask, 0.15 + 0.6 * np.exp(-inside / 2.0), 0.0)
    signed += 0.15 * rng.standard_normal(shape) * mask
    signed -= 0.2 * np.exp(-outside)* (~mask)
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in ((-60, 64), (190, 40), (64, 200)):  # arcs from sources outside the image
        dist = np.hypot(rows - cy, cols - cx)
        signed += 0.08 * np.sin(dist / 1.5) * (~mask)
    signed += 0.03 * rng.standard_normal(shape)
    return np.clip(0.5 + 0.5 * signed, 0, 1).astype(np.float32)


def _cyclic_steps(radii):
    return np.abs(np.diff(np.r_[radii, radii[0]]))


def test_clean_ellipse_recovered():
    mask = _ellipse_mask()
    image = np.where(mask, 0.6, 0.02).astype(np.float32)
    result = segment_body(image)
    assert dsc(result.mask, mask) > 98
    assert _cyclic_steps(result.radii).max() <= result.max_step + 1e-9


def test_pat_like_ellipse_recovered():
    mask = _ellipse_mask()
    image = _pat_like(mask)
    assert abs(float(np.median(image[:4])) - 0.5) < 0.05  # zero at mid-gray, as the phantom stores it
    result = segment_body(image)
    assert dsc(result.mask, mask) > 98


@pytest.mark.parametrize("max_step", [1.0, 2.0, 3.0])
def test_hard_smoothness_constraint_holds_including_the_seam(max_step):
    mask = _ellipse_mask(axes=(45, 25))
    image = _pat_like(mask, seed=1)
    result = segment_body(image, max_step=max_step)
    steps = _cyclic_steps(result.radii)
    assert steps.max() <= max_step + 1e-9
    assert len(result.radii) == 360


def test_bright_internal_blob_does_not_capture_the_contour():
    mask = _ellipse_mask()
    blob = np.zeros(SHAPE, bool)
    rr, cc = ellipse(70, 72, 12, 10, shape=SHAPE)
    blob[rr, cc] = True
    image = np.where(mask, 0.3, 0.02)
    image[blob] = 1.0
    result = segment_body(image.astype(np.float32))
    assert dsc(result.mask, mask) > 97
    assert dsc(result.mask, blob) < 40


def test_dp_is_exact_against_brute_force():
    rng = np.random.default_rng(3)
    n_angles, n_radii = 5, 6
    paths = np.array(list(itertools.product(range(n_radii), repeat=n_angles)))
    steps = np.abs(paths - np.roll(paths, 1, axis=1))
    for trial in range(15):
        step = 1 + trial % 2
        cost = rng.random((n_angles, n_radii))
        lam = float(rng.random() * 0.3)
        path = optimal_closed_path(cost, step, smoothness=lam)
        values = cost[np.arange(n_angles), paths].sum(axis=1) + lam * steps.sum(axis=1)
        best = values[steps.max(axis=1) <= step].min()
        found = cost[np.arange(n_angles), path].sum() + lam * _cyclic_steps(path).sum()
        assert _cyclic_steps(path).max() <= step
        assert found == pytest.approx(best, abs=1e-12)


def test_dp_follows_a_known_circle():
    # Cost zero on radius index 10 only: the optimum is the constant path.
    cost = np.ones((36, 20))
    cost[:, 10] = 0
    assert np.all(optimal_closed_path(cost, 1) == 10)


def test_contour_mask_of_circle_has_circle_area():
    angles = 2 * np.pi * np.arange(360) / 360
    mask = contour_mask((101, 101), (50.0, 50.0), angles, np.full(360, 30.0))
    assert mask.sum() == pytest.approx(np.pi * 30 ** 2, rel=0.02)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ImageError, match="NaN"):
        segment_body(np.full(SHAPE, np.nan))
    with pytest.raises(ValueError, match="max_step"):
        segment_body(np.zeros(SHAPE, np.float32), max_step=-1)
    with pytest.raises(ValueError, match="cost"):
        optimal_closed_path(np.full((4, 5), np.inf), 1)
    with pytest.raises(ValueError, match="cost must be"):
        ContourSegmenter(cost="magic")


def test_learned_cost_segments_after_a_tiny_fit(tmp_path):
    import torch

    torch.set_num_threads(1)
    masks = [_ellipse_mask(centre=(32 + d, 32 - d), axes=(18 + d, 14), shape=(64, 64)) for d in (-2, 0, 2, 4)]
    images = [_pat_like(m, seed=i) for i, m in enumerate(masks)]
    settings = dict(epochs=40, batch_size=4, lr=1e-2, size=32, channels=(8, 16, 32), augment=True)
    seg = ContourSegmenter("learned", **settings).fit(images, masks)
    assert seg.losses[-1] < seg.losses[0]
    result = seg.segment(images[1])
    assert _cyclic_steps(result.radii).max() <= result.max_step + 1e-9
    assert dsc(result.mask, masks[1]) > 80
    # Saved and loaded, it is the same cost; other settings or other training images are refused.
    digest = ContourSegmenter.training_hash(images, masks)
    seg.save(tmp_path / "m", digest)
    again = ContourSegmenter.load(tmp_path / "m", expect=ContourSegmenter("learned", **settings), train_hash=digest)
    assert again is not None and np.array_equal(again.probability(images[2]), seg.probability(images[2]))
    assert np.array_equal(again.segment(images[1]).mask, result.mask)
    assert ContourSegmenter.load(tmp_path / "m", expect=ContourSegmenter("learned", **{**settings, "lr": 0.1})) is None
    assert ContourSegmenter.load(tmp_path / "m", train_hash=ContourSegmenter.training_hash(images[:3], masks[:3])) is None
    assert ContourSegmenter.load(tmp_path / "nothing") is None


def _with_dark_lobe(mask, seed, angle):
    """PAT-like body with a dark (negative) reconstruction lobe just outside it, as limited-view
    ring-array reconstructions leave above the back of real mice."""
    from scipy import ndimage as ndi

    image = _pat_like(mask, seed=seed)
    rows, cols = np.nonzero(mask)
    reach = 0.225 * mask.shape[0] + 10
    centre = (rows.mean() - np.cos(angle) * reach, cols.mean() + np.sin(angle) * reach)
    lobe = np.zeros(mask.shape, bool)
    rr, cc = ellipse(*centre, 0.09 * mask.shape[0], 0.22 * mask.shape[0], shape=mask.shape, rotation=angle)
    lobe[rr, cc] = True
    dark = ndi.gaussian_filter((lobe & ~mask).astype(float), 2.0)
    return np.clip(image - 0.45 * dark, 0, 1).astype(np.float32)


def test_learned_contour_ignores_a_dark_artefact_that_fools_the_hand_cost():
    import torch

    torch.set_num_threads(1)
    masks = [_ellipse_mask(centre=(32 + d, 32 - d), axes=(18 + d, 14), shape=(64, 64)) for d in (-2, 0, 2, 4, 1, -1)]
    images = [_with_dark_lobe(m, i, a) for i, (m, a) in enumerate(zip(masks, (0.0, 0.5, -0.4, 0.2, 3.0, 2.5)))]
    # The hand-made energy |I - b| sees the dark lobe as tissue and wraps the contour around it.
    assert dsc(segment_body(images[0]).mask, masks[0]) < 85
    seg = ContourSegmenter("learned", steps=150, size=32, batch_size=4, lr=1e-2, channels=(8, 16, 32))
    seg.fit(images[1:], masks[1:])
    result = seg.segment(images[0])  # held out
    assert dsc(result.mask, masks[0]) > 92
    assert _cyclic_steps(result.radii).max() <= result.max_step + 1e-9


def test_region_cost_is_the_map_radius_of_each_ray():
    radii = np.arange(40.0)
    # Body to radius 20 with a dark hole at 8-11 (an organ the network is unsure of), water after.
    p = np.full(40, 0.1)
    p[:20] = 0.9
    p[8:12] = 0.3
    cost = region_cost(p[None, :], radii)
    assert int(np.argmin(cost[0])) == 19  # boundary after index 19: the whole body, hole included
    # A faint blob in the water beyond (p = 0.6 at 30-33) is not worth the water in between.
    p[30:34] = 0.6
    assert int(np.argmin(region_cost(p[None, :], radii)[0])) == 19
    # The cost is minus the area-weighted cumulative logit: check one value by hand.
    weight = (radii + 0.5) / np.mean(radii + 0.5)
    logit = np.log(0.9 / 0.1)
    assert region_cost(np.full((1, 40), 0.9), radii)[0, 5] == pytest.approx(-logit * weight[:6].sum())
    assert np.isinf(cost[0, :2]).all()


def test_largest_component_centre_ignores_a_small_blob():
    mask = np.zeros((50, 50), bool)
    mask[10:30, 10:30] = True
    mask[45:48, 45:48] = True
    assert largest_component_centre(mask) == pytest.approx((19.5, 19.5))
    assert largest_component_centre(np.zeros((5, 5), bool)) is None


def test_body_prior_fills_holes_and_drops_separate_blobs():
    from segment.contour import body_prior

    p = np.full((40, 40), 0.05, np.float32)
    p[5:30, 5:30] = 0.9
    p[12:18, 12:18] = 0.2   # a doubted dark organ inside the body
    p[34:38, 34:38] = 0.8   # an artefact in the water
    p[29, 5:30] = 0.6       # the body's soft edge
    out = body_prior(p)
    assert out[15, 15] == pytest.approx(0.75) and out[36, 36] == pytest.approx(0.25)
    assert out[29, 10] == pytest.approx(0.75) and out[20, 20] == pytest.approx(0.9)  # body: at least 0.75
    assert out[0, 0] == pytest.approx(0.05)  # water unchanged
