"""CNN (Liu 2017/2018), VGGML (Li 2018) and DenseFuse (Li & Wu 2019), and their shared base `_deep`.

Architectures are checked against parameter counts derived by hand from the papers, losses on
hand-built tensors, fusion rules on inputs whose answer is known, and training on a tiny set.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from baselines.fusion import _deep
from baselines.fusion._deep import NATURAL_IMAGES, TrainingData, natural_images
from baselines.fusion.cnn import CNNFusion, SiameseFocusNet, blur_pairs, focus_loss, patch_average, pyramid_fuse
from baselines.fusion.densefuse import DenseFuse, DenseFuseNet, densefuse_loss, fuse_features
from baselines.fusion.vggml import VGGML, detail_weights, tikhonov_lowpass
from fusionbench.data import Case
from fusionbench.data.io import ImageError
from fusionbench.methods import create_method, get_method_info
from fusionbench.nn import parameter_count

torch.set_num_threads(1)


def conv_params(cin, cout, k=3):
    return k * k * cin * cout + cout


def smooth_image(shape, seed=0):
    """A smooth random image in [0, 1] with structure at several scales."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = sum(ndimage.gaussian_filter(rng.standard_normal(shape), s) * s for s in (1, 3, 8))
    img = (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def tiny_cases():
    cases = []
    for i in range(3):
        pat = smooth_image((48, 48), seed=i)
        cases.append(Case(id=f"t{i}", pat=pat, mri=1.0 - pat))
    return cases


@pytest.fixture
def no_vgg(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "empty-cache"))


# ============================================================================ _deep

def test_natural_images_are_the_bundled_ones():
    imgs = natural_images()
    assert len(imgs) == len(NATURAL_IMAGES) == 13
    assert all(im.ndim == 2 and im.dtype == np.float32 and 0 <= im.min() and im.max() <= 1 for im in imgs)
    assert imgs[0].shape == (512, 512)  # camera


def test_training_data_patches_are_seeded_aligned_and_augmented(tiny_cases):
    data = TrainingData(tiny_cases, natural=False)
    assert len(data.singles) == 6 and "3 PAT/MRI" in data.describe()
    p1 = data.sample_pairs(np.random.default_rng(5), 8, 32)
    p2 = data.sample_pairs(np.random.default_rng(5), 8, 32)
    assert p1.shape == (8, 2, 32, 32) and p1.dtype == torch.float32
    assert torch.equal(p1, p2)
    # MRI = 1 - PAT in these cases: crops, flips and turns must keep the pair aligned.
    torch.testing.assert_close(p1[:, 1], 1.0 - p1[:, 0])
    singles = data.sample_singles(np.random.default_rng(1), 4, 64)  # larger than the 48² images
    assert singles.shape == (4, 1, 64, 64)
    with_nat = TrainingData(tiny_cases, natural=True)
    assert len(with_nat.singles) == 6 + 13


def test_roles_and_input_checks():
    with pytest.raises(ValueError, match="roles"):
        DenseFuse(weights="random", roles={"ir": "pat", "vis": "pat"})
    m = DenseFuse(weights="random", device="cpu")
    with pytest.raises(ImageError):
        m.fuse(np.full((32, 32), np.nan), np.zeros((32, 32)))
    with pytest.raises(ValueError, match="shape"):
        m.fuse(np.zeros((32, 32)), np.zeros((32, 33)))
    with pytest.raises(ValueError, match="steps"):
        DenseFuse(weights="random", steps=0)


def test_missing_shipped_weights_warn_and_fall_back(monkeypatch, tmp_path):
    monkeypatch.setattr(_deep, "WEIGHTS_DIR", tmp_path)
    with pytest.warns(RuntimeWarning, match="no shipped weights"):
        m = DenseFuse(device="cpu")
    assert m.config()["weights"] == "random (seed 0)"


