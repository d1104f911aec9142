"""The realism statistics (fusionbench.data.realism) on images whose answers are known, and the
``fusionbench phantom --realism`` command."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from fusionbench.cli import app
from fusionbench.data import Case
from fusionbench.data.io import write_image
from fusionbench.data.realism import FREQS, SIDE, case_stats, compare, image_stats


def _disk(side=SIDE, radius=64):
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    return np.hypot(yy, xx) < radius


def test_body_size_and_intensities_of_a_flat_disk():
    body = _disk()
    img = np.where(body, 0.6, 0.2)
    s = image_stats(img, body)
    assert s.body_width == 128 / 256  # columns -63.5 .. 63.5 of the centred grid: 128 of them
    assert s.body_area == pytest.approx(np.pi * 64 ** 2 / 256 ** 2, rel=0.01)
    assert s.summary["inside_median"] == pytest.approx(0.6) and s.summary["outside_median"] == pytest.approx(0.2)
    assert s.summary["contrast"] == pytest.approx(0.4)
    assert s.summary["inside_iqr"] == pytest.approx(0.0, abs=1e-12)
    # the core excludes the outline, so a flat inside has no gradient there
    assert s.summary["gradient_median"] == pytest.approx(0.0, abs=1e-12)


def test_images_of_another_size_are_resampled_first():
    small = image_stats(np.where(_disk(128, 32), 0.6, 0.2), _disk(128, 32))
    assert small.body_width == pytest.approx(0.5, abs=2 / 256)


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_spectral_slope_of_power_law_noise(beta):
    """A field with power ∝ f^-beta has log-log slope -beta (the Hann window blurs the lowest bins)."""
    rng = np.random.default_rng(0)
    f = np.fft.fftfreq(SIDE)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    radius[0, 0] = 1.0
    slopes = []
    for _ in range(4):
        field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((SIDE, SIDE))) * radius ** (-beta / 2)))
        field = (field - field.min()) / np.ptp(field)
        slopes.append(image_stats(field, _disk()).summary["spectral_slope"])
    assert np.mean(slopes) == pytest.approx(-beta, abs=0.2)


def test_high_frequency_share_of_two_cosines():
    x = np.arange(SIDE)
    fine = np.tile(0.5 + 0.4 * np.cos(2 * np.pi * 0.3 * x), (SIDE, 1))
    coarse = np.tile(0.5 + 0.4 * np.cos(2 * np.pi * 0.05 * x), (SIDE, 1))
    assert image_stats(fine, _disk()).summary["high_freq_power"] > 0.95
    assert image_stats(coarse, _disk()).summary["high_freq_power"] < 0.01
    assert image_stats(fine, _disk()).spectrum.shape == FREQS.shape


def test_compare_distances_are_zero_to_itself_and_the_level_gap_between_flat_sets():
    body = _disk()
    a = [image_stats(np.where(body, 0.6, 0.2), body)] * 2
    b = [image_stats(np.where(body, 0.7, 0.25), body)] * 2
    rows = {r["statistic"]: r for r in compare({"real": a, "phantom": b})}
    assert rows["W1_inside"]["real"] == 0 and rows["W1_inside"]["phantom"] == pytest.approx(0.1, abs=1e-6)
    assert rows["W1_outside"]["phantom"] == pytest.approx(0.05, abs=1e-6)
    assert rows["inside_median"]["phantom"] == pytest.approx(0.7)
    assert rows["spectrum_log10_gap"]["real"] == 0


def test_case_masks_come_from_labels_else_from_the_mri():
    body = _disk()
    mri = np.where(body, 0.7, 0.02).astype(np.float32)
    pat = np.where(body, 0.5, 0.3).astype(np.float32)
    with_labels = case_stats(Case(id="a", pat=pat, mri=mri, labels_mri=body.astype(np.uint8),
                                  labels_pat=body.astype(np.uint8)))
    without = case_stats(Case(id="b", pat=pat, mri=mri))
    for s in (with_labels, without):
        assert s["pat"].summary["inside_median"] == pytest.approx(0.5)
        assert s["mri"].body_width == pytest.approx(0.5, abs=2 / 256)
    with pytest.raises(ValueError, match="empty or fills the frame"):
        image_stats(pat, np.zeros_like(body))


def test_realism_command_writes_table_and_figure(tmp_path):
    real = tmp_path / "real"
    rng = np.random.default_rng(1)
    rows = []
    for i in range(3):
        body = _disk(96, 30 + i)
        write_image(real / "pat" / f"{i}.png", np.clip(np.where(body, 0.45, 0.28) + rng.normal(0, 0.02, body.shape), 0, 1))
        write_image(real / "mri" / f"{i}.png", np.clip(np.where(body, 0.6, 0.05) + rng.normal(0, 0.01, body.shape), 0, 1))
        rows.append(f"{i},pat/{i}.png,mri/{i}.png")
    (real / "manifest.csv").write_text("id,pat,mri\n" + "\n".join(rows) + "\n")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["phantom", "--realism", str(real), "--out", str(out), "--n", "4",
                                      "--size", "64", "--version", "1.2,2.0", "-j", "1"])
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(open(out / "realism.csv")))
    assert {r["modality"] for r in table} == {"pat", "mri"} and (out / "realism.png").stat().st_size > 10_000
    width = next(r for r in table if r["modality"] == "mri" and r["statistic"] == "body_width")
    assert float(width["real"]) == pytest.approx(0.66, abs=0.03)  # disks of diameter 60-64 in 96 px
    assert float(width["phantom 1.2"]) < 0.59 < float(width["phantom 2.0"])  # 2.0 frames the body as real slices
    assert width["reference"] == "real"
    bad = CliRunner().invoke(app, ["phantom", "--realism", str(tmp_path / "nowhere"), "--out", str(out)])
    assert bad.exit_code != 0 and "nowhere" in bad.output and "Traceback" not in bad.output
