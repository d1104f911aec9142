"""The folder loader: layouts, formats, volumes, resize, splits, and one clear error per problem."""
from __future__ import annotations

import collections
import csv
import math
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy import ndimage as ndi
from skimage.transform import resize as sk_resize

from fusionbench.data import Case, ImageError
from fusionbench.data.folder import (DEFAULT_SPLIT_FRACTIONS, SPLITS, SplitError, auto_split, discover_pairs,
                                     folder_files, load_folder, parse_split_option)
from fusionbench.data.misalign import MISALIGN_LEVELS, body_mask, misalignment_field
from fusionbench.warp import warp

MR_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm"
SHAPE = (12, 10)


def _u8(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _pairs(root: Path, ids, *, pat="pat", mri="mri", shape=SHAPE) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = {}
    for i, case_id in enumerate(ids):
        p, m = _u8(2 * i, shape), _u8(2 * i + 1, shape)
        (root / pat).mkdir(parents=True, exist_ok=True)
        (root / mri).mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / pat / f"{case_id}.png", p)
        iio.imwrite(root / mri / f"{case_id}.png", m)
        data[case_id] = (p, m)
    return data


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _dicom(path: Path, arr, *, position=None, series="1.2.826.0.1.3680043.8.498.1", number=1) -> None:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID, series
    arr = np.asarray(arr, np.uint16)
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [0.5, 0.25]
    ds.InstanceNumber = number
    if position is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(position)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# --- layout (a): subfolders ----------------------------------------------------------------------

def test_subfolders_matched_by_stem_with_exact_values(tmp_path):
    data = _pairs(tmp_path, ["b", "a", "c"], pat="PAT", mri="Mri")  # folder names are case-insensitive
    cases = load_folder(tmp_path)
    assert [c.id for c in cases] == ["a", "b", "c"]
    for case in cases:
        assert isinstance(case, Case)
        np.testing.assert_array_equal(case.pat, (data[case.id][0] / 255.0).astype(np.float32))
        np.testing.assert_array_equal(case.mri, (data[case.id][1] / 255.0).astype(np.float32))
        assert case.meta["split"] == "test" and case.meta["pat_file"].endswith(f"{case.id}.png")
        assert case.labels_mri is None and case.flow_true is None


def test_optional_labels_and_flow_per_case(tmp_path):
    _pairs(tmp_path, ["a", "b"])
    labels = np.random.default_rng(5).integers(0, 12, size=SHAPE).astype(np.uint8)
    flow = np.random.default_rng(6).normal(size=(2, *SHAPE)).astype(np.float32)
    (tmp_path / "labels_mri").mkdir()
    (tmp_path / "flow").mkdir()
    iio.imwrite(tmp_path / "labels_mri" / "a.png", labels)
    np.save(tmp_path / "flow" / "b.npy", flow)
    a, b = load_folder(tmp_path)
    np.testing.assert_array_equal(a.labels_mri, labels)
    assert np.issubdtype(a.labels_mri.dtype, np.integer) and a.flow_true is None
    np.testing.assert_array_equal(b.flow_true, flow)
    assert b.labels_mri is None


def test_split_subfolders(tmp_path):
    _pairs(tmp_path / "train", ["t1", "t2"])
    _pairs(tmp_path / "test", ["s1"])
    assert [c.id for c in load_folder(tmp_path, split="train")] == ["t1", "t2"]
    assert [c.id for c in load_folder(tmp_path, split="test")] == ["s1"]
    assert {c.id: c.meta["split"] for c in load_folder(tmp_path)} == {"t1": "train", "t2": "train", "s1": "test"}
    with pytest.raises(SplitError, match=r"no case in split 'val' \(cases per split: train 2, val 0, test 1\)"):
        load_folder(tmp_path, split="val")


