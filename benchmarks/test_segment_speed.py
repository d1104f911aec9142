"""Speed of the segmentation tasks (pytest-benchmark; not a correctness suite)."""
import numpy as np
import pytest
from skimage.draw import ellipse

from segment.contour import optimal_closed_path, segment_body


@pytest.fixture(scope="module")
def body_image():
    img = np.full((256, 256), 0.02, np.float32)
    rr, cc = ellipse(128, 120, 80, 60, shape=img.shape, rotation=0.3)
    img[rr, cc] = 0.5
    rng = np.random.default_rng(0)
    return np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1).astype(np.float32)


def test_contour_256(benchmark, body_image):
    result = benchmark(segment_body, body_image)
    assert result.mask.any()


def test_closed_path_dp_360x128(benchmark):
    cost = np.random.default_rng(0).random((360, 128))
    path = benchmark(optimal_closed_path, cost, 2)
    assert path.shape == (360,)


def test_organ_quick_epoch(benchmark):
    import torch

    from segment.organs import train_unet

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [rng.random((96, 96)).astype(np.float32) for _ in range(16)]
    labels = [(rng.random((96, 96)) * 12).astype(np.int64) for _ in range(16)]
    benchmark.pedantic(train_unet, args=(images, labels), kwargs={"epochs": 1, "size": 96},
                       rounds=1, iterations=1)
