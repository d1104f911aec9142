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
    assert m.config()["weights"] == "random (seed 0)" and m.provenance == {}


def test_fit_goes_through_the_weights_protocol_and_is_cached(tiny_cases, tmp_path, monkeypatch):
    from fusionbench.weights import data_fingerprint, prepare_weights

    kw = dict(weights="random", device="cpu", steps=2, batch=2, patch=32)
    m = DenseFuse(**kw)
    assert prepare_weights("densefuse", m, tiny_cases, cache_dir=tmp_path, allow_fit=True,
                           data="two tiny pairs") == "fitted"
    record = m.provenance
    assert record["metrics"]["steps"] == 2 and record["train_config"]["steps"] == 2
    assert record["train_config"]["version"] == DenseFuse.version
    assert record["data"]["fingerprint"] == data_fingerprint(tiny_cases)
    assert record["metrics"]["parameters"] == 74_193 and len(record["metrics"]["loss_curve_deciles"]) == 2
    folder = next(tmp_path.glob("densefuse/*/weights"))
    assert sorted(p.name for p in folder.iterdir()) == ["provenance.json", "weights.pt"]
    assert (folder.parent / "work" / "train.ckpt").is_file()  # what an interrupted fit resumes from
    assert m.config()["weights"] == f"trained on two tiny pairs [{record['weights_sha256'][:8]}]"
    trained = {k: v.clone() for k, v in m.net.state_dict().items()}

    again = DenseFuse(**kw)
    monkeypatch.setattr(DenseFuse, "train", lambda *a, **k: pytest.fail("cached weights must not train"))
    assert prepare_weights("densefuse", again, tiny_cases, cache_dir=tmp_path) == "cached"
    assert all(torch.equal(trained[k], v) for k, v in again.net.state_dict().items())
    other = [Case(id="x", pat=tiny_cases[0].mri, mri=tiny_cases[0].pat)]
    assert prepare_weights("densefuse", DenseFuse(**kw), other, cache_dir=tmp_path) == "untrained"
    monkeypatch.setattr(DenseFuse, "version", "bumped")  # new code: the cached weights are stale
    assert prepare_weights("densefuse", DenseFuse(**kw), tiny_cases, cache_dir=tmp_path) == "untrained"


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


def test_half_weights_load_as_float32_and_a_folder_of_another_network_is_refused(tiny_cases, tmp_path):
    from fusionbench.weights import PROVENANCE_FILE, provenance_record

    m = DenseFuse(weights="random", device="cpu")
    m.save_weights(tmp_path, half=True)
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values())
    record = provenance_record("densefuse", m, "f" * 16, data="two test pairs", folder=tmp_path)
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps(record))
    user = DenseFuse(weights=str(tmp_path), device="cpu")
    assert user.config()["weights"] == f"user-file ({tmp_path.name})"
    assert all(p.dtype == torch.float32 for p in user.net.parameters())
    expected = {k: v.float() for k, v in state.items()}
    assert all(torch.equal(expected[k], v) for k, v in user.net.state_dict().items())
    with pytest.raises(ValueError, match="do not fit"):
        CNNFusion(weights=str(tmp_path), device="cpu")

# ============================================================================ registry and shipped weights

@pytest.mark.parametrize("name", ["cnn", "densefuse", "vggml"])
def test_registered_as_cnn(name):
    info = get_method_info(name)
    assert info.kind == "cnn" and info.role == "fusion"


@pytest.mark.parametrize("cls", [CNNFusion, DenseFuse])
def test_shipped_weights_load_and_fuse_a_phantom_pair(cls):
    from fusionbench.data import load_dataset
    from fusionbench.metrics import fusion as fm

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = cls(device="cpu")
    assert m.config()["weights"].startswith("trained on phantom") and "train split" in m.config()["weights"]
    cases = load_dataset("phantom:n=1,size=128", "test")[:2]
    random = cls(device="cpu", weights="random")
    scores = {}
    for name, method in (("shipped", m), ("random", random)):
        fused = [method.fuse(c.pat, c.mri) for c in cases]
        assert all(f.shape == c.pat.shape and np.isfinite(f).all() for f, c in zip(fused, cases))
        assert name == "random" or all(f.std() > 0 for f in fused)
        scores[name] = {k: np.mean([getattr(fm, k)(c.pat, c.mri, f) for f, c in zip(fused, cases)])
                        for k in ("ssim", "qabf")}
    if cls is DenseFuse:
        for k in ("ssim", "qabf"):
            assert scores["shipped"][k] > scores["random"][k] + 0.05, (k, scores)
    else:
        # Qabf hardly depends on CNN's weights: the pyramid rule takes the weighted average only
        # where the sources match (M >= 0.6, a few % of coefficients), so the weight map barely
        # reaches the edges Qabf counts (48 test pairs: 0.637 trained vs 0.634 random, while SSIM
        # gains 0.80 vs 0.67; docs/results.md). What the network learns is tested below.
        assert abs(scores["shipped"]["qabf"] - scores["random"]["qabf"]) < 0.01


def test_shipped_cnn_tells_the_sharp_patch_from_the_blurred_one():
    # The focus classifier on held-out data (phantom test pairs, not in its training set):
    # Liu 2017's blur pairs. Measured: 100 % shipped, 48 % random (256 pairs).
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
