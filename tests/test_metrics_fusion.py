"""Tests of fusionbench.metrics.fusion: hand-derived values, invariants, scikit-image agreement,
and literal (loop-by-loop) re-implementations of the reference toolboxes on tiny images."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.measure import shannon_entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fusionbench.data.io import ImageError
from fusionbench.metrics import fusion
from fusionbench.metrics._conventions import CONVENTIONS, to_255
from fusionbench.metrics.fusion import SUITE_COLUMNS, ag, en, fusion_suite, mi, psnr, qabf, sd, sf, ssim, vif

LN2 = math.log(2.0)
QG_HALF = 0.9994 / 2.0  # Qg at G = 0.5: the sigmoid's midpoint
QA_ONE = 0.9879 / (1.0 + math.exp(-22.0 * (1.0 - 0.8)))  # Qa at equal orientations


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def eight_bit(x: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(x, 0, 1) * 255) / 255).astype(np.float32)


def smooth_image(seed: int, shape=(48, 44), sigma=2.0) -> np.ndarray:
    """Smooth structure plus noise, 8-bit, grey levels 0..250 (so Tang's 254/255 merge is idle)."""
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.random(shape), sigma)
    img = (img - img.min()) / (img.max() - img.min())
    return eight_bit(np.clip(img + 0.02 * rng.standard_normal(shape), 0, 1) * 250 / 255)


@pytest.fixture(scope="module")
def triplet():
    a = smooth_image(1)
    b = smooth_image(2)
    return a, b, eight_bit(0.6 * a + 0.4 * b)


def as_levels(x) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * 255).astype(int)


# --------------------------------------------------------------------------------------------
# Literal implementations, written from the references' definitions, pixel by pixel
# --------------------------------------------------------------------------------------------