def test_fit_caches_by_content_and_reuses(tiny_cases, tmp_path, monkeypatch):
    kw = dict(weights="random", device="cpu", steps=2, batch=2, patch=32)
    m = DenseFuse(**kw)
    prov = m.fit(tiny_cases, tmp_path)
    assert prov["weights"] == "retrained-toolkit" and prov["steps"] == 2
    assert prov["config"]["steps"] == 2 and prov["train_data"].startswith("cases:")
    assert len(list(tmp_path.glob("densefuse-*.pt"))) == 1
    assert m.config()["weights"] == "retrained-toolkit (2 steps, seed 0)"
    trained = {k: v.clone() for k, v in m.net.state_dict().items()}

    again = DenseFuse(**kw)
    monkeypatch.setattr(DenseFuse, "train", lambda *a, **k: pytest.fail("cached fit must not train"))
    again.fit(tiny_cases, tmp_path)
    assert all(torch.equal(trained[k], v) for k, v in again.net.state_dict().items())
    again.fit(tiny_cases, tmp_path / "elsewhere")  # weights already trained on these cases: no-op
    other = [Case(id="x", pat=tiny_cases[0].mri, mri=tiny_cases[0].pat)]
    with pytest.raises(pytest.fail.Exception):
        again.fit(other, tmp_path)  # different data: must train


def test_checkpointed_training_resumes_to_the_same_weights(tiny_cases, tmp_path):
    data = TrainingData(tiny_cases, natural=False)
    kw = dict(weights="random", device="cpu", batch=2, patch=32, lr=1e-3)
    straight = DenseFuse(**kw)
    h1 = straight.train(data, steps=4)
    resumed = DenseFuse(**kw)
    ckpt = tmp_path / "run.ckpt"
    resumed.train(data, steps=2, checkpoint=ckpt, checkpoint_every=1)
    h2 = DenseFuse(**kw).train(data, steps=4, checkpoint=ckpt, checkpoint_every=1)
    assert h2 == pytest.approx(h1, rel=1e-5)


def test_save_half_and_load_with_provenance(tiny_cases, tmp_path):
    m = DenseFuse(weights="random", device="cpu")
    data = TrainingData(tiny_cases, natural=False)
    m.save(tmp_path / "w.pt", data=data, history=[3.0, 2.0, 1.0], seconds=1.0, half=True)
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values())
    meta = json.loads((tmp_path / "w.json").read_text())
    assert meta["loss_first"] == 3.0 and meta["dtype"] == "float16" and meta["parameters"] == 74_193
    user = DenseFuse(weights=str(tmp_path / "w.pt"), device="cpu")
    assert user.config()["weights"] == "user-file (w.pt)"
    assert all(p.dtype == torch.float32 for p in user.net.parameters())
    with pytest.raises(ValueError, match="do not fit"):
        CNNFusion(weights=str(tmp_path / "w.pt"), device="cpu")


# ============================================================================ CNN

def test_cnn_parameter_count_is_liu_2017():
    branch = conv_params(1, 64) + conv_params(64, 128) + conv_params(128, 256)
    output = conv_params(512, 2, k=8)
    assert branch + output == 435_202
    assert parameter_count(SiameseFocusNet()) == 435_202


def test_cnn_score_map_shape():
    net = SiameseFocusNet()
    with torch.no_grad():
        assert net(torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16)).shape == (3, 2, 1, 1)
        assert net(torch.rand(1, 1, 64, 80), torch.rand(1, 1, 64, 80)).shape == (1, 2, 25, 33)


def test_focus_loss_on_hand_built_logits():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]]).view(2, 2, 1, 1)
    # softmax = (1/4, 3/4): CE is ln(4/3) for label 1 and ln 4 for label 0
    assert float(focus_loss(logits[:1], torch.tensor([1]))) == pytest.approx(math.log(4 / 3))
    assert float(focus_loss(logits, torch.tensor([1, 0]))) == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)


def test_blur_pairs_label_the_sharp_patch():
    patches = torch.from_numpy(np.random.default_rng(0).random((6, 1, 48, 48), dtype=np.float32))
    a, b, labels = blur_pairs(patches, np.random.default_rng(1))
    assert a.shape == b.shape == (6, 1, 16, 16) and set(labels.tolist()) <= {0, 1}
    clear = patches[..., 16:32, 16:32]
    for i, lab in enumerate(labels.tolist()):
        sharp, blurred = (a[i], b[i]) if lab == 1 else (b[i], a[i])
        assert torch.equal(sharp, clear[i])
        assert float(blurred.diff(dim=-1).abs().mean()) < 0.5 * float(sharp.diff(dim=-1).abs().mean())
    with pytest.raises(ValueError, match="at least"):
        blur_pairs(torch.zeros(1, 1, 20, 20), np.random.default_rng(0))


