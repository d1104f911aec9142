"""Image I/O: exact integer scaling, every rejection names the file, volumes and intensity modes."""
from __future__ import annotations

import warnings
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile

from fusionbench.data.io import (ColourImageError, ImageError, as_image, atomic_write_bytes, file_stem,
                                 file_suffix, normalize_intensity, read_array, read_image, write_image)

MR_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm"  # bundled, no download


def _all_uint8() -> np.ndarray:
    return np.arange(256, dtype=np.uint8).reshape(16, 16)


def _some_uint16() -> np.ndarray:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, size=(12, 10), dtype=np.uint16)
    arr.flat[:3] = [0, 1, 65535]
    return arr


# --- exact round trips -------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_8bit_file_reads_as_k_over_255(tmp_path, suffix):
    k = _all_uint8()
    path = tmp_path / f"img{suffix}"
    (tifffile.imwrite(path, k) if suffix == ".tif" else iio.imwrite(path, k))
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (16, 16)
    np.testing.assert_array_equal(img, (k / 255.0).astype(np.float32))
    assert img[0, 0] == 0.0 and img[-1, -1] == 1.0


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_file_reads_as_k_over_65535(tmp_path, suffix):
    k = _some_uint16()
    path = tmp_path / f"img{suffix}"
    (tifffile.imwrite(path, k) if suffix == ".tif" else iio.imwrite(path, k))
    img = read_image(path)
    np.testing.assert_array_equal(img, (k / 65535.0).astype(np.float32))
    assert img.flat[1] == np.float32(1 / 65535)


@pytest.mark.parametrize("suffix,bits,step", [(".png", 8, 255), (".png", 16, 65535), (".tif", 16, 65535)])
def test_write_then_read_quantises_to_nearest_level(tmp_path, suffix, bits, step):
    img = np.random.default_rng(2).random((9, 7)).astype(np.float32)
    path = tmp_path / f"out{suffix}"
    write_image(path, img, bits=bits)
    back = read_image(path)
    np.testing.assert_array_equal(back, (np.round(img.astype(np.float64) * step) / step).astype(np.float32))
    assert np.abs(back - img).max() <= 0.5 / step + 1e-7


def test_npy_float_image_round_trips_unchanged(tmp_path):
    img = np.random.default_rng(3).random((5, 6)).astype(np.float32)
    write_image(tmp_path / "x.npy", img)
    np.testing.assert_array_equal(read_image(tmp_path / "x.npy"), img)


def test_gray_alpha_png_keeps_gray_channel(tmp_path):
    la = np.stack([_all_uint8(), np.full((16, 16), 255, np.uint8)], axis=-1)
    iio.imwrite(tmp_path / "la.png", la)
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), (_all_uint8() / 255.0).astype(np.float32))


# --- colour ------------------------------------------------------------------------------------