def literal_gaussian(n: int, sigma: float) -> np.ndarray:
    """Matlab fspecial('gaussian', n, sigma), in 2-D directly."""
    r = (n - 1) / 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def literal_filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    n = w.shape[0]
    out = np.zeros((max(img.shape[0] - n + 1, 0), max(img.shape[1] - n + 1, 0)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(w * img[i:i + n, j:j + n])
    return out


def literal_vif_maps(ref, dist, sigma_nsq):
    """Per scale, the (VID, VIND, g) maps of Sheikh's vifp_mscale, one pixel at a time."""
    scales = []
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        w = literal_gaussian(n, n / 5)
        if scale > 1:
            ref = literal_filter_valid(ref, w)[::2, ::2]
            dist = literal_filter_valid(dist, w)[::2, ::2]
        mu1, mu2 = literal_filter_valid(ref, w), literal_filter_valid(dist, w)
        s1_map = literal_filter_valid(ref * ref, w) - mu1 * mu1
        s2_map = literal_filter_valid(dist * dist, w) - mu2 * mu2
        s12_map = literal_filter_valid(ref * dist, w) - mu1 * mu2
        vid, vind, gain = (np.zeros(mu1.shape) for _ in range(3))
        for i in range(mu1.shape[0]):
            for j in range(mu1.shape[1]):
                s1, s2, s12 = max(s1_map[i, j], 0.0), max(s2_map[i, j], 0.0), s12_map[i, j]
                g = s12 / (s1 + 1e-10)
                sv = s2 - g * s12
                if s1 < 1e-10:
                    g, sv, s1 = 0.0, s2, 0.0
                if s2 < 1e-10:
                    g, sv = 0.0, 0.0
                if g < 0:
                    sv, g = s2, 0.0
                if sv <= 1e-10:
                    sv = 1e-10
                vid[i, j] = math.log10(1 + g * g * s1 / (sv + sigma_nsq))
                vind[i, j] = math.log10(1 + s1 / sigma_nsq)
                gain[i, j] = g
        scales.append((vid, vind, gain))
    return scales


def literal_vif_sheikh(ref, dist) -> float:
    maps = literal_vif_maps(ref, dist, 2.0)
    return sum(m[0].sum() for m in maps) / sum(m[1].sum() for m in maps)


def literal_viff_han(a, b, f) -> float:
    maps_a, maps_b = literal_vif_maps(a, f, 0.005 * 255 * 255), literal_vif_maps(b, f, 0.005 * 255 * 255)
    weights = [1 / 2.15, 0.0, 0.15 / 2.15, 1 / 2.15]
    total = 0.0
    for (vid_a, vind_a, g_a), (vid_b, vind_b, g_b), p in zip(maps_a, maps_b, weights):
        vid_sum, vind_sum = 0.0, 0.0
        for i in range(g_a.shape[0]):
            for j in range(g_a.shape[1]):
                use_a = g_a[i, j] < g_b[i, j]
                vid_sum += (vid_a if use_a else vid_b)[i, j] + 1e-7
                vind_sum += (vind_a if use_a else vind_b)[i, j] + 1e-7
        total += p * vid_sum / vind_sum
    return total


def literal_conv2_same(x, h):
    """Matlab conv2(x, h, 'same') for a 3 x 3 h, zero outside the image."""
    out = np.zeros(x.shape)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            for u in (-1, 0, 1):
                for v in (-1, 0, 1):
                    if 0 <= i - u < x.shape[0] and 0 <= j - v < x.shape[1]:
                        out[i, j] += x[i - u, j - v] * h[u + 1][v + 1]
    return out


def literal_qabf(a, b, f) -> float:
    h_y = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    h_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]

    def strength_angle(x):
        sx, sy = literal_conv2_same(x, h_x), literal_conv2_same(x, h_y)
        g = np.sqrt(sx ** 2 + sy ** 2)
        alpha = np.zeros(x.shape)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                alpha[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, alpha

    (ga, aa), (gb, ab), (gf, af) = strength_angle(a), strength_angle(b), strength_angle(f)

    def q(gx, ax, i, j):
        if gx[i, j] > gf[i, j]:
            G = gf[i, j] / gx[i, j]
        elif gx[i, j] == gf[i, j]:
            G = gf[i, j]
        else:
            G = gx[i, j] / gf[i, j]
        A = 1 - abs(ax[i, j] - af[i, j]) / (math.pi / 2)
        return 0.9994 / (1 + math.exp(-15 * (G - 0.5))) * 0.9879 / (1 + math.exp(-22 * (A - 0.8)))

    num = den = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            num += q(ga, aa, i, j) * ga[i, j] + q(gb, ab, i, j) * gb[i, j]
            den += ga[i, j] + gb[i, j]
    return num / den


def literal_ssim_matlab(x, y, L) -> float:
    """Matlab ssim(x, y): Gaussian 11 x 11 sigma 1.5 weights, replicate padding, mean of the map."""
    w = literal_gaussian(11, 1.5)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    H, W = x.shape
    total = 0.0
    for i in range(H):
        for j in range(W):
            rows = np.clip(np.arange(i - 5, i + 6), 0, H - 1)
            cols = np.clip(np.arange(j - 5, j + 6), 0, W - 1)
            px, py = x[np.ix_(rows, cols)], y[np.ix_(rows, cols)]
            mx, my = np.sum(w * px), np.sum(w * py)
            vx, vy = np.sum(w * px * px) - mx * mx, np.sum(w * py * py) - my * my
            cxy = np.sum(w * px * py) - mx * my
            total += (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return total / (H * W)


def literal_ssim_wang(x, y) -> float:
    """Wang's ssim_index: the same window, only where it fits ('valid'), L = 255."""
    w = literal_gaussian(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = np.sum(w * px), np.sum(w * py)
            vx, vy = np.sum(w * px * px) - mx * mx, np.sum(w * py * py) - my * my
            cxy = np.sum(w * px * py) - mx * my
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def literal_entropy(counts, log) -> float:
    n = sum(counts.values())
    return -sum(c / n * log(c / n) for c in counts.values())


def literal_mi_tang(x, f) -> float:
    """Tang's MI_evaluation: exact marginals, and Hab.m's joint histogram of uint8 + 1 indices,
    which saturate at 255."""
    hx, hf, joint = {}, {}, {}
    for vx, vf in zip(x.ravel().tolist(), f.ravel().tolist()):
        hx[vx] = hx.get(vx, 0) + 1
        hf[vf] = hf.get(vf, 0) + 1
        key = (min(vx + 1, 255), min(vf + 1, 255))
        joint[key] = joint.get(key, 0) + 1
    return literal_entropy(hx, math.log2) + literal_entropy(hf, math.log2) - literal_entropy(joint, math.log2)


def literal_mi_vifb(x, f) -> float:
    """VIFB's mutinf on 0..255 doubles: min-max normalise, int16(x * 255) + 1, natural log."""
    def levels(v):
        v = v.astype(float)
        if v.max() == v.min():
            return [1] * v.size
        v = (v - v.min()) / (v.max() - v.min())
        return [int(math.floor(t * 255 + 0.5)) + 1 for t in v.ravel().tolist()]  # half away from 0

    hx, hf, joint = {}, {}, {}
    for vx, vf in zip(levels(x), levels(f)):
        hx[vx] = hx.get(vx, 0) + 1
        hf[vf] = hf.get(vf, 0) + 1
        joint[(vx, vf)] = joint.get((vx, vf), 0) + 1
    return literal_entropy(hx, math.log) + literal_entropy(hf, math.log) - literal_entropy(joint, math.log)


# --------------------------------------------------------------------------------------------
# Identical inputs
# --------------------------------------------------------------------------------------------

def test_identical_inputs_mi_is_twice_the_entropy(triplet):
    a = triplet[0]
    assert not np.any(as_levels(a) == 254)  # no saturation merge: tang agrees too
    assert mi(a, a, a) == pytest.approx(2 * en(a), rel=1e-12)
    assert mi(a, a, a, convention="tang") == pytest.approx(2 * en(a), rel=1e-12)
    assert mi(a, a, a, convention="vifb") == pytest.approx(2 * LN2 * en(a), rel=1e-12)


def test_identical_inputs_ssim_is_one_per_source(triplet):
    a = triplet[0]
    assert ssim(a, a, a) == pytest.approx(2.0, abs=1e-12)  # paper = cddfuse: a sum
    assert ssim(a, a, a, convention="tang") == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, a, a, convention="vifb") == pytest.approx(2.0, abs=1e-12)  # a sum
    assert ssim(a, a, a, convention="cddfuse") == pytest.approx(2.0, abs=1e-12)


def test_identical_inputs_vif_is_one_per_source(triplet):
    a = triplet[0]
    assert vif(a, a, a) == pytest.approx(2.0, rel=1e-6)
    assert vif(a, a, a, convention="mefb") == pytest.approx(1.0, rel=1e-6)


def test_vif_of_a_blurred_image_is_below_one_per_source(triplet):
    a, b, _ = triplet
    blurred = eight_bit(ndi.gaussian_filter(a.astype(float), 1.5))
    assert 0 < vif(a, a, blurred) < 2.0
    assert vif(a, a, blurred) < vif(a, a, a)


# --------------------------------------------------------------------------------------------
# MI
# --------------------------------------------------------------------------------------------

def test_mi_on_a_4x4_image_by_hand():
    # f: top half 0, bottom half 255 (H = 1 bit). a: four quadrant levels, which determine f:
    # H(a) = 2, H(a, f) = 2, MI(a; f) = 1. b: left/right halves, independent of f: MI = 0.
    rows, cols = np.mgrid[0:4, 0:4]
    f = (rows >= 2).astype(np.uint8) * 255
    a = (np.array([0, 85, 170, 255], dtype=np.uint8))[2 * (rows >= 2) + (cols >= 2)]
    b = (cols >= 2).astype(np.uint8) * 255
    assert mi(a, b, f) == pytest.approx(1.0, abs=1e-12)
    assert mi(a, b, f, convention="tang") == pytest.approx(1.0, abs=1e-12)
    assert mi(a, b, f, convention="vifb") == pytest.approx(LN2, abs=1e-12)
    assert mi(a, b, f, convention="cddfuse") == pytest.approx(LN2, abs=1e-12)


def test_tang_mi_merges_grey_levels_254_and_255_in_the_joint_histogram():
    # Half the pixels 254, half 255. Clean: MI(x; x) = H = 1 bit. Tang's joint histogram puts
    # both levels in one bin (H_joint = 0) while its marginals stay exact: MI = 1 + 1 - 0 = 2.
    x = np.array([[254, 255] * 2] * 4, dtype=np.uint8)
    assert mi(x, x, x) == pytest.approx(2.0, abs=1e-12)
    assert mi(x, x, x, convention="tang") == pytest.approx(4.0, abs=1e-12)
    # VIFB stretches 254..255 to 0..255 first: a clean 1 bit = ln 2 nats per source.
    assert mi(x, x, x, convention="vifb") == pytest.approx(2 * LN2, abs=1e-12)


def test_mi_bits_and_nats_on_uint8_data(triplet):
    a, b, f = triplet
    assert not any(np.any(as_levels(x) == 254) for x in triplet)
    bits = mi(a, b, f, convention="tang")
    assert mi(a, b, f, convention="vifb") == pytest.approx(LN2 * bits, rel=1e-12)
    assert mi(a, b, f, convention="cddfuse") == pytest.approx(LN2 * bits, rel=1e-12)
    assert mi(a, b, f) == pytest.approx(bits, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_mi_matches_literal_tang_and_vifb(seed):
    rng = np.random.default_rng(seed)
    # Few levels, including both 254 and 255, so the joint histograms are dense and the quirk bites.
    palette = np.array([0, 3, 100, 101, 200, 254, 255])
    a, b = palette[rng.integers(0, 7, (2, 9, 11))].astype(np.uint8)
    f = np.clip(a.astype(int) + rng.integers(-1, 2, a.shape), 0, 255).astype(np.uint8)
    expected_tang = literal_mi_tang(a.astype(int), f.astype(int)) + literal_mi_tang(b.astype(int), f.astype(int))
    assert mi(a, b, f, convention="tang") == pytest.approx(expected_tang, rel=1e-12)
    expected_vifb = literal_mi_vifb(a, f) + literal_mi_vifb(b, f)
    assert mi(a, b, f, convention="vifb") == pytest.approx(expected_vifb, rel=1e-12)
    assert mi(a, b, f, convention="tang") > mi(a, b, f)  # the merge only ever lowers H_joint


def test_vifb_mi_normalises_each_image_to_its_own_range():
    # A low-contrast copy holds the same information: VIFB stretches it back, bits stay equal.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 50, (12, 12)).astype(np.uint8)
    stretched = (x.astype(int) * 5).astype(np.uint8)
    assert mi(x, x, stretched, convention="vifb") == pytest.approx(mi(x, x, x, convention="vifb"), rel=1e-12)


# --------------------------------------------------------------------------------------------
# VIF
# --------------------------------------------------------------------------------------------

def test_vif_matches_literal_sheikh_and_han():
    a, b = smooth_image(4, (44, 42), 1.5), smooth_image(5, (44, 42), 1.5)
    f = eight_bit(0.5 * a + 0.5 * (1 - b))  # anti-correlated with b: negative gains get clipped
    a255, b255, f255 = (as_levels(x).astype(float) for x in (a, b, f))
    expected = literal_vif_sheikh(a255, f255) + literal_vif_sheikh(b255, f255)
    assert vif(a, b, f) == pytest.approx(expected, rel=1e-9)
    assert vif(a, b, f, convention="tang") == vif(a, b, f)
    assert vif(a, b, f, convention="cddfuse") == vif(a, b, f)
    assert vif(a, b, f, convention="mefb") == pytest.approx(literal_viff_han(a255, b255, f255), rel=1e-9)


def test_vif_of_a_constant_source_counts_as_one_with_a_warning(triplet):
    a, _, f = triplet
    flat = np.full(a.shape, 0.4, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="vif"):
        value = vif(a, flat, f)
    assert value == pytest.approx(vif(a, a, f) / 2 + 1.0, rel=1e-12)


def test_vif_of_an_image_smaller_than_the_window_warns():
    x = smooth_image(6, (12, 12), 1.0)
    with pytest.warns(RuntimeWarning, match="vif"):
        assert vif(x, x, x) == 2.0
    with pytest.warns(RuntimeWarning, match="VIFF"):
        assert np.isfinite(vif(x, x, x, convention="mefb"))


# --------------------------------------------------------------------------------------------
# Qabf
# --------------------------------------------------------------------------------------------

def test_qabf_of_a_half_contrast_step_edge_by_hand():
    # F = A / 2 everywhere: every edge of A (the step and the zero-padded border) keeps its
    # orientation (A = 1 -> Qa(1)) at half the strength (G = 0.5 -> Qg = 0.9994 / 2). B = 0 has
    # no edges and no weight. So Qabf = Qg(0.5) Qa(1) exactly.
    a = np.zeros((16, 16), dtype=np.float32)
    a[:, 8:] = 1.0
    b = np.zeros_like(a)
    assert qabf(a, b, 0.5 * a) == pytest.approx(QG_HALF * QA_ONE, rel=1e-12)
    # The same edge rotated by 90 degrees in F: at the step, orientations differ by pi/2
    # (A = 0, Qa ~ 0), so the score drops far below.
    assert qabf(a, b, 0.5 * a.T) < 0.5 * QG_HALF * QA_ONE


def test_qabf_matches_literal_reference_including_ties():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 4, (10, 9)).astype(np.uint8) * 60
    b = rng.integers(0, 4, (10, 9)).astype(np.uint8) * 60
    f = a.copy()
    f[5:, :] = b[5:, :]  # exact ties g_A == g_F over the top half, g_B == g_F below
    a255, b255, f255 = (x.astype(float) for x in (a, b, f))
    assert qabf(a, b, f) == pytest.approx(literal_qabf(a255, b255, f255), rel=1e-12)
    # VIFB/MEFB work on 255 x the 0-255 values; only the tie pixels change.
    vifb_value = literal_qabf(255 * a255, 255 * b255, 255 * f255)
    assert qabf(a, b, f, convention="vifb") == pytest.approx(vifb_value, rel=1e-12)
    assert qabf(a, b, f, convention="vifb") != qabf(a, b, f)


def test_qabf_is_invariant_to_scaling_all_images():
    rng = np.random.default_rng(8)
    a, b, f = (ndi.gaussian_filter(rng.random((24, 20)), 1.0) for _ in range(3))
    assert qabf(0.5 * a, 0.5 * b, 0.5 * f) == pytest.approx(qabf(a, b, f), rel=1e-12)
    assert qabf(0.5 * a, 0.5 * b, 0.5 * f, convention="vifb") == pytest.approx(qabf(a, b, f), rel=1e-12)


def test_qabf_of_edgeless_sources_is_zero_with_a_warning(triplet):
    zero = np.zeros_like(triplet[0])
    with pytest.warns(RuntimeWarning, match="qabf"):
        assert qabf(zero, zero, triplet[2]) == 0.0


# --------------------------------------------------------------------------------------------
# SF
# --------------------------------------------------------------------------------------------

def test_sf_by_hand():
    # [[0, 1], [1, 1]]: one vertical and one horizontal unit step, each over 2 differences.
    f = np.array([[0, 1], [1, 1]], dtype=np.float32)
    assert sf(f) == pytest.approx(math.sqrt(0.5 + 0.5), abs=1e-12)  # Tang's means, on [0, 1]
    assert sf(f, convention="tang") == pytest.approx(255.0, abs=1e-9)
    assert sf(f, convention="cddfuse") == pytest.approx(255.0, abs=1e-9)
    # VIFB/MEFB divide both sums by m n = 4: sqrt((1 + 1) / 4) on 0-255.
    assert sf(f, convention="vifb") == pytest.approx(255.0 * math.sqrt(0.5), abs=1e-9)
    assert sf(f, convention="mefb") == sf(f, convention="vifb")


def test_sf_of_a_rectangle_uses_each_direction_count():
    # 3 x 4 with a vertical unit step between columns 1 and 2: 3 horizontal differences of 1 out
    # of m (n - 1) = 9; no vertical differences.
    f = np.zeros((3, 4))
    f[:, 2:] = 1.0
    assert sf(f) == pytest.approx(math.sqrt(3 / 9), abs=1e-12)
    assert sf(f, convention="vifb") == pytest.approx(255 * math.sqrt(3 / 12), abs=1e-9)
    assert sf(np.full((5, 5), 0.3)) == 0.0


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

def test_ssim_tang_matches_literal_matlab():
    a, b = smooth_image(9, (13, 12), 1.0), smooth_image(10, (13, 12), 1.0)
    f = eight_bit(0.5 * a + 0.5 * b)
    unit = [x.astype(float) for x in (a, b, f)]
    scaled = [255 * x for x in unit]
    expected = 0.5 * (literal_ssim_matlab(scaled[2], scaled[0], 1.0) + literal_ssim_matlab(scaled[2], scaled[1], 1.0))
    assert ssim(a, b, f, convention="tang") == pytest.approx(expected, rel=1e-9)


def test_ssim_vifb_matches_literal_wang():
    a, b = smooth_image(11, (16, 15), 1.0), smooth_image(12, (16, 15), 1.0)
    f = eight_bit(0.5 * a + 0.5 * b)
    a255, b255, f255 = (as_levels(x).astype(float) for x in (a, b, f))
    expected = literal_ssim_wang(a255, f255) + literal_ssim_wang(b255, f255)
    assert ssim(a, b, f, convention="vifb") == pytest.approx(expected, rel=1e-9)


def test_ssim_cddfuse_matches_skimage_with_the_old_defaults(triplet):
    a, b, f = (as_levels(x).astype(np.float64) for x in triplet)
    expected = sum(structural_similarity(f, x, win_size=7, gaussian_weights=False, use_sample_covariance=True,
                                         data_range=2) for x in (a, b))
    assert ssim(*triplet, convention="cddfuse") == pytest.approx(expected, rel=1e-10)
    assert ssim(*triplet) == ssim(*triplet, convention="cddfuse")  # the paper default


def test_ssim_map_matches_skimage_gaussian_inside_the_border(triplet):
    a, _, f = (x.astype(np.float64) for x in triplet)
    _, expected = structural_similarity(f, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, full=True)
    ours = fusion._ssim_map_matlab(f, a, 1.0)
    np.testing.assert_allclose(ours[5:-5, 5:-5], expected[5:-5, 5:-5], rtol=1e-9, atol=1e-12)
    assert not np.allclose(ours[:5], expected[:5])  # replicate vs reflect padding at the border


def test_ssim_is_well_defined_on_constant_images():
    flat = np.full((12, 12), 0.5)
    assert ssim(flat, flat, flat) == pytest.approx(2.0)  # a sum over the two sources
    assert -2 <= ssim(flat, flat, np.zeros((12, 12))) < 2


# --------------------------------------------------------------------------------------------
# EN, SD, AG, PSNR
# --------------------------------------------------------------------------------------------

def test_en_matches_skimage_shannon_entropy(triplet):
    for x in triplet:
        assert en(x) == pytest.approx(shannon_entropy(as_levels(x).astype(np.uint8)), rel=1e-12)
    assert en(np.array([[0, 255], [255, 0]], dtype=np.uint8)) == pytest.approx(1.0)
    assert en(np.full((4, 4), 0.7)) == 0.0


def test_sd_and_ag_by_hand():
    half = np.zeros((4, 6), dtype=np.uint8)
    half[:, 3:] = 255
    assert sd(half) == pytest.approx(127.5)
    # A ramp of one grey level per column: every gradient is (1, 0), s = sqrt(1/2) everywhere.
    ramp = np.tile(np.arange(6, dtype=np.uint8), (5, 1))
    assert ag(ramp) == pytest.approx(5 * 6 * math.sqrt(0.5) / (4 * 5), rel=1e-12)
    assert ag(ramp, convention="cddfuse") == pytest.approx(math.sqrt(0.5), rel=1e-12)


def test_psnr_matches_skimage(triplet):
    a, b, f = triplet
    assert psnr(a, a, f) == pytest.approx(peak_signal_noise_ratio(a, f, data_range=1.0), rel=1e-6)
    mse = [10 ** (-peak_signal_noise_ratio(x, f, data_range=1.0) / 10) for x in (a, b)]
    assert psnr(a, b, f) == pytest.approx(10 * math.log10(1 / np.mean(mse)), rel=1e-6)


def test_psnr_conventions_by_hand():
    zero = np.zeros((4, 4), dtype=np.uint8)
    f = np.full((4, 4), 51, dtype=np.uint8)  # error 51 grey levels everywhere, 16 pixels
    assert psnr(zero, zero, f) == pytest.approx(20 * math.log10(5), abs=1e-9)
    assert psnr(zero, zero, f, convention="tang") == pytest.approx(20 * math.log10(5) + 20 * math.log10(255))
    assert psnr(zero, zero, f, convention="cddfuse") == pytest.approx(0.0, abs=1e-12)  # peak max(F) = 51
    # VIFB/MEFB "mse": sqrt(16 * 51^2) / 16 = 12.75.
    assert psnr(zero, zero, f, convention="vifb") == pytest.approx(20 * math.log10(255 / math.sqrt(12.75)))
    assert psnr(zero, zero, f, convention="mefb") == psnr(zero, zero, f, convention="vifb")


def test_psnr_of_a_perfect_fusion_is_infinite_with_a_warning(triplet):
    a = triplet[0]
    with pytest.warns(RuntimeWarning, match="psnr"):
        assert psnr(a, a, a) == math.inf


# --------------------------------------------------------------------------------------------
# Symmetry, conventions, errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", [mi, vif, qabf, ssim, psnr])
@pytest.mark.parametrize("convention", ["paper", "tang", "cddfuse"])
def test_swapping_the_sources_changes_nothing(triplet, metric, convention):
    a, b, f = triplet
    assert metric(b, a, f, convention=convention) == pytest.approx(metric(a, b, f, convention=convention),
                                                                     rel=1e-12)


@pytest.mark.parametrize("metric, convention", [(vif, "vifb"), (mi, "mefb"), (ssim, "mefb")])
def test_a_metric_missing_from_a_toolbox_raises(triplet, metric, convention):
    with pytest.raises(ValueError, match=convention):
        metric(*triplet, convention=convention)


@pytest.mark.parametrize("metric", [mi, vif, qabf, ssim, psnr])
def test_unknown_convention_and_bad_shapes_raise(triplet, metric):
    a, b, f = triplet
    with pytest.raises(ValueError, match="convention"):
        metric(a, b, f, convention="matlab")
    with pytest.raises(ImageError, match="shape mismatch"):
        metric(a, b[:-1], f)
    with pytest.raises(ImageError, match="NaN"):
        metric(a, b, np.full(a.shape, np.nan))


def test_too_small_images_raise_where_a_window_cannot_fit():
    x = np.random.default_rng(0).random((9, 9))
    with pytest.raises(ValueError, match="too small"):
        ssim(x, x, x, convention="vifb")
    with pytest.raises(ValueError, match="too small"):
        sf(np.zeros((1, 5)))


def test_to_255_recovers_8_bit_levels_exactly():
    levels = np.arange(256)
    assert np.array_equal(to_255((levels / 255).astype(np.float32)), levels.astype(float))
    assert to_255(np.array([0.5], dtype=np.float32))[0] == 127.5


# --------------------------------------------------------------------------------------------
# fusion_suite
# --------------------------------------------------------------------------------------------

def test_fusion_suite_columns_and_values(triplet):
    a, b, f = triplet
    result = fusion_suite(a, b, f)
    assert tuple(result) == SUITE_COLUMNS
    assert result["MI"] == mi(a, b, f) and result["SSIM"] == ssim(a, b, f) and result["PSNR"] == psnr(a, b, f)
    assert result["SF"] == sf(f) and result["AG"] == ag(f) and result["Qabf"] == qabf(a, b, f)
    from fusionbench.metrics.feature_mi import fmi

    assert result["FMI_pixel"] == fmi(a, b, f, feature="edge")
    assert result["FMI_w"] == fmi(a, b, f, feature="wavelet")


def test_fusion_suite_subsets_and_conventions(triplet):
    result = fusion_suite(*triplet, metrics=["psnr", "MI", "SF"])
    assert list(result) == ["MI", "SF", "PSNR"]  # table order, case-insensitive names
    vifb = fusion_suite(*triplet, convention="vifb")
    assert list(vifb) == ["MI", "Qabf", "SF", "SSIM", "EN", "SD", "AG", "PSNR"]
    assert vifb["MI"] == mi(*triplet, convention="vifb")
    assert "FMI_pixel" not in fusion_suite(*triplet, convention="cddfuse", metrics=["MI", "SF"])
    with pytest.raises(ValueError, match="vifb"):
        fusion_suite(*triplet, convention="vifb", metrics=["VIF"])
    with pytest.raises(ValueError, match="unknown metric"):
        fusion_suite(*triplet, metrics=["NCIE"])
    assert fusion.suite_columns("mefb") == ("VIF", "Qabf", "SF", "FMI_pixel", "FMI_dct", "FMI_w", "EN", "SD",
                                            "AG", "PSNR")


# --------------------------------------------------------------------------------------------
# Properties on random images
# --------------------------------------------------------------------------------------------

@st.composite
def random_triplets(draw):
    h, w = draw(st.integers(8, 48)), draw(st.integers(8, 48))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    kinds = draw(st.lists(st.sampled_from(["noise", "smooth", "constant", "8bit", "binary"]), min_size=3,
                          max_size=3))
    rng = np.random.default_rng(seed)
    images = []
    for kind in kinds:
        if kind == "noise":
            img = rng.random((h, w))
        elif kind == "smooth":
            img = ndi.gaussian_filter(rng.random((h, w)), 2.0)
        elif kind == "constant":
            img = np.full((h, w), rng.choice([0.0, rng.random(), 1.0]))
        elif kind == "8bit":
            img = rng.integers(0, 256, (h, w)) / 255
        else:
            img = (rng.random((h, w)) > 0.5).astype(float)
        images.append(img.astype(np.float32))
    return images


RANGES = {  # documented ranges under the default convention
    "MI": (0.0, 16.0), "VIF": (0.0, math.inf), "Qabf": (0.0, 0.9754), "SF": (0.0, math.sqrt(2)),
    "SSIM": (-2.0, 2.0), "EN": (0.0, 8.0), "SD": (0.0, 127.5), "AG": (0.0, 255.0 * 2), "PSNR": (0.0, math.inf),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_triplets())
def test_random_images_give_finite_values_in_the_documented_ranges(images):
    a, b, f = images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate draws warn by design
        result = fusion_suite(a, b, f, metrics=list(RANGES))
        for convention in ("tang", "cddfuse"):
            for value in fusion_suite(a, b, f, convention=convention, metrics=["MI", "VIF", "Qabf", "SSIM"]).values():
                assert not math.isnan(value)
    for name, (lo, hi) in RANGES.items():
        assert not math.isnan(result[name]), name
        assert lo - 1e-9 <= result[name] <= hi + 1e-9, (name, result[name])


def test_conventions_are_the_documented_ones():
    assert CONVENTIONS == ("paper", "tang", "vifb", "mefb", "cddfuse")