def test_patch_average_matches_explicit_accumulation():
    rng = np.random.default_rng(0)
    for shape in [(20, 22), (21, 23)]:
        h, w = (shape[0] + shape[0] % 2) // 2 - 7, (shape[1] + shape[1] % 2) // 2 - 7
        score = rng.random((h, w))
        acc, cnt = np.zeros((shape[0] + 1, shape[1] + 1)), np.zeros((shape[0] + 1, shape[1] + 1))
        for i in range(h):
            for j in range(w):
                acc[2 * i:2 * i + 16, 2 * j:2 * j + 16] += score[i, j]
                cnt[2 * i:2 * i + 16, 2 * j:2 * j + 16] += 1
        expected = acc[:shape[0], :shape[1]] / cnt[:shape[0], :shape[1]]
        np.testing.assert_allclose(patch_average(score, shape), expected, atol=1e-12)


def test_pyramid_fuse_known_answers():
    a = smooth_image((40, 36)).astype(np.float64)
    weight = np.random.default_rng(0).random(a.shape)
    # Identical sources: match measure 1 everywhere, any weights give the source back.
    np.testing.assert_allclose(pyramid_fuse(a, a, weight), a, atol=1e-10)
    # b = 0.9 a: match 2·0.9/(1+0.81) > 0.6 -> weighted average; W = 1 keeps a.
    np.testing.assert_allclose(pyramid_fuse(a, 0.9 * a, np.ones_like(a)), a, atol=1e-10)
    # b = -2 a: match < 0 -> selection of the larger energy, b at every level.
    np.testing.assert_allclose(pyramid_fuse(a, -2 * a, weight), -2 * a, atol=1e-10)


@pytest.mark.parametrize("size", [256, 300])
def test_cnn_fuse_shapes(size):
    m = CNNFusion(weights="random", device="cpu")
    pat, mri = smooth_image((size, size), 1), smooth_image((size, size), 2)
    fused = m.fuse(pat, mri)
    assert fused.shape == (size, size) and fused.dtype == np.float32
    assert np.allclose(fused * 255, np.round(fused * 255), atol=1e-3)  # uint8 levels, as run_CNN.m


def test_cnn_short_fit_lowers_the_loss():
    # White-noise images: blur is easy to see, so a few SGD steps must already separate the pairs.
    rng = np.random.default_rng(0)
    cases = [Case(id=f"n{i}", pat=rng.random((48, 48), dtype=np.float32),
                  mri=rng.random((48, 48), dtype=np.float32)) for i in range(3)]
    m = CNNFusion(weights="random", device="cpu", batch=16, lr=1e-2, seed=0)
    data = TrainingData(cases, natural=False)
    held = m.sample_batch(data, np.random.default_rng(123))
    with torch.no_grad():
        before = float(m.loss(held))
    history = m.train(data, steps=8)
    with torch.no_grad():
        after = float(m.loss(held))
    assert before == pytest.approx(math.log(2), abs=0.05)  # untrained: near chance
    assert len(history) == 8 and after < before - 0.1


# ============================================================================ DenseFuse

def test_densefuse_parameter_count_is_li_wu_2019():
    encoder = conv_params(1, 16) + conv_params(16, 16) + conv_params(32, 16) + conv_params(48, 16)
    decoder = conv_params(64, 64) + conv_params(64, 32) + conv_params(32, 16) + conv_params(16, 1)
    assert encoder + decoder == 74_193
    assert parameter_count(DenseFuseNet()) == 74_193


