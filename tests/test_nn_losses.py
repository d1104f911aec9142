"""fusionbench.nn.losses: hand values, the previous implementations' numbers, and MONAI's losses.

The ``PINNED`` numbers were computed in float64 with the implementations these functions replace
(``baselines.fusion._deep.ssim_torch``, ``pamrfuse.losses.ssim``/``ssim_map``/``smoothness_loss``,
``baselines.registration.voxelmorph.gradient_loss``/``local_ncc_loss``/``parzen_mi_loss``) before
they were merged here (PAMRFuse+'s losses that use them are pinned in ``tests/test_pamrfuse_modules.py``); each new function also matched its predecessor bit for bit in float32 and
float64 on batches of 1 to 8 at 32² to 128². The MONAI tests say, with the measured difference, why
each MONAI loss is not used in place of ours.
"""
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, transform
from skimage.metrics import structural_similarity

from fusionbench.nn.losses import gaussian_window, local_ncc_loss, parzen_mi_loss, smoothness_loss, ssim, ssim_map

monai_losses = pytest.importorskip("monai.losses")

pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")


def _gray(name: str) -> torch.Tensor:
    img = transform.resize(getattr(data, name)().astype(np.float64) / 255, (64, 64), anti_aliasing=True)
    return torch.from_numpy(img)[None, None]


@pytest.fixture(scope="module")
def camera_moon():
    """Two unrelated natural images at 64², float64, (1, 1, 64, 64) each."""
    return _gray("camera"), _gray("moon")


