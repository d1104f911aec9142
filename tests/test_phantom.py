"""Tests of the built-in PAT/MRI phantom (fusionbench.data.phantom) and the on-disk cache.

The tests of rendered values (contrast tables, water level, complementarity) pin the 1.2 look,
whose tables they derive from; 2.0, the default, has its own in test_phantom_v2.py.
"""
from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.special import i0

from fusionbench.data import ORGAN_IDS, Case, read_image
from fusionbench.data.phantom.pat_physics import acquire_and_reconstruct, fluence_diffusion, fluence_fast
from fusionbench.data.cache import NpzCache, cache_key, default_cache_dir
from fusionbench.data.phantom import (
    DEFAULT_MRI_T2,
    GENERATOR_VERSION,
    LEVELS,
    PhantomConfig,
    display,
    generate_case,
    load_phantom,
    split_animals,
    write_phantom_folder,
)
from fusionbench.metrics.registration import mi
from fusionbench.warp import warp

SMALL = PhantomConfig(size=96, n_train_animals=2, n_val_animals=1, n_test_animals=1, version="1.2")


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _mean_label_dice(x, y, min_pixels=40):
    ids = [k for k in range(1, 12) if (y == k).sum() >= min_pixels]
    return float(np.mean([_dice(x == k, y == k) for k in ids]))


@pytest.fixture(scope="module")
def moderate_cases():
    cfg = PhantomConfig(size=256, misalign="moderate")
    return [generate_case(cfg, 0, "thorax"), generate_case(cfg, 1, "lower_abdomen")]


# -- determinism and basic contract ------------------------------------------------------------

def test_same_seed_identical_bytes_and_other_seed_differs():
    a = generate_case(SMALL, 3, "upper_abdomen")
    b = generate_case(SMALL, 3, "upper_abdomen")
    for key in ("pat", "mri", "labels_mri", "labels_pat", "flow_true"):
        assert getattr(a, key).tobytes() == getattr(b, key).tobytes(), key
    c = generate_case(dataclasses.replace(SMALL, seed=1), 3, "upper_abdomen")
    assert not np.array_equal(a.labels_mri, c.labels_mri)
    assert not np.array_equal(a.pat, c.pat)


def test_case_contract():
    case = generate_case(SMALL, 0, "thorax")
    assert isinstance(case, Case) and case.id == "a000_thorax"
    assert case.pat.dtype == np.float32 and case.mri.dtype == np.float32 and case.shape == (96, 96)
    assert case.flow_true.shape == (2, 96, 96) and case.labels_mri.dtype == np.uint8
    m = case.meta
    assert (m["level"], m["animal"], m["split"], m["generator_version"]) == ("thorax", 0, "test", GENERATOR_VERSION)
    assert m["px_mm"] == pytest.approx(40.0 / 96)
    assert m["pat_zero"] == 0.5 and m["pat_scale"] > 0 and m["pat_saturated"] < 0.01
    # thorax has lungs, heart, spine, vessels and body; no brain
    present = set(np.unique(case.labels_mri))
    assert {1, 3, 4, 9, 11} <= present and 2 not in present


def test_pat_is_signed_with_water_at_mid_gray():
    case = generate_case(SMALL, 0, "lower_abdomen")
    water = ndi.binary_erosion(case.labels_pat == 0, iterations=4)
    assert abs(float(np.median(case.pat[water])) - 0.5) < 0.01
    signed = (case.pat - 0.5) * 2 * case.meta["pat_scale"]
    assert signed.min() < -0.1 * signed.max()  # genuinely bipolar
    # the skin is a bright rim: the brightest values lie near the body outline
    rim = (case.labels_pat > 0) & ~ndi.binary_erosion(case.labels_pat > 0, iterations=3)
    assert case.pat[rim].mean() > case.pat[ndi.binary_erosion(case.labels_pat > 0, iterations=12)].mean()


def test_every_level_has_its_organs():
    expected = {"head": {"brain"}, "thorax": {"lung", "heart", "spine"},
                "upper_abdomen": {"liver", "spleen", "intestines", "spine"},
                "lower_abdomen": {"kidneys", "intestines", "spine"}}
    for level in LEVELS:
        labels = generate_case(SMALL, 5, level).labels_mri
        assert {ORGAN_IDS[o] for o in expected[level]} <= set(np.unique(labels)), level


