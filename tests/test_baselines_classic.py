"""Behaviour of the classic fusion baselines BGR, GTF, MSVD, SAI and VSMWLS."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.linalg import spsolve

import baselines.fusion  # noqa: F401  (registers the methods even without installed entry points)
from baselines.matlab import im2uint8, mat2gray
from baselines.fusion.bgr import BGR, bezier_background, quadtree_decompose
from baselines.fusion.gtf import GTF, conjugate_gradient, irn_l1tv
from baselines.fusion.msvd import MSVD, msvd_decompose, msvd_fuse, msvd_reconstruct
from baselines.fusion.sai import SAI, recursive_filter
from baselines.fusion.vsmwls import VSMWLS, rgf_decompose, solve_wls_detail, visual_saliency_map
from fusionbench.data.io import ImageError
from fusionbench.methods import create_method, get_method_info

METHODS = ["bgr", "gtf", "msvd", "sai", "vsmwls"]


def quantised(x):
    return im2uint8(x) / 255.0


@pytest.fixture(scope="module")
def pair():
    """A smooth PAT-like and an MRI-like 64x64 image on the 8-bit grid."""
    rng = np.random.default_rng(7)
    r, c = np.mgrid[0:64, 0:64] / 63.0
    pat = 0.15 + 0.6 * np.exp(-((r - 0.4) ** 2 + (c - 0.6) ** 2) / 0.02) + 0.05 * rng.random((64, 64))
    mri = 0.3 + 0.3 * np.sin(6 * r) * np.cos(4 * c) + 0.05 * rng.random((64, 64))
    return quantised(pat).astype(np.float32), quantised(mri).astype(np.float32)


# ------------------------------------------------------------------ common contract

@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("shape", [(64, 64), (33, 47)])
def test_output_shape_dtype_range(name, shape, pair):
    pat, mri = (x[:shape[0], :shape[1]] for x in pair)
    out = create_method(name).fuse(pat, mri)
    assert out.shape == shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # every reference ends with a uint8 conversion
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_registration_and_config(name):
    info = get_method_info(name)
    assert info.kind == "traditional" and info.role == "fusion" and info.reference
    method = create_method(name)
    assert method.config()["roles"] == {"ir": "pat", "vis": "mri"}


@pytest.mark.parametrize("name", METHODS)
def test_bad_inputs_are_rejected_clearly(name, pair):
    method = create_method(name)
    pat, mri = pair
    with pytest.raises(ImageError, match="shape mismatch"):
        method.fuse(pat, mri[:-1])
    bad = pat.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        method.fuse(bad, mri)
    with pytest.raises(ValueError, match="roles"):
        create_method(name, roles={"ir": "pat", "vis": "pat"})


@pytest.mark.parametrize("name", METHODS)
def test_roles_swap_the_sources(name, pair):
    pat, mri = pair
    swapped = create_method(name, roles={"ir": "mri", "vis": "pat"}).fuse(pat, mri)
    np.testing.assert_array_equal(swapped, create_method(name).fuse(mri, pat))


@pytest.mark.parametrize("name", ["gtf", "sai", "vsmwls"])
def test_fusing_an_image_with_itself_returns_it(name, pair):
    img = pair[1]
    np.testing.assert_allclose(create_method(name).fuse(img, img), img, atol=0.5 / 255 + 1e-6)


def test_msvd_self_fusion_is_the_min_max_normalised_image(pair):
    img = pair[1]
    expected = quantised(mat2gray(img.astype(np.float64)))
    np.testing.assert_allclose(MSVD().fuse(img, img), expected, atol=1e-6)


def test_constant_inputs_give_finite_output():
    flat = np.full((40, 40), 0.5, dtype=np.float32)
    for name in METHODS:
        with np.errstate(all="raise"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = create_method(name).fuse(flat, flat)
        assert np.all(np.isfinite(out)), name


# ------------------------------------------------------------------ GTF

def test_gtf_keeps_pat_intensities_and_mri_gradients():
    # PAT: a large bright square (large-scale intensity); MRI: thin vertical lines (fine
    # gradients) on a flat background. l1-TV with lambda = 4 keeps features whose area/perimeter
    # exceeds about lambda/2 and removes thinner ones, so x = MRI + TV-part(PAT - MRI) is
    # approximately PAT + (MRI - 0.4).
    pat = np.full((64, 64), 0.3)
    pat[16:48, 16:48] = 0.8
    mri = np.full((64, 64), 0.4)
    mri[:, 4::8] = 0.6
    pat, mri = quantised(pat), quantised(mri)
    fused = GTF().fuse(pat.astype(np.float32), mri.astype(np.float32)).astype(np.float64)
    expected = pat + mri - 0.4
    assert np.abs(fused - expected).mean() < 0.01
    # PAT intensities: the square stands 0.5 above the background, as in PAT (MRI has no square)
    inside, outside = fused[20:44, 21:27].mean(), fused[2:12, 1:3].mean()
    assert inside - outside == pytest.approx(0.5, abs=0.03)
    # MRI gradients: the lines keep their 0.2 contrast both inside and outside the square
    for rows in (slice(2, 12), slice(20, 44)):
        line, beside = fused[rows, 20].mean(), fused[rows, 22].mean()
        assert line - beside == pytest.approx(0.2, abs=0.03)


def test_irn_l1tv_removes_an_impulse_and_keeps_a_constant():
    data = np.zeros((20, 20))
    data[10, 10] = 1.0
    u, _ = irn_l1tv(data, 4.0)
    assert np.abs(u).max() < 0.05
    u, iterations = irn_l1tv(np.full((20, 20), 0.3), 4.0)
    np.testing.assert_allclose(u, 0.3, atol=1e-10)
    u, iterations = irn_l1tv(np.zeros((8, 8)), 4.0)
    assert np.all(u == 0) and iterations == [0]


def test_irn_l1tv_lowers_the_l1_tv_objective():
    rng = np.random.default_rng(3)
    data = np.zeros((32, 32))
    data[8:24, 8:24] = 1.0
    data += (rng.random((32, 32)) < 0.05) * rng.normal(0, 1, (32, 32))  # impulsive noise

    def objective(u):
        dx = np.diff(u, axis=1, append=u[:, -1:])
        dy = np.diff(u, axis=0, append=u[-1:, :])
        return np.abs(u - data).sum() + 1.0 * np.sqrt(dx ** 2 + dy ** 2).sum()

    u, _ = irn_l1tv(data, 1.0)
    clean = np.zeros((32, 32))
    clean[8:24, 8:24] = 1.0
    assert objective(u) < objective(data)
    assert np.abs(u - clean).mean() < np.abs(data - clean).mean() / 3


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(30, 30))
    a = m @ m.T + 30 * np.eye(30)
    b = rng.normal(size=30)
    x, it = conjugate_gradient(lambda v: a @ v, b, np.zeros(30), 1e-12, 500)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    assert 0 < it <= 30 + 5
    x0 = np.linalg.solve(a, b)
    assert conjugate_gradient(lambda v: a @ v, b, x0, 1e-6, 500)[1] == 0


# ------------------------------------------------------------------ MSVD

def test_msvd_decomposition_round_trip_and_block_order():
    rng = np.random.default_rng(1)
    x = rng.random((6, 8))
    t, u = msvd_decompose(x)
    np.testing.assert_allclose(msvd_reconstruct(t, u, x.shape), x, atol=1e-12)
    np.testing.assert_allclose(u.T @ u, np.eye(4), atol=1e-12)
    flat = np.full((4, 4), 0.25)
    t, u = msvd_decompose(flat)
    np.testing.assert_allclose(u[:, 0], 0.5)  # the constant block direction
    np.testing.assert_allclose(t[0], 0.5)  # = u0 . (0.25, 0.25, 0.25, 0.25)
    np.testing.assert_allclose(t[1:], 0.0, atol=1e-15)


def test_msvd_with_a_zero_input_hand_derived():
    # Source 1 constant c, source 2 zero. Source 1's first basis vector is (1,1,1,1)/2 and its
    # only non-zero band is LL = 2c; source 2's U is the identity (zero matrix, documented
    # convention). Fused: LL = c, details 0, U[:, 0] = ((1,1,1,1)/2 + e0)/2 = (3,1,1,1)/4, so each
    # 2x2 block is c * [[3/4, 1/4], [1/4, 1/4]] and mat2gray makes it [[1, 0], [0, 0]].
    c = 0.6
    raw = msvd_fuse(np.full((4, 6), c), np.zeros((4, 6)))
    block = np.array([[0.75, 0.25], [0.25, 0.25]]) * c
    np.testing.assert_allclose(raw, np.tile(block, (2, 3)), atol=1e-12)
    fused = MSVD().fuse(np.full((4, 6), c, dtype=np.float32), np.zeros((4, 6), dtype=np.float32))
    np.testing.assert_array_equal(fused, np.tile([[1.0, 0.0], [0.0, 0.0]], (2, 3)))


def test_msvd_with_a_zero_input_against_numpy_svd():
    rng = np.random.default_rng(5)
    x = rng.random((8, 10))
    a = x.reshape(4, 2, 5, 2).transpose(3, 1, 0, 2).reshape(4, -1)  # Matlab column-major blocks
    u1 = np.linalg.svd(a)[0]
    u1 = u1 * np.sign(u1[np.argmax(np.abs(u1), axis=0), np.arange(4)])
    t = u1.T @ a
    t[0] *= 0.5  # LL averaged with zero; details of x always win against zeros
    expected_blocks = 0.5 * (u1 + np.eye(4)) @ t
    expected = expected_blocks.reshape(2, 2, 4, 5).transpose(2, 1, 3, 0).reshape(8, 10)
    np.testing.assert_allclose(msvd_fuse(x, np.zeros_like(x)), expected, atol=1e-12)


# ------------------------------------------------------------------ BGR

def test_bgr_keeps_a_bright_pat_target():
    r, c = np.mgrid[0:128, 0:128]
    target = (r - 40) ** 2 + (c - 80) ** 2 <= 36
    pat = np.where(target, 0.9, 0.1)
    mri = 0.4 + 0.1 * np.sin(r / 5.0) * np.cos(c / 7.0)
    pat, mri = quantised(pat).astype(np.float32), quantised(mri).astype(np.float32)
    fused = BGR().fuse(pat, mri)
    assert fused[target].mean() > 0.85  # the target stands out at PAT brightness
    assert fused[target].mean() - mri[target].mean() > 0.4
    far = ((r - 40) ** 2 + (c - 80) ** 2 > 30 ** 2) & (r >= 5) & (r < 123) & (c >= 5) & (c < 123)
    # where PAT is dark background, the fused image is the MRI
    np.testing.assert_allclose(fused[far], mri[far], atol=1e-6)
    # ... except in a 4-pixel frame: the reference smooths the background with imfilter's zero
    # padding, which darkens it at the border and turns the border into IR "feature"
    frame = np.ones_like(target)
    frame[4:-4, 4:-4] = False
    assert np.all(fused[frame] >= mri[frame]) and fused[frame].mean() > mri[frame].mean() + 0.01


def test_quadtree_splits_only_where_the_range_exceeds_the_threshold():
    img = np.zeros((128, 128))
    img[5, 70] = 100.0  # in the top-right 64-block, inside its top-left 32-block
    leaves = quadtree_decompose(img, 51.0, 32)
    sizes = sorted(s for _, _, s in leaves)
    assert sizes == [32] * 4 + [64] * 3
    assert (0, 64, 32) in leaves and (0, 0, 64) in leaves
    assert sum(s * s for _, _, s in leaves) == 128 * 128
    assert quadtree_decompose(np.zeros((64, 64)), 51.0, 32) == [(0, 0, 64)]


def test_bezier_patch_reproduces_a_constant_and_its_corners():
    np.testing.assert_allclose(bezier_background(np.full((33, 33), 7.0)), 7.0, atol=1e-12)
    rng = np.random.default_rng(2)
    window = rng.random((33, 33))
    patch = bezier_background(window)
    for (i, j) in [(0, 0), (0, 32), (32, 0), (32, 32)]:  # a Bezier patch interpolates its corners
        assert patch[i, j] == pytest.approx(window[i, j])


# ------------------------------------------------------------------ SAI

def test_sai_takes_each_region_from_the_more_structured_source():
    rng = np.random.default_rng(4)
    texture = quantised(0.5 + 0.3 * (rng.random((64, 64)) > 0.5))
    flat = np.full((64, 64), quantised(0.5))
    pat = np.hstack([texture[:, :32], flat[:, 32:]]).astype(np.float32)
    mri = np.hstack([flat[:, :32] + 0.1, texture[:, 32:]]).astype(np.float32)
    fused = SAI().fuse(pat, mri)
    # Left: PAT's texture stops the recursive filter, the map stays ~1 (a grey level of slack).
    np.testing.assert_allclose(fused[:, :24], pat[:, :24], atol=1.5 / 255)
    assert np.mean(np.abs(fused[:, :24] - pat[:, :24]) < 1e-6) > 0.99
    # Right: the guide (PAT) is flat there, so the map diffuses in from the boundary and decays
    # over ~sigma_s = 10 px; far from it the fused image is the MRI texture.
    np.testing.assert_allclose(fused[:, 52:], mri[:, 52:], atol=2.5 / 255)
    right = slice(36, 64)
    assert np.abs(fused[:, right] - mri[:, right]).mean() < 0.1 * np.abs(fused[:, right] - pat[:, right]).mean()


def test_recursive_filter_preserves_constants_and_stops_at_edges():
    np.testing.assert_allclose(recursive_filter(np.full((10, 12), 0.3), np.zeros((10, 12)), 10, 0.2), 0.3)
    joint = np.zeros((16, 16))
    joint[:, 8:] = 1.0
    img = np.zeros((16, 16))
    img[:, :8] = 1.0
    out = recursive_filter(img, joint, 10, 0.2)
    # a strong joint edge stops the diffusion: a = exp(-sqrt(2)/10)^(1 + 50) ~ 7e-4
    assert out[:, :8].min() > 0.99 and out[:, 8:].max() < 0.01
    smooth = recursive_filter(img, np.zeros((16, 16)), 10, 0.2)  # no edge: it spreads
    assert smooth[:, 8].min() > 0.3


# ------------------------------------------------------------------ VSMWLS

def test_wls_closed_form_equals_the_reference_sparse_solve():
    rng = np.random.default_rng(6)
    m, l1, l2 = (rng.normal(size=(12, 9)) for _ in range(3))
    lam = 0.01
    from baselines.matlab import imfilter
    a = np.abs(imfilter(l2, np.ones((7, 7)) / 49.0, "replicate"))
    inv = sparse.diags((1.0 / (a + 1e-6)).ravel(order="F"))
    system = 2 * sparse.identity(m.size) + lam * (inv + inv.T)
    rhs = 2 * m.ravel(order="F") + lam * (inv + inv.T) @ l1.ravel(order="F")
    expected = spsolve(system.tocsc(), rhs).reshape(m.shape, order="F")
    np.testing.assert_allclose(solve_wls_detail(m, l1, l2, lam), expected, rtol=1e-10)


def test_rgf_layers_sum_back_to_the_image(pair):
    img = pair[0].astype(np.float64)
    details, base = rgf_decompose(img)
    assert len(details) == 4
    np.testing.assert_allclose(sum(details) + base, img, atol=1e-12)
    assert base.std() < img.std()


def test_visual_saliency_map_histogram_contrast():
    img = np.array([[0, 0, 128, 255]]) / 255.0
    # S(0) = 128 + 255 = 383, S(128) = 2*128 + 127 = 383, S(255) = 2*255 + 127 = 637
    np.testing.assert_allclose(visual_saliency_map(img), [[0, 0, 0, 1]])
    img = np.array([[0, 10, 10, 30]]) / 255.0
    s = np.array([50.0, 30.0, 30.0, 70.0])  # S(0)=10+10+30, S(10)=10+20, S(30)=30+20+20
    np.testing.assert_allclose(visual_saliency_map(img), [(s - 30) / 40])
