"""NSCT and MWGF fusion baselines: known answers, invariants, the algorithms' purpose."""
import numpy as np
import pytest
from skimage import data, filters

from baselines.fusion import mwgf as M
from baselines.fusion import nsct as F
from baselines.transforms.nsct import nsct_dec, nsct_rec
from fusionbench.data.io import ImageError
from fusionbench.methods import create_method

CAMERA_U8 = data.camera()[::2, ::2]  # 256 x 256 uint8
CAMERA = CAMERA_U8.astype(np.float64)
RNG = np.random.default_rng(7)


# ----------------------------------------------------------------------------------------- NSCT

def test_nsct_registered():
    m = create_method("nsct")
    assert isinstance(m, F.NSCTFusion)
    assert m.config()["roles"] == {"ir": "pat", "vis": "mri"} and m.config()["levels"] == [2, 3, 3, 4]


def test_nsct_self_fusion_returns_the_image():
    img = CAMERA_U8[:96, :128]
    x = img.astype(np.float32) / 255
    unrounded = create_method("nsct", quantize=False).fuse(x, x)
    assert np.abs(unrounded - x).max() < 1e-6
    rounded = create_method("nsct").fuse(img, img)  # uint8 in, 8-bit grid out: exact
    np.testing.assert_array_equal(np.round(rounded * 255).astype(np.uint8), img)
    assert rounded.dtype == np.float32


def test_nsct_with_a_zero_source_keeps_all_details_and_half_the_lowpass():
    x = CAMERA[64:160, 64:192]
    fused = F.nsct_fuse(x, np.zeros_like(x))
    c = nsct_dec(x)
    expected = nsct_rec([c[0] / 2] + c[1:])
    np.testing.assert_allclose(fused, expected, atol=1e-9)
    # symmetric rule: the same with the sources exchanged
    np.testing.assert_allclose(F.nsct_fuse(np.zeros_like(x), x), expected, atol=1e-9)


def test_consistency_vote_known_answer():
    """One spike in source 1: its 3x3 activity block wins; a pixel keeps source 1 only with more
    than 4 of its 9 neighbours voting for it, i.e. the spike and its 4 edge neighbours."""
    b1 = np.zeros((7, 7))
    b1[3, 3] = 5.0
    take1 = F.select_max_abs_consistent(b1, np.zeros((7, 7)))
    expected = np.zeros((7, 7), bool)
    expected[3, 2:5] = expected[2:5, 3] = True
    np.testing.assert_array_equal(take1, expected)
    # ties (both zero) go to source 2
    assert not F.select_max_abs_consistent(np.zeros((5, 5)), np.zeros((5, 5))).any()
    # a uniformly stronger source wins everywhere, border included (es2 extension)
    b2 = RNG.standard_normal((3, 9, 8))
    assert F.select_max_abs_consistent(3 * np.abs(b2) + 1, b2).all()


def test_nsct_output_range_and_grid():
    pat = RNG.random((64, 80)).astype(np.float32)
    mri = RNG.random((64, 80)).astype(np.float32)
    out = create_method("nsct").fuse(pat, mri)
    assert out.dtype == np.float32 and out.shape == (64, 80)
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)  # uint8(F) / 255


def test_nsct_rejects_bad_input():
    m = create_method("nsct")
    with pytest.raises(ImageError, match="shape mismatch"):
        m.fuse(np.zeros((32, 32)), np.zeros((32, 31)))
    with pytest.raises(ImageError, match="NaN"):
        m.fuse(np.full((32, 32), np.nan), np.zeros((32, 32)))
    with pytest.raises(ValueError, match="levels"):
        F.NSCTFusion(levels=(2, -3))


# ----------------------------------------------------------------------------------------- MWGF

def test_mwgf_registered():
    m = create_method("mwgf")
    assert isinstance(m, M.MWGF) and m.config()["iterations"] == 500


def test_mwgf_self_fusion_returns_the_image():
    """Identical sources: weights (0, 1), fused gradient = the image's, start = the image. Only
    the reference's frame (zeroed gradients vs replicate Laplacian) drifts, near the border."""
    out = M.mwgf_fuse(CAMERA, CAMERA)
    err = np.abs(out - CAMERA)
    assert err[16:-16, 16:-16].max() <= 1.0
    assert np.mean(err == 0) > 0.9 and np.mean(err <= 1) > 0.97


