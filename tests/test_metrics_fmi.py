"""Tests of fusionbench.metrics.feature_mi (Haghighat's fast FMI) and the Matlab dmey wavelet."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionbench.data.io import ImageError
from fusionbench.metrics._dmey import MATLAB_DMEY_REC_LO, dmey_dwt2, matlab_dmey, quadrature_mirror
from fusionbench.metrics.feature_mi import _fmi_map, fmi, fmi_features, matlab_edge


# --------------------------------------------------------------------------------------------
# A literal, loop-by-loop transcription of Haghighat's fmi.m (tang analysis_fmi.m / MEFB
# metricsFMI.m), kept deliberately naive: the vectorised code must agree with it.
# --------------------------------------------------------------------------------------------
def _literal_pair(x_sub, f_sub, branches=None):
    """One source's block of fmi.m. Returns (value, the F window as fmi.m leaves it)."""
    n = x_sub.size
    if np.all(x_sub == f_sub):
        if branches is not None:
            branches.add("identical")
        return 1.0, f_sub

    def rescale(s):
        lo, hi = s.min(), s.max()
        return np.ones(s.shape) if hi == lo else (s - lo) / (hi - lo)

    xs, fs = rescale(x_sub), rescale(f_sub)
    if branches is not None and (x_sub.min() == x_sub.max() or f_sub.min() == f_sub.max()):
        branches.add("constant")
    xp = xs.flatten(order="F") / xs.sum()
    fp = fs.flatten(order="F") / fs.sum()
    xc, fc = np.zeros(n), np.zeros(n)
    xc[0], fc[0] = xp[0], fp[0]
    for i in range(1, n):
        xc[i] = xp[i] + xc[i - 1]
        fc[i] = fp[i] + fc[i - 1]
    xt, ft = xp - xp.mean(), fp - fp.mean()
    c = 0.0 if np.sum(xt * ft) == 0 else np.sum(xt * ft) / np.sqrt(np.sum(xt * xt) * np.sum(ft * ft))
    ex = ex2 = ef = ef2 = 0.0
    for i in range(1, n + 1):
        ex += i * xp[i - 1]
        ex2 += i * i * xp[i - 1]
        ef += i * fp[i - 1]
        ef2 += i * i * fp[i - 1]
    xsd = np.sqrt(complex(ex2 - ex ** 2))
    fsd = np.sqrt(complex(ef2 - ef ** 2))
    if c >= 0:
        def bound(u, v):
            return 0.5 * (u + v - abs(u - v))
    else:
        def bound(u, v):
            return 0.5 * (u + v - 1 + abs(u + v - 1))
    if c == 0 or xsd == 0 or fsd == 0:
        phi = 0.0
    else:
        cov = 0.0
        for i in range(n):
            for j in range(n):
                cov += bound(fc[i], xc[j]) - fc[i] * xc[j]
        phi = c / (cov / (fsd * xsd))
    if branches is not None:
        branches.add("negative c" if c < 0 else "positive c" if c > 0 else "zero c")
    h_joint = 0.0
    for i in range(n):
        for j in range(n):
            m = bound(fc[i], xc[j])
            if i > 0:
                m -= bound(fc[i - 1], xc[j])
            if j > 0:
                m -= bound(fc[i], xc[j - 1])
            if i > 0 and j > 0:
                m += bound(fc[i - 1], xc[j - 1])
            jp = phi * m + (1 - phi) * fp[i] * xp[j]
            if jp != 0:
                h_joint += (-jp * np.log2(complex(jp))).real
                if branches is not None and np.real(jp) < 0:
                    branches.add("negative cell")
    hx = sum(-v * np.log2(v) for v in xp if v != 0)
    hf = sum(-v * np.log2(v) for v in fp if v != 0)
    mi = hx + hf - h_joint
    return (0.0 if mi == 0 else float(np.real(2 * mi / (hx + hf)))), fs


def _literal_fmi_map(fa, fb, ff, window=3, branches=None):
    h = window // 2
    m, n = fa.shape
    out = np.ones((m - 2 * h, n - 2 * h))
    for r in range(h, m - h):
        for c in range(h, n - h):
            sub = (slice(r - h, r + h + 1), slice(c - h, c + h + 1))
            v_af, f_left = _literal_pair(fa[sub], ff[sub], branches)
            v_bf, _ = _literal_pair(fb[sub], f_left, branches)
            out[r - h, c - h] = 0.5 * (v_af + v_bf)
    return out


def _window_value(x, f):
    """The literal value of one (source, fused) window pair, given as 3x3 arrays."""
    return _literal_pair(np.asarray(x, float), np.asarray(f, float))[0]