def test_tumour_only_with_tumour_prob():
    no = dataclasses.replace(SMALL, tumour_prob=0.0)
    yes = dataclasses.replace(SMALL, tumour_prob=1.0)
    assert not (generate_case(no, 0, "lower_abdomen").labels_mri == ORGAN_IDS["tumour"]).any()
    case = generate_case(yes, 0, "lower_abdomen")
    assert (case.labels_mri == ORGAN_IDS["tumour"]).sum() > 20 and case.meta["has_tumour"]
    assert not (generate_case(yes, 0, "head").labels_mri == ORGAN_IDS["tumour"]).any()


# -- contrast tables ---------------------------------------------------------------------------

def test_mri_organ_means_follow_the_contrast_table():
    clean = dataclasses.replace(SMALL, size=128, mri_noise=0.0, mri_bias=0.0, mri_texture=0.0)
    table = dict(DEFAULT_MRI_T2)
    for level in ("head", "thorax", "lower_abdomen"):
        case = generate_case(clean, 2, level)
        for k in np.unique(case.labels_mri):
            core = ndi.binary_erosion(case.labels_mri == k, iterations=3)
            if k == ORGAN_IDS["body"]:  # the body label holds the bright subcutaneous fat rim
                core = ndi.binary_erosion(case.labels_mri > 0, iterations=8) & (case.labels_mri == k)
            if core.sum() < 10:
                continue
            name = [n for n, i in ORGAN_IDS.items() if i == k][0]
            assert np.median(case.mri[core]) == pytest.approx(table[name], abs=0.01), (level, name)


def test_mri_organ_ranking_survives_noise_and_bias():
    case = generate_case(dataclasses.replace(SMALL, size=128), 2, "lower_abdomen")
    means = {k: case.mri[ndi.binary_erosion(case.labels_mri == k, iterations=2)].mean()
             for k in (ORGAN_IDS["intestines"], ORGAN_IDS["kidneys"], ORGAN_IDS["spine"])}
    assert means[ORGAN_IDS["intestines"]] > means[ORGAN_IDS["spine"]] + 0.3
    assert means[ORGAN_IDS["kidneys"]] > means[ORGAN_IDS["spine"]] + 0.3


def test_complementarity_of_the_tables_in_the_rendered_physics():
    """Spleen: faint in MRI, strong in PAT's initial pressure; kidneys: the reverse."""
    cfg = dataclasses.replace(SMALL, size=128, keep_physics=True, misalign="none", mri_noise=0.0, mri_bias=0.0)
    case = generate_case(cfg, 0, "lower_abdomen")
    up = generate_case(cfg, 0, "upper_abdomen")
    p0 = up.meta["p0"]
    lab = up.labels_pat
    muscle = ndi.binary_erosion(lab == ORGAN_IDS["body"], iterations=2)
    spleen = lab == ORGAN_IDS["spleen"]
    assert p0[spleen].mean() > 3 * p0[muscle].mean()
    assert abs(up.mri[spleen].mean() / up.mri[muscle].mean() - 1) < 0.35
    kid = ndi.binary_erosion(case.labels_mri == ORGAN_IDS["kidneys"], iterations=1)
    muscle = ndi.binary_erosion(case.labels_mri == ORGAN_IDS["body"], iterations=2)
    assert case.mri[kid].mean() > 1.8 * case.mri[muscle].mean()
    assert case.meta["p0"][kid].mean() < 1.6 * case.meta["p0"][muscle].mean()