def test_rgb_is_rejected_naming_the_file_and_converted_with_to_gray(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[1, :] = (200, 100, 50)
    path = tmp_path / "colour.png"
    iio.imwrite(path, rgb)
    with pytest.raises(ColourImageError, match=r"colour\.png: colour image .*to_gray"):
        read_image(path)
    gray = read_image(path, to_gray=True)
    # BT.601 luma, rounded back to 8 bits: 0.299*255 = 76.2 -> 76, 0.587*255 -> 150, 0.114*255 -> 29,
    # 0.299*200 + 0.587*100 + 0.114*50 = 124.2 -> 124.
    np.testing.assert_array_equal(gray[0, :3] * 255, np.float32([76, 150, 29]))
    assert gray[1, 0] * 255 == pytest.approx(124, abs=1e-4)


def test_rgb_with_equal_channels_is_gray(tmp_path):
    k = _all_uint8()
    iio.imwrite(tmp_path / "grey_rgb.png", np.stack([k, k, k], axis=-1))
    np.testing.assert_array_equal(read_image(tmp_path / "grey_rgb.png"), (k / 255.0).astype(np.float32))


def test_colour_error_is_an_image_error_and_value_error():
    with pytest.raises(ValueError, match="colour"):
        as_image(np.zeros((4, 4, 3)), name="pat")
    assert issubclass(ColourImageError, ImageError)


# --- bad input: each message names the file ----------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match=r"nope\.png: file not found"):
        read_image(path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match=r"broken\.png: unreadable file"):
        read_image(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "image.xyz"
    path.write_bytes(b"0")
    with pytest.raises(ImageError, match=r"image\.xyz: unsupported image suffix '\.xyz'"):
        read_image(path)


@pytest.mark.parametrize("bad,what", [(np.nan, "1 NaN/Inf"), (np.inf, "1 NaN/Inf")])
def test_nan_and_inf_are_rejected_in_every_mode(tmp_path, bad, what):
    arr = np.full((4, 4), 0.5)
    arr[2, 3] = bad
    path = tmp_path / "nan.npy"
    np.save(path, arr)
    for mode in ("none", "auto", "minmax"):
        with pytest.raises(ImageError, match=rf"nan\.npy: {what}"):
            read_image(path, intensity=mode)


def test_empty_image(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    with pytest.raises(ImageError, match=r"empty\.npy: empty"):
        read_image(tmp_path / "empty.npy")


def test_volume_is_not_an_image(tmp_path):
    np.save(tmp_path / "vol.npy", np.zeros((3, 4, 5)))
    with pytest.raises(ImageError, match=r"vol\.npy: expected a 2-D image, got shape \(3, 4, 5\)"):
        read_image(tmp_path / "vol.npy")


def test_float_outside_unit_range_needs_a_mode(tmp_path):
    np.save(tmp_path / "hu.npy", np.array([[-2.0, 0.0], [1.0, 2.0]]))
    with pytest.raises(ImageError, match=r"hu\.npy: float values must lie in \[0, 1\].*intensity='auto'"):
        read_image(tmp_path / "hu.npy")
    np.testing.assert_array_equal(read_image(tmp_path / "hu.npy", intensity="auto"),
                                  np.float32([[0, 0.5], [0.75, 1]]))


# --- intensity modes -----------------------------------------------------------------------------

def test_auto_keeps_dtype_scaling_for_unsigned_integers():
    k = _some_uint16()
    np.testing.assert_array_equal(normalize_intensity(k, "auto"), (k / 65535.0).astype(np.float32))
    np.testing.assert_array_equal(normalize_intensity(np.array([True, False]), "auto"), [1.0, 0.0])


def test_auto_rescales_signed_pat_by_min_max():
    pat = np.array([[-3.0, -1.0], [0.0, 1.0]])  # signed PAT: zero lands at -min/(max-min) = 0.75
    np.testing.assert_array_equal(normalize_intensity(pat, "auto"), np.float32([[0, 0.5], [0.75, 1]]))
    signed_int = np.array([[-100, 0], [100, 300]], np.int16)
    np.testing.assert_array_equal(normalize_intensity(signed_int, "auto"), np.float32([[0, 0.25], [0.5, 1]]))


def test_minmax_applies_to_integers_and_volumes_as_a_whole():
    k = np.array([[10, 20], [15, 12]], np.uint8)
    np.testing.assert_array_equal(normalize_intensity(k, "minmax"), np.float32([[0, 1], [0.5, 0.2]]))
    vol = np.stack([np.zeros((2, 2)), np.full((2, 2), 4.0)])
    out = normalize_intensity(vol, "auto")
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[0], 0.0)  # the dark slice stays dark: one mapping per volume
    np.testing.assert_array_equal(out[1], 1.0)


def test_none_mode_is_the_as_image_rule():
    k = _all_uint8()
    np.testing.assert_array_equal(normalize_intensity(k, "none"), as_image(k))
    with pytest.raises(ImageError, match="negative values"):
        normalize_intensity(np.array([[-1, 2]], np.int16), "none", name="x")


def test_constant_data_map_to_zero_with_a_warning():
    with pytest.warns(UserWarning, match="constant"):
        out = normalize_intensity(np.full((3, 3), 7.5), "auto")
    np.testing.assert_array_equal(out, 0.0)


def test_unknown_intensity_mode():
    with pytest.raises(ImageError, match="unknown intensity mode 'zscore'"):
        normalize_intensity(np.zeros((2, 2)), "zscore")


# --- NIfTI and DICOM -----------------------------------------------------------------------------

def test_nifti_volume_read_with_spacing_and_last_slice_axis(tmp_path):
    vol = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 5
    nib.save(nib.Nifti1Image(vol, np.diag([0.1, 0.2, 0.5, 1.0])), tmp_path / "v.nii.gz")
    loaded = read_array(tmp_path / "v.nii.gz")
    assert loaded.format == "nifti" and loaded.slice_axis == 2
    np.testing.assert_array_equal(loaded.array, vol)
    np.testing.assert_allclose(loaded.spacing, (0.1, 0.2, 0.5))


def test_nifti_single_slice_is_an_image(tmp_path):
    img = np.array([[0.0, 10.0], [5.0, 2.5]], np.float32)
    nib.save(nib.Nifti1Image(img[..., None], np.eye(4)), tmp_path / "s.nii")
    np.testing.assert_array_equal(read_image(tmp_path / "s.nii", intensity="auto"),
                                  np.float32([[0, 1], [0.5, 0.25]]))


def test_dicom_bundled_mr_small():
    ds = pydicom.dcmread(MR_SMALL)
    loaded = read_array(MR_SMALL)
    assert loaded.format == "dicom" and loaded.array.shape == (64, 64)
    assert loaded.spacing == (0.3125, 0.3125)
    np.testing.assert_array_equal(loaded.array, ds.pixel_array.astype(np.float64))
    img = read_image(MR_SMALL, intensity="auto")
    px = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(img, (px - px.min()) / (px.max() - px.min()), atol=1e-7)
    assert img.min() == 0.0 and img.max() == 1.0


def test_unreadable_dicom_names_the_file(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(ImageError, match=r"bad\.dcm: unreadable file"):
        read_array(tmp_path / "bad.dcm")


# --- small helpers -------------------------------------------------------------------------------

def test_suffix_and_stem_treat_nii_gz_as_one_suffix():
    assert file_suffix("a/b.NII.GZ") == ".nii.gz" and file_stem("a/mouse.1.nii.gz") == "mouse.1"
    assert file_suffix("x.PNG") == ".png" and file_stem("x.PNG") == "x"


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"abc")
    atomic_write_bytes(target, b"defg")
    assert target.read_bytes() == b"defg"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_no_warning_for_ordinary_reads(tmp_path):
    iio.imwrite(tmp_path / "a.png", _all_uint8())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "a.png", intensity="auto")
