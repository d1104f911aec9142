"""Tests of fusionbench.warp: identity, sign convention, composition, labels, bad input, MONAI agreement."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from fusionbench.warp import check_flow, compose, identity_grid, warp


def random_image(seed: int, shape=(24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def smooth_flow(seed: int, shape=(40, 40), amplitude=3.0, sigma=5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal((2, *shape)), (0, sigma, sigma))
    return (amplitude * field / np.abs(field).max()).astype(np.float32)


def test_identity_grid():
    grid = identity_grid((3, 4))
    assert grid.shape == (2, 3, 4)
    np.testing.assert_array_equal(grid[0], np.repeat(np.arange(3.0)[:, None], 4, axis=1))
    np.testing.assert_array_equal(grid[1], np.repeat(np.arange(4.0)[None, :], 3, axis=0))


@pytest.mark.parametrize("order", [0, 1])
def test_identity_flow_returns_the_image(order):
    img = random_image(0)
    out = warp(img, np.zeros((2, *img.shape), np.float32), order=order)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img)


def test_column_shift_sign_convention():
    img = random_image(1)
    flow = np.zeros((2, *img.shape), np.float32)
    flow[1] = 3.0
    out = warp(img, flow)
    # Samples at c + 3: out[:, c] = img[:, c + 3]; the last 3 columns repeat the border column.
    np.testing.assert_allclose(out[:, :-3], img[:, 3:], atol=1e-6)
    np.testing.assert_allclose(out[:, -3:], np.repeat(img[:, -1:], 3, axis=1), atol=1e-6)


def test_row_shift_sign_convention():
    img = random_image(2)
    flow = np.zeros((2, *img.shape), np.float32)
    flow[0] = -2.0
    out = warp(img, flow)
    np.testing.assert_allclose(out[2:], img[:-2], atol=1e-6)
    np.testing.assert_allclose(out[:2], np.repeat(img[:1], 2, axis=0), atol=1e-6)


def test_fractional_shift_is_bilinear():
    img = random_image(3)
    flow = np.zeros((2, *img.shape), np.float32)
    flow[0], flow[1] = 0.25, 0.5
    out = warp(img, flow)
    expected = (0.75 * 0.5 * img[:-1, :-1] + 0.75 * 0.5 * img[:-1, 1:]
                + 0.25 * 0.5 * img[1:, :-1] + 0.25 * 0.5 * img[1:, 1:])
    np.testing.assert_allclose(out[:-1, :-1], expected, atol=1e-6)


def test_compose_matches_sequential_warps():
    shape = (48, 48)
    rr, cc = np.mgrid[:48, :48]
    img = (0.5 + 0.25 * np.sin(rr / 5.0) * np.cos(cc / 7.0)).astype(np.float32)
    flow_a, flow_b = smooth_flow(4, shape), smooth_flow(5, shape)
    sequential = warp(warp(img, flow_a), flow_b)
    composed = warp(img, compose(flow_a, flow_b))
    inner = (slice(8, -8), slice(8, -8))
    error = np.abs(sequential - composed)[inner]
    # Two bilinear resamplings vs one: small interpolation differences on a smooth image.
    assert error.max() < 0.006
    # The order matters: composing the wrong way round, or adding the fields, is clearly worse.
    swapped = warp(img, compose(flow_b, flow_a))
    assert np.abs(sequential - swapped)[inner].max() > 3 * error.max()
    assert np.abs(sequential - warp(img, flow_a + flow_b))[inner].max() > 3 * error.max()


def test_compose_of_translations_adds_them():
    flow_a = np.zeros((2, 10, 10), np.float32)
    flow_b = np.zeros_like(flow_a)
    flow_a[0], flow_a[1] = 1.5, -2.0
    flow_b[0], flow_b[1] = -0.5, 1.0
    np.testing.assert_allclose(compose(flow_a, flow_b), flow_a + flow_b, atol=1e-6)


def test_nearest_order_keeps_label_values():
    labels = np.zeros((20, 20), np.int64)
    labels[3:10, 4:12] = 4
    labels[12:18, 2:9] = 11
    flow = smooth_flow(6, (20, 20), amplitude=2.5, sigma=3.0)
    out = warp(labels, flow, order=0)
    assert out.dtype == labels.dtype
    assert set(np.unique(out)) <= {0, 4, 11}
    # A pure integer shift moves labels exactly.
    shift = np.zeros((2, 20, 20), np.float32)
    shift[0], shift[1] = 1, 2
    np.testing.assert_array_equal(warp(labels, shift, order=0)[:-1, :-2], labels[1:, 2:])


@pytest.mark.parametrize("flow, match", [
    (np.zeros((8, 8)), r"shape \(8, 8\), expected \(2, 8, 8\)"),
    (np.zeros((3, 8, 8)), r"expected \(2, 8, 8\)"),
    (np.zeros((2, 8, 9)), r"expected \(2, 8, 8\)"),
])
def test_bad_flow_shape_rejected(flow, match):
    with pytest.raises(ValueError, match=match):
        warp(random_image(7, (8, 8)), flow)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_flow_rejected(bad):
    flow = np.zeros((2, 8, 8), np.float32)
    flow[0, 3, 3] = bad
    with pytest.raises(ValueError, match="NaN/Inf"):
        warp(random_image(8, (8, 8)), flow)
    with pytest.raises(ValueError, match="flow_a: NaN/Inf"):
        compose(flow, np.zeros_like(flow))
    with pytest.raises(ValueError, match="my_flow"):
        check_flow(flow, (8, 8), "my_flow")


@pytest.mark.filterwarnings("ignore:monai.networks.blocks.Warp:UserWarning")
def test_matches_monai_warp_bilinear_border():
    torch = pytest.importorskip("torch")
    blocks = pytest.importorskip("monai.networks.blocks")
    shape = (32, 40)
    img = random_image(9, shape)
    # Large enough that some samples fall outside the image and use border padding.
    flow = smooth_flow(10, shape, amplitude=6.0, sigma=4.0)
    sampled = identity_grid(shape) + flow
    assert np.any((sampled < 0) | (sampled > np.array([31, 39])[:, None, None]))
    ours = warp(img, flow)
    monai_warp = blocks.Warp(mode="bilinear", padding_mode="border")
    with torch.no_grad():
        theirs = monai_warp(torch.from_numpy(img)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(8, 24), st.integers(8, 24), st.floats(0.0, 10.0))
def test_warp_stays_in_range_without_nan(seed, height, width, amplitude):
    img = random_image(seed, (height, width))
    flow = amplitude * (np.random.default_rng(seed + 1).random((2, height, width)) - 0.5)
    out = warp(img, flow.astype(np.float32))
    assert out.shape == img.shape
    assert np.all(np.isfinite(out))
    # Bilinear interpolation is a convex combination: no overshoot.
    assert img.min() - 1e-6 <= out.min() and out.max() <= img.max() + 1e-6