def test_no_split_means_everything_is_test_and_train_explains_how_to_add_one(tmp_path):
    _pairs(tmp_path, ["a", "b"])
    assert len(load_folder(tmp_path, split="test")) == 2
    with pytest.raises(SplitError, match=r"no 'train' split.*'split' column.*manifest\.csv"):
        load_folder(tmp_path, split="train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_folder(tmp_path, split="training")


# --- layout (b): manifest --------------------------------------------------------------------------

def test_manifest_with_splits_extra_columns_and_relative_paths(tmp_path):
    data = _pairs(tmp_path / "imgs", ["x", "y", "z"])
    labels = np.full(SHAPE, 3, np.uint8)
    iio.imwrite(tmp_path / "lab_y.png", labels)
    _write_csv(tmp_path / "manifest.csv", ["ID", "pat", "mri", "labels_pat", "split", "animal"], [
        ["case_x", "imgs/pat/x.png", "imgs/mri/x.png", "", "train", "m1"],
        ["case_y", "imgs/pat/y.png", str(tmp_path / "imgs/mri/y.png"), "lab_y.png", "Test", "m2"],
        ["case_z", "imgs/pat/z.png", "imgs/mri/z.png", "", "test", "m2"],
    ])
    test = load_folder(tmp_path, split="test")
    assert [c.id for c in test] == ["case_y", "case_z"]
    y = test[0]
    np.testing.assert_array_equal(y.mri, (data["y"][1] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(y.labels_pat, labels)
    assert y.meta["animal"] == "m2" and y.meta["split"] == "test"
    assert [c.id for c in load_folder(tmp_path / "manifest.csv", split="train")] == ["case_x"]


def test_manifest_wins_over_subfolders(tmp_path):
    _pairs(tmp_path, ["a", "b"])
    _write_csv(tmp_path / "manifest.csv", ["id", "pat", "mri"], [["only_a", "pat/a.png", "mri/a.png"]])
    assert [c.id for c in load_folder(tmp_path)] == ["only_a"]


def test_phantom_writer_layout_loads_back(tmp_path):
    phantom = pytest.importorskip("fusionbench.data.phantom")
    cfg = phantom.PhantomConfig.from_params(n=2, size=64, misalign="moderate")
    original = phantom.load_phantom("test", cfg, cache_dir=tmp_path / "cache", jobs=1)[:2]
    out = phantom.write_phantom_folder(tmp_path / "ph", n=2, size=64, misalign="moderate",
                                       cache_dir=tmp_path / "cache", jobs=1)
    loaded = load_folder(out, split="test")
    assert [c.id for c in loaded] == sorted(c.id for c in original)
    for case in loaded:
        ref = next(c for c in original if c.id == case.id)
        assert np.abs(case.pat - ref.pat).max() <= 0.5 / 255 + 1e-6  # 8-bit export
        assert np.abs(case.mri - ref.mri).max() <= 0.5 / 255 + 1e-6
        np.testing.assert_array_equal(case.labels_mri, ref.labels_mri)
        np.testing.assert_array_equal(case.labels_pat, ref.labels_pat)
        np.testing.assert_array_equal(case.flow_true, ref.flow_true)


# --- volumes -------------------------------------------------------------------------------------

def test_nifti_volumes_split_along_last_axis_with_one_mapping_per_volume(tmp_path):
    rng = np.random.default_rng(7)
    pat = rng.normal(size=(*SHAPE, 4)).astype(np.float32)  # signed, like reconstructed PAT
    mri = rng.random((*SHAPE, 4)).astype(np.float32) * 900
    labels = rng.integers(0, 5, size=(*SHAPE, 4)).astype(np.int16)
    flow = rng.normal(size=(2, *SHAPE, 4)).astype(np.float32)
    affine = np.diag([0.2, 0.3, 1.0, 1.0])
    for name, vol in (("pat", pat), ("mri", mri), ("labels_mri", labels)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(vol, affine), tmp_path / name / "mouse1.nii.gz")
    (tmp_path / "flow").mkdir()
    np.save(tmp_path / "flow" / "mouse1.npy", flow)
    cases = load_folder(tmp_path)
    assert [c.id for c in cases] == ["mouse1_z000", "mouse1_z001", "mouse1_z002", "mouse1_z003"]
    pat_unit = (pat - pat.min()) / (pat.max() - pat.min())
    for k, case in enumerate(cases):
        np.testing.assert_allclose(case.pat, pat_unit[..., k], atol=1e-6)
        np.testing.assert_allclose(case.mri, ((mri - mri.min()) / (mri.max() - mri.min()))[..., k], atol=1e-6)
        np.testing.assert_array_equal(case.labels_mri, labels[..., k])
        np.testing.assert_array_equal(case.flow_true, flow[..., k])
        assert case.meta["slice"] == k and case.meta["pixel_spacing_mm"] == pytest.approx((0.2, 0.3))
    by_rows = load_folder(tmp_path, slice_axis=0)
    assert len(by_rows) == SHAPE[0] and by_rows[0].shape == (SHAPE[1], 4)
    np.testing.assert_array_equal(by_rows[3].labels_mri, labels[3])


def test_npy_and_tiff_stacks_split_along_first_axis(tmp_path):
    pat = np.random.default_rng(8).integers(0, 65536, size=(3, *SHAPE), dtype=np.uint16)
    mri = np.random.default_rng(9).random((3, *SHAPE)).astype(np.float32)
    (tmp_path / "pat").mkdir()
    (tmp_path / "mri").mkdir()
    tifffile.imwrite(tmp_path / "pat" / "s.tif", pat, photometric="minisblack")
    np.save(tmp_path / "mri" / "s.npy", mri)
    cases = load_folder(tmp_path)
    assert [c.id for c in cases] == ["s_z000", "s_z001", "s_z002"]
    np.testing.assert_array_equal(cases[2].pat, (pat[2] / 65535.0).astype(np.float32))  # dtype scaling kept
    unit = (mri - mri.min()) / (mri.max() - mri.min())
    np.testing.assert_allclose(cases[1].mri, unit[1], atol=1e-6)


def test_dicom_file_series_folder_and_multiframe(tmp_path):
    mr = pydicom.dcmread(MR_SMALL).pixel_array.astype(np.float64)
    (tmp_path / "mri").mkdir()
    (tmp_path / "mri" / "single.dcm").write_bytes(MR_SMALL.read_bytes())
    (tmp_path / "pat").mkdir()
    iio.imwrite(tmp_path / "pat" / "single.png", _u8(1, (64, 64)))
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5) * 7
    _dicom(tmp_path / "mri" / "multi.dcm", frames)
    np.save(tmp_path / "pat" / "multi.npy", np.zeros((3, 4, 5), np.uint8))
    # series folder: file names in the opposite order of the slice positions
    for name, pos, value in (("IM1", 2.0, 300), ("IM2", 1.0, 200), ("IM3", 0.0, 100)):
        _dicom(tmp_path / "mri" / "series" / name, np.full((4, 5), value) + np.arange(5), position=pos)
    np.save(tmp_path / "pat" / "series.npy", np.zeros((3, 4, 5), np.uint8))
    cases = {c.id: c for c in load_folder(tmp_path)}
    assert sorted(cases) == ["multi_z000", "multi_z001", "multi_z002", "series_z000", "series_z001",
                             "series_z002", "single"]
    np.testing.assert_allclose(cases["single"].mri, (mr - mr.min()) / (mr.max() - mr.min()), atol=1e-6)
    assert cases["single"].meta["pixel_spacing_mm"] == (0.3125, 0.3125)
    np.testing.assert_allclose(cases["multi_z001"].mri, (frames[1] - frames.min()) / (frames.max() - frames.min()),
                               atol=1e-6)
    # sorted by position along the slice normal: 100 (z=0), 200, 300; min 100, max 304
    np.testing.assert_allclose(cases["series_z000"].mri[0], (100 + np.arange(5) - 100) / 204, atol=1e-6)
    np.testing.assert_allclose(cases["series_z002"].mri[0], (300 + np.arange(5) - 100) / 204, atol=1e-6)
    assert cases["series_z000"].meta["pixel_spacing_mm"] == (0.5, 0.25)
    files = folder_files(tmp_path)
    assert tmp_path / "mri" / "series" / "IM2" in files and tmp_path / "pat" / "single.png" in files


# --- resize --------------------------------------------------------------------------------------

def test_resize_images_labels_nearest_and_flows_scaled(tmp_path):
    data = _pairs(tmp_path, ["a"], shape=(16, 20))
    labels = np.zeros((16, 20), np.uint8)
    labels[4:12, 5:15] = 7
    labels[0, 0] = 3
    flow = np.stack([np.full((16, 20), 1.0), np.full((16, 20), -2.0)]).astype(np.float32)
    (tmp_path / "labels_pat").mkdir()
    (tmp_path / "flow").mkdir()
    iio.imwrite(tmp_path / "labels_pat" / "a.png", labels)
    np.save(tmp_path / "flow" / "a.npy", flow)
    (case,) = load_folder(tmp_path, resize=(8, 10))
    assert case.shape == (8, 10) and case.meta["resized_from"] == {"pat": (16, 20), "mri": (16, 20)}
    expected = sk_resize(data["a"][0] / 255.0, (8, 10), order=1, anti_aliasing=True, mode="edge")
    np.testing.assert_allclose(case.pat, expected, atol=1e-6)
    assert set(np.unique(case.labels_pat)) <= {0, 3, 7} and case.labels_pat.dtype == np.uint8
    assert (case.labels_pat == 7).sum() == 4 * 5  # the 8x10 block halves in each direction
    np.testing.assert_allclose(case.flow_true[0], 0.5)  # half as many pixels, half the displacement
    np.testing.assert_allclose(case.flow_true[1], -1.0)


def test_resize_brings_partners_of_different_size_together(tmp_path):
    (tmp_path / "pat").mkdir()
    (tmp_path / "mri").mkdir()
    iio.imwrite(tmp_path / "pat" / "a.png", _u8(0, (30, 30)))
    iio.imwrite(tmp_path / "mri" / "a.png", _u8(1, (20, 20)))
    with pytest.raises(ImageError, match=r"pat/a\.png: PAT slice shape \(30, 30\) differs from MRI .*mri/a\.png "
                                         r"\(20, 20\) \(pass resize"):
        load_folder(tmp_path)
    (case,) = load_folder(tmp_path, resize=20)
    assert case.pat.shape == case.mri.shape == (20, 20)
    np.testing.assert_array_equal(case.mri, (_u8(1, (20, 20)) / 255.0).astype(np.float32))


# --- errors name the file ------------------------------------------------------------------------

def test_missing_partner_in_either_direction(tmp_path):
    _pairs(tmp_path, ["a"])
    iio.imwrite(tmp_path / "mri" / "foo.png", _u8(3))
    with pytest.raises(ImageError, match=r"mri/foo\.png has no PAT partner \(expected pat/foo\.<ext>\)"):
        load_folder(tmp_path)
    (tmp_path / "mri" / "foo.png").unlink()
    iio.imwrite(tmp_path / "pat" / "bar.png", _u8(3))
    iio.imwrite(tmp_path / "pat" / "baz.png", _u8(3))
    with pytest.raises(ImageError, match=r"pat/bar\.png has no MRI partner .*\(and 1 more unmatched in pat/\)"):
        load_folder(tmp_path)


def test_unreadable_file_is_named(tmp_path):
    _pairs(tmp_path, ["a"])
    (tmp_path / "mri" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ImageError, match=r"mri/a\.png: unreadable file"):
        load_folder(tmp_path)


def test_nan_is_named(tmp_path):
    _pairs(tmp_path, ["a"])
    (tmp_path / "pat" / "a.png").unlink()
    bad = np.ones(SHAPE)
    bad[1, 1] = np.nan
    np.save(tmp_path / "pat" / "a.npy", bad)
    with pytest.raises(ImageError, match=r"pat/a\.npy: 1 NaN/Inf"):
        load_folder(tmp_path)


def test_colour_is_named_and_to_gray_converts(tmp_path):
    _pairs(tmp_path, ["a"])
    rgb = np.stack([_u8(0), _u8(1), _u8(2)], axis=-1)
    iio.imwrite(tmp_path / "pat" / "a.png", rgb)
    with pytest.raises(ImageError, match=r"pat/a\.png: colour image"):
        load_folder(tmp_path)
    (case,) = load_folder(tmp_path, to_gray=True)
    luma = np.round(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(case.pat, luma, atol=1e-6)


def test_empty_and_unrecognised_folders(tmp_path):
    with pytest.raises(ImageError, match=r"missing: dataset folder not found"):
        load_folder(tmp_path / "missing")
    with pytest.raises(ImageError, match=r"no pat/ and mri/ folders, no manifest\.csv"):
        load_folder(tmp_path)
    (tmp_path / "mri").mkdir()
    with pytest.raises(ImageError, match=r"has an mri/ folder but no pat/ folder"):
        load_folder(tmp_path)
    (tmp_path / "pat").mkdir()
    (tmp_path / "pat" / "notes.txt").write_text("x")
    with pytest.raises(ImageError, match=r"pat: no image files"):
        load_folder(tmp_path)
    (tmp_path / "mri").rmdir()  # pat/ alone is a PAT-only dataset, still without images
    with pytest.raises(ImageError, match=r"pat: no image files"):
        load_folder(tmp_path)


def test_two_files_for_one_case(tmp_path):
    _pairs(tmp_path, ["a"])
    np.save(tmp_path / "pat" / "a.npy", np.zeros(SHAPE))
    with pytest.raises(ImageError, match=r"two files for case 'a' \(a\.npy and a\.png\)"):
        load_folder(tmp_path)


def test_bad_labels_and_flows_are_named(tmp_path):
    _pairs(tmp_path, ["a"])
    (tmp_path / "labels_mri").mkdir()
    iio.imwrite(tmp_path / "labels_mri" / "a.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ImageError, match=r"labels_mri/a\.png: label map shape \(5, 5\) differs"):
        load_folder(tmp_path)
    (tmp_path / "labels_mri" / "a.png").unlink()
    np.save(tmp_path / "labels_mri" / "a.npy", np.full(SHAPE, 1.5))
    with pytest.raises(ImageError, match=r"labels_mri/a\.npy: label map must hold integer ids"):
        load_folder(tmp_path)
    (tmp_path / "labels_mri" / "a.npy").unlink()
    iio.imwrite(tmp_path / "labels_mri" / "a.png", np.stack([_u8(0), _u8(1), _u8(2)], axis=-1))
    with pytest.raises(ImageError, match=r"labels_mri/a\.png: colour label map"):
        load_folder(tmp_path, to_gray=True)
    (tmp_path / "labels_mri" / "a.png").unlink()
    iio.imwrite(tmp_path / "labels_mri" / "orphan.png", _u8(0))
    with pytest.raises(ImageError, match=r"labels_mri/orphan\.png has no PAT/MRI pair"):
        load_folder(tmp_path)
    (tmp_path / "labels_mri" / "orphan.png").unlink()
    (tmp_path / "flow").mkdir()
    np.save(tmp_path / "flow" / "a.npy", np.zeros((2, 3, 3)))
    with pytest.raises(ImageError, match=r"flow/a\.npy: shape \(2, 3, 3\), expected \(2, 12, 10\)"):
        load_folder(tmp_path)
    np.save(tmp_path / "flow" / "a.npy", np.full((2, *SHAPE), np.inf))
    with pytest.raises(ImageError, match=r"flow/a\.npy: NaN/Inf in displacement field"):
        load_folder(tmp_path)


def test_volume_against_image_and_slice_count_mismatch(tmp_path):
    (tmp_path / "pat").mkdir()
    (tmp_path / "mri").mkdir()
    np.save(tmp_path / "pat" / "v.npy", np.zeros((3, *SHAPE), np.uint8))
    iio.imwrite(tmp_path / "mri" / "v.png", _u8(0))
    with pytest.raises(ImageError, match=r"pat/v\.npy: PAT has shape \(3, 12, 10\) but its MRI partner"):
        load_folder(tmp_path)
    (tmp_path / "mri" / "v.png").unlink()
    np.save(tmp_path / "mri" / "v.npy", np.zeros((2, *SHAPE), np.uint8))
    with pytest.raises(ImageError, match=r"pat/v\.npy: 3 slices but its MRI partner .*mri/v\.npy has 2"):
        load_folder(tmp_path)


@pytest.mark.parametrize("header,rows,message", [
    (["id", "mri"], [["a", "mri/a.png"]], r"manifest\.csv: missing column 'pat'"),
    (["id", "pat", "mri", "lables_mri"], [["a", "pat/a.png", "mri/a.png", ""]],
     r"unknown column 'lables_mri' \(did you mean 'labels_mri'\?\)"),
    (["id", "pat", "mri", "split"], [["a", "pat/a.png", "mri/a.png", "training"]],
     r"manifest\.csv line 2 \(id a\): split 'training' is not one of train, val, test"),
    (["id", "pat", "mri"], [["a", "pat/a.png", "mri/nope.png"]], r"mri/nope\.png: mri file of manifest"),
    (["id", "pat", "mri"], [["a", "pat/a.png", "mri/a.png"], ["a", "pat/a.png", "mri/a.png"]],
     r"line 3: duplicate id 'a'"),
    (["id", "pat", "mri"], [["a", "pat/a.png"]], r"line 2: 2 fields, header has 3"),
    (["id", "pat", "mri"], [], r"manifest has a header but no rows"),
    (["id", "pat", "mri", "flow"], [["a", "pat/a.png", "mri/a.png", "pat/a.png"]], r"flows must be \.npy"),
])
def test_bad_manifest(tmp_path, header, rows, message):
    _pairs(tmp_path, ["a"])
    _write_csv(tmp_path / "manifest.csv", header, rows)
    with pytest.raises(ImageError, match=message):
        load_folder(tmp_path)


def test_discovery_reads_no_pixels(tmp_path):
    _pairs(tmp_path, ["a"])
    (tmp_path / "mri" / "a.png").write_bytes(b"garbage")  # only loading notices
    (entry,) = discover_pairs(tmp_path)
    assert entry.id == "a" and set(entry.files) == {"pat", "mri"} and entry.split is None


# --- split=auto ----------------------------------------------------------------------------------

def test_auto_split_pins_the_rule_on_hand_checkable_hashes():
    # sha256("1") = 6b86b273ff34fce1..., u = 0x6b86b273ff34fce1 / 2**64 = 0.4200 < 0.7 -> train;
    # sha256("a") = ca978112ca1bbdca... -> 0.7914 in [0.7, 0.8) -> val; sha256("2") = d4735e3a... -> 0.8299 -> test.
    assert [auto_split(s) for s in ("1", "a", "2")] == ["train", "val", "test"]
    assert auto_split("a", (0.8, 0.1, 0.1)) == "train" and auto_split("1", (0.4, 0.1, 0.5)) == "val"
    assert DEFAULT_SPLIT_FRACTIONS == (0.7, 0.1, 0.2)


@pytest.mark.parametrize("n", [200, 20000])
@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.2), (0.5, 0.25, 0.25)])
def test_auto_split_fractions(n, fractions):
    # Each id falls in a split independently with probability f (a uniform hash), so a split's count
    # is Binomial(n, f): |count - n f| <= 4 sqrt(n f (1 - f)) (for 200 ids and 70 %: 140 ± 26; for
    # 20000 ids: fraction ± 0.013). A uniform hash fails one bound with probability ~6e-5.
    counts = collections.Counter(auto_split(f"case{i:05d}", fractions) for i in range(n))
    for split, f in zip(SPLITS, fractions):
        assert abs(counts[split] - n * f) <= 4 * math.sqrt(n * f * (1 - f)), (split, counts)


def test_auto_split_is_deterministic_and_ignores_order_and_other_files(tmp_path):
    ids = [f"m{i:02d}" for i in range(40)]
    _pairs(tmp_path / "a", ids)
    first = {c.id: c.meta["split"] for c in load_folder(tmp_path / "a", split_fractions=DEFAULT_SPLIT_FRACTIONS)}
    assert first == {c.id: c.meta["split"] for c in load_folder(tmp_path / "a", split_fractions="auto")}
    assert first == {i: auto_split(i) for i in ids} and set(first.values()) == set(SPLITS)
    # a manifest listing the same pairs in another order
    order = np.random.default_rng(0).permutation(ids)
    _write_csv(tmp_path / "a" / "list.csv", ["id", "pat", "mri"], [[i, f"pat/{i}.png", f"mri/{i}.png"] for i in order])
    assert {c.id: c.meta["split"] for c in load_folder(tmp_path / "a" / "list.csv", split_fractions="auto")} == first
    # adding pairs moves none of the others
    _pairs(tmp_path / "a", [f"new{i}" for i in range(10)])
    grown = {c.id: c.meta["split"] for c in load_folder(tmp_path / "a", split_fractions="auto")}
    assert len(grown) == 50 and {i: grown[i] for i in ids} == first
    # each split holds exactly its cases, and together they hold every case
    per_split = {s: [c.id for c in load_folder(tmp_path / "a", split=s, split_fractions="auto")] for s in SPLITS}
    assert sorted(sum(per_split.values(), [])) == sorted(grown)
    assert all(grown[i] == s for s, members in per_split.items() for i in members)


def test_auto_split_keeps_a_volume_in_one_split(tmp_path):
    (tmp_path / "pat").mkdir()
    (tmp_path / "mri").mkdir()
    for name in ("v1", "v2", "v3"):
        np.save(tmp_path / "pat" / f"{name}.npy", np.zeros((3, *SHAPE), np.uint8))
        np.save(tmp_path / "mri" / f"{name}.npy", np.zeros((3, *SHAPE), np.uint8))
    cases = load_folder(tmp_path, split_fractions="auto")
    assert len(cases) == 9
    assert all(c.meta["split"] == auto_split(c.id.rsplit("_z", 1)[0]) for c in cases)


def test_auto_split_options_and_conflicts(tmp_path):
    assert parse_split_option("auto") == DEFAULT_SPLIT_FRACTIONS
    assert parse_split_option("AUTO:0.8/0/0.2") == (0.8, 0.0, 0.2)
    for bad in ("random", "auto:0.5/0.5", "auto:0.5/0.3/0.3", "auto:-0.1/0.6/0.5", "auto:a/b/c", "train"):
        with pytest.raises(ImageError, match=r"split="):
            parse_split_option(bad)
    _pairs(tmp_path / "train", ["t1"])
    _pairs(tmp_path / "test", ["s1"])
    with pytest.raises(ImageError, match=r"split=auto, but the dataset defines its own split \(test, train"):
        load_folder(tmp_path, split_fractions="auto")


def test_no_split_message_is_one_line_naming_both_ways(tmp_path):
    _pairs(tmp_path, ["a", "b"])
    with pytest.raises(SplitError) as info:
        load_folder(tmp_path, split="val")
    message = str(info.value)
    assert "\n" not in message
    assert f"folder:{tmp_path},split=auto" in message and "'split' column" in message and "manifest.csv" in message


# --- misalign= -----------------------------------------------------------------------------------

def _anatomy(shape, seed):
    """A registered synthetic pair: elliptic body with four round organs, two contrasts, labels."""
    h, w = shape
    r, c = np.mgrid[:h, :w]
    body = ((r - h / 2) / (0.38 * h)) ** 2 + ((c - w / 2) / (0.42 * w)) ** 2 < 1
    lab = body.astype(np.uint8)
    rng = np.random.default_rng(seed)
    for k in range(2, 6):
        cr, cc, rad = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w, rng.uniform(0.06, 0.12) * min(h, w)
        lab[((r - cr) ** 2 + (c - cc) ** 2 < rad ** 2) & body] = k
    mri = ndi.gaussian_filter(np.array([0.02, 0.3, 0.7, 0.15, 0.5, 0.9])[lab], 1.0)
    pat = ndi.gaussian_filter(np.array([0.35, 0.2, 0.4, 0.8, 0.1, 0.6])[lab], 1.0)
    return lab, mri, pat


def _registered(root: Path, shapes=((128, 128), (128, 128), (96, 128)), labels=True) -> Path:
    for role in ("pat", "mri") + (("labels_mri",) if labels else ()):
        (root / role).mkdir(parents=True, exist_ok=True)
    for i, shape in enumerate(shapes):
        lab, mri, pat = _anatomy(shape, i)
        iio.imwrite(root / "mri" / f"c{i}.png", np.round(mri * 255).astype(np.uint8))
        iio.imwrite(root / "pat" / f"c{i}.png", np.round(pat * 255).astype(np.uint8))
        if labels:
            iio.imwrite(root / "labels_mri" / f"c{i}.png", lab)
    return root


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = _registered(tmp_path_factory.mktemp("registered"))
    return root, {c.id: c for c in load_folder(root)}


@pytest.mark.parametrize("level", MISALIGN_LEVELS)
def test_misalign_flow_true_takes_the_moved_pat_back_to_the_registered_one(registered, level):
    # Measured on these pairs: mean |warp(moved, flow_true) - pat| inside the body 0.0011-0.0020 and
    # max 0.024-0.069, against 0.0024-0.0027 and 0.043-0.065 for the pure interpolation error of a
    # half-pixel round trip (warp by +0.5 px on both axes and back, bilinear twice, the worst
    # fractional shift); the composed fields miss the identity by <= 0.07 px. Bounds: mean below
    # the round trip's mean, max below 1.5 times its max, and well below the moved image's error.
    root, base = registered
    for case in load_folder(root, misalign=level):
        ref = base[case.id]
        body = ref.labels_mri > 0
        half = np.full((2, *case.shape), 0.5, np.float32)
        floor = np.abs(warp(warp(ref.pat, half), -half) - ref.pat)[body]
        back = np.abs(warp(case.pat, case.flow_true) - ref.pat)[body]
        assert back.mean() <= floor.mean() and back.max() <= 1.5 * floor.max(), (case.id, back.mean(), back.max())
        if level != "mild":  # at 128 px mild moves by 1 px at most: little to undo
            assert back.mean() < 0.4 * np.abs(case.pat - ref.pat)[body].mean()
        residual = case.flow_true + np.stack([warp(case.meta["flow_mri_to_pat"][i], case.flow_true) for i in range(2)])
        assert np.hypot(*residual)[body].max() < 0.1


def test_misalign_reproduces_the_phantom_convention(registered):
    phantom = pytest.importorskip("fusionbench.data.phantom")
    from fusionbench.data.phantom.deformation import misalignment

    root, base = registered
    for case in load_folder(root, misalign="moderate"):
        ref, inv = base[case.id], case.meta["flow_mri_to_pat"]
        # as generate.py: the PAT frame is the MRI frame warped by the inverse field, labels by nearest neighbour
        np.testing.assert_allclose(case.pat, np.clip(warp(ref.pat, inv), 0, 1), atol=1e-6)
        np.testing.assert_array_equal(case.labels_pat, warp(ref.labels_mri, inv, order=0))
        np.testing.assert_array_equal(case.mri, ref.mri)
        np.testing.assert_array_equal(case.labels_mri, ref.labels_mri)
        assert case.meta["max_disp_px"] == pytest.approx(6.0 * max(case.shape) / 256, rel=0.02)
        assert case.meta["body_mask"] == "labels_mri" and case.meta["misalign"] == "moderate"
        assert case.meta["misalign_seed"] == 0
    body = base["c0"].labels_mri > 0  # the phantom's function itself, on the same random stream,
    # with the 1.2 look's field of view whatever the default look (fingerprints stay valid)
    expected = misalignment(phantom.PhantomConfig(size=128, misalign="severe", version="1.2"),
                            np.random.default_rng(5), body)
    got = misalignment_field(body, "severe", np.random.default_rng(5))
    for x, y in zip(got, expected):
        np.testing.assert_array_equal(x, y)
    other = misalignment(phantom.PhantomConfig(size=128, misalign="severe", version="2.0"), np.random.default_rng(5), body)
    assert not np.array_equal(got[0], other[0])
    wide = base["c2"].labels_mri > 0  # 96 x 128: drawn on the 128 square, image centred, cropped back
    square = np.zeros((128, 128), bool)
    square[16:112] = wide
    expected = misalignment(phantom.PhantomConfig(size=128, misalign="mild", version="1.2"), np.random.default_rng(6),
                            square)
    got = misalignment_field(wide, "mild", np.random.default_rng(6))
    np.testing.assert_array_equal(got[0], expected[0][:, 16:112])
    np.testing.assert_array_equal(got[1], expected[1][:, 16:112])


def test_misalign_scores_endpoint_error_and_dice(registered):
    from fusionbench.metrics.registration import endpoint_error, warped_label_dice
    from fusionbench.scoring import score_registration

    root, _ = registered
    for case in load_folder(root, misalign="severe"):
        magnitude = np.hypot(*case.flow_true)
        zero = np.zeros_like(case.flow_true)
        # identity registration: the endpoint error is the mean true displacement
        assert endpoint_error(zero, case.flow_true)["mean"] == pytest.approx(magnitude.mean(), rel=1e-6)
        body = case.labels_mri > 0
        rows = {r["metric"]: r["value"] for r in score_registration(case.pat, case.mri, None, flow_true=case.flow_true,
                                                                      labels_pat=case.labels_pat,
                                                                      labels_mri=case.labels_mri)}
        assert rows["EPE_mean"] == pytest.approx(magnitude[body].mean(), rel=1e-6)  # inside the labels
        perfect = {r["metric"]: r["value"] for r in score_registration(
            warp(case.pat, case.flow_true), case.mri, case.flow_true, flow_true=case.flow_true,
            labels_pat=case.labels_pat, labels_mri=case.labels_mri)}
        assert perfect["EPE_mean"] == pytest.approx(0.0, abs=1e-6)
        assert perfect["Dice"] > rows["Dice"] and perfect["Dice"] > 97
        assert warped_label_dice(case.labels_pat, case.labels_mri, case.flow_true)["mean"] == pytest.approx(perfect["Dice"])


def test_misalign_levels_grow_and_are_deterministic_per_case(registered):
    root, _ = registered
    by_level = {lv: {c.id: c for c in load_folder(root, misalign=lv)} for lv in MISALIGN_LEVELS}
    for case_id in by_level["mild"]:
        means = [float(np.hypot(*by_level[lv][case_id].flow_true).mean()) for lv in MISALIGN_LEVELS]
        assert means[0] < means[1] < means[2], means
        assert means[2] / means[0] == pytest.approx(6.0, rel=0.25)  # the presets' 2 : 6 : 12 px
    again = {c.id: c for c in load_folder(root, misalign="moderate")}
    seeded = {c.id: c for c in load_folder(root, misalign="moderate", misalign_seed=7)}
    for case_id, case in by_level["moderate"].items():
        np.testing.assert_array_equal(again[case_id].flow_true, case.flow_true)
        np.testing.assert_array_equal(again[case_id].pat, case.pat)
        assert np.abs(seeded[case_id].flow_true - case.flow_true).max() > 0.5
    # c0 and c1 have the same size: their fields differ (one stream per case id)
    assert np.abs(by_level["mild"]["c0"].flow_true - by_level["mild"]["c1"].flow_true).max() > 0.2


def test_misalign_field_depends_on_the_case_id_not_on_the_other_cases(tmp_path):
    lab, mri, pat = _anatomy((64, 64), 0)
    for role, img in (("pat", pat), ("mri", mri)):
        (tmp_path / role).mkdir()
        for name in ("x", "y"):  # the same images under two ids
            iio.imwrite(tmp_path / role / f"{name}.png", np.round(img * 255).astype(np.uint8))
    x, y = load_folder(tmp_path, misalign="severe")
    assert x.meta["body_mask"] == "otsu"
    assert np.abs(x.flow_true - y.flow_true).max() > 0.2
    for role in ("pat", "mri"):
        (tmp_path / role / "y.png").unlink()
    (alone,) = load_folder(tmp_path, misalign="severe")
    np.testing.assert_array_equal(alone.flow_true, x.flow_true)


def test_misalign_body_mask_from_the_mri(tmp_path):
    lab, mri, _ = _anatomy((128, 128), 3)
    mask, source = body_mask(mri)
    truth = lab > 0
    assert source == "otsu" and (mask & truth).sum() / (mask | truth).sum() > 0.95
    dark = mri.copy()
    # dark tissue reaching the skin (as the spine on T2): 0.12, below Otsu's 0.197, above the background 0.02
    dark[(lab == 1) & (np.mgrid[:128, :128][0] > 90)] = 0.12
    mask, _ = body_mask(dark)
    assert (mask & truth).sum() / (mask | truth).sum() > 0.95
    mask, source = body_mask(np.full((40, 40), 0.3))
    assert source == "image" and mask.all()
    assert body_mask(mri, lab)[1] == "labels_mri"


def test_misalign_without_labels_with_pat_labels_and_with_resize(tmp_path):
    root = _registered(tmp_path / "plain", shapes=((100, 100),), labels=False)
    (case,) = load_folder(root, misalign="mild")
    assert case.labels_mri is None and case.labels_pat is None and case.meta["body_mask"] == "otsu"
    lab = _anatomy((100, 100), 0)[0]
    (root / "labels_pat").mkdir()
    iio.imwrite(root / "labels_pat" / "c0.png", lab)  # registered pair: PAT labels are MRI-space labels
    (case,) = load_folder(root, misalign="mild")
    np.testing.assert_array_equal(case.labels_mri, lab)
    np.testing.assert_array_equal(case.labels_pat, warp(lab, case.meta["flow_mri_to_pat"], order=0))
    (small,) = load_folder(root, misalign="mild", resize=(64, 48))
    assert small.flow_true.shape == (2, 64, 48) and small.meta["max_disp_px"] == pytest.approx(2 * 64 / 256, rel=0.05)


def test_misalign_errors(tmp_path):
    _pairs(tmp_path, ["a"])
    with pytest.raises(ImageError, match=r"misalign='none': expected one of mild, moderate, severe"):
        load_folder(tmp_path, misalign="none")
    with pytest.raises(ImageError, match=r"misalign_seed=2 without misalign="):
        load_folder(tmp_path, misalign_seed=2)
    (tmp_path / "flow").mkdir()
    np.save(tmp_path / "flow" / "a.npy", np.zeros((2, *SHAPE), np.float32))
    with pytest.raises(ImageError, match=r"pat/a\.png: misalign=mild moves registered pairs, but case 'a' has a flow"):
        load_folder(tmp_path, misalign="mild")
