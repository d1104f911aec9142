"""MEF-GAN, DDcGAN and U2Fusion: architectures, losses, training and the fusion interface."""
import math

import numpy as np
import pytest
import torch

from baselines.fusion._deep import TrainingData
from baselines.fusion.ddcgan import (DDcGAN, DDcGANDiscriminator, DDcGANGenerator, bce_discriminator_loss,
                                     ddcgan_content_loss, ddcgan_generator_loss, eight_neighbour_laplacian,
                                     expected_discriminator_parameters as ddcgan_d_params,
                                     expected_generator_parameters as ddcgan_g_params)
from baselines.fusion.mefgan import (MEFGAN, MEFGANDiscriminator, MEFGANGenerator, SelfAttention, exposure_pair,
                                     expected_discriminator_parameters as mefgan_d_params,
                                     expected_generator_parameters as mefgan_g_params, mefgan_content_loss,
                                     mefgan_generator_loss, pad_to_multiple)
from baselines.fusion.u2fusion import (U2Fusion, U2FusionNet, expected_u2fusion_parameters, information_weights,
                                       u2fusion_loss)
from fusionbench.data import Case
from fusionbench.methods import create_method, get_method_info
from fusionbench.nn import parameter_count


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv(cin, cout, k=3):
    return k * k * cin * cout + cout


# ------------------------------------------------------------------------------------------------
# Parameter counts, derived layer by layer from the reference TensorFlow code
# ------------------------------------------------------------------------------------------------

def test_ddcgan_parameter_counts_match_reference():
    encoder = conv(2, 48) + conv(48, 48) + conv(96, 48) + conv(144, 48) + conv(192, 48) + 5 * 2 * 48
    decoder = (conv(240, 240) + conv(240, 128) + conv(128, 64) + conv(64, 32) + conv(32, 1)
               + 2 * (240 + 128 + 64 + 32))  # batch norm γ, β on the second use of conv 1 and on convs 2-4
    assert encoder + decoder == 1_097_665
    assert parameter_count(DDcGANGenerator()) == 1_097_665 == ddcgan_g_params()
    # D for 84² patches: 84 -> 42 -> 21 -> 11, dense 11·11·64 -> 1.
    d = conv(1, 16) + conv(16, 32) + 2 * 32 + conv(32, 64) + 2 * 64 + 11 * 11 * 64 + 1
    assert d == 31_233
    assert parameter_count(DDcGANDiscriminator(84)) == d == ddcgan_d_params(84)


def test_u2fusion_parameter_count_matches_reference():
    n = (conv(2, 44) + sum(conv(44 * k, 44) for k in range(1, 6))
         + conv(264, 128) + conv(128, 64) + conv(64, 32) + conv(32, 1))
    assert n == 659_217
    assert parameter_count(U2FusionNet()) == n == expected_u2fusion_parameters()


def test_mefgan_parameter_counts_match_reference():
    def block(a, b):  # conv + batch norm γ, β
        return conv(a, b) + 2 * b

    local = block(6, 40) + block(40, 40) + block(80, 40) + block(120, 40) + block(160, 40)
    attention = conv(32, 8, 1) + conv(32, 8, 1) + conv(32, 32, 1) + 1  # f, g, h and γ
    sa = block(6, 16) + block(16, 32) + attention + block(32, 20) + block(20, 16)
    merge = block(216, 128) + block(128, 64) + block(64, 3)
    assert local + sa + merge == 487_582
    assert parameter_count(MEFGANGenerator()) == 487_582 == mefgan_g_params()
    # D for 144²: 144 -> 72 -> 36 -> 18 -> 9 -> 5 (stride 2) -> 5 (stride 1), dense 5·5·512 -> 1.
    d = (conv(3, 64) + conv(64, 64) + conv(64, 96) + conv(96, 128) + conv(128, 256) + conv(256, 512)
         + 5 * 5 * 512 + 1)
    assert d == 1_692_961
    assert parameter_count(MEFGANDiscriminator(144)) == d == mefgan_d_params(144)


def test_spectral_norm_keeps_parameters_and_buffers():
    g = MEFGANGenerator()
    sn_convs = [m for m in g.modules() if hasattr(m, "parametrizations")]
    # local 2-5, SA conv 2, f, g, h, SA decoder 1-2, merge 1-2
    assert len(sn_convs) == 4 + 1 + 3 + 2 + 2
    assert all("_u" in dict(m.parametrizations.weight[0].named_buffers()) for m in sn_convs)


# ------------------------------------------------------------------------------------------------
# Shapes at 256² and 300² (full networks on the meta device: shapes without arithmetic)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def meta_generators():
    with torch.device("meta"):
        return DDcGANGenerator().eval(), U2FusionNet().eval(), MEFGANGenerator().eval()


