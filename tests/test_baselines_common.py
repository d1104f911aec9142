"""Tests of baselines.matlab, .filters and .pyramids against hand-derived values and independent computations."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from baselines import filters, matlab, pyramids


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------- Matlab numeric conversions

def test_matlab_round_half_away_from_zero():
    got = matlab.matlab_round([2.5, -2.5, 0.5, 1.5, -0.5, 1.49, -1.51])
    np.testing.assert_array_equal(got, [3, -3, 1, 2, -1, 1, -2])


def test_to_uint8_rounds_and_saturates_like_matlab():
    got = matlab.to_uint8([2.5, -1, 300, 0.5, 254.5, 255.4, np.nan])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [3, 0, 255, 1, 255, 255, 0])


def test_im2uint8_scales_clips_and_rounds():
    got = matlab.im2uint8([0.5, 1.2, -0.1, 1 / 255, 2.5 / 255])
    np.testing.assert_array_equal(got, [128, 255, 0, 1, 3])  # 127.5 -> 128, 2.5 -> 3


def test_mat2gray_min_max_and_constant():
    np.testing.assert_allclose(matlab.mat2gray([[2.0, 4.0], [3.0, 6.0]]), [[0, 0.5], [0.25, 1]])
    np.testing.assert_array_equal(matlab.mat2gray(np.full((2, 2), 3.0)), np.ones((2, 2)))
    np.testing.assert_array_equal(matlab.mat2gray(np.full((2, 2), 0.25)), np.full((2, 2), 0.25))


# ---------------------------------------------------------------- box and guided filters

@pytest.mark.parametrize("r", [0, 1, 3])
def test_box_sum_equals_literal_window_sum(rng, r):
    img = rng.random((9, 12))
    padded = np.pad(img, r)  # zeros outside: the window is truncated at the border
    expected = np.zeros_like(img)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            expected += padded[dy:dy + img.shape[0], dx:dx + img.shape[1]]
    np.testing.assert_allclose(filters.box_sum(img, r), expected, rtol=1e-12, atol=1e-12)


def test_box_mean_normalises_by_in_image_count():
    img = np.full((5, 6), 0.7)
    np.testing.assert_allclose(filters.box_mean(img, 2), img, rtol=1e-12)
    counts = filters.box_sum(np.ones((4, 5)), 1)
    np.testing.assert_array_equal(counts[0], [4, 6, 6, 6, 4])
    np.testing.assert_array_equal(counts[1], [6, 9, 9, 9, 6])


def test_box_sum_rejects_bad_radius():
    with pytest.raises(ValueError, match="radius"):
        filters.box_sum(np.ones((3, 3)), -1)
    with pytest.raises(ValueError, match="radius"):
        filters.box_sum(np.ones((3, 3)), 1.5)


def test_guided_filter_of_constant_input_is_constant(rng):
    guide = rng.random((20, 17))
    src = np.full_like(guide, 0.3)
    np.testing.assert_allclose(filters.guided_filter(guide, src, 3, 0.01), src, atol=1e-12)


def test_guided_filter_self_guided_small_eps_returns_input(rng):
    img = rng.random((20, 17))
    np.testing.assert_allclose(filters.guided_filter(img, img, 2, 1e-10), img, atol=1e-7)


def test_guided_filter_large_eps_is_double_box_mean(rng):
    # eps -> inf: a -> 0, b -> mean(p), so q -> box_mean(box_mean(p)).
    guide, src = rng.random((15, 15)), rng.random((15, 15))
    expected = filters.box_mean(filters.box_mean(src, 2), 2)
    np.testing.assert_allclose(filters.guided_filter(guide, src, 2, 1e12), expected, atol=1e-9)


def test_guided_filter_eps_zero_on_flat_guide_is_finite():
    out = filters.guided_filter(np.zeros((6, 6)), np.eye(6), 1, 0.0)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, filters.box_mean(filters.box_mean(np.eye(6), 1), 1), atol=1e-12)


def test_guided_filter_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        filters.guided_filter(np.zeros((4, 4)), np.zeros((4, 5)), 1, 0.1)


# ---------------------------------------------------------------- imfilter and fspecial

def test_fspecial_gaussian_values():
    h = matlab.fspecial_gaussian(3, 1.0)
    assert h.sum() == pytest.approx(1.0)
    # neighbour / centre = exp(-1/(2 sigma^2)); corner / centre = exp(-2/(2 sigma^2))
    assert h[1, 0] / h[1, 1] == pytest.approx(np.exp(-0.5))
    assert h[0, 0] / h[1, 1] == pytest.approx(np.exp(-1.0))
    np.testing.assert_allclose(h, h.T)


def test_imfilter_even_kernel_uses_matlab_centre():
    # Matlab: imfilter([1 2 4 8], [1 -1]) = [x1-x2, x2-x3, x3-x4, x4-0] (centre at the first tap).
    x = np.array([[1.0, 2.0, 4.0, 8.0]])
    np.testing.assert_array_equal(matlab.imfilter(x, [1, -1]), [[-1, -2, -4, 8]])
    np.testing.assert_array_equal(matlab.imfilter(x, [1, -1], "replicate"), [[-1, -2, -4, 0]])


def test_imfilter_zero_padding_matches_scipy_correlate2d(rng):
    img, ker = rng.random((11, 13)), rng.random((5, 3))
    np.testing.assert_allclose(matlab.imfilter(img, ker), signal.correlate2d(img, ker, mode="same"),
                               rtol=1e-12)


def test_imfilter_symmetric_matches_explicit_mirror_pad(rng):
    img, ker = rng.random((8, 9)), rng.random((3, 5))
    padded = np.pad(img, ((1, 1), (2, 2)), mode="symmetric")  # Matlab padarray 'symmetric'
    expected = signal.correlate2d(padded, ker, mode="valid")
    np.testing.assert_allclose(matlab.imfilter(img, ker, "symmetric"), expected, rtol=1e-12)


def test_imfilter_unknown_boundary():
    with pytest.raises(ValueError, match="boundary"):
        matlab.imfilter(np.ones((3, 3)), np.ones((3, 3)), "mirror")


@pytest.mark.parametrize("boundary", ["zero", "replicate", "symmetric"])
def test_gaussian_blur_equals_2d_imfilter(rng, boundary):
    img = rng.random((30, 25))
    expected = matlab.imfilter(img, matlab.fspecial_gaussian(9, 4.5), boundary)
    np.testing.assert_allclose(matlab.gaussian_blur(img, 4.5, 9, boundary), expected, atol=1e-13)


# ---------------------------------------------------------------- imresize

def _keys(t):
    t = abs(t)
    if t <= 1:
        return 1.5 * t ** 3 - 2.5 * t ** 2 + 1
    if t <= 2:
        return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
    return 0.0


def test_imresize_doubling_2x2_matches_keys_derivation():
    # Upsampling [0 1] by 2 (Matlab): output centres u = x/2 + 1/4 = 0.75, 1.25, 1.75, 2.25
    # (1-based input coordinates), samples mirrored as [.. 1 0 | 0 1 | 1 0 ..]. At u = 0.75 the
    # non-zero taps are indices -1, 0, 1, 2 at distances 1.75, 0.75, 0.25, 1.25, holding 1, 0, 0, 1;
    # at u = 1.25 indices 0, 1, 2, 3 at distances 1.25, 0.25, 0.75, 1.75 hold 0, 0, 1, 1.
    w = {d: _keys(d) for d in (0.25, 0.75, 1.25, 1.75)}
    t1 = w[1.75] * 1 + w[0.75] * 0 + w[0.25] * 0 + w[1.25] * 1  # taps -1,0,1,2 -> samples 2,1,1,2
    t2 = w[1.25] * 0 + w[0.25] * 0 + w[0.75] * 1 + w[1.75] * 1  # taps 0,1,2,3 -> samples 1,1,2,2
    t = np.array([t1, t2, 1 - t2, 1 - t1])  # symmetric about the middle
    assert t1 == pytest.approx(-0.09375) and t2 == pytest.approx(0.203125)
    # [1 2; 3 4] = 1 + 2*row + col, and the resize is linear with weights summing to 1.
    expected = 1 + 2 * t[:, None] + t[None, :]
    got = matlab.imresize(np.array([[1.0, 2.0], [3.0, 4.0]]), scale=2)
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    # the first row Matlab prints: 0.7188 1.0156 1.6094 1.9063
    np.testing.assert_allclose(got[0], [0.71875, 1.015625, 1.609375, 1.90625], rtol=1e-14)


def test_imresize_shrink_keeps_interior_of_a_ramp():
    # Halving: u = 2x - 1/2; the antialiased kernel is symmetric, so interior samples of a ramp
    # (all taps inside the image) are exact.
    ramp = np.tile(np.arange(1.0, 33.0), (4, 1))
    got = matlab.imresize(ramp, (4, 16))
    x = np.arange(1, 17)
    np.testing.assert_allclose(got[:, 4:12], np.tile(2 * x[4:12] - 0.5, (4, 1)), rtol=1e-12)
    # antialiasing: a Nyquist-rate checkerboard is averaged away in the interior, not aliased
    board = np.indices((32, 32)).sum(0) % 2 * 1.0
    small = matlab.imresize(board, scale=0.5)
    np.testing.assert_allclose(small[4:-4, 4:-4], 0.5, atol=1e-12)


def test_imresize_constant_integer_and_shapes():
    img = np.full((7, 9), 100, dtype=np.uint8)
    out = matlab.imresize(img, (13, 4))
    assert out.dtype == np.uint8 and out.shape == (13, 4)
    np.testing.assert_array_equal(out, 100)
    assert matlab.imresize(np.ones((5, 5)), scale=1.5).shape == (8, 8)  # ceil(7.5)
    with pytest.raises(ValueError, match="exactly one"):
        matlab.imresize(np.ones((4, 4)))


def test_imresize_integer_saturates():
    img = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    out = matlab.imresize(img, scale=2)  # Keys overshoots beyond [0, 255]; uint8 saturates
    assert out.dtype == np.uint8
    assert out.max() == 255 and out.min() == 0
    float_out = matlab.imresize(img.astype(float), scale=2)
    assert float_out.max() > 255 and float_out.min() < 0


# ---------------------------------------------------------------- pyramids

@pytest.mark.parametrize("shape", [(32, 32), (37, 50), (21, 8)])
def test_laplacian_pyramid_reconstructs_exactly(rng, shape):
    img = rng.random(shape)
    pyr = pyramids.laplacian_pyramid(img)
    assert len(pyr) == int(np.floor(np.log2(min(shape))))
    np.testing.assert_allclose(pyramids.reconstruct_laplacian_pyramid(pyr), img, atol=1e-12)


def test_pyramid_shapes_and_constant_image():
    img = np.full((37, 50), 0.4)
    gp = pyramids.gaussian_pyramid(img, 4)
    assert [g.shape for g in gp] == [(37, 50), (19, 25), (10, 13), (5, 7)]
    for g in gp:
        np.testing.assert_allclose(g, 0.4, atol=1e-15)
    np.testing.assert_allclose(pyramids.pyramid_upsample(np.full((5, 7), 0.4), (1, 0)), 0.4, atol=1e-15)
    assert pyramids.pyramid_upsample(np.ones((5, 7)), (1, 0)).shape == (9, 14)
    lp = pyramids.laplacian_pyramid(img, 4)
    for band in lp[:-1]:
        np.testing.assert_allclose(band, 0.0, atol=1e-14)


# ---------------------------------------------------------------- entropy

def test_gray_entropy_known_values():
    assert matlab.gray_entropy(np.arange(256, dtype=np.uint8).reshape(16, 16)) == pytest.approx(8.0)
    assert matlab.gray_entropy(np.array([[0, 0, 9, 9]], dtype=np.uint8)) == pytest.approx(1.0)
    assert matlab.gray_entropy(np.zeros((3, 3), dtype=np.uint8)) == 0.0
    with pytest.raises(ValueError, match="uint8"):
        matlab.gray_entropy(np.zeros((3, 3)))
