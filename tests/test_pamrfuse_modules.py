"""PAMRFuse+ modules and losses: the unit tests of the spec (§10) with hand-derived values."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from fusionbench.data import Case
from fusionbench.nn import parameter_count
from fusionbench.nn.layers import warp_torch
from fusionbench.nn.vgg import VGGTaps
from pamrfuse import losses as L
from pamrfuse.dfdf import DFDF, DetailNode
from pamrfuse.mlr import MLR, resize_flow_x2
from pamrfuse.model import PAMRFuseNet, prepare_arrays
from pamrfuse.p2m import PatchDiscriminator, ResnetGenerator, translate
from pamrfuse.presets import PRESETS, get_config

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ warp (our layer)
def test_warp_zero_flow_is_identity():
    img = torch.rand(2, 1, 17, 23)
    out = warp_torch(img, torch.zeros(2, 2, 17, 23))
    assert torch.allclose(out, img, atol=1e-6)


def test_warp_constant_flow_shifts_content_backwards():
    img = torch.rand(1, 1, 20, 20)
    flow = torch.zeros(1, 2, 20, 20)
    flow[:, 0], flow[:, 1] = 2.0, 3.0  # sample at (r + 2, c + 3): content moves up 2, left 3
    out = warp_torch(img, flow)
    assert torch.allclose(out[0, 0, :-2, :-3], img[0, 0, 2:, 3:], atol=1e-5)


def test_resize_x2_doubles_magnitudes():
    flow = torch.full((1, 2, 8, 8), 1.5)
    up = resize_flow_x2(flow)
    assert up.shape == (1, 2, 16, 16)
    assert torch.allclose(up, torch.full_like(up, 3.0))


# ------------------------------------------------------------------------------ MLR
@pytest.mark.parametrize("size", [64, 300])
def test_mlr_shapes(size):
    net = MLR()
    x = torch.rand(1, 1, size, size)
    with torch.no_grad():
        out = net(x, torch.rand(1, 1, size, size))
    assert out["flow"].shape == (1, 2, size, size)
    assert out["flow1"].shape == (1, 2, size // 2, size // 2)
    assert out["flow2"].shape == (1, 2, size // 4, size // 4)
    assert out["warped"].shape == x.shape


def test_mlr_rejects_sizes_not_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        MLR()(torch.rand(1, 1, 30, 32), torch.rand(1, 1, 30, 32))


def test_mlr_flow_channel_order_and_level_scaling():
    # Heads that output a constant (1 row, 0 col) px at level 2 and nothing else: the refiners add 0,
    # level 1 passes the upsampled field through, so the full-res field is 4 px along rows.
    net = MLR()
    for mod in (net.est2.head, net.est1.head, net.ref2.head, net.ref1.head):
        torch.nn.init.zeros_(mod.weight)
        torch.nn.init.zeros_(mod.bias)
    with torch.no_grad():
        net.est2.head.bias.copy_(torch.tensor([1.0, 0.0]))
    moving = torch.arange(32.0).repeat(32, 1).T.reshape(1, 1, 32, 32).contiguous()  # value = row index
    with torch.no_grad():
        out = net(torch.rand(1, 1, 32, 32), moving)
    assert torch.allclose(out["flow"][:, 0], torch.full((1, 32, 32), 4.0), atol=1e-5)
    assert torch.allclose(out["flow"][:, 1], torch.zeros(1, 32, 32), atol=1e-6)
    assert torch.allclose(out["warped"][0, 0, :28], moving[0, 0, :28] + 4.0, atol=1e-4)


def test_mlr_pat_branch_needs_pat():
    net = MLR(pat_branch=True)
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="third input"):
        net(x, x)
    assert net(x, x, x)["flow"].shape == (1, 2, 16, 16)


# ------------------------------------------------------------------------------ DFDF
def test_inn_coupling_is_invertible():
    torch.manual_seed(0)
    node = DetailNode(16).double()
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        y1, y2 = node(*x.chunk(2, 1))
        z1, z2 = node.inverse(y1, y2)
        mixed = torch.cat([z1, z2], 1)
        # Undo the 1×1 mixing conv: x = W^-1 (mixed - b) per pixel.
        w = node.mix.weight[:, :, 0, 0]
        flat = (mixed - node.mix.bias.view(1, -1, 1, 1)).permute(0, 2, 3, 1).reshape(-1, 16)
        rec = torch.linalg.solve(w, flat.T).T.reshape(2, 9, 11, 16).permute(0, 3, 1, 2)
    assert torch.allclose(rec, x, atol=1e-9)


def test_dfdf_shapes_and_range():
    net = DFDF(dim=8, heads=2, enc_blocks=1, dec_blocks=1, detail_layers=1)
    pat, mri = torch.rand(2, 1, 20, 24), torch.rand(2, 1, 20, 24)
    with torch.no_grad():
        fused, (b_p, d_p), _ = net.fuse(pat, mri)
        rec, base, detail = net.reconstruct(pat)
    assert fused.shape == rec.shape == pat.shape
    assert b_p.shape == d_p.shape == base.shape == (2, 8, 20, 24)
    assert 0 <= float(fused.min()) and float(fused.max()) <= 1


def test_paper_parameter_counts_equal_spec():
    net = PAMRFuseNet(PRESETS["paper"])
    assert parameter_count(net.p2m.g_pm) == parameter_count(net.p2m.g_mp) == 11_365_633
    assert parameter_count(net.p2m.d_m) == parameter_count(net.p2m.d_p) == 2_762_689
    assert parameter_count(net.mlr) == 170_904
    d = net.dfdf
    parts = (d.encoder, d.decoder, d.base_fuse, d.detail_fuse)
    assert tuple(parameter_count(part) for part in parts) == (599_144, 207_936, 363_016, 18_176)
    assert parameter_count(d) == 1_188_272


def test_prepare_arrays_area_resamples_to_the_preset_size():
    pat = np.arange(16.0).reshape(4, 4) / 16
    cases = [Case("a", pat, np.full((4, 4), 0.5)), Case("b", pat.T, pat)]
    pats, mris = prepare_arrays(cases, 2)
    assert pats.shape == mris.shape == (2, 1, 2, 2) and pats.dtype == mris.dtype == np.float32
    # 2×2 block means of 0..15 / 16: (0 + 1 + 4 + 5) / 4 / 16, ...
    blocks = np.array([[2.5, 4.5], [10.5, 12.5]]) / 16
    np.testing.assert_allclose(pats[0, 0], blocks, atol=1e-7)
    np.testing.assert_allclose(pats[1, 0], blocks.T, atol=1e-7)
    np.testing.assert_allclose(mris[0, 0], 0.5)
    np.testing.assert_allclose(mris[1, 0], blocks, atol=1e-7)
    same, _ = prepare_arrays(cases, 4)  # already at the size: unchanged
    np.testing.assert_array_equal(same[0, 0], pat.astype(np.float32))
    with pytest.raises(ValueError, match="at least one case"):
        prepare_arrays([], 4)


def test_generator_and_discriminator_shapes():
    g, d = ResnetGenerator(ngf=4, n_blocks=1), PatchDiscriminator(ndf=4)
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        y = g(x)
        assert y.shape == x.shape and float(y.abs().max()) <= 1
        assert d(x).shape == (1, 1, 6, 6)  # 70×70 PatchGAN on 64²: 32, 16, 8, 7, 6


def test_translate_shapes_and_errors():
    g = ResnetGenerator(ngf=4, n_blocks=1)
    img = np.random.default_rng(0).random((30, 42), dtype=np.float32)  # not a multiple of 4: padded
    out = translate(img, g)
    assert out.shape == (30, 42) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert translate([img, img], g).shape == (2, 30, 42)
    bad = img.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        translate(bad, g)


# ------------------------------------------------------------------------------ losses
def test_cc_hand_values():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    b = torch.tensor([1.0, 3.0, 2.0, 4.0]).view(1, 1, 2, 2)
    assert L.cc(a, b).item() == pytest.approx(0.8, abs=1e-6)  # 4 / sqrt(5 * 5)
    t = torch.randn(2, 3, 5, 5)
    assert L.cc(t, t).item() == pytest.approx(1.0, abs=1e-6)
    assert L.cc(t, -t).item() == pytest.approx(-1.0, abs=1e-6)


def test_decomposition_loss_on_hand_built_tensors():
    t = torch.randn(1, 4, 6, 6)
    # CC_D = 1, CC_B = -1: 1 / (-1 + 1.01) = 100
    assert L.decomposition_loss(t, t, t, -t).item() == pytest.approx(100.0, rel=1e-4)
    # CC_D = -1, CC_B = 1: 1 / 2.01
    assert L.decomposition_loss(t, -t, t, t).item() == pytest.approx(1 / 2.01, rel=1e-5)
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    b = torch.tensor([1.0, 3.0, 2.0, 4.0]).view(1, 1, 2, 2)
    assert L.decomposition_loss(a, b, a, a).item() == pytest.approx(0.64 / 2.01, rel=1e-5)
    assert L.decomposition_loss(a, b, a, -a, form="code").item() == pytest.approx(1.8, rel=1e-5)


def test_sobel_magnitude_matches_scipy_and_ramp():
    img = np.random.default_rng(1).random((12, 15))
    expect = np.abs(ndimage.sobel(img, axis=0, mode="constant")) + np.abs(ndimage.sobel(img, axis=1, mode="constant"))
    got = L.sobel_magnitude(torch.from_numpy(img)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, expect, atol=1e-12)
    ramp = torch.arange(10.0).repeat(10, 1).view(1, 1, 10, 10)  # value = column: |Gx| = 8, Gy = 0
    assert torch.allclose(L.sobel_magnitude(ramp)[0, 0, 1:-1, 1:-1], torch.full((8, 8), 8.0))


def test_intensity_and_gradient_losses_zero_at_the_max_image():
    p, m = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    fused = torch.maximum(p, m)
    assert L.intensity_loss(fused, p, m).item() == 0.0
    assert L.intensity_loss(p, p, p + 0.25).item() == pytest.approx(0.25)
    assert L.gradient_max_loss(p, p, torch.zeros_like(p)).item() == pytest.approx(0.0, abs=1e-7)


def test_gram_per_sample():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    expect = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4  # / (C·H·W) = 4
    assert torch.allclose(L.gram(f)[0], expect)
    two = torch.cat([f, 2 * f])  # samples are not mixed
    assert torch.allclose(L.gram(two)[1], 4 * expect)


def test_reconstruction_loss_zero_for_identical_images():
    x = torch.from_numpy(ndimage.gaussian_filter(np.random.default_rng(2).random((48, 48)), 2))[None, None]
    assert L.reconstruction_loss(x, x).item() == pytest.approx(0.0, abs=1e-9)
    assert L.reconstruction_loss(x, x.flip(-1)).item() > 0.01


def test_registration_loss_zero_when_aligned_and_positive_when_shifted():
    vgg, _ = L.load_vgg("tiny-random")
    taps = VGGTaps(vgg)
    img = torch.rand(1, 1, 32, 32)
    zero = torch.zeros(1, 2, 32, 32)
    assert L.registration_loss(img, img, zero, taps).item() == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(img, 3, dims=-1)
    assert L.registration_loss(img, shifted, zero, None).item() > 0.1


def test_cycle_loss_zero_for_perfect_reconstruction():
    vgg, desc = L.load_vgg("tiny-random")
    x = torch.rand(1, 1, 32, 32)
    assert "tiny" in desc
    assert L.cycle_loss(x, x, VGGTaps(vgg)).item() == pytest.approx(0.0, abs=1e-7)
    assert L.cycle_loss(x.flip(-1), x, VGGTaps(vgg), taps=3).item() > 0


def test_vgg_and_ssim_losses_equal_the_previous_implementation():
    # Values with PAMRFuse+'s former own VGGTaps, tiny VGG layout, SSIM and smoothness (now
    # fusionbench.nn's): the same numbers, float32.
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    flow = torch.randn(2, 2, 32, 32, generator=g)
    taps = VGGTaps(L.load_vgg("tiny-random", seed=0)[0])
    assert [float(m.double().sum()) for m in taps(x)] == pytest.approx(
        [4449.279804810249, 584.7650949228773, 112.23037470447161, 24.84903220099659, 4.44167619565269], rel=1e-5)
    assert float(L.cycle_loss(x, y, taps)) == pytest.approx(0.34857144951820374, rel=1e-6)
    assert float(L.registration_loss(x, y, flow, taps)) == pytest.approx(4.829457759857178, rel=1e-6)
    assert float(L.registration_loss(x, y, flow, taps, penalty="l1", backward_source=y)) == pytest.approx(
        3.8711750507354736, rel=1e-6)
    assert float(L.reconstruction_loss(x, y)) == pytest.approx(2.718405246734619, rel=1e-6)


def test_laplacian_residual_hand_values():
    # Impulse at an even interior pixel: the blurred, decimated, re-expanded copy keeps
    # 4 * (sum over even offsets of k²)² = 4 * (.05² + .4² + .05²)² = 0.1089 of it.
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    assert L.laplacian_residual(x)[0, 0, 8, 8].item() == pytest.approx(1 - 0.1089, abs=1e-6)
    # Zero on a constant image (kernel weights at even and odd offsets both sum to 1/2), away from
    # the replicate-padded border; linear in the image.
    const = torch.full((1, 1, 16, 16), 0.7)
    assert L.laplacian_residual(const)[..., 2:-2, 2:-2].abs().max().item() < 1e-6
    y = torch.rand(1, 1, 16, 16)
    assert torch.allclose(L.laplacian_residual(x + 2 * y), L.laplacian_residual(x) + 2 * L.laplacian_residual(y),
                          atol=1e-6)


def test_edge_loss_is_charbonnier_of_the_residuals():
    x = torch.rand(1, 1, 16, 16)
    assert L.edge_loss(x, x).item() == pytest.approx(1e-3, rel=1e-6)  # sqrt(0 + eps²)
    imp = torch.zeros(1, 1, 16, 16)
    imp[0, 0, 8, 8] = 1.0
    d = L.laplacian_residual(imp)
    assert L.edge_loss(x + imp, x).item() == pytest.approx(torch.sqrt(d * d + 1e-6).mean().item(), rel=1e-5)
    # A linear ramp has no Laplacian residual beyond the 4 px the replicate padding reaches.
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    assert L.laplacian_residual(ramp)[..., 4:-4, 4:-4].abs().max().item() < 1e-6


def test_p2m_code_terms_hand_values():
    pat, mri = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    # Perfect translations, reconstructions and identities: only the Charbonnier eps remains,
    # 5 + 10 edge terms and 8 * 2 cross-cycle edge terms, each eps = 1e-3.
    total, parts = L.p2m_code_terms(pat, mri, fake_m=mri, fake_p=pat, rec_p=pat, rec_m=mri, idt_p=pat, idt_m=mri)
    assert total.item() == pytest.approx(31e-3, rel=1e-5)
    assert parts["idt"] == 0 and parts["cross"] == 0
    # Identity of PAT off by 0.1 everywhere: 4 * 0.1; MRI translated off by 0.2: 5 * 0.2.
    _, parts = L.p2m_code_terms(pat, mri, fake_m=mri + 0.2, fake_p=pat, rec_p=pat, rec_m=mri + 0.2,
                                idt_p=pat + 0.1, idt_m=mri)
    assert parts["idt"] == pytest.approx(0.4, rel=1e-5)
    assert parts["cross"] == pytest.approx(1.0, rel=1e-5)


# ------------------------------------------------------------------------------ presets
def test_preset_validation():
    assert get_config("lite").preset == "lite"
    assert not get_config("paper", "wo_p2m").use_p2m
    with pytest.raises(ValueError, match="divisible by 4"):
        get_config("tiny", size=30)
    with pytest.raises(ValueError, match="unknown PAMRFuse\\+ setting"):
        get_config("tiny", widht=3)
    with pytest.raises(ValueError, match="unknown ablation"):
        get_config("tiny", "wo_everything")
    with pytest.raises(ValueError, match="unknown PAMRFuse\\+ preset"):
        get_config("huge")
    with pytest.raises(ValueError, match="p2m_loss must be"):
        get_config("tiny", p2m_loss="cyclegan")
