"""Phantom 2.0 (``version="2.0"``): determinism, ground truth, the organ contrast pattern, framing,
and version 1.2 staying reproducible by name."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from fusionbench.data import ORGAN_IDS
from fusionbench.data.datasets import dataset_fingerprint
from fusionbench.data.phantom import LEVELS, PhantomConfig, generate_case
from fusionbench.data.realism import image_stats
from fusionbench.warp import warp

V2 = PhantomConfig(version="2.0", size=96, n_train_animals=2, n_val_animals=1, n_test_animals=1)

#: Body width / frame width of the real slices, 10th-90th percentile over both real sets
#: (PAMRFuse v1's 36 registered pairs: 0.594-0.637; SFE-GCN's 990 train PAT: 0.620-0.834;
#: ``fusionbench phantom --realism``, docs/phantom.md).
REAL_BODY_WIDTH = (0.594, 0.834)


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_version_2_is_deterministic_and_differs_from_1_2():
    a, b = generate_case(V2, 3, "upper_abdomen"), generate_case(V2, 3, "upper_abdomen")
    for key in ("pat", "mri", "labels_mri", "labels_pat", "flow_true"):
        assert getattr(a, key).tobytes() == getattr(b, key).tobytes(), key
    old = generate_case(dataclasses.replace(V2, version="1.2", fov_mm=None, mri_t2=None, pat_mua=None,
                                            mri_noise=None, mri_texture=None, pat_noise=None, pat_texture=None,
                                            pat_band_mhz=None, pat_zero=None, pat_white=None), 3, "upper_abdomen")
    assert not np.array_equal(a.pat, old.pat) and a.meta["version"] == "2.0"
    assert (a.meta["pat_zero"], a.meta["pat_white"]) == (0.27, 0.8)


def test_version_1_2_keeps_its_fingerprints_and_parameters():
    # Values recorded before versions existed: weights trained on phantom 1.2 stay "made on these data".
    assert dataset_fingerprint("phantom:version=1.2") == "0b67c096515c6106"
    assert dataset_fingerprint("phantom:version=1.2,n=12,size=96") == "7ee8a4eb7b25a0ef"
    old = PhantomConfig(version="1.2")
    assert (old.fov_mm, old.pat_zero, old.pat_white, old.pat_band_mhz) == (40.0, 0.5, 1.0, (0.5, 6.0))
    assert "version" not in old.render_params() and PhantomConfig(version="2.0").render_params()["version"] == "2.0"
    assert dataset_fingerprint("phantom:version=2.0") != dataset_fingerprint("phantom:version=1.2")


def test_unknown_version_and_bad_gray_levels_are_refused():
    with pytest.raises(ValueError, match="version must be one of"):
        PhantomConfig(version="3.0")
    with pytest.raises(ValueError, match="pat_zero < pat_white"):
        PhantomConfig(version="2.0", pat_zero=0.8, pat_white=0.5)


def test_true_flow_aligns_the_labels():
    cfg = dataclasses.replace(V2, size=256, misalign="moderate")
    for animal, level in ((0, "thorax"), (1, "lower_abdomen")):
        case = generate_case(cfg, animal, level)
        ids = [k for k in np.unique(case.labels_mri) if k and (case.labels_mri == k).sum() >= 40]
        before = np.mean([_dice(case.labels_pat == k, case.labels_mri == k) for k in ids])
        moved = warp(case.labels_pat, case.flow_true, order=0)
        after = np.mean([_dice(moved == k, case.labels_mri == k) for k in ids])
        assert before < 0.9 and after >= 0.98, (case.id, before, after)


def test_organ_contrast_pattern_of_the_seed_papers_table_4():
    """Spleen and tumour stand out in PAT and barely in MRI; kidneys the reverse.

    PAT: mean |pat - pat_zero| of the organ over that of the deep body tissue (the signal energy
    of a signed, band-limited reconstruction). MRI: ``|mean(organ) - median(tissue)| / median``.
    Two animals, both abdominal levels, tumour forced, no misalignment, 128².
    """
    cfg = dataclasses.replace(V2, size=128, tumour_prob=1.0, misalign="none")
    cases = [generate_case(cfg, a, lv) for a in (0, 1) for lv in ("upper_abdomen", "lower_abdomen")]

    def pat_energy(case, organ):
        lab, s = case.labels_pat, np.abs(case.pat - case.meta["pat_zero"])
        tissue = ndi.binary_erosion(lab > 0, iterations=4) & (lab == ORGAN_IDS["body"])
        return s[lab == ORGAN_IDS[organ]].mean() / s[tissue].mean()

    def mri_contrast(case, organ):
        lab = case.labels_mri
        tissue = np.median(case.mri[ndi.binary_erosion(lab > 0, iterations=4) & (lab == ORGAN_IDS["body"])])
        return abs(case.mri[lab == ORGAN_IDS[organ]].mean() - tissue) / tissue

    def mean(fn, organ):
        return np.mean([fn(c, organ) for c in cases if (c.labels_mri == ORGAN_IDS[organ]).any()])

    pat = {o: mean(pat_energy, o) for o in ("spleen", "tumour", "kidneys")}
    mri = {o: mean(mri_contrast, o) for o in ("spleen", "tumour", "kidneys")}
    for organ in ("spleen", "tumour"):
        assert pat[organ] > 3.0 and pat[organ] > pat["kidneys"] + 2.0, (organ, pat)
        assert mri[organ] < 0.3 and mri[organ] < mri["kidneys"] - 0.25, (organ, mri)
    assert mri["kidneys"] > 0.5, mri


def test_pat_shows_organs_as_regions_and_water_at_its_gray_level():
    """Real MSOT shows liver and kidneys as bright regions, not only as edges (phantom 1.2 showed
    them as faint edges): the organ's core (4 % of the side inside its outline) is brighter than a
    band of body tissue just outside it. The water far from the body sits at ``pat_zero``."""
    cfg = dataclasses.replace(V2, size=128, misalign="none")
    for animal in (0, 1):
        for level, organ in (("upper_abdomen", "liver"), ("lower_abdomen", "kidneys")):
            case = generate_case(cfg, animal, level)
            lab = case.labels_pat
            org = lab == ORGAN_IDS[organ]
            core = ndi.binary_erosion(org, iterations=2)
            band = ndi.binary_dilation(org, iterations=4) & ~ndi.binary_dilation(org, iterations=2) & (lab == 1)
            assert np.median(case.pat[core]) > np.median(case.pat[band]) + 0.015, (case.id, organ)
            far = np.ones(lab.shape, bool)
            far[8:-8, 8:-8] = False  # water far from the body (near it lie the reconstruction's dark lobes)
            assert abs(float(np.median(case.pat[far])) - 0.27) < 0.01


def test_body_fills_the_frame_as_in_the_real_slices():
    cfg = dataclasses.replace(V2, size=128, misalign="none")
    widths = [image_stats(c.mri, c.labels_mri > 0).body_width
              for c in (generate_case(cfg, a, lv) for a in range(6) for lv in LEVELS)]
    lo, mid, hi = np.percentile(widths, [10, 50, 90])
    assert REAL_BODY_WIDTH[0] <= lo and hi <= REAL_BODY_WIDTH[1] and REAL_BODY_WIDTH[0] < mid < REAL_BODY_WIDTH[1]
    # phantom 1.2 did not (median 0.50): the reason for 2.0
    old = PhantomConfig(size=128, misalign="none", version="1.2")
    assert image_stats(generate_case(old, 0, "thorax").mri, generate_case(old, 0, "thorax").labels_mri > 0
                       ).body_width < REAL_BODY_WIDTH[0]