@pytest.mark.parametrize("side", [256, 300])
def test_generator_shapes(side, meta_generators):
    ddcgan, u2fusion, mefgan = meta_generators
    with torch.device("meta"):
        x = torch.empty(2, 1, side, side)
        assert ddcgan(x, x).shape == (2, 1, side, side)
        assert u2fusion(x, x).shape == (2, 1, side, side)
        rgb, (h, w) = pad_to_multiple(torch.empty(2, 3, side, side))
        assert rgb.shape[-1] == (256 if side == 256 else 304) and (h, w) == (side, side)
        assert mefgan(rgb, rgb)[..., :h, :w].shape == (2, 3, side, side)


def test_discriminator_shapes():
    with torch.device("meta"):
        assert DDcGANDiscriminator(84)(torch.empty(3, 1, 84, 84)).shape == (3, 1)
        assert MEFGANDiscriminator(144)(torch.empty(3, 3, 144, 144)).shape == (3, 1)
    with pytest.raises(ValueError, match="84"):
        DDcGANDiscriminator(84)(torch.zeros(1, 1, 64, 64))


def test_mefgan_generator_rejects_sides_not_multiple_of_8():
    g = MEFGANGenerator().eval()
    with pytest.raises(ValueError, match="divisible by 8"):
        g(torch.zeros(1, 3, 20, 20), torch.zeros(1, 3, 20, 20))


def test_pad_to_multiple_reflects():
    x = torch.arange(300.0).view(1, 1, 1, 300).expand(1, 1, 10, 300)
    padded, size = pad_to_multiple(x)
    assert size == (10, 300) and padded.shape == (1, 1, 16, 304)
    assert padded[0, 0, 0, 300] == x[0, 0, 0, 298] and padded[0, 0, 0, 303] == x[0, 0, 0, 295]


@pytest.mark.parametrize("name", ["ddcgan", "u2fusion", "mefgan"])
def test_fuse_odd_size_returns_image_in_range(name):
    rng = np.random.default_rng(1)
    pat, mri = rng.random((37, 45), dtype=np.float32), rng.random((37, 45), dtype=np.float32)
    method = create_method(name, weights="random")
    fused = method.fuse(pat, mri)
    assert fused.shape == (37, 45) and fused.dtype == np.float32
    assert np.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1
    assert fused.std() > 0
    # The same seed gives the same network, so the same image.
    assert np.array_equal(fused, create_method(name, weights="random").fuse(pat, mri))
    with pytest.raises(ValueError):
        method.fuse(pat, mri[:-1])


def test_registry_kinds():
    assert get_method_info("mefgan").kind == "gan" and get_method_info("ddcgan").kind == "gan"
    assert get_method_info("u2fusion").kind == "cnn"
    assert all(get_method_info(n).trainable for n in ("mefgan", "ddcgan", "u2fusion"))


def test_ddcgan_batch_norm_uses_each_batch_statistics():
    # The reference keeps batch norm in training mode at test time: an image is normalised by the
    # statistics of the batch it is in, so duplicating it changes nothing, pairing it does.
    g = DDcGANGenerator().eval()
    rng = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 1, 16, 16, generator=rng), torch.rand(1, 1, 16, 16, generator=rng) * 0.2
    with torch.no_grad():
        alone = g(x, x)
        twice = g(torch.cat([x, x]), torch.cat([x, x]))[:1]
        paired = g(torch.cat([x, y]), torch.cat([x, y]))[:1]
    assert torch.allclose(alone, twice, atol=1e-5)
    assert not torch.allclose(alone, paired, atol=1e-3)


def test_self_attention_with_zero_gamma_is_identity():
    att = SelfAttention(32)
    with torch.no_grad():
        att.gamma.zero_()
        x = torch.randn(2, 32, 4, 5)
        assert torch.equal(att(x), x)
        att.gamma.fill_(1.0)
        assert not torch.allclose(att(x), x)


# ------------------------------------------------------------------------------------------------
# Losses on hand-built tensors
# ------------------------------------------------------------------------------------------------

def test_eight_neighbour_laplacian_known_answers():
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    out = eight_neighbour_laplacian(impulse)[0, 0]
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 1 / 8
    expected[2, 2] = -1.0
    assert torch.allclose(out, expected)
    const = eight_neighbour_laplacian(torch.full((1, 2, 4, 4), 2.0))[0, 1]
    assert torch.allclose(const[1:3, 1:3], torch.zeros(2, 2))
    assert math.isclose(float(const[0, 0]), -5 / 8 * 2, rel_tol=1e-6)  # 3 of 8 neighbours inside
    assert math.isclose(float(const[0, 2]), -3 / 8 * 2, rel_tol=1e-6)  # 5 of 8 neighbours inside