def _vectorised_value(x, f):
    """The vectorised value of the same pair (B = X so the window value is the pair value)."""
    x, f = np.asarray(x, float), np.asarray(f, float)
    return float(_fmi_map(x, x, f, 3)[0, 0])


def _levels(rng, shape, n_levels=256):
    return (rng.integers(0, n_levels, shape) / (n_levels - 1)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The per-window value: hand-derived cases.
# --------------------------------------------------------------------------------------------
ZERO = np.zeros((3, 3))


def _window(*ones, value=1.0):
    w = np.zeros((3, 3))
    for r, c in ones:
        w[r, c] = value
    return w


def test_window_identical_scores_one():
    w = _window((0, 0), (1, 2))
    assert _vectorised_value(w, w) == 1.0


def test_window_rescaled_copy_scores_one():
    # Raw windows differ, the min-max scaled ones agree: c = 1, the comonotone bound is the
    # diagonal, phi = 1, H_joint = H = 1 bit, so 2 MI / (H_X + H_F) = 2 * 1 / 2 = 1.
    x = _window((0, 0), (1, 0))
    assert _window_value(x, 2 * x + 3) == pytest.approx(1.0, abs=1e-12)
    assert _vectorised_value(x, 2 * x + 3) == pytest.approx(1.0, abs=1e-12)


def test_window_two_deltas_score_zero():
    # p and q are single spikes: zero index variance, phi = 0, the joint is the product (one cell
    # of mass 1), H_joint = H_X = H_F = 0, MI = 0 exactly, and the value is 0.
    x, f = _window((0, 0)), _window((2, 2))
    assert _window_value(x, f) == 0.0
    assert _vectorised_value(x, f) == 0.0


def test_window_negative_correlation_by_hand():
    # X: bins 1, 2 (column-major) at 1/2 each; F: bins 8, 9 at 1/2 each.
    # Pearson c of the 9-vectors: (0 - 1/9) / (1/2 - 1/9) = -2/7 < 0 -> lower Frechet bound.
    # Bin indices: I_X in {1, 2}, I_F in {8, 9}, SD 1/2 each; the countermonotone coupling pairs
    # X1-F9 and X2-F8: cov = (9 + 16)/2 - 1.5 * 8.5 = -1/4, correlation -1, theta = 2/7.
    # Joint cells: 2/7 * 1/2 + 5/7 * 1/4 = 9/28 (twice) and 5/7 * 1/4 = 5/28 (twice).
    x = _window((0, 0), (1, 0))
    f = _window((1, 2), (2, 2))
    h_joint = -2 * (9 / 28) * np.log2(9 / 28) - 2 * (5 / 28) * np.log2(5 / 28)
    expected = 2 * (2 - h_joint) / 2
    assert _window_value(x, f) == pytest.approx(expected, abs=1e-12)
    assert _vectorised_value(x, f) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.0597, abs=1e-4)


def test_window_constant_against_structure_scores_zero():
    # A constant window becomes all ones: a uniform distribution, uncorrelated with anything
    # (c = 0, phi = 0), so the joint is the product of the marginals and MI = 0.
    x = np.full((3, 3), 7.0)
    f = _window((0, 1), (2, 2))
    assert _vectorised_value(x, f) == 0.0
    assert _window_value(x, f) == pytest.approx(0.0, abs=1e-12)