def test_mwgf_keeps_the_sharp_half_of_each_source():
    blurred = filters.gaussian(CAMERA, sigma=3, preserve_range=True)
    left_sharp = CAMERA.copy()
    left_sharp[:, 128:] = blurred[:, 128:]
    right_sharp = CAMERA.copy()
    right_sharp[:, :128] = blurred[:, :128]
    for a, b in ((left_sharp, right_sharp), (right_sharp, left_sharp)):
        out = M.mwgf_fuse(a, b)
        err_left = np.abs(out - CAMERA)[12:-12, 12:116].mean()
        err_right = np.abs(out - CAMERA)[12:-12, 140:-12].mean()
        blur_err = np.abs(blurred - CAMERA)[12:-12, 12:-12].mean()
        assert blur_err > 5.0
        assert err_left < 0.5 and err_right < 0.5


def test_structure_saliency_of_a_uniform_gradient():
    """Gradient (a, 0) everywhere: tensor eigenvalues a^2 and 0, so w = a sqrt(1 + alpha)."""
    dx = np.full((40, 40), 3.0)
    for sigma, alpha in ((0.5, 0.5), (4.0, 0.25)):
        w = M.structure_saliency(dx, np.zeros_like(dx), sigma, alpha)
        np.testing.assert_allclose(w, 3.0 * np.sqrt(1 + alpha), rtol=1e-12)


def test_zhou_gradients_hand_values():
    img = np.arange(20.0).reshape(4, 5) ** 2
    dx, dy = M.zhou_gradients(img)
    assert dx[1, 2] == img[1, 2] - img[1, 1] and dy[2, 3] == img[2, 3] - img[1, 3]
    assert not dx[0].any() and not dx[:, -1].any() and not dy[-1].any() and not dy[:, 0].any()


def test_fused_gradient_with_all_weight_on_one_source_is_that_gradient():
    g1 = (RNG.standard_normal((16, 16)), RNG.standard_normal((16, 16)))
    g2 = (RNG.standard_normal((16, 16)), RNG.standard_normal((16, 16)))
    ones, zeros = np.ones((16, 16)), np.zeros((16, 16))
    gx, gy = M.fuse_gradients(g1, g2, ones, zeros)
    np.testing.assert_allclose(gx, g1[0], atol=1e-9)
    np.testing.assert_allclose(gy, g1[1], atol=1e-9)
    # equal weights, opposite gradients: direction of g1 (ties of the sign go to +)
    gx, gy = M.fuse_gradients(g1, (-g1[0], -g1[1]), ones, ones)
    np.testing.assert_allclose(np.hypot(gx, gy), np.sqrt(2) * np.hypot(*g1), rtol=1e-9)


def test_matlab_disk_structuring_element():
    disk = M.matlab_disk(9)
    assert disk.shape == (17, 17) and disk.sum() == 249
    np.testing.assert_array_equal(disk, disk.T)
    assert disk[0].sum() == 9 and disk[8].all()
    euclid = M.matlab_disk(2)
    assert euclid.shape == (5, 5) and euclid.sum() == 13


def test_delete_border_lines_known_answer():
    mask = np.zeros((30, 30), bool)
    mask[:5, 5] = True      # leading run of 5 (< 13): removed
    mask[:14, 10] = True    # leading run of 14: kept
    mask[-12:, 15] = True   # trailing run of 12 (< 13): removed
    mask[10:20, 20] = True  # not touching the border: kept
    mask[7, -3:] = True     # row-wise trailing run of 3: removed
    out = M._delete_border_lines(mask)
    expected = np.zeros_like(mask)
    expected[:14, 10] = expected[10:20, 20] = True
    np.testing.assert_array_equal(out, expected)


def test_mwgf_output_dtype_grid_and_errors():
    pat = RNG.random((48, 56)).astype(np.float32)
    mri = RNG.random((48, 56)).astype(np.float32)
    out = create_method("mwgf", iterations=50).fuse(pat, mri)
    assert out.dtype == np.float32 and out.shape == (48, 56)
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)
    with pytest.raises(ImageError, match="shape mismatch"):
        create_method("mwgf").fuse(pat, mri[:, :50])
    with pytest.raises(ValueError, match="iterations"):
        M.MWGF(iterations=-1)
