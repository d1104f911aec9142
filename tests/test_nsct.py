"""Nonsubsampled contourlet transform: filters, perfect reconstruction, layout, invariants."""
import numpy as np
import pytest
from skimage import data

from baselines.transforms import nsct as N

RNG = np.random.default_rng(20240605)
CAMERA = data.camera()[::2, ::2].astype(np.float64)  # 256 x 256, 0..255


def _dtft(h, w1, w2):
    """Frequency response of a centred odd-sized filter at (w1, w2) (rows, cols)."""
    r = np.arange(h.shape[0]) - (h.shape[0] - 1) // 2
    c = np.arange(h.shape[1]) - (h.shape[1] - 1) // 2
    phase = np.exp(-1j * (w1[..., None, None] * r[:, None] + w2[..., None, None] * c[None, :]))
    return np.sum(h * phase, axis=(-2, -1))


W1, W2 = np.meshgrid(np.linspace(-np.pi, np.pi, 41), np.linspace(-np.pi, np.pi, 37), indexing="ij")


@pytest.mark.parametrize("name", ["pyrexc", "pyr"])
def test_pyramid_filters_perfect_reconstruction_identity(name):
    h0, h1, g0, g1 = N.atrous_filters(name)
    total = _dtft(h0, W1, W2) * _dtft(g0, W1, W2) + _dtft(h1, W1, W2) * _dtft(g1, W1, W2)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    # lowpass analysis has unit DC gain, highpass none; all filters zero-phase (symmetric)
    assert h0.sum() == pytest.approx(1.0, abs=1e-12) and h1.sum() == pytest.approx(0.0, abs=1e-12)
    for f in (h0, h1, g0, g1):
        np.testing.assert_array_equal(f, f[::-1, ::-1])
        np.testing.assert_array_equal(f, f.T)


def test_pyrexc_exchanges_the_highpass_filters_of_pyr():
    p, e = N.atrous_filters("pyr"), N.atrous_filters("pyrexc")
    assert [f.shape for f in e] == [(5, 5), (5, 5), (7, 7), (7, 7)]
    np.testing.assert_array_equal(e[1], p[3])
    np.testing.assert_array_equal(e[3], p[1])
    assert e[0][2, 2] == 0.3406092167691145  # toolbox quarter-matrix centre


def test_vk_diamond_filters_hand_values():
    h0, h1 = N.directional_filters("vk", "d")
    # [1,2,1]/4 -> (1 + T)/2 with T = (cos w1 + cos w2)/2
    np.testing.assert_allclose(h0, np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 8.0, atol=1e-15)
    # [-1,-2,6,-2,-1]/4 -> 2 - T - T^2: centre 2 - 1/4, axis neighbours -1/8 - 1/8, ...
    assert h1.shape == (5, 5) and h1[2, 2] == pytest.approx(1.75)
    assert h1[2, 1] == pytest.approx(-0.25) and h1[1, 1] == pytest.approx(-0.125)
    assert h1[0, 2] == pytest.approx(-1.0 / 16)
    g0, g1 = N.directional_filters("vk", "r")
    total = _dtft(h0, W1, W2) * _dtft(g0, W1, W2) + _dtft(h1, W1, W2) * _dtft(g1, W1, W2)
    np.testing.assert_allclose(total, 2.0, atol=1e-12)


def test_mcclellan_matches_one_dimensional_prototype_on_the_axis():
    b = np.array([-1.0, 2.0, 6.0, 2.0, -1.0]) / 4.0
    h = N.mcclellan_transform(b, np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]) / 4.0)
    w = np.linspace(0, np.pi, 9)
    # on w1 = w2 = w the diamond kernel is cos(w), so H equals the 1-D response there
    expected = b[2] + 2 * b[3] * np.cos(w) + 2 * b[4] * np.cos(2 * w)
    np.testing.assert_allclose(_dtft(h, w, w).real, expected, atol=1e-12)


@pytest.mark.parametrize("shape", [(32, 32), (27, 40)])
def test_every_dfb_two_channel_stage_is_perfect_reconstruction(shape):
    """For each stage (fan, quincunx, every parallelogram matrix of a 4-level tree), in the toolbox's
    tap placement on a periodic grid: Ra0 * Rs0 + Ra1 * Rs1 = 1 at every DFT frequency."""
    ana = N._dfb_filter_set("vk", "d")
    syn = N._dfb_filter_set("vk", "r")
    checked = 0
    for stage in N._dfb_tree(4):
        for _, (kind, i), mup in stage:
            pa = ana[0] if kind == "fan" else (ana[1][i], ana[2][i])
            ps = syn[0] if kind == "fan" else (syn[1][i], syn[2][i])
            total = sum(N._periodic_response(a, shape, mup) * N._periodic_response(s, shape, mup)
                        for a, s in zip(pa, ps))
            np.testing.assert_allclose(total, 1.0, atol=1e-12)
            checked += 1
    assert checked == 1 + 2 + 4 + 8


