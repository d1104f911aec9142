import numpy as np
import pytest
import torch
from skimage import data, transform

from baselines.registration.mi_bspline import MIBSpline, transform_to_flow
from baselines.registration.regions import body_region
from baselines.registration.voxelmorph import VoxelMorph, VxmDense, expected_vxm_parameters
from fusionbench.methods import create_method, list_methods
from fusionbench.nn import parameter_count
from fusionbench.warp import warp


@pytest.fixture(scope="module")
def camera128():
    return transform.resize(data.camera().astype(np.float64) / 255, (128, 128), anti_aliasing=True).astype(np.float32)


def _translated(img, dr, dc):
    flow_true = np.zeros((2, *img.shape), np.float32)
    flow_true[0], flow_true[1] = dr, dc
    return warp(img, -flow_true), flow_true  # warp(moving, flow_true) == img in the interior


def test_registration_methods_are_registered():
    names = list_methods(role="registration")
    assert {"identity", "mi-bspline", "voxelmorph"} <= set(names)


def test_sitk_transform_to_flow_channel_order():
    import SimpleITK as sitk

    t = sitk.TranslationTransform(2, (3.0, -1.0))  # (x, y) = (columns, rows)
    flow = transform_to_flow(t, (6, 5))
    assert flow.shape == (2, 6, 5)
    assert np.allclose(flow[0], -1.0) and np.allclose(flow[1], 3.0)


def test_mi_bspline_recovers_translation_within_half_pixel(camera128):
    # Same modality: no PAT-speckle smoothing (smoothing one image only biases MI between equals).
    moving, flow_true = _translated(camera128, 2.5, -3.0)
    warped, flow = create_method("mi-bspline", moving_sigma=0).register(moving, camera128)
    inner = (slice(None), slice(20, -20), slice(20, -20))
    assert np.abs(flow[inner] - flow_true[inner]).max() < 0.5
    ideal = warp(moving, flow_true)  # same interpolation blur as the recovered warp
    assert np.abs(warped[20:-20, 20:-20] - ideal[20:-20, 20:-20]).mean() < 0.005


def test_mi_bspline_is_repeatable_bit_for_bit(camera128):
    # fixed sampling seed and one thread everywhere (ITK's global default included, which the
    # pyramid and the metric use): the same flow whatever ran before in the process, so results
    # do not depend on the executor or the order of the cases
    import SimpleITK as sitk

    moving, _ = _translated(camera128, 1.0, 1.0)
    other, _ = _translated(camera128, -2.0, 0.5)
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    try:
        a = MIBSpline().register(moving, camera128)[1]
        MIBSpline().register(other, camera128)
        b = MIBSpline().register(moving, camera128)[1]
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 2  # restored
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    np.testing.assert_array_equal(a, b)


def test_voxelmorph_parameter_count_matches_reference_architecture():
    # 2-D VxmDense, enc [16,32,32,32], dec [32,32,32,32], final [32,16,16], flow head 2 channels
    assert expected_vxm_parameters() == 109170
    assert parameter_count(VxmDense()) == 109170


@pytest.mark.parametrize("size", [256, 300])
def test_voxelmorph_shapes(size):
    net = VxmDense()
    x = torch.rand(1, 1, size, size)
    warped, flow = net(x, x)
    assert warped.shape == (1, 1, size, size) and flow.shape == (1, 2, size, size)


def test_untrained_voxelmorph_is_near_identity():
    # the flow head is initialised N(0, 1e-5): an untrained network barely moves the image
    x = torch.rand(1, 1, 64, 64)
    _, flow = VxmDense()(x, torch.rand(1, 1, 64, 64))
    assert flow.abs().max() < 1e-2


def test_body_region_is_the_dilated_body():
    img = np.zeros((64, 64), np.float32)
    rr, cc = np.ogrid[:64, :64]
    disk = (rr - 32) ** 2 + (cc - 32) ** 2 <= 10 ** 2
    img[disk] = 0.8
    region = body_region(img, margin=3)
    assert region[disk].all()
    # the 3-pixel dilation (cross-shaped structuring element, iterated) reaches radius 13 on the axes
    assert region[32, 32 + 13] and not region[32, 32 + 14]
    assert body_region(np.zeros((8, 8), np.float32)).all()  # constant image: everything


