import numpy as np
import pytest
import torch

from fusionbench.nn import SpatialTransformer, VecInt, parameter_count, resolve_device, to_tensor, warp_torch
from fusionbench.warp import warp


def test_warp_torch_matches_numpy_warp_on_random_field():
    rng = np.random.default_rng(0)
    img = rng.random((20, 30)).astype(np.float32)
    flow = (rng.normal(size=(2, 20, 30)) * 3).astype(np.float32)
    expected = warp(img, flow)
    got = warp_torch(torch.from_numpy(img)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_warp_torch_sign_convention_column_shift():
    img = torch.arange(40, dtype=torch.float32).reshape(1, 1, 5, 8)
    flow = torch.zeros(1, 2, 5, 8)
    flow[:, 1] = 2.0  # sample two columns to the right
    out = warp_torch(img, flow)
    assert torch.equal(out[0, 0, :, :6], img[0, 0, :, 2:])
    assert torch.equal(out[0, 0, :, 6:], img[0, 0, :, 7:].expand(5, 2))  # border padding


def test_warp_torch_rejects_bad_flow_shape():
    with pytest.raises(ValueError, match="does not fit"):
        warp_torch(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))


def test_spatial_transformer_identity():
    img = torch.rand(2, 1, 9, 7)
    assert torch.allclose(SpatialTransformer()(img, torch.zeros(2, 2, 9, 7)), img, atol=1e-6)


def test_vecint_of_constant_velocity_is_the_translation():
    # exp of a constant velocity field is the translation by that vector (interior, away from borders)
    v = torch.zeros(1, 2, 32, 32)
    v[:, 0], v[:, 1] = 1.5, -2.0
    disp = VecInt(7)(v)
    assert torch.allclose(disp[..., 8:-8, 8:-8], v[..., 8:-8, 8:-8], atol=1e-5)


def test_vecint_inverse_of_negated_velocity():
    # exp(v) composed with exp(-v) is the identity, up to interpolation error
    rng = np.random.default_rng(1)
    from scipy.ndimage import gaussian_filter

    v = np.stack([gaussian_filter(rng.normal(size=(48, 48)), 6) for _ in range(2)])
    v = torch.from_numpy(3 * v / np.abs(v).max()).float()[None]
    fwd, inv = VecInt(7)(v), VecInt(7)(-v)
    composed = inv + warp_torch(fwd, inv)  # field of warping by fwd and then by inv
    assert composed[..., 8:-8, 8:-8].abs().max() < 0.05


def test_resolve_device_auto_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


def test_to_tensor_is_a_float32_batch_of_one():
    img = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # not contiguous, not float32
    t = to_tensor(img)
    assert t.shape == (1, 1, 3, 2) and t.dtype == torch.float32 and t.device.type == "cpu"
    np.testing.assert_array_equal(t[0, 0].numpy(), img)


def test_parameter_count_of_a_module_and_of_parameters():
    conv = torch.nn.Conv2d(3, 8, 3)  # 8·3·3·3 weights + 8 biases, trainable or not
    assert parameter_count(conv) == 224
    conv.bias.requires_grad_(False)
    assert parameter_count(conv) == 224
    assert parameter_count([conv.weight]) == 216


def test_resolve_device_names_a_bad_device():
    import torch

    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            resolve_device("cuda:0")


def test_state_digest_names_the_function_not_the_storage():
    from fusionbench.nn.training import state_digest

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    b = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    b.load_state_dict(a.state_dict())
    assert state_digest(a) == state_digest(b) and len(state_digest(a)) == 16
    # values a float16 file holds exactly give the same digest after a float16 round trip
    a.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in a.state_dict().items()})
    b.load_state_dict({k: (v.half() if v.is_floating_point() else v) for k, v in a.state_dict().items()})
    assert state_digest(a) == state_digest(b)
    with torch.no_grad():  # one changed weight, or a changed buffer, changes it
        b[0].weight[0, 0, 0, 0] += 1e-3
    assert state_digest(a) != state_digest(b)
    b.load_state_dict(a.state_dict())
    b[1].running_mean += 1.0
    assert state_digest(a) != state_digest(b)