def test_reference_quirk_b_tested_against_scaled_f():
    # fmi.m overwrites the F window with its scaled version while scoring A. Here A has an edge,
    # B and F are all-zero windows: B is then compared with F scaled to ones, is not identical,
    # and scores 0 (uniform against uniform) instead of 1.
    a, b, f = _window((1, 1)), ZERO, ZERO
    assert _literal_fmi_map(a, b, f)[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert _fmi_map(a, b, f, 3)[0, 0] == 0.0
    # Swapping the sources: A = F, so B's test sees the raw F, and the A part scores 1.
    assert _fmi_map(b, a, f, 3)[0, 0] == pytest.approx(0.5, abs=1e-12)


# --------------------------------------------------------------------------------------------
# The vectorised map against the literal transcription.
# --------------------------------------------------------------------------------------------
def _branchy_maps():
    """6 x 7 feature maps whose windows exercise every branch of fmi.m."""
    rng = np.random.default_rng(7)
    fa = rng.integers(0, 4, (6, 7)).astype(float)
    fb = rng.integers(0, 4, (6, 7)).astype(float)
    ff = fa.copy()
    ff[:, 4:] = 3 - ff[:, 4:]          # mirrored intensities: negative correlation
    ff[3:, :3] = 2.0                   # a constant patch
    fb[3:, :3] = 2.0                   # ... shared by B (identical B windows)
    fa[:2, 4:] = 1.0                   # constant A windows against structure in F
    return fa, fb, ff


def test_vectorised_map_matches_literal_on_every_branch():
    fa, fb, ff = _branchy_maps()
    branches: set[str] = set()
    expected = _literal_fmi_map(fa, fb, ff, branches=branches)
    assert branches >= {"identical", "constant", "negative c", "positive c", "negative cell"}
    np.testing.assert_allclose(_fmi_map(fa, fb, ff, 3), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("feature", ["pixel", "edge", "dct"])
def test_vectorised_map_matches_literal_per_feature(feature):
    rng = np.random.default_rng(3)
    a = _levels(rng, (9, 11))
    b = a.copy()
    b[:, :5] = 1 - b[:, :5]
    f = (0.5 * a + 0.5 * b).astype(np.float32)
    f[rng.random(f.shape) < 0.2] = 0
    maps = [fmi_features(x, feature) for x in (a, b, f)]
    np.testing.assert_allclose(_fmi_map(*maps, 3), _literal_fmi_map(*maps), rtol=0, atol=1e-12)


def test_vectorised_map_matches_literal_on_wavelet_features():
    # The window rule does not depend on the feature: compare on a crop of the wavelet maps
    # (the full 109 x 109 maps of a 9 x 9 image would make the literal loop slow).
    rng = np.random.default_rng(4)
    a, b, f = (_levels(rng, (9, 9)) for _ in range(3))
    maps = [fmi_features(x, "wavelet")[40:52, 50:60] for x in (a, b, f)]
    np.testing.assert_allclose(_fmi_map(*maps, 3), _literal_fmi_map(*maps), rtol=0, atol=1e-12)


def test_vectorised_map_matches_literal_with_window_5():
    rng = np.random.default_rng(5)
    fa, fb, ff = (rng.integers(0, 256, (7, 8)).astype(float) for _ in range(3))
    np.testing.assert_allclose(_fmi_map(fa, fb, ff, 5), _literal_fmi_map(fa, fb, ff, window=5),
                               rtol=0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(8, 12), st.integers(8, 12), st.integers(2, 256), st.integers(0, 2**32 - 1),
       st.sampled_from(["pixel", "edge", "dct"]))
def test_property_random_images(rows, cols, n_levels, seed, feature):
    rng = np.random.default_rng(seed)
    a, b, f = (_levels(rng, (rows, cols), n_levels) for _ in range(3))
    maps = [fmi_features(x, feature) for x in (a, b, f)]
    window_values = _fmi_map(*maps, 3)
    np.testing.assert_allclose(window_values, _literal_fmi_map(*maps), rtol=0, atol=1e-11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a 2-level image may come out constant
        value = fmi(a, b, f, feature=feature)
    assert value == pytest.approx(window_values.mean(), abs=1e-15)
    assert 0.0 <= value <= 1.0


# --------------------------------------------------------------------------------------------
# fmi(): whole-image properties.
# --------------------------------------------------------------------------------------------
FEATURES = ["edge", "pixel", "dct", "wavelet"]


@pytest.fixture(scope="module")
def triplet():
    """A smooth 48 x 48 8-bit triplet with structure at several scales."""
    r, c = np.mgrid[0:48, 0:48] / 47.0
    a = 0.5 + 0.4 * np.sin(6 * r) * np.cos(4 * c)
    b = np.where((r - 0.5) ** 2 + (c - 0.4) ** 2 < 0.08, 0.8, 0.2) + 0.1 * c
    a, b = (np.round(np.clip(x, 0, 1) * 255) / 255 for x in (a, b))
    f = np.round((0.5 * a + 0.5 * b) * 255) / 255
    return a.astype(np.float32), b.astype(np.float32), f.astype(np.float32)


@pytest.mark.parametrize("feature", FEATURES)
def test_identical_inputs_score_one(feature, triplet):
    a = triplet[0]
    assert fmi(a, a, a, feature=feature) == 1.0


@pytest.mark.parametrize("feature", FEATURES)
def test_range_and_order(feature, triplet):
    a, b, f = triplet
    fused = fmi(a, b, f, feature=feature)
    assert 0.0 < fused < 1.0
    # The average of the sources scores higher than an unrelated noise image.
    noise = np.random.default_rng(0).random(a.shape).astype(np.float32)
    assert fused > fmi(a, b, noise, feature=feature)


@pytest.mark.parametrize("feature", ["pixel", "dct", "wavelet"])
def test_symmetric_in_the_sources(feature, triplet):
    # Symmetric wherever no F window is constant ...
    a, b, f = triplet
    assert fmi(a, b, f, feature=feature) == pytest.approx(fmi(b, a, f, feature=feature), abs=1e-12)


def test_edge_feature_is_slightly_asymmetric_like_the_reference(triplet):
    # ... but all-zero F windows are common in edge maps, and there the reference's reuse of the
    # scaled F window (see test_reference_quirk_b_tested_against_scaled_f) breaks the symmetry.
    a, b, f = triplet
    forward, backward = fmi(a, b, f), fmi(b, a, f)
    assert forward != backward
    assert abs(forward - backward) < 0.01


def test_integer_and_float_inputs_agree(triplet):
    a, b, f = triplet
    as_uint8 = [np.round(x * 255).astype(np.uint8) for x in (a, b, f)]
    for feature in FEATURES:
        assert fmi(*as_uint8, feature=feature) == fmi(a, b, f, feature=feature)


def test_default_feature_is_edge(triplet):
    assert fmi(*triplet) == fmi(*triplet, feature="edge")
    assert fmi(*triplet) != fmi(*triplet, feature="pixel")


def test_edge_fmi_is_about_090_for_a_constant_fused_image():
    # A property of the reference, protected on purpose: most 3 x 3 windows of both edge maps
    # are all zero and score a perfect 1, so a black fused image scores about 0.9.
    from skimage import data, transform
    a = np.round(transform.resize(data.camera(), (128, 128), anti_aliasing=True) * 255) / 255
    b = np.round(transform.resize(data.moon(), (128, 128), anti_aliasing=True) * 255) / 255
    with pytest.warns(RuntimeWarning, match="constant"):
        black = fmi(a, b, np.zeros_like(a), feature="edge")
    assert 0.8 < black < 0.95
    with pytest.warns(RuntimeWarning, match="constant"):
        assert fmi(a, b, np.zeros_like(a), feature="pixel") < 0.2
    # ... and yet it is below a real fusion.
    assert black < fmi(a, b, np.round((a + b) / 2 * 255) / 255, feature="edge")


# --------------------------------------------------------------------------------------------
# Degenerate inputs.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("feature", FEATURES)
def test_three_equal_constant_images_score_one_with_warning(feature):
    c = np.full((10, 10), 0.4, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="constant image"):
        assert fmi(c, c, c, feature=feature) == 1.0


def test_constant_fused_image_against_other_constants_scores_zero_with_warning():
    # Every window is non-identical and uniform against uniform: MI = 0 -> 0.
    a = np.full((10, 10), 0.2, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="a, b, f"):
        assert fmi(a, a, np.full_like(a, 0.6), feature="pixel") == 0.0


def test_no_warning_for_ordinary_images(triplet):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fmi(*triplet, feature="dct")


# --------------------------------------------------------------------------------------------
# Features.
# --------------------------------------------------------------------------------------------
def test_matlab_edge_step_gives_thin_line():
    # Step between columns 7 and 8 of an 8 x 16 image: |bx| = 1/2 on columns 7 and 8, by = 0,
    # b = 1/4 there, mean(b) = 2 * 8 * (1/4) / 128 = 1/32, cutoff = 4/32 = 1/8 < 1/4. Thinning
    # keeps column 8 only (b[7] <= b[8] > b[9]; column 7 fails b[7] > b[8]).
    img = np.zeros((8, 16), dtype=np.float32)
    img[:, 8:] = 1
    edges = matlab_edge(img)
    expected = np.zeros((8, 16), dtype=bool)
    expected[:, 8] = True
    np.testing.assert_array_equal(edges, expected)
    np.testing.assert_array_equal(matlab_edge(img.T), expected.T)
    np.testing.assert_array_equal(matlab_edge(1 - img), expected)
    np.testing.assert_array_equal(matlab_edge(0.5 * img), expected)


def test_matlab_edge_threshold_is_four_times_mean():
    # With the step in the middle of 8 columns, b = 1/4 on 2 of 8 columns: cutoff = 4 * 1/16
    # = 1/4 is not exceeded (the comparison is strict), so there is no edge at all.
    img = np.zeros((8, 8), dtype=np.float32)
    img[:, 4:] = 1
    assert not matlab_edge(img).any()


def test_matlab_edge_border_comparisons_count_as_true():
    # A step at the last column: its b peak is on the border, where the missing right-hand
    # neighbour counts as "b > b[c+1]".
    img = np.zeros((6, 12), dtype=np.float32)
    img[:, 11] = 1
    edges = matlab_edge(img)
    assert edges[:, 11].all() and edges.sum() == 6


def test_matlab_edge_of_constant_image_is_empty():
    assert not matlab_edge(np.full((5, 5), 0.3)).any()


def test_feature_shapes(triplet):
    a = triplet[0]
    assert fmi_features(a, "pixel").shape == (48, 48)
    assert fmi_features(a, "edge").dtype == np.float64
    assert set(np.unique(fmi_features(a, "edge"))) <= {0.0, 1.0}
    assert fmi_features(a, "dct").shape == (48, 48)
    wavelet = fmi_features(a, "wavelet")
    assert wavelet.shape == (2 * ((48 + 101) // 2),) * 2 == (148, 148)
    assert wavelet.min() == 0.0 and wavelet.max() == 1.0


def test_dct_feature_is_orthonormal_dct2(triplet):
    from scipy.fft import dctn
    a = triplet[0]
    np.testing.assert_allclose(fmi_features(a, "dct"), dctn(np.round(a.astype(float) * 255), norm="ortho"))
    # Orthonormal: energy is preserved.
    assert np.sum(fmi_features(a, "dct") ** 2) == pytest.approx(np.sum(np.round(a.astype(float) * 255) ** 2))


# --------------------------------------------------------------------------------------------
# The Matlab dmey wavelet.
# --------------------------------------------------------------------------------------------
def test_dmey_table():
    h = MATLAB_DMEY_REC_LO
    assert h.shape == (102,)
    assert h.sum() == pytest.approx(np.sqrt(2), abs=1e-9)
    assert np.sum(h * h) == pytest.approx(1.0, abs=2e-6)
    for shift in range(2, 102, 2):
        assert abs(np.dot(h[shift:], h[:-shift])) < 1e-6
    np.testing.assert_array_equal(h[:101], h[100::-1])  # symmetric about tap 50
    assert h[101] == 0.0 and h[50] == pytest.approx(0.743751004903787)


def test_quadrature_mirror_follows_matlab_and_pywavelets():
    db2 = pywt.Wavelet("db2")
    np.testing.assert_allclose(quadrature_mirror(db2.rec_lo), db2.rec_hi)


def test_matlab_dmey_dwt2_shapes_and_reconstruction():
    wavelet = matlab_dmey()
    assert wavelet.dec_len == 102 and pywt.Wavelet("dmey").dec_len == 62
    x = np.random.default_rng(0).random((256, 256))
    approx, (horizontal, vertical, diagonal) = pywt.dwt2(x, wavelet, mode="symmetric")
    assert approx.shape == horizontal.shape == vertical.shape == diagonal.shape == (178, 178)
    assert np.block([[approx, horizontal], [vertical, diagonal]]).shape == (356, 356)
    # The truncated filter is orthonormal to ~1e-6, so reconstruction is good to ~1e-5.
    back = pywt.idwt2((approx, (horizontal, vertical, diagonal)), wavelet, mode="symmetric")
    assert np.max(np.abs(back - x)) < 1e-4


def test_fft_dwt2_equals_pywavelets():
    x = np.random.default_rng(1).random((61, 40)) * 255
    expected = pywt.dwt2(x, matlab_dmey(), mode="symmetric")
    approx, details = dmey_dwt2(x)
    assert approx.shape == (81, 70)
    np.testing.assert_allclose(approx, expected[0], rtol=0, atol=1e-9)
    for got, want in zip(details, expected[1]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors(triplet):
    a, b, f = triplet
    with pytest.raises(ValueError, match="feature"):
        fmi(a, b, f, feature="gradient")
    for window in (1, 4, 3.0, True):
        with pytest.raises(ValueError, match="window"):
            fmi(a, b, f, window=window)
    with pytest.raises(ValueError, match="convention"):
        fmi(a, b, f, convention="matlab")
    with pytest.raises(ValueError, match="no FMI"):
        fmi(a, b, f, convention="vifb")
    with pytest.raises(ImageError, match="shape mismatch"):
        fmi(a, b, f[:-1])
    with pytest.raises(ImageError, match="smaller than"):
        fmi(a[:2, :2], b[:2, :2], f[:2, :2])
    with pytest.raises(ImageError, match="NaN"):
        fmi(a, b, np.full_like(f, np.nan))


@pytest.mark.parametrize("convention", ["paper", "tang", "mefb"])
def test_conventions_are_one_computation(convention, triplet):
    assert fmi(*triplet, convention=convention) == fmi(*triplet)