@pytest.mark.slow
def test_voxelmorph_learns_to_read_a_translation_from_content(tmp_path):
    # Same-modality pairs (NCC) of smooth textures shifted by random sub-pixel translations; the
    # network has to read each shift from the content, so it is scored on 16 textures and shifts
    # it never saw. 32² images with texture scale and shifts (up to 1.25 px per axis) half those
    # of the 64² version this test had: the same problem at a quarter of the cost per step, so
    # "within a quarter pixel" here is "within half a pixel" there. 256 training pairs generalise
    # sooner than a few dozen. Mean endpoint error, unregistered 0.91 px; learned (seed 0) 0.70 px
    # after 500 steps, 0.20 after 1500, 0.14 after 2000 (0.13 with two threads). When the network
    # starts to read the shift varies by a few hundred steps: with seeds 1, 2, 3 it is 0.37, 0.26,
    # 0.23 px after 1500 steps and 0.23, 0.22, 0.19 px after 2000, hence 2000.
    from scipy import ndimage

    from fusionbench.data import Case

    rng = np.random.default_rng(0)

    def texture():
        t = ndimage.gaussian_filter(rng.random((32, 32)), 1.25)
        return ((t - t.min()) / (t.max() - t.min())).astype(np.float32)

    def pair():
        img = texture()
        shift = rng.uniform(-1.25, 1.25, 2)
        return _translated(img, *shift)[0], img, shift

    cases = [Case(id=f"t{i}", pat=moved, mri=img) for i, (moved, img, _) in enumerate(pair() for _ in range(256))]
    held_out = [pair() for _ in range(16)]
    vm = VoxelMorph(loss="ncc", size=32, steps=2000, batch=4, lr=1e-3, smooth=0.1, moving_sigma=0, weights=None,
                    device="cpu")
    vm.fit(cases, tmp_path)
    inner = (slice(None), slice(8, 24), slice(8, 24))

    def error(flow, shift):  # mean endpoint error inside the inner 16²
        return float(np.hypot(*(flow[inner] - shift[:, None, None])).mean())

    identity = np.mean([error(np.zeros((2, 32, 32), np.float32), shift) for _, _, shift in held_out])
    learned = np.mean([error(vm.predict_flow(moved, img), shift) for moved, img, shift in held_out])
    assert identity > 0.6
    assert learned < 0.25


def test_mi_bspline_recovers_a_phantom_deformation_between_mri_images():
    # Mono-modal: the phantom's MRI moved into the PAT frame by the true (affine + smooth
    # non-rigid) deformation, registered back to the MRI.
    from fusionbench.data.datasets import load_dataset
    from fusionbench.metrics.registration import endpoint_error

    case = load_dataset("phantom:n=1", "test", jobs=1)[0]
    moving = warp(case.mri, case.meta["flow_mri_to_pat"])
    body = case.labels_mri > 0
    before = endpoint_error(np.zeros_like(case.flow_true), case.flow_true, mask=body)["mean"]
    _, flow = MIBSpline(moving_sigma=0).register(moving, case.mri)
    after = endpoint_error(flow, case.flow_true, mask=body)["mean"]
    assert before > 1.5 and after < 0.3 * before


@pytest.mark.slow
def test_mi_bspline_reduces_the_endpoint_error_of_moderate_phantom_pairs():
    # The cross-modal claim of Table 1 on ground truth: PAT→MRI on the first 16 test pairs
    # (moderate misalignment, seed 0) of phantom 1.2. Measured: 2.94 px unregistered, 2.18 px
    # after MI, 14 of the 16 pairs improved. On phantom 2.0, whose PAT carries limited-view
    # artefacts as real PAT does, it does not help (2.77 -> 2.79 px; docs/baselines.md).
    from fusionbench.data.datasets import load_dataset
    from fusionbench.metrics.registration import endpoint_error

    cases = load_dataset("phantom:version=1.2,n=16", "test", jobs=1)
    method = MIBSpline()
    before, after = [], []
    for case in cases:
        body = case.labels_mri > 0
        before.append(endpoint_error(np.zeros_like(case.flow_true), case.flow_true, mask=body)["mean"])
        after.append(endpoint_error(method.register(case.pat, case.mri)[1], case.flow_true, mask=body)["mean"])
    assert np.mean(after) < 0.85 * np.mean(before)
    assert sum(a < b for a, b in zip(after, before)) >= 11


def test_shipped_voxelmorph_reduces_the_endpoint_error_of_moderate_phantom_pairs():
    # The shipped weights (trained on phantom 2.0's train split) on the 48 test pairs, moderate
    # misalignment, seed 0; CPU inference is deterministic. Measured (main job): identity 2.76 px,
    # voxelmorph 2.24 px; p2m+vm (2.91 px) does not improve the input and is not asserted
    # (docs/results.md, Registration).
    from fusionbench.data.datasets import load_dataset
    from fusionbench.metrics.registration import endpoint_error

    cases = load_dataset("phantom", "test")
    method = create_method("voxelmorph", device="cpu")
    before, after = [], []
    for case in cases:
        body = case.labels_mri > 0
        before.append(endpoint_error(np.zeros_like(case.flow_true), case.flow_true, mask=body)["mean"])
        after.append(endpoint_error(method.register(case.pat, case.mri)[1], case.flow_true, mask=body)["mean"])
    assert np.mean(after) < np.mean(before) - 0.4