def test_ddcgan_losses_by_hand():
    fused = torch.full((1, 1, 4, 4), 0.5)
    ir = torch.full((1, 1, 4, 4), 0.25)
    vis = torch.zeros(1, 1, 4, 4)
    # ‖G - ir‖² = 16 · 0.25² = 1, /16; ∇G on the zero-padded 4×4 constant 0.5: 4 corners of
    # 5/8 · 0.5 and 8 edge pixels of 3/8 · 0.5, L1 = 2.75, ∇vis = 0.
    content = 1 / 16 + 1.2 * 2.75
    assert math.isclose(float(ddcgan_content_loss(fused, vis, ir)), content, rel_tol=1e-6)
    assert math.isclose(float(ddcgan_content_loss(fused, fused, fused)), 0.0, abs_tol=1e-7)
    half = torch.full((1, 1), 0.5)
    total, adv = ddcgan_generator_loss(fused, vis, ir, half, half)
    assert math.isclose(float(adv), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(total), 2 * math.log(2) + 0.6 * content, rel_tol=1e-6)
    # Norms are summed over pixels and averaged over the batch: a second identical item changes nothing.
    assert math.isclose(float(ddcgan_content_loss(fused.repeat(2, 1, 1, 1), vis.repeat(2, 1, 1, 1),
                                                  ir.repeat(2, 1, 1, 1))), content, rel_tol=1e-6)


def test_bce_discriminator_loss_by_hand():
    real, fake = torch.full((2, 1), 0.9), torch.full((2, 1), 0.2)
    assert math.isclose(float(bce_discriminator_loss(real, fake)), -math.log(0.9) - math.log(0.8), rel_tol=1e-6)
    assert float(bce_discriminator_loss(torch.ones(1, 1), torch.zeros(1, 1))) < 1e-6


def test_mefgan_content_loss_by_hand():
    gt = torch.zeros(1, 3, 8, 8)
    fused = torch.full((1, 3, 8, 8), 0.1)
    gray = 0.1 * (0.2989 + 0.5870 + 0.1140)
    # Zero-padded ∇ of a constant 8×8: 4 corners × 5/8 + 24 edge pixels × 3/8 = 11.5 times the value.
    expected = 0.01 + 0.6 * 11.5 * gray / 64
    assert math.isclose(float(mefgan_content_loss(fused, gt)), expected, rel_tol=1e-5)
    total, content = mefgan_generator_loss(fused, gt, torch.full((1, 1), 0.5))
    assert math.isclose(float(total), math.log(2) + 500 * expected, rel_tol=1e-5)
    assert float(mefgan_content_loss(gt, gt)) == 0.0


def test_u2fusion_loss_by_hand():
    fused = torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)  # float64: exact constant variances
    first = torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)
    c1 = 0.01 ** 2
    # Constant images: the structure term is c2/c2 = 1, luminance (2·0.5·0.3 + c1)/(0.5² + 0.3² + c1).
    dissimilarity = 1 - (0.3 + c1) / (0.34 + c1)
    weights = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    expected = 0.25 * (dissimilarity + 20 * 0.04)
    assert math.isclose(float(u2fusion_loss(fused, first, fused, weights)), expected, rel_tol=1e-5)
    assert float(u2fusion_loss(fused, fused, fused, weights)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="weights"):
        u2fusion_loss(fused, first, fused, torch.ones(1, 3, dtype=torch.float64))


def test_information_weights_favour_the_detailed_source():
    from fusionbench.nn.vgg import vgg16_features

    vgg, _ = vgg16_features("random", seed=0)
    rng = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 1, 32, 32, generator=rng)
    flat = torch.full((1, 1, 32, 32), 0.5)
    same = information_weights(vgg, texture, texture, size=32)
    assert torch.allclose(same, torch.tensor([[0.5, 0.5]]))
    w = information_weights(vgg, texture, flat, c=1e-4, size=32)
    assert torch.allclose(w.sum(1), torch.ones(1)) and float(w[0, 0]) > 0.9