def test_complementarity_survives_reconstruction_and_mri_rendering():
    """On the final images: spleen and tumour stand out in PAT, not in MRI; kidneys the reverse.

    PAT is signed and band-limited, so an organ shows as signal energy (mean |signed|) rather than
    as a mean level; it is compared with the deep muscle (body label, 4 px under the skin). MRI
    contrast is ``|mean(organ) - median(muscle)| / median(muscle)``. Averaged over two animals and
    both abdominal levels (128², with tumour, no misalignment).
    """
    cfg = dataclasses.replace(SMALL, size=128, tumour_prob=1.0, misalign="none")
    cases = [generate_case(cfg, a, lv) for a in (0, 1) for lv in ("upper_abdomen", "lower_abdomen")]

    def pat_energy(case, organ):
        lab, s = case.labels_pat, np.abs(case.pat - 0.5)
        muscle = ndi.binary_erosion(lab > 0, iterations=4) & (lab == ORGAN_IDS["body"])
        return s[lab == ORGAN_IDS[organ]].mean() / s[muscle].mean()

    def mri_contrast(case, organ):
        lab = case.labels_mri
        muscle = np.median(case.mri[ndi.binary_erosion(lab > 0, iterations=4) & (lab == ORGAN_IDS["body"])])
        return abs(case.mri[lab == ORGAN_IDS[organ]].mean() - muscle) / muscle

    def mean_over_cases(fn, organ):
        return np.mean([fn(c, organ) for c in cases if (c.labels_mri == ORGAN_IDS[organ]).any()])

    pat = {o: mean_over_cases(pat_energy, o) for o in ("spleen", "tumour", "kidneys")}
    mri = {o: mean_over_cases(mri_contrast, o) for o in ("spleen", "tumour", "kidneys")}
    for organ in ("spleen", "tumour"):
        assert pat[organ] > 1.8, (organ, pat)  # at least 80 % more signal than muscle
        assert pat[organ] > pat["kidneys"] + 0.6, (organ, pat)
        assert mri[organ] < 0.35, (organ, mri)  # within about a third of muscle
    assert pat["kidneys"] < 1.3, pat  # deep, little blood: close to muscle in PAT
    assert mri["kidneys"] > 0.8, mri  # fluid-rich: about twice as bright as muscle in T2w MRI


# -- misalignment -----------------------------------------------------------------------------

def test_flow_aligns_pat_labels_to_mri_labels(moderate_cases):
    for case in moderate_cases:
        before = _mean_label_dice(case.labels_pat, case.labels_mri)
        after = _mean_label_dice(warp(case.labels_pat, case.flow_true, order=0), case.labels_mri)
        assert before < 0.9, (case.id, before)
        assert after > 0.95, (case.id, after)
        # the images too: the warped PAT body matches the MRI body
        assert case.meta["max_disp_px"] == pytest.approx(6.0, abs=0.6)


@pytest.mark.parametrize("sos_error, aligned", [(0.0, True), (0.01, False)])
def test_pat_content_sits_where_the_ground_truth_says(sos_error, aligned):
    # Unmisaligned pairs: body-masked MI of the (speckle-smoothed) PAT against the MRI must peak at
    # zero shift, or no registration can be scored against flow_true. A 1 % speed-of-sound error
    # on the 270° arc moves edges towards the array (why it is off by default): the peak moves.
    cfg = PhantomConfig(misalign="none", pat_sos_error=sos_error)
    shifts = range(-3, 4)
    offsets = []
    for animal, level in ((0, "head"), (0, "thorax"), (1, "upper_abdomen"), (2, "thorax")):
        case = generate_case(cfg, animal, level)
        pat, body = ndi.gaussian_filter(case.pat, 2.0), ndi.binary_dilation(case.labels_mri > 0, iterations=8)
        scores = {(dr, dc): mi(np.roll(pat, (dr, dc), axis=(0, 1)), case.mri, bins=32, mask=body)
                  for dr in shifts for dc in shifts}
        offsets.append(np.hypot(*max(scores, key=scores.get)))
    if aligned:
        assert max(offsets) == 0.0, offsets
    else:
        assert np.mean(offsets) >= 1.0, offsets


def test_flows_are_invertible_without_folding(moderate_cases):
    for case in moderate_cases:
        for flow in (case.flow_true, case.meta["flow_mri_to_pat"]):
            d0r, d0c = np.gradient(flow[0])
            d1r, d1c = np.gradient(flow[1])
            jac = (1 + d0r) * (1 + d1c) - d0c * d1r
            assert jac.min() > 0.5
        # forward then inverse is the identity (to interpolation error) inside the body
        roundtrip = np.stack([warp(case.meta["flow_mri_to_pat"][i], case.flow_true) for i in range(2)])
        residual = np.hypot(*(case.flow_true + roundtrip))[case.labels_mri > 0]
        assert residual.max() < 0.25


