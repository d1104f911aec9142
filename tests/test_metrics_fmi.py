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
def _seq(values):
    """Left-to-right sum, as Matlab's and Octave's ``sum`` add a short vector."""
    total = 0.0
    for v in values:
        total += v
    return total


def _matlab_sum2(window):
    """Matlab's ``sum(sum(X))``: each column left to right, then the column sums."""
    return _seq(_seq(window[:, j]) for j in range(window.shape[1]))


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
    xp = xs.flatten(order="F") / _matlab_sum2(xs)
    fp = fs.flatten(order="F") / _matlab_sum2(fs)
    xc, fc = np.zeros(n), np.zeros(n)
    xc[0], fc[0] = xp[0], fp[0]
    for i in range(1, n):
        xc[i] = xp[i] + xc[i - 1]
        fc[i] = fp[i] + fc[i - 1]
    xt, ft = xp - _seq(xp) / n, fp - _seq(fp) / n  # Matlab's mean: a left-to-right sum over n
    dot = _seq(xt * ft)
    c = 0.0 if dot == 0 else dot / np.sqrt(_seq(xt * xt) * _seq(ft * ft))
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
    hx = _seq(-v * np.log2(v) for v in xp if v != 0)
    hf = _seq(-v * np.log2(v) for v in fp if v != 0)
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
    # fmi.m overwrites the F window with its scaled version while scoring A. F is a single bright
    # pixel (5) and B equals F; A is another single pixel. Scaling turns F's 5 into 1, so B is
    # not identical to it any more and is scored: B and F are the same one-bin (delta)
    # distribution, whose index SD is 0, so phi = 0, all entropies are 0, MI = 0 and the value is
    # 0. A against F: two delta distributions in different bins, MI = 0, value 0.
    a, f = _window((0, 0)), _window((1, 1), value=5.0)
    b = f.copy()
    assert _literal_fmi_map(a, b, f)[0, 0] == 0.0
    assert _fmi_map(a, b, f, 3)[0, 0] == 0.0
    # Swapping the sources: A = F scores 1 and leaves F unscaled; B against F scores 0.
    assert _literal_fmi_map(b, a, f)[0, 0] == 0.5
    assert _fmi_map(b, a, f, 3)[0, 0] == 0.5


def test_constant_windows_are_correlated_through_matlabs_sequential_mean():
    # Matlab/Octave sum left to right: nine 1/9 add up to 1 + 2^-52, so a constant window's
    # centred distribution is -2.8e-17 everywhere, not 0. Two constant windows that are not
    # identical (here B = 0 against F scaled to all ones) then have c = 1, phi = 1 and score 1:
    # the all-zero edge windows of B and F match after all when A has an edge there.
    assert sum([1 / 9] * 9) == 1 + 2.0 ** -52
    a, b, f = _window((1, 1)), ZERO, ZERO
    assert _literal_fmi_map(a, b, f)[0, 0] == pytest.approx(0.5, abs=1e-12)
    assert _fmi_map(a, b, f, 3)[0, 0] == pytest.approx(0.5, abs=1e-12)
    # Two different constants score 1; a constant against structure scores 0 (c is 1e-16).
    assert _vectorised_value(np.full((3, 3), 2.0), np.full((3, 3), 7.0)) == pytest.approx(1.0, abs=1e-12)
    assert _vectorised_value(np.full((3, 3), 2.0), _window((0, 1), (2, 2))) == pytest.approx(0.0, abs=1e-12)


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
    # are all zero and score a perfect 1, so a black fused image scores about 0.9. Where a source
    # has an edge and B none, the all-zero windows of B and F still score 1 (Matlab's sequential
    # mean, see test_constant_windows_are_correlated_through_matlabs_sequential_mean).
    from skimage import data, transform
    a = np.round(transform.resize(data.camera(), (128, 128), anti_aliasing=True) * 255) / 255
    b = np.round(transform.resize(data.moon(), (128, 128), anti_aliasing=True) * 255) / 255
    with pytest.warns(RuntimeWarning, match="constant"):
        black = fmi(a, b, np.zeros_like(a), feature="edge")
    assert 0.8 < black < 0.95
    with pytest.warns(RuntimeWarning, match="constant"):
        assert fmi(a, b, np.zeros_like(a), feature="pixel") < 0.2
    # ... and it beats the average of the two sources: edge FMI must never decide a ranking alone.
    assert black > fmi(a, b, np.round((a + b) / 2 * 255) / 255, feature="edge")


# --------------------------------------------------------------------------------------------
# Degenerate inputs.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("feature", FEATURES)
def test_three_equal_constant_images_score_one_with_warning(feature):
    c = np.full((10, 10), 0.4, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="constant image"):
        assert fmi(c, c, c, feature=feature) == 1.0


