import numpy as np
import pytest

from fusionbench.metrics import METRICS, SUITE_COLUMNS, fusion_suite, get_metric
from fusionbench.results import higher_is_better


@pytest.fixture(scope="module")
def triplet():
    rng = np.random.default_rng(3)
    from scipy.ndimage import gaussian_filter

    a = np.clip(gaussian_filter(rng.random((40, 48)), 2) * 2 - 0.5, 0, 1)
    b = np.clip(gaussian_filter(rng.random((40, 48)), 3) * 2 - 0.5, 0, 1)
    return a, b, 0.5 * (a + b)


def test_every_fusion_column_is_in_the_table_and_agrees_with_the_suite(triplet):
    a, b, f = triplet
    suite = fusion_suite(a, b, f)
    assert tuple(suite) == SUITE_COLUMNS
    for name in SUITE_COLUMNS:
        info = get_metric(name, "fusion")
        assert info.function(a, b, f) == pytest.approx(suite[name], rel=1e-9), name


def test_same_name_in_two_groups_means_two_quantities(triplet):
    a, b, _ = triplet
    fusion_mi, reg_mi = get_metric("MI", "fusion"), get_metric("MI", "registration")
    assert fusion_mi.function is not reg_mi.function
    # fusion MI of (a, a, a) is 2 * entropy in bits; registration MI(a, a) is the entropy in nats
    q = np.round(a * 255) / 255
    assert fusion_mi.function(q, q, q) == pytest.approx(2 * reg_mi.function(q, q) / np.log(2), rel=1e-6)


@pytest.mark.parametrize("key", sorted(METRICS))
def test_table_directions_drive_the_ranking(key):
    info = METRICS[key]
    assert key == f"{info.group}.{info.name}"
    assert info.reference and info.range
    assert higher_is_better(info.name, info.group) is info.higher_is_better


def test_lower_is_better_set_is_exactly_the_errors_and_distances():
    lower = {k for k, v in METRICS.items() if not v.higher_is_better}
    assert lower == {"registration.EPE_mean", "registration.EPE_p95", "registration.Folding",
                     "segmentation.Hausdorff", "segmentation.HD95", "segmentation.MSD"}


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(KeyError, match="known: registration.MI"):
        get_metric("XYZ", "registration")