def test_exposure_pair_by_hand():
    over, under = exposure_pair(np.array([[0.5, 0.9]], np.float32), 1.0)
    # Below saturation the gain 2^±1 on linear light is 2^±(1/2.2) on the encoded value.
    assert over[0, 0] == pytest.approx(0.5 * 2 ** (1 / 2.2), rel=1e-5)
    assert under[0, 0] == pytest.approx(0.5 * 2 ** (-1 / 2.2), rel=1e-5)
    assert over[0, 1] == 1.0  # 0.9^2.2 · 2 > 1: the highlight saturates
    assert under[0, 1] == pytest.approx(0.9 * 2 ** (-1 / 2.2), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# Training: a short run on one fixed batch lowers the (generator) loss; fit is cached
# ------------------------------------------------------------------------------------------------

def _tiny_cases(n=3, side=48):
    from skimage import data, transform

    cam = transform.resize(data.camera() / 255.0, (side, side), anti_aliasing=True).astype(np.float32)
    moon = transform.resize(data.moon() / 255.0, (side, side), anti_aliasing=True).astype(np.float32)
    return [Case(id=f"c{i}", pat=np.roll(cam, 5 * i, 0), mri=np.roll(moon, 3 * i, 1)) for i in range(n)]


@pytest.mark.parametrize("name, settings, key, steps", [
    ("ddcgan", dict(batch=2, patch=16, lr=2e-3, max_inner=2), "content", 8),  # G trains on odd batches
    ("u2fusion", dict(batch=2, patch=24, pool=4, vgg="random", vgg_size=32), "loss", 8),
    ("mefgan", dict(batch=2, patch=40), "content", 8),
])
def test_short_training_lowers_the_generator_loss(name, settings, key, steps):
    method = create_method(name, weights="random", **settings)
    data = TrainingData(_tiny_cases(), natural=False)
    batch = method.sample_batch(data, np.random.default_rng(0))
    losses = [method.train_step(batch)[key] for _ in range(steps)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.9 * losses[0], losses


def test_u2fusion_fit_is_seeded_cached_and_recorded(tmp_path):
    from fusionbench.weights import prepare_weights

    cases = _tiny_cases()
    settings = dict(steps=3, batch=2, patch=24, pool=4, vgg="random", vgg_size=32)
    a = create_method("u2fusion", weights="random", **settings)
    assert prepare_weights("u2fusion", a, cases, cache_dir=tmp_path, allow_fit=True) == "fitted"
    metrics = a.provenance["metrics"]
    assert metrics["steps"] == 3 and metrics["feature_network"] == "random-vgg16 (seed 0)"
    assert metrics["mean_information_weights"] == pytest.approx([0.5, 0.5], abs=1e-3)
    assert len(list(tmp_path.glob("u2fusion/*/weights/weights.pt"))) == 1
    b = create_method("u2fusion", weights="random", **settings)
    assert prepare_weights("u2fusion", b, cases, cache_dir=tmp_path) == "cached"
    pat, mri = cases[0].pat, cases[0].mri
    assert np.array_equal(a.fuse(pat, mri), b.fuse(pat, mri))
    assert not np.array_equal(a.fuse(pat, mri), create_method("u2fusion", weights="random").fuse(pat, mri))


def test_gan_weight_files_hold_the_generator_only(tmp_path):
    method = create_method("ddcgan", weights="random", steps=2, batch=2, patch=16, max_inner=1)
    method.fit(_tiny_cases(), tmp_path / "work")
    method.save_weights(tmp_path)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert saved and all(k.startswith("g.") for k in saved)
    assert sum(v.numel() for v in saved.values()) == ddcgan_g_params()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="multiple of 8"):
        MEFGAN(weights="random", patch=44)
    with pytest.raises(ValueError, match="vgg"):
        U2Fusion(weights="random", vgg="caffe")


# ------------------------------------------------------------------------------------------------
# Shipped weights
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ddcgan", "u2fusion", "mefgan"])
def test_shipped_weights_load_and_fuse(name):
    method = create_method(name, weights="random")
    shipped = create_method(name)
    # all three were trained on the train split of phantom 2.0 (its content fingerprint)
    assert shipped.provenance["method"] == name and shipped.provenance["data"]["fingerprint"] == "d94f6103de24ea9e"
    assert shipped.describe_weights().startswith("trained on phantom 2.0 train split")
    rng = np.random.default_rng(0)
    pat, mri = rng.random((40, 40), dtype=np.float32), rng.random((40, 40), dtype=np.float32)
    fused = shipped.fuse(pat, mri)
    assert fused.shape == (40, 40) and np.isfinite(fused).all()
    assert not np.array_equal(fused, method.fuse(pat, mri))


@pytest.mark.parametrize("name", ["mefgan", "ddcgan", "u2fusion"])
def test_methods_survive_pickling_for_worker_processes(name):
    # The harness sends methods to worker processes by pickling; MEF-GAN's spectral-norm
    # (parametrized) modules cannot be pickled as modules, so networks travel as state dicts.
    import pickle

    method = create_method(name, weights="random", device="cpu")
    rng = np.random.default_rng(3)
    pat, mri = rng.random((40, 48), dtype=np.float32), rng.random((40, 48), dtype=np.float32)
    clone = pickle.loads(pickle.dumps(method))
    assert np.array_equal(clone.fuse(pat, mri), method.fuse(pat, mri))