def test_constant_fused_image_against_other_constants_scores_one_with_warning():
    # Every window is non-identical and uniform against uniform; through Matlab's sequential mean
    # the two uniform distributions are perfectly correlated: phi = 1, MI = H, value 1.
    a = np.full((10, 10), 0.2, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="a, b, f"):
        assert fmi(a, a, np.full_like(a, 0.6), feature="pixel") == pytest.approx(1.0, abs=1e-12)


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


def test_dct_feature_of_a_constant_image_is_its_dc_term_alone():
    # In exact arithmetic every AC term is 0; the FFT leaves ~1e-16 of the DC term, which 3 x 3
    # min-max scaling would turn into arbitrary windows (FMI_dct 1.10 for three constants).
    for shape, value in (((10, 4), 49), ((300, 300), 77), ((37, 45), 201)):
        dct = fmi_features(np.full(shape, value, np.uint8), "dct")
        assert np.count_nonzero(dct) == 1 and dct[0, 0] == pytest.approx(value * np.sqrt(np.prod(shape)))


def test_dct_feature_is_orthonormal_dct2(triplet):
    from scipy.fft import dctn
    a = triplet[0]
    expected = dctn(np.round(a.astype(float) * 255), norm="ortho")
    np.testing.assert_allclose(fmi_features(a, "dct"), expected, rtol=1e-7, atol=1e-13 * np.abs(expected).max())
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


def test_matrix_dwt2_equals_pywavelets():
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


def test_dwt2_is_exactly_constant_over_flat_supports():
    # Matlab's dwt2 convolves directly, so every coefficient whose 102 taps see one repeated value
    # comes out bit-identical; FMI's 3 x 3 min-max scaling would turn position-dependent rounding
    # into structure. A constant image gives four exactly constant sub-bands ...
    approx, details = dmey_dwt2(np.full((40, 64), 77.0))
    for band in (approx, *details):
        assert band.min() == band.max()
    # ... and a flat half wide enough for the whole filter gives equal coefficients there.
    x = np.random.default_rng(3).random((300, 300)) * 255
    x[:, :200] = 31.0
    approx, (horizontal, _, _) = dmey_dwt2(x)
    # Row output t reads extended samples 2t+1 .. 2t+102, i.e. columns 2t-100 .. 2t+1 (negative
    # ones mirrored into columns 0..99): all in the flat part for t <= 99. Those row outputs are
    # then equal down every column, so the column pass is flat there too.
    assert np.ptp(approx[:, :99]) == 0.0 and np.ptp(horizontal[:, :99]) == 0.0
    assert np.ptp(approx[:, 99:]) > 0.0


# --------------------------------------------------------------------------------------------
# Known answers on degenerate inputs (hand-derived) and the previous implementation's values.
# --------------------------------------------------------------------------------------------
def _step(value_left, value_right, shape=(10, 10), at=5):
    x = np.full(shape, value_left)
    x[:, at:] = value_right
    return x


def test_constant_fused_image_scores_the_share_of_flat_source_windows():
    # 10 x 10 sources with a step between columns 4 and 5: of the 8 x 8 windows, those starting
    # in columns 3 and 4 straddle the step (16), the other 48 are flat. A flat source window
    # against the constant F window scores 1 (two different constants, c = 1), a straddling one
    # about 0 (c ~ 1e-16): FMI = 48 / 64 = 0.75 for raw pixels.
    a, b = _step(0.2, 0.8), _step(0.4, 0.6)
    f = np.full((10, 10), 0.5)
    with pytest.warns(RuntimeWarning, match="constant"):
        assert fmi(a, b, f, feature="pixel") == pytest.approx(0.75, abs=1e-12)


def test_constant_source_with_f_equal_to_the_other_source():
    # A constant, F = B a step. A part: 1 on the 48 flat windows, 0 on the 16 straddling ones.
    # B part: A's window differs from F's, so F is scaled to [0, 1] and B is no longer identical
    # to it; B and F have the same distribution (c = 1, phi = 1, MI = H): about 1 everywhere.
    # FMI = (48/64 + 1) / 2 = 0.875 (0.5 if constant windows were uncorrelated).
    a, b = np.full((10, 10), 0.3), _step(0.4, 0.6)
    with pytest.warns(RuntimeWarning, match="constant"):
        assert fmi(a, b, b.copy(), feature="pixel") == pytest.approx(0.875, abs=1e-12)


def test_three_different_constant_images_score_one_with_wavelet_features():
    # Each wavelet map is four exactly constant sub-bands; windows inside a band are constant
    # against constant (1), windows across band borders have the same two-level pattern in all
    # three maps (c = 1, phi = 1): FMI = 1. With position-dependent rounding in the DWT the
    # min-max scaled windows would be noise (0.11 before the direct-convolution rule).
    images = [np.full((24, 24), v) for v in (0.2, 0.4, 0.6)]
    with pytest.warns(RuntimeWarning, match="constant"):
        assert fmi(*images, feature="wavelet") == pytest.approx(1.0, abs=1e-9)