@pytest.fixture(scope="module")
def noise():
    """Two (2, 1, 32, 32) uniform batches and a (2, 2, 24, 20) normal field, float64, seed 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64)
    y = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64)
    flow = torch.randn(2, 2, 24, 20, generator=g, dtype=torch.float64)
    return x, y, flow


# Values of the previous implementations (see the module docstring).
PINNED = {
    "ssim_valid_camera_moon": 0.28637619214659316,
    "ssim_valid_noise_items": (0.01378899093135432, 0.0052901792307455085),
    "ssim_reflect_camera_moon": 0.35606937555552387,
    "ssim_reflect_noise": -0.01102080863529714,
    "smooth_l2_noise": 1.949698057724904,
    "smooth_l1_noise": 1.1088731236610103,
    "ncc_camera_moon": -0.27693617440887797,
    "ncc_noise": -0.10147887893366074,
    "mi_camera_moon": -0.043480330670118424,
    "mi_camera_moon_masked": -0.038004166243401014,
    "mi_noise": -0.03432009791033237,
}


def _approx(value):
    return pytest.approx(value, rel=1e-12, abs=1e-15)


# ------------------------------------------------------------------------------------- SSIM

def test_gaussian_window_is_normalised_and_symmetric():
    w = gaussian_window(11, 1.5, dtype=torch.float64)
    assert w.shape == (1, 1, 11, 11)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(w, w.transpose(-1, -2)) and torch.equal(w, w.flip(-1))


def test_ssim_valid_matches_skimage_gaussian(camera_moon):
    a, b = camera_moon
    want = structural_similarity(a[0, 0].numpy(), b[0, 0].numpy(), data_range=1.0, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)
    # skimage averages the map without its (win - 1) / 2 border, which is what 'valid' keeps
    assert float(ssim(a, b)) == pytest.approx(want, abs=1e-9)
    assert float(ssim(a.float(), a.float())) == pytest.approx(1.0)


def test_ssim_reflect_matches_skimage_away_from_the_border():
    rng = np.random.default_rng(2)
    a = ndimage.gaussian_filter(rng.random((48, 48)), 2)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    _, ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   data_range=1.0, full=True)
    got = ssim_map(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], padding="reflect")
    np.testing.assert_allclose(got[0, 0, 5:-5, 5:-5].numpy(), ref[5:-5, 5:-5], atol=1e-6)
    x = torch.from_numpy(a)[None, None]
    assert float(ssim(x, x, padding="reflect")) == pytest.approx(1.0, abs=1e-9)


def test_ssim_of_constant_images_by_hand():
    # no variance: SSIM = (2 a b + C1) / (a² + b² + C1)
    a = torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)
    b = torch.full((1, 1, 16, 16), 0.6, dtype=torch.float64)
    want = (2 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4)
    assert float(ssim(a, b)) == pytest.approx(want, rel=1e-9)
    assert float(ssim(a, b, padding="reflect")) == pytest.approx(want, rel=1e-9)


def test_ssim_equals_the_previous_implementations(camera_moon, noise):
    a, b = camera_moon
    x, y, _ = noise
    assert float(ssim(a, b)) == _approx(PINNED["ssim_valid_camera_moon"])
    assert ssim(x, y, reduction="none").tolist() == [_approx(v) for v in PINNED["ssim_valid_noise_items"]]
    # PAMRFuse+'s reconstruction loss: the mean of the reflect-padded map over the whole batch
    assert float(ssim_map(a, b, padding="reflect").mean()) == _approx(PINNED["ssim_reflect_camera_moon"])
    assert float(ssim_map(x, y, padding="reflect").mean()) == _approx(PINNED["ssim_reflect_noise"])


def test_ssim_shapes_and_errors(noise):
    x, y, _ = noise
    assert ssim_map(x, y).shape == (2, 1, 22, 22)
    assert ssim_map(x, y, padding="reflect").shape == x.shape
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    three = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    per_channel = ssim_map(three, three.flip(-1), padding="reflect")
    assert torch.equal(per_channel[:, 1:2], ssim_map(three[:, 1:2], three[:, 1:2].flip(-1), padding="reflect"))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 17))
    with pytest.raises(ValueError, match="padding"):
        ssim(x, y, padding="same")
    with pytest.raises(ValueError, match="reduction"):
        ssim(x, y, reduction="sum")


# ------------------------------------------------------------------------------- smoothness

def test_smoothness_of_linear_field_by_hand():
    flow = torch.zeros(1, 2, 4, 5)
    flow[0, 0] = torch.arange(4.0)[:, None] * 2  # row derivative 2 everywhere, column derivative 0
    # l2: 0.5 * (mean(dy^2) + mean(dx^2)); dy over both channels: channel 0 -> 4, channel 1 -> 0
    assert float(smoothness_loss(flow)) == pytest.approx(0.5 * (2.0 + 0.0))
    # l1: 0.5 * (mean|dy| + mean|dx|) = 0.5 * (1 + 0)
    assert float(smoothness_loss(flow, "l1")) == pytest.approx(0.5)


def test_smoothness_penalties_by_hand():
    rows = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 1, 8, 8)
    flow = torch.cat([0.5 * rows, torch.zeros_like(rows)], 1)  # d/drow = 0.5 in channel 0 only
    # mean over both channels: |dy| averages 0.25, |dx| 0 -> 0.5 * 0.25
    assert float(smoothness_loss(flow, "l1")) == pytest.approx(0.125)
    assert float(smoothness_loss(flow, "l2")) == pytest.approx(0.0625)
    with pytest.raises(ValueError, match="l1' or 'l2"):
        smoothness_loss(flow, "l3")


def test_smoothness_equals_the_previous_implementations(noise):
    flow = noise[2]
    assert float(smoothness_loss(flow, "l2")) == _approx(PINNED["smooth_l2_noise"])
    assert float(smoothness_loss(flow, "l1")) == _approx(PINNED["smooth_l1_noise"])


def test_monai_diffusion_and_bending_energy_are_other_regularisers(noise):
    # DiffusionLoss: central differences (x[i+1] - x[i-1]) / 2 on the interior, the directions
    # summed; ours: forward differences, the directions averaged (VoxelMorph's Grad('l2')).
    flow = noise[2]
    diffusion = float(monai_losses.DiffusionLoss()(flow))
    assert diffusion == pytest.approx(0.9448839123729583, rel=1e-9)
    assert abs(diffusion - float(smoothness_loss(flow))) > 1.0  # 0.945 against 1.950
    # Even on a linear field, where both stencils give the exact derivative, they differ by 2×.
    ramp = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    ramp[0, 0] = torch.arange(8.0, dtype=torch.float64)[:, None] * 2
    assert float(monai_losses.DiffusionLoss()(ramp)) == pytest.approx(2 * float(smoothness_loss(ramp)))
    # BendingEnergyLoss penalises second derivatives: zero on that linear field, ours is 1
    assert float(monai_losses.BendingEnergyLoss()(ramp)) == pytest.approx(0.0, abs=1e-12)
    assert float(smoothness_loss(ramp)) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------- NCC

def test_local_ncc_loss_is_minus_one_for_proportional_images():
    # zero padding keeps a and 3a proportional in every window, borders included
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((1, 1, 24, 24)).astype(np.float32))
    assert float(local_ncc_loss(a, 3 * a)) == pytest.approx(-1.0, abs=1e-3)
    assert float(local_ncc_loss(a, torch.from_numpy(rng.random((1, 1, 24, 24)).astype(np.float32)))) > -0.2


def test_local_ncc_equals_the_previous_implementation(camera_moon, noise):
    assert float(local_ncc_loss(*camera_moon)) == _approx(PINNED["ncc_camera_moon"])
    assert float(local_ncc_loss(*noise[:2])) == _approx(PINNED["ncc_noise"])


def test_monai_lncc_puts_the_epsilon_elsewhere(camera_moon, noise):
    # MONAI: (cross² + nr) / (max(var_a, dr) · max(var_b, dr)); ours (VoxelMorph):
    # cross² / (var_a · var_b + eps). Same window sums, so on high-contrast noise they agree to
    # 1.5e-7 relative, but ours damps low-contrast windows: 1 % apart on camera/moon.
    lncc = monai_losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=9, smooth_dr=1e-5)
    x, y, _ = noise
    assert float(lncc(x, y)) == pytest.approx(float(local_ncc_loss(x, y)), rel=1e-6)
    a, b = camera_moon
    theirs, ours = float(lncc(a, b)), float(local_ncc_loss(a, b))
    assert theirs == pytest.approx(-0.27981804212964734, rel=1e-9)
    assert abs(theirs - ours) / abs(ours) == pytest.approx(0.0104, abs=5e-4)


# -------------------------------------------------------------------------------------- MI

def _halves(axis):
    img = torch.zeros(1, 1, 16, 16)
    if axis == 0:
        img[..., 8:, :] = 1.0
    else:
        img[..., :, 8:] = 1.0
    return img


def test_parzen_mi_of_two_level_images_by_hand():
    # Identical half/half binary images: two equiprobable joint states, MI = ln 2 (the Parzen
    # windows at 0 and 1 do not overlap at 32 bins); orthogonal halves are independent, MI = 0.
    top_bottom, left_right = _halves(0), _halves(1)
    assert float(parzen_mi_loss(top_bottom, top_bottom)) == pytest.approx(-np.log(2), abs=1e-6)
    assert float(parzen_mi_loss(top_bottom, left_right)) == pytest.approx(0.0, abs=1e-6)
    # Inside the left half only, left_right is constant: no shared information there.
    left = 1.0 - left_right
    assert float(parzen_mi_loss(top_bottom, left_right, mask=left)) == pytest.approx(0.0, abs=1e-6)


def test_parzen_mi_equals_the_previous_implementation(camera_moon, noise):
    a, b = camera_moon
    assert float(parzen_mi_loss(a, b)) == _approx(PINNED["mi_camera_moon"])
    assert float(parzen_mi_loss(a, b, (a > 0.3).double())) == _approx(PINNED["mi_camera_moon_masked"])
    assert float(parzen_mi_loss(*noise[:2])) == _approx(PINNED["mi_noise"])


def test_monai_global_mi_has_no_mask(camera_moon, noise):
    # With our settings (32 bins, Parzen width one bin spacing, 1e-10 epsilons) MONAI computes the
    # same unmasked estimate (3e-8 relative: it adds smooth_dr once more inside the log); with its
    # default 1e-7 epsilons 4e-4 apart. VoxelMorph's loss is always body-masked, which MONAI's
    # GlobalMutualInformationLoss cannot do, so ours stays.
    a, b = camera_moon
    matched = monai_losses.GlobalMutualInformationLoss(num_bins=32, sigma_ratio=1.0, smooth_nr=1e-10, smooth_dr=1e-10)
    assert float(matched(a, b)) == pytest.approx(float(parzen_mi_loss(a, b)), rel=1e-7)
    assert float(matched(*noise[:2])) == pytest.approx(float(parzen_mi_loss(*noise[:2])), rel=3e-7)
    default_eps = monai_losses.GlobalMutualInformationLoss(num_bins=32, sigma_ratio=1.0)
    assert float(default_eps(a, b)) == pytest.approx(-0.04346380309638529, rel=1e-9)
    mask = (a > 0.3).double()
    masked = float(parzen_mi_loss(a, b, mask))
    assert abs(masked - float(matched(a, b))) / abs(masked) > 0.1  # -0.0380 masked, -0.0435 not