@pytest.mark.parametrize("size", [256, 300])
def test_densefuse_shapes(size):
    net = DenseFuseNet()
    x = torch.rand(1, 1, size, size)
    with torch.no_grad():
        assert net.encode(x).shape == (1, 64, size, size)
        assert net(x).shape == (1, 1, size, size)
    fused = DenseFuse(weights="random", device="cpu").fuse(x[0, 0].numpy(), x[0, 0].numpy())
    assert fused.shape == (size, size) and fused.dtype == np.float32


def test_densefuse_loss_on_hand_built_tensors():
    target = torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)  # float32 loses ~2e-4 of SSIM
    terms = densefuse_loss(target.clone(), target)
    assert float(terms["loss"]) == pytest.approx(0.0, abs=1e-6)
    # Constant shift by 0.1: MSE 0.01; SSIM = (2·0.5·0.6 + C1)/(0.5² + 0.6² + C1), C1 = 1e-4.
    terms = densefuse_loss(target + 0.1, target)
    ssim = (2 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4)
    assert float(terms["mse"]) == pytest.approx(0.01, rel=1e-5)
    assert float(terms["ssim"]) == pytest.approx(ssim, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(0.01 + 100 * (1 - ssim), rel=1e-4)


def test_densefuse_fusion_rules():
    fa = torch.zeros(1, 2, 4, 4)
    fa[:, :, :2] = 2.0
    fb = torch.ones(1, 2, 4, 4)
    torch.testing.assert_close(fuse_features(fa, fb, "addition"), fa + fb)
    torch.testing.assert_close(fuse_features(fa, fb, "mean"), (fa + fb) / 2)
    l1 = fuse_features(fa, fb, "l1")
    # Rows far from the boundary row: activities (4 vs 2) and (0 vs 2) after 3×3 averaging.
    torch.testing.assert_close(l1[0, 0, 0], torch.full((4,), 4 / 6 * 2 + 2 / 6 * 1))
    torch.testing.assert_close(l1[0, 0, 3], torch.full((4,), 1.0))
    with pytest.raises(ValueError, match="strategy"):
        fuse_features(fa, fb, "max")
    with pytest.raises(ValueError, match="strategy"):
        DenseFuse(weights="random", strategy="max")


def test_densefuse_short_fit_lowers_the_loss(tiny_cases):
    m = DenseFuse(weights="random", device="cpu", batch=4, patch=32, lr=1e-3)
    data = TrainingData(tiny_cases, natural=False)
    held = m.sample_batch(data, np.random.default_rng(7))
    with torch.no_grad():
        before = float(m.loss(held)["loss"])
    history = m.train(data, steps=15)
    with torch.no_grad():
        after = float(m.loss(held)["loss"])
    assert len(history) == 15 and after < 0.8 * before


# ============================================================================ VGGML

def test_tikhonov_lowpass_solves_the_periodic_system():
    img = smooth_image((6, 7), 3).astype(np.float64)
    lmbda, npad = 5.0, 3
    padded = np.pad(img, npad, mode="symmetric")
    n, m = padded.shape
    # Periodic first differences as matrices; the filter solves (I + λ(DrᵀDr + DcᵀDc)) x = s.
    dr = np.roll(np.eye(n), 1, axis=1) - np.eye(n)
    dc = np.roll(np.eye(m), 1, axis=1) - np.eye(m)
    system = np.eye(n * m) + lmbda * (np.kron(dr.T @ dr, np.eye(m)) + np.kron(np.eye(n), dc.T @ dc))
    solved = np.linalg.solve(system, padded.ravel()).reshape(n, m)[npad:-npad, npad:-npad]
    np.testing.assert_allclose(tikhonov_lowpass(img, lmbda, npad), solved, atol=1e-10)
    np.testing.assert_allclose(tikhonov_lowpass(np.full((9, 9), 0.3)), 0.3, atol=1e-12)


def test_detail_weights_hand_built():
    fa = torch.ones(1, 2, 2, 2)  # l1 activity 2
    fb = torch.full((1, 2, 2, 2), -3.0)  # l1 activity 6
    w = detail_weights(fa, fb, unit=2, shape=(5, 5))
    expected = np.zeros((5, 5))
    expected[:4, :4] = 0.25  # 3×3 means of 2 and 6 share the same zero padding: ratio 1/4
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-7)