# fmi() values of the previous, array-based implementation (commit 81437c0), where no position
# has two different constant windows (the one case whose value the sequential-mean rule
# changes): the compiled kernel and the matrix DWT must reproduce them.
PREVIOUS_VALUES = {
    ("triplet", "pixel"): 0.3698953058235516, ("triplet", "dct"): 0.3743452505576082,
    ("triplet", "wavelet"): 0.3880528556646595,
    ("random", "pixel"): 0.09291433092960973, ("random", "dct"): 0.09525750870625775,
    ("random", "wavelet"): 0.10940437179802363,
    ("levels", "pixel"): 0.09275057492611537, ("levels", "dct"): 0.09371163915094828,
    ("levels", "wavelet"): 0.11551812942682285,
    ("random_w5", "pixel"): 0.04468705696772092, ("random_w5", "dct"): 0.048938986045299636,
    ("random_w5", "wavelet"): 0.0643385327350516,
}


def _previous_inputs(name):
    import importlib.util
    import pathlib
    spec = importlib.util.spec_from_file_location(
        "bench_conftest", pathlib.Path(__file__).parents[1] / "benchmarks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if name == "triplet":
        return module.make_triplet(64, seed=3), 3
    rng = np.random.default_rng(7)
    r = [rng.random((37, 45)) for _ in range(3)]
    q = [rng.integers(0, 256, (40, 33)) / 255.0 for _ in range(3)]
    return {"random": (r, 3), "levels": (q, 3), "random_w5": (r, 5)}[name]


@pytest.mark.parametrize("name, feature", sorted(PREVIOUS_VALUES))
def test_compiled_kernel_keeps_the_previous_values(name, feature):
    images, window = _previous_inputs(name)
    assert fmi(*images, feature=feature, window=window) == pytest.approx(
        PREVIOUS_VALUES[name, feature], abs=1e-12)


# --------------------------------------------------------------------------------------------
# Matlab's edge(I): a literal transcription of the Image Processing Toolbox's portable thinning
# loop (edge.m, computeEdgesWithThinningPortable, Sobel: offsets 0, kx = ky = 1).
# --------------------------------------------------------------------------------------------
def _literal_matlab_edge(img255):
    from scipy.ndimage import correlate
    op = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8.0
    by = correlate(img255, op, mode="nearest")     # imfilter(a, op, 'replicate')
    bx = correlate(img255, op.T, mode="nearest")   # imfilter(a, op', 'replicate')
    b = bx * bx + by * by
    cutoff = 4.0 * _seq(b.flatten(order="F")) / b.size
    bx, by = np.abs(bx), np.abs(by)
    eps100 = 100 * np.finfo(float).eps
    m, n = b.shape
    e = np.zeros((m, n), dtype=bool)
    for c in range(n):
        for r in range(m):
            b1 = True if c - 1 < 0 else b[r, c - 1] <= b[r, c]
            b2 = True if c + 1 >= n else b[r, c] > b[r, c + 1]
            b3 = True if r - 1 < 0 else b[r - 1, c] <= b[r, c]
            b4 = True if r + 1 >= m else b[r, c] > b[r + 1, c]
            e[r, c] = b[r, c] > cutoff and ((bx[r, c] >= by[r, c] - eps100 and b1 and b2)
                                            or (by[r, c] >= bx[r, c] - eps100 and b3 and b4))
    return e


@pytest.mark.parametrize("seed, levels", [(0, 256), (1, 4), (2, 2)])
def test_matlab_edge_equals_the_toolbox_thinning_loop(seed, levels):
    # Few grey levels make ties between neighbours and between |bx| and |by| common.
    rng = np.random.default_rng(seed)
    img = rng.integers(0, levels, (23, 31)) / (levels - 1)
    img[5:12, 4:20] = img[5, 4]  # a flat block: zero gradients and ties inside
    np.testing.assert_array_equal(matlab_edge(img), _literal_matlab_edge(np.round(img * 255)))


def test_dwt2_flat_support_ignores_the_zero_tap():
    # Low-pass output t reads extended samples 2t+1 .. 2t+101 through non-zero taps and sample
    # 2t+102 through its zero tap. Columns 0..150 flat: t = 75 has its zero tap on column 151,
    # which is not flat, and still equals t = 0..74, as a direct convolution makes it.
    from fusionbench.metrics._dmey import _analysis_rows
    x = np.random.default_rng(4).random((3, 300)) * 255
    x[:, :151] = 51.0
    low, high = _analysis_rows(x)
    assert np.unique(low[:, :76]).size == 1
    # The high-pass filter's zero tap is at the other end: its output 75 reads columns 51..151
    # through non-zero taps, so it is not flat, while 0..74 are.
    assert np.unique(high[:, :75]).size == 1 and high[0, 75] != high[0, 0]