@pytest.mark.parametrize("kind", ["random", "camera", "odd"])
def test_perfect_reconstruction(kind):
    x = {"random": RNG.random((256, 256)) * 255, "camera": CAMERA,
         "odd": RNG.random((77, 101)) * 255}[kind]
    coeffs = N.nsct_dec(x)
    np.testing.assert_allclose(N.nsct_rec(coeffs), x, rtol=0, atol=1e-6)
    assert np.abs(N.nsct_rec(coeffs) - x).max() < 1e-9


def test_subband_layout_for_levels_2_3_3_4():
    coeffs = N.nsct_dec(CAMERA[:64, :96], (2, 3, 3, 4))
    assert len(coeffs) == 5
    assert [len(b) for b in coeffs[1:]] == [4, 8, 8, 16]
    assert sum(len(b) for b in coeffs[1:]) + 1 == 37
    assert all(s.shape == (64, 96) and s.dtype == np.float64 for b in coeffs[1:] for s in b)
    assert coeffs[0].shape == (64, 96)


def test_zero_directional_levels_keep_the_bandpass_image_and_reconstruct():
    x = RNG.random((40, 40))
    coeffs = N.nsct_dec(x, (0, 2))
    assert isinstance(coeffs[1], np.ndarray) and len(coeffs[2]) == 4
    np.testing.assert_allclose(N.nsct_rec(coeffs), x, atol=1e-12)


def test_constant_image_has_only_a_lowpass():
    coeffs = N.nsct_dec(np.full((48, 40), 7.5))
    np.testing.assert_allclose(coeffs[0], 7.5, atol=1e-12)
    assert max(np.abs(s).max() for b in coeffs[1:] for s in b) < 1e-12


def test_linearity():
    x, y = RNG.random((32, 32)), RNG.random((32, 32))
    cx, cy, cz = N.nsct_dec(x), N.nsct_dec(y), N.nsct_dec(2 * x - 3 * y)
    np.testing.assert_allclose(cz[0], 2 * cx[0] - 3 * cy[0], atol=1e-12)
    for bx, by, bz in zip(cx[1:], cy[1:], cz[1:]):
        np.testing.assert_allclose(np.array(bz), 2 * np.array(bx) - 3 * np.array(by), atol=1e-12)


def test_directional_bank_is_circularly_shift_invariant():
    x = RNG.random((32, 48))
    a = N.nsdfb_dec(np.roll(x, (5, -7), axis=(0, 1)), 3)
    b = [np.roll(s, (5, -7), axis=(0, 1)) for s in N.nsdfb_dec(x, 3)]
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-12)


def test_fan_filters_known_frequency_response():
    """A cosine on a DFT frequency passes a zero-phase filter scaled by its real response:
    the 'vk' fan pair is ((1 + T)/2, 2 - T - T^2) / sqrt(2) with T = (cos w1 - cos w2)/2."""
    n = 64
    r, c = np.mgrid[0:n, 0:n]
    for w1, w2 in [(0.0, 2 * np.pi * 27 / n), (2 * np.pi * 27 / n, 0.0), (2 * np.pi * 5 / n, 2 * np.pi * 9 / n)]:
        img = np.cos(w1 * r + w2 * c)
        t = (np.cos(w1) - np.cos(w2)) / 2
        k0, k1 = N.nsdfb_dec(img, 1)
        np.testing.assert_allclose(k0, (1 + t) / 2 / np.sqrt(2) * img, atol=1e-12)
        np.testing.assert_allclose(k1, (2 - t - t * t) / np.sqrt(2) * img, atol=1e-12)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        N.nsct_dec(np.full((16, 16), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        N.nsct_dec(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="non-negative integers"):
        N.nsct_dec(np.zeros((16, 16)), (2, -1))
    with pytest.raises(ValueError, match="unknown pyramid filter"):
        N.nsct_dec(np.zeros((16, 16)), pfilt="maxflat")
    with pytest.raises(ValueError, match="unknown directional filter"):
        N.nsct_dec(np.zeros((16, 16)), dfilt="pkva")
    with pytest.raises(ValueError, match="2\\*\\*l subbands"):
        N.nsdfb_rec([np.zeros((8, 8))] * 3)