def test_vggml_uses_vgg16_to_conv4_1(no_vgg):
    with pytest.warns(RuntimeWarning, match="not installed"):
        m = VGGML(device="cpu")
    vgg16_to_conv4_1 = sum(conv_params(i, o) for i, o in [(3, 64), (64, 64), (64, 128), (128, 128),
                                                            (128, 256), (256, 256), (256, 256), (256, 512)])
    assert vgg16_to_conv4_1 == 2_915_648  # VGG-19 would add conv3_4: 3,505,728
    assert parameter_count(m.features) == vgg16_to_conv4_1
    assert m.feature_network.startswith("random-vgg16 (seed 0) to conv4_1")
    assert m.config()["weights"] == m.feature_network
    assert not get_method_info("vggml").trainable and get_method_info("vggml").kind == "cnn"


@pytest.mark.parametrize("size", [256, 300])
def test_vggml_shapes_and_self_fusion(no_vgg, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = create_method("vggml", device="cpu")
    a = smooth_image((size, size), 4)
    fused = m.fuse(a, a)
    # Same input twice: base + max over levels of (w·d + (1 − w)·d) = the input, to uint8 rounding,
    # except the edge a coarse level does not cover (weight 0 there), where the detail is max(d, 0).
    inner = (slice(0, 8 * (size // 8)),) * 2
    assert fused.shape == (size, size)
    assert np.abs(fused[inner] - a[inner]).max() <= 0.5 / 255 + 1e-6


# ============================================================================ registry and shipped weights

@pytest.mark.parametrize("name", ["cnn", "densefuse", "vggml"])
def test_registered_as_cnn(name):
    info = get_method_info(name)
    assert info.kind == "cnn" and info.role == "fusion"


@pytest.mark.parametrize("cls", [CNNFusion, DenseFuse])
def test_shipped_weights_load_and_fuse_a_phantom_pair(cls):
    path = _deep.WEIGHTS_DIR / f"{cls.weights_name}.pt"
    if not path.is_file():
        pytest.skip(f"{path.name} not shipped")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["weights"] == "retrained-toolkit"
    if cls is not CNNFusion:
        assert meta["beats_random"]
        for metric in ("ssim", "qabf"):
            assert meta["eval_trained"][metric] > meta["eval_random"][metric]
    else:
        # Shipped although it does not beat random weights on PAT/MRI: the pyramid rule takes the
        # weighted average only where the sources match (M >= 0.6, under 3 % of coefficients), so
        # the weight map barely reaches the output (README). What the network learns is tested below.
        assert abs(meta["eval_trained"]["qabf"] - meta["eval_random"]["qabf"]) < 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = cls(device="cpu")
    assert m.config()["weights"].startswith("retrained-toolkit")
    from fusionbench.data import load_dataset

    case = load_dataset("phantom:n=1,size=64", "test")[0]
    fused = m.fuse(case.pat, case.mri)
    assert fused.shape == case.pat.shape and np.isfinite(fused).all() and fused.std() > 0


def test_shipped_cnn_tells_the_sharp_patch_from_the_blurred_one():
    # The focus classifier on held-out data (phantom test pairs, not in its training set):
    # Liu 2017's blur pairs. Measured: 100 % shipped, 48 % random (256 pairs).
    path = _deep.WEIGHTS_DIR / "cnn.pt"
    if not path.is_file():
        pytest.skip("cnn.pt not shipped")
    from baselines.fusion.cnn import blur_pairs
    from fusionbench.data import load_dataset

    data = _deep.TrainingData(load_dataset("phantom:n=4", "test", jobs=1), natural=False)
    rng = np.random.default_rng(123)
    a, b, labels = blur_pairs(data.sample_singles(rng, 256, 48), rng)
    accuracy = {}
    for weights in ("shipped", "random"):
        net = CNNFusion(weights=weights, device="cpu").net
        with torch.no_grad():
            predicted = net(a, b).flatten(1).argmax(1)
        accuracy[weights] = float((predicted == labels).float().mean())
    assert accuracy["shipped"] > 0.9 and accuracy["random"] < 0.7, accuracy