@pytest.mark.parametrize("preset, peak", [("none", 0.0), ("mild", 2.0 * 96 / 256), ("severe", 12.0 * 96 / 256)])
def test_misalignment_presets_set_the_largest_displacement(preset, peak):
    case = generate_case(dataclasses.replace(SMALL, misalign=preset), 0, "thorax")
    body = ndi.binary_dilation(case.labels_mri > 0, iterations=3)
    assert np.hypot(*case.flow_true)[body].max() == pytest.approx(peak, abs=0.05 + 0.05 * peak)
    if preset == "none":
        assert not case.flow_true.any() and np.array_equal(case.labels_pat, case.labels_mri)


# -- splits and parameters ---------------------------------------------------------------------

def test_splits_are_disjoint_by_animal():
    cfg = PhantomConfig()
    ids = {s: set(split_animals(cfg, s)) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert len(ids["test"]) * 4 >= 48 and len(ids["train"]) * 4 >= 128
    # the test set does not depend on the size of the other splits
    assert split_animals(dataclasses.replace(cfg, n_train_animals=3), "test") == split_animals(cfg, "test")
    assert generate_case(SMALL, 1000, "head").meta["split"] == "train"
    assert generate_case(SMALL, 500, "head").meta["split"] == "val"


def test_from_params_parses_strings_and_scales_splits():
    cfg = PhantomConfig.from_params(n="48", size="300", misalign="severe", seed="7", fluence="fast",
                                    pat_mua='{"spleen": 0.2}', keep_physics="true", version="1.2")
    assert (cfg.n_test_animals, cfg.n_train_animals, cfg.n_val_animals) == (12, 40, 4)
    assert (cfg.size, cfg.misalign, cfg.seed, cfg.fluence, cfg.keep_physics) == (300, "severe", 7, "fast", True)
    assert dict(cfg.pat_mua)["spleen"] == 0.2 and dict(cfg.pat_mua)["liver"] == 0.06
    assert PhantomConfig.from_params(n=5).n_test_animals == 2
    assert PhantomConfig() == PhantomConfig.from_params(n=48)


@pytest.mark.parametrize("params, match", [
    (dict(misalign="huge"), "misalign"), (dict(size="abc"), "size"), (dict(colour=3), "unknown"),
    (dict(mri_t2={"bone": 0.1}), "unknown organ"), (dict(n=0), "n must"), (dict(fluence="mc"), "fluence"),
    (dict(n_test_animals=501), "n_test_animals"),
])
def test_bad_params_raise_clear_errors(params, match):
    with pytest.raises(ValueError, match=match):
        PhantomConfig.from_params(**params)


# -- physics known answers ---------------------------------------------------------------------

def test_diffusion_fluence_in_a_disc_matches_the_bessel_solution():
    n, px, radius, mua, mus = 161, 0.125, 9.0, 0.02, 1.0
    r = np.hypot(*np.meshgrid((np.arange(n) - n // 2) * px, (np.arange(n) - n // 2) * px, indexing="ij"))
    body = r < radius
    phi = fluence_diffusion(body, np.full((n, n), mua), px, mus)
    mu_eff = np.sqrt(3 * mua * (mua + mus))
    expected = i0(mu_eff * r) / i0(mu_eff * radius)
    inner = r < radius - 1.0
    assert np.abs(phi[inner] - expected[inner]).max() < 0.02
    assert phi[n // 2, n // 2] == pytest.approx(1 / i0(mu_eff * radius), rel=0.03)
    assert np.all(phi[~body] == 1.0)


def test_fast_fluence_is_exponential_in_depth():
    body = np.zeros((64, 64), bool)
    body[8:56, 8:56] = True
    phi = fluence_fast(body, np.full(body.shape, 0.05), 0.1, 1.0)
    mu_eff = np.sqrt(3 * 0.05 * 1.05)
    depth = ndi.distance_transform_edt(body) * 0.1
    np.testing.assert_allclose(phi, np.exp(-mu_eff * depth), rtol=1e-5)


def test_ring_reconstruction_puts_a_point_source_where_it_is():
    p0 = np.zeros((96, 96), np.float32)
    p0[30, 60] = 1.0
    img = acquire_and_reconstruct(p0, 40.0, np.random.default_rng(0), noise=0.0, sos_error=0.0)
    assert np.unravel_index(np.argmax(img), img.shape) == (30, 60)
    assert img.min() < 0  # band-limited detection gives negative side lobes


# -- cache, parallel generation, export ---------------------------------------------------------

def test_cache_roundtrip_and_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert cache_key("1", {"a": 1, "b": [1, 2]}) == cache_key("1", {"b": [1, 2], "a": 1})
    assert cache_key("1", {"a": 1}) != cache_key("2", {"a": 1}) != cache_key("1", {"a": 2})
    cache = NpzCache("t", "1", {"a": 1}, root=tmp_path)
    assert cache.load("x") is None
    cache.save("x", {"v": np.arange(3)}, {"k": "w"})
    arrays, meta = cache.load("x")
    assert arrays["v"].tolist() == [0, 1, 2] and meta == {"k": "w"}
    cache.path("x").write_bytes(b"garbage")
    assert cache.load("x") is None  # a broken entry is a miss, not a crash
    with pytest.raises(ValueError, match="invalid cache entry"):
        cache.path("../x")


def test_load_phantom_caches_and_parallel_equals_serial(tmp_path, monkeypatch):
    cfg = dataclasses.replace(SMALL, size=64, levels=("head", "thorax"), n_test_animals=2)
    serial = load_phantom("test", cfg, cache_dir=tmp_path / "a", jobs=1)
    parallel = load_phantom("test", cfg, cache_dir=tmp_path / "b", jobs=2)
    assert [c.id for c in serial] == ["a000_head", "a000_thorax", "a001_head", "a001_thorax"]
    for s, p in zip(serial, parallel):
        assert s.pat.tobytes() == p.pat.tobytes() and s.flow_true.tobytes() == p.flow_true.tobytes()
        assert np.array_equal(s.meta["flow_mri_to_pat"], p.meta["flow_mri_to_pat"])

    def boom(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr("fusionbench.data.phantom.cache.generate_case", boom)
    again = load_phantom("test", cfg, cache_dir=tmp_path / "a", jobs=1)
    assert again[1].mri.tobytes() == serial[1].mri.tobytes() and again[1].meta["level"] == "thorax"


def test_write_phantom_folder_layout(tmp_path):
    out = write_phantom_folder(tmp_path / "ph", n=3, size=64, misalign="mild", seed=2, cache_dir=tmp_path / "c",
                               jobs=1)
    with open(out / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and list(rows[0]) == ["id", "pat", "mri", "labels_mri", "labels_pat", "flow", "split"]
    cfg = PhantomConfig.from_params(n=3, size=64, misalign="mild", seed=2)
    case = generate_case(cfg, 0, rows[0]["id"].split("_", 1)[1])
    assert rows[0]["id"] == case.id and rows[0]["split"] == "test"
    assert np.abs(read_image(out / rows[0]["pat"]) - case.pat).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(read_image(out / rows[0]["labels_mri"], raw=True), case.labels_mri)
    assert np.array_equal(read_image(out / rows[0]["labels_pat"], raw=True), case.labels_pat)
    assert np.array_equal(np.load(out / rows[0]["flow"]), case.flow_true)
    import imageio.v3 as iio

    preview = iio.imread(out / "preview.png")
    assert preview.ndim == 3 and preview.shape[0] > 3 * 64


def test_display_keeps_zero_at_mid_gray_and_checks_input():
    pat = np.random.default_rng(0).uniform(0.45, 0.55, (32, 32)).astype(np.float32)
    pat[0, 0], pat[10, 10], pat[20, 20] = 0.5, 0.6, 0.4
    out = display(pat, percentile=100)  # |signed| 0.2 maps to full scale
    assert out[0, 0] == pytest.approx(0.5) and out[10, 10] == pytest.approx(1.0)
    assert out[20, 20] == pytest.approx(0.0, abs=1e-6)
    assert display(pat, "positive", percentile=100)[10, 10] == pytest.approx(1.0)
    assert display(pat, "positive")[20, 20] == 0.0  # negative lobes clipped
    assert display(pat, "abs", percentile=100)[20, 20] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="display mode"):
        display(pat, "log")
    with pytest.raises(ValueError, match="pat"):
        display(np.full((4, 4), 2.0))
