"""Dataset specs, the harness's loading entry point, and cache fingerprints."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fusionbench.data.datasets import dataset_fingerprint, load_dataset, parse_dataset_spec
from fusionbench.data.folder import SplitError, auto_split, load_folder


def _folder(root: Path, ids=("a", "b"), shape=(8, 6)) -> Path:
    for i, case_id in enumerate(ids):
        for j, role in enumerate(("pat", "mri")):
            (root / role).mkdir(parents=True, exist_ok=True)
            img = np.random.default_rng(10 * i + j).integers(0, 256, size=shape, dtype=np.uint8)
            iio.imwrite(root / role / f"{case_id}.png", img)
    return root


# --- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("phantom", ("phantom", {})),
    (" Phantom: ", ("phantom", {})),
    ("phantom:n=200,size=300,misalign=severe", ("phantom", {"n": 200, "size": 300, "misalign": "severe"})),
    ("phantom:tumour_prob=0.25,seed=-3,fluence=fast", ("phantom", {"tumour_prob": 0.25, "seed": -3, "fluence": "fast"})),
    ("folder:data/mice", ("folder", {"path": "data/mice"})),
    ("folder:/data/a,b:c", ("folder", {"path": "/data/a,b:c"})),
    ("folder:/d,resize=256x300,intensity=minmax,to_gray=true,slice_axis=0",
     ("folder", {"path": "/d", "resize": (256, 300), "intensity": "minmax", "to_gray": True, "slice_axis": 0})),
    ("folder:/d, resize = 64", ("folder", {"path": "/d", "resize": 64})),
    ("folder:/d,split=auto,misalign=severe,seed=2",
     ("folder", {"path": "/d", "split": "auto", "misalign": "severe", "seed": 2})),
    ("folder:/d,split=auto:0.6/0.2/0.2", ("folder", {"path": "/d", "split": "auto:0.6/0.2/0.2"})),
])
def test_parse_dataset_spec(spec, expected):
    assert parse_dataset_spec(spec) == expected


def test_parsed_values_are_typed():
    _, params = parse_dataset_spec("phantom:n=8,tumour_prob=0.5,misalign=none,flag=false")
    assert type(params["n"]) is int and type(params["tumour_prob"]) is float
    assert params["misalign"] == "none" and params["flag"] is False


@pytest.mark.parametrize("spec,message", [
    ("", "non-empty string"),
    ("phantoms", "unknown dataset kind 'phantoms'"),
    ("phantom:n", r"parameter 'n' is not key=value"),
    ("phantom:n=", r"parameter 'n=' is not key=value"),
    ("phantom:n=2,,size=3", "empty parameter"),
    ("phantom:n=2,n=3", "parameter 'n' given twice"),
    ("folder:", "missing path"),
    ("folder:,resize=32", "missing path"),
    ("folder:/d,resize=8,resize=9", "option 'resize' given twice"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_dataset_spec(spec)


def test_unknown_kind_that_is_a_folder_suggests_the_folder_spec(tmp_path):
    with pytest.raises(ValueError, match=rf"write folder:{tmp_path}"):
        parse_dataset_spec(str(tmp_path))


# --- loading -------------------------------------------------------------------------------------

def test_load_dataset_folder_matches_load_folder_and_applies_spec_options(tmp_path):
    root = _folder(tmp_path / "data")
    direct = load_folder(root, split="test")
    via_spec = load_dataset(f"folder:{root}")
    assert [c.id for c in via_spec] == [c.id for c in direct] == ["a", "b"]
    for x, y in zip(via_spec, direct):
        np.testing.assert_array_equal(x.pat, y.pat)
    small = load_dataset(f"folder:{root},resize=4x3")
    assert small[0].shape == (4, 3)
    assert load_dataset(f"folder:{root},resize=4x3", resize=(2, 2))[0].shape == (2, 2)  # keywords win
    with pytest.raises(SplitError, match="'split' column"):
        load_dataset(f"folder:{root}", split="train")
    with pytest.raises(TypeError, match="unknown folder option"):
        load_dataset(f"folder:{root}", jobs=2)
    with pytest.raises(ValueError, match=r"data,colour=1: dataset folder not found"):
        load_dataset(f"folder:{root},colour=1")  # not an option, so part of the path


def test_split_auto_follows_the_advice_of_the_split_error(tmp_path):
    ids = [f"p{i:02d}" for i in range(30)]
    root = _folder(tmp_path / "data", ids=ids)
    with pytest.raises(SplitError) as info:
        load_dataset(f"folder:{root}", split="train")
    advice = next(w for w in str(info.value).split() if w.startswith("folder:"))
    assert advice == f"folder:{root},split=auto"
    train = load_dataset(advice, split="train")
    assert [c.id for c in train] == [i for i in ids if auto_split(i) == "train"] and len(train) >= 15
    assert all(c.meta["split"] == "train" for c in train)
    custom = load_dataset(f"folder:{root},split=auto:0/0/1", split="test")
    assert len(custom) == 30
    assert load_dataset(f"folder:{root}", split="val", split_fractions=(0, 1, 0))[0].meta["split"] == "val"
    with pytest.raises(ValueError, match=r"split=sometimes: expected split=auto"):
        load_dataset(f"folder:{root},split=sometimes")


def test_misalign_options_are_checked(tmp_path):
    root = _folder(tmp_path / "data", shape=(40, 40))
    with pytest.raises(ValueError, match=r"seed=3 without misalign="):
        load_dataset(f"folder:{root},seed=3")
    with pytest.raises(ValueError, match=r"seed='x' must be an integer"):
        load_dataset(f"folder:{root},misalign=mild,seed=x")
    with pytest.raises(ValueError, match=r"misalign='huge': expected one of mild, moderate, severe"):
        load_dataset(f"folder:{root},misalign=huge")
    via_spec = load_dataset(f"folder:{root},misalign=Moderate,seed=3")
    direct = load_folder(root, misalign="moderate", misalign_seed=3)
    for x, y in zip(via_spec, direct):
        np.testing.assert_array_equal(x.flow_true, y.flow_true)
        np.testing.assert_array_equal(x.pat, y.pat)
    assert via_spec[0].meta["misalign"] == "moderate" and via_spec[0].meta["misalign_seed"] == 3
    assert load_dataset(f"folder:{root},misalign=moderate,seed=3", misalign_seed=4)[0].meta["misalign_seed"] == 4


def test_load_dataset_phantom_passes_the_config(monkeypatch):
    phantom = pytest.importorskip("fusionbench.data.phantom")
    seen = {}

    def fake_load_phantom(split, cfg=None, **kw):
        seen.update(split=split, cfg=cfg, kw=kw)
        return []

    monkeypatch.setattr(phantom, "load_phantom", fake_load_phantom)
    assert load_dataset("phantom:n=8,size=64,misalign=severe", split="val", jobs=1) == []
    assert seen["split"] == "val" and seen["kw"] == {"jobs": 1}
    assert seen["cfg"] == phantom.PhantomConfig.from_params(n=8, size=64, misalign="severe")
    assert seen["cfg"].size == 64 and seen["cfg"].misalign == "severe"


def test_load_dataset_phantom_for_real(tmp_path):
    pytest.importorskip("fusionbench.data.phantom")
    cases = load_dataset("phantom:n=4,size=64,misalign=mild", split="test", cache_dir=tmp_path, jobs=1)
    assert len(cases) >= 4
    assert all(c.shape == (64, 64) and c.flow_true is not None for c in cases)


# --- fingerprints --------------------------------------------------------------------------------

def test_folder_fingerprint_is_stable_and_normalises_options(tmp_path):
    root = _folder(tmp_path / "data")
    fp = dataset_fingerprint(f"folder:{root}")
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert dataset_fingerprint(f"folder:{root}") == fp
    assert dataset_fingerprint(f"folder:{root},intensity=auto,to_gray=false") == fp  # the defaults
    assert dataset_fingerprint(f"folder:{root},resize=4") == dataset_fingerprint(f"folder:{root},resize=4x4")
    assert dataset_fingerprint(f"folder:{root}", resize=4) == dataset_fingerprint(f"folder:{root},resize=4")
    copy = Path(shutil.copytree(root, tmp_path / "elsewhere"))  # copy2 keeps sizes and mtimes
    assert dataset_fingerprint(f"folder:{copy}") == fp


def test_folder_fingerprint_sees_every_change(tmp_path):
    root = _folder(tmp_path / "data")
    seen = {dataset_fingerprint(f"folder:{root}")}

    def changed() -> bool:
        fp = dataset_fingerprint(f"folder:{root}")
        new = fp not in seen
        seen.add(fp)
        return new

    assert changed() is False
    assert dataset_fingerprint(f"folder:{root},intensity=minmax") not in seen
    assert dataset_fingerprint(f"folder:{root},resize=4x3") not in seen
    st = os.stat(root / "pat" / "a.png")
    os.utime(root / "pat" / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    assert changed()
    iio.imwrite(root / "mri" / "b.png", np.zeros((8, 6), np.uint8))  # rewritten, new size
    assert changed()
    _folder(root, ids=("c",))  # a new pair
    assert changed()
    (root / "labels_mri").mkdir()
    iio.imwrite(root / "labels_mri" / "a.png", np.zeros((8, 6), np.uint8))  # new ground truth
    assert changed()
    os.rename(root / "labels_mri" / "a.png", root / "labels_mri" / "b.png")  # moved to another case
    assert changed()


def test_folder_fingerprint_sees_split_and_misalign_options(tmp_path):
    root = _folder(tmp_path / "data")
    plain = dataset_fingerprint(f"folder:{root}")
    auto = dataset_fingerprint(f"folder:{root},split=auto")
    assert auto != plain
    assert dataset_fingerprint(f"folder:{root},split=auto:0.7/0.1/0.2") == auto  # the defaults
    assert dataset_fingerprint(f"folder:{root}", split_fractions=(0.7, 0.1, 0.2)) == auto
    assert dataset_fingerprint(f"folder:{root},split=auto:0.6/0.2/0.2") not in {plain, auto}
    levels = {dataset_fingerprint(f"folder:{root},misalign={lv}") for lv in ("mild", "moderate", "severe")}
    assert len(levels) == 3 and plain not in levels and auto not in levels
    mild = dataset_fingerprint(f"folder:{root},misalign=mild")
    assert dataset_fingerprint(f"folder:{root},misalign=mild,seed=0") == mild  # the default seed
    assert dataset_fingerprint(f"folder:{root},misalign=mild,seed=1") != mild
    assert dataset_fingerprint(f"folder:{root},misalign=mild,split=auto") not in {mild, auto}


def test_misalign_fingerprint_tracks_the_deformation_model(monkeypatch, tmp_path):
    phantom = pytest.importorskip("fusionbench.data.phantom")
    from fusionbench.data import misalign

    root = _folder(tmp_path / "data")
    plain, mild = dataset_fingerprint(f"folder:{root}"), dataset_fingerprint(f"folder:{root},misalign=mild")
    monkeypatch.setattr(phantom, "GENERATOR_VERSION", phantom.GENERATOR_VERSION + "-next")
    assert dataset_fingerprint(f"folder:{root},misalign=mild") != mild
    assert dataset_fingerprint(f"folder:{root}") == plain
    monkeypatch.undo()
    monkeypatch.setattr(misalign, "MISALIGN_VERSION", misalign.MISALIGN_VERSION + "-next")
    assert dataset_fingerprint(f"folder:{root},misalign=mild") != mild


def test_manifest_fingerprint_includes_the_manifest(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "manifest.csv").write_text("id,pat,mri,split\na,pat/a.png,mri/a.png,test\n")
    fp = dataset_fingerprint(f"folder:{root}")
    assert dataset_fingerprint(f"folder:{root / 'manifest.csv'}") == fp
    (root / "manifest.csv").write_text("id,pat,mri,split\na,pat/a.png,mri/a.png,train\n")
    assert dataset_fingerprint(f"folder:{root}") != fp


def test_phantom_fingerprint_tracks_config_and_generator_version(monkeypatch):
    phantom = pytest.importorskip("fusionbench.data.phantom")
    base = dataset_fingerprint("phantom")
    assert dataset_fingerprint("phantom") == base
    default_size = phantom.PhantomConfig().size
    assert dataset_fingerprint(f"phantom:size={default_size}") == base
    assert dataset_fingerprint("phantom:misalign=severe") != base
    assert dataset_fingerprint("phantom:n=200,size=300,misalign=severe") != dataset_fingerprint("phantom:n=200,size=300")
    assert dataset_fingerprint("phantom:seed=1") != base
    monkeypatch.setattr(phantom, "GENERATOR_VERSION", phantom.GENERATOR_VERSION + "-next")
    assert dataset_fingerprint("phantom") != base


def test_fingerprint_reports_discovery_errors(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "mri" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"pat/b\.png has no MRI partner"):
        dataset_fingerprint(f"folder:{root}")


def test_describe_dataset_names_the_phantom_look_the_default_picks():
    from fusionbench.data.datasets import describe_dataset
    from fusionbench.data.phantom import DEFAULT_VERSION

    assert describe_dataset("phantom") == f"phantom {DEFAULT_VERSION}"
    assert describe_dataset("phantom:version=1.2,n=16") == "phantom 1.2 (n=16)"
    assert describe_dataset(" folder:/data/x,misalign=mild ") == "folder:/data/x,misalign=mild"
    with pytest.raises(ValueError, match="unknown dataset kind"):
        describe_dataset("nifti:/x")
