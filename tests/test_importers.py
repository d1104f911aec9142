"""`fusionbench data import`: PAMRFuse v1 and COCO importers on tiny synthetic files in the real formats."""
from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from fusionbench.cli import app
from fusionbench.data import ORGAN_IDS, ImageError, load_folder
from fusionbench.data.importers import (GRAY_TOLERANCE, import_coco, import_pamrfuse_v1, parse_map,
                                        polygon_mask, rasterize_polygons, read_gray)

runner = CliRunner()


def _blocks(h, w, seed):
    """A gray image of constant 16x16 blocks (JPEG MCUs), so JPEG keeps it within a few levels."""
    rng = np.random.default_rng(seed)
    levels = rng.integers(20, 236, size=(-(-h // 16), -(-w // 16)))
    return np.kron(levels, np.ones((16, 16), np.int64))[:h, :w].astype(np.uint8)


def _jpeg(path, gray, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.stack([gray] * 3, axis=-1) if rgb else gray
    iio.imwrite(path, arr, extension=".jpg", quality=95)
    return path


def _pamrfuse_repo(root, n=2, size=32, fused=30, npy_names=("a1", "a2")):
    """A PAMRFuse v1 checkout in miniature: uN (1-channel PAT JPEG), oN (RGB JPEG of gray MRI),
    reg_data/val2D/{A,B}/NAME.npy in [-1, 1], fusion_result/N.jpg at the smaller fused size."""
    grays = {}
    for i in range(1, n + 1):
        grays[("pat", i)] = _blocks(size, size, seed=i)
        grays[("mri", i)] = _blocks(size, size, seed=100 + i)
        _jpeg(root / "fusion_data" / "OursregPATMRI" / f"u{i}.jpg", grays[("pat", i)], rgb=False)
        _jpeg(root / "fusion_data" / "OursregPATMRI" / f"o{i}.jpg", grays[("mri", i)], rgb=True)
        _jpeg(root / "fusion_result" / f"{i}.jpg", _blocks(fused, fused, seed=200 + i), rgb=False)
    arrays = {}
    for k, name in enumerate(npy_names):
        for sub in ("A", "B"):
            x = np.linspace(-1, 1, 20 * 24).reshape(20, 24)
            x = x if sub == "A" else -x  # A (MRI) -1 at top-left, B (PAT) 1 at top-left
            x = np.roll(x, k, axis=1)
            (root / "reg_data" / "val2D" / sub).mkdir(parents=True, exist_ok=True)
            np.save(root / "reg_data" / "val2D" / sub / f"{name}.npy", x)
            arrays[(sub, name)] = x
    return grays, arrays


# ---------------------------------------------------------------------------------------------
# gray rule


def test_rgb_jpeg_of_gray_reads_as_its_gray_values(tmp_path):
    gray = _blocks(48, 40, seed=3)
    got = read_gray(_jpeg(tmp_path / "o.jpg", gray, rgb=True))
    assert got.dtype == np.uint8 and got.shape == (48, 40)
    assert np.abs(got.astype(int) - gray).max() <= 3  # JPEG tolerance on flat 16x16 blocks
    decoded = iio.imread(tmp_path / "o.jpg")
    if np.all(decoded == decoded[..., :1]):  # identical channels: the first channel, untouched
        np.testing.assert_array_equal(got, decoded[..., 0])
    one = read_gray(_jpeg(tmp_path / "u.jpg", gray, rgb=False))
    assert np.abs(one.astype(int) - gray).max() <= 3


def test_gray_rule_near_gray_uses_bt601_and_rejects_colour(tmp_path):
    near = np.zeros((4, 4, 3), np.uint8)
    near[...] = (100, 102, 98)  # a gray copy with chroma noise
    iio.imwrite(tmp_path / "near.png", near)
    assert np.all(read_gray(tmp_path / "near.png") == 101)  # 0.299*100 + 0.587*102 + 0.114*98 = 100.946
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 100 + GRAY_TOLERANCE + 1
    red[..., 1:] = 100
    iio.imwrite(tmp_path / "red.png", red)
    with pytest.raises(ImageError, match=r"red\.png: colour image .*differ by up to 13 levels"):
        read_gray(tmp_path / "red.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"bad\.jpg: unreadable file"):
        read_gray(tmp_path / "bad.jpg")


def test_sixteen_bit_png_stays_sixteen_bit(tmp_path):
    img = np.array([[0, 1, 65534, 65535]], np.uint16)
    iio.imwrite(tmp_path / "g.png", img)
    out = read_gray(tmp_path / "g.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, img)


# ---------------------------------------------------------------------------------------------
# PAMRFuse v1


def test_pamrfuse_v1_import_writes_three_folder_datasets(tmp_path):
    repo, out = tmp_path / "PAMRFuse", tmp_path / "out"
    grays, arrays = _pamrfuse_repo(repo)
    report = import_pamrfuse_v1(repo, out)
    assert [(p.name, p.count, p.sizes) for p in report.parts] == [
        ("registered", 2, [(32, 32)]), ("unaligned", 2, [(20, 24)]), ("external", 2, [(30, 30)])]
    text = "\n".join(report.lines())
    assert f"--dataset folder:{out / 'registered'}" in text
    assert f"--external pamrfuse-v1={out / 'external' / 'pamrfuse-v1'}" in text

    # registered: u = PAT, o = MRI; 8-bit PNG holding exactly the decoded JPEG's gray values
    for i in (1, 2):
        for role, prefix in (("pat", "u"), ("mri", "o")):
            png = iio.imread(out / "registered" / role / f"{i}.png")
            assert png.dtype == np.uint8
            np.testing.assert_array_equal(png, read_gray(repo / "fusion_data" / "OursregPATMRI" / f"{prefix}{i}.jpg"))
            assert np.abs(png.astype(int) - grays[(role, i)]).max() <= 3
    cases = load_folder(out / "registered")
    assert [c.id for c in cases] == ["1", "2"]
    assert cases[0].meta["source_pat"] == "fusion_data/OursregPATMRI/u1.jpg"
    np.testing.assert_allclose(cases[1].mri, iio.imread(out / "registered" / "mri" / "2.png") / 255, atol=1e-7)

    # unaligned: B = PAT, A = MRI; (x + 1) / 2 in 16 bits: -1 -> 0, 1 -> 65535
    pat = iio.imread(out / "unaligned" / "pat" / "a1.png")
    mri = iio.imread(out / "unaligned" / "mri" / "a1.png")
    assert pat.dtype == np.uint16 and pat.shape == (20, 24)
    assert pat[0, 0] == 65535 and pat[-1, -1] == 0  # B = -x: 1 at the top left
    assert mri[0, 0] == 0 and mri[-1, -1] == 65535
    np.testing.assert_allclose(mri / 65535, (arrays[("A", "a1")] + 1) / 2, atol=1 / 131070 + 1e-9)
    loaded = {c.id: c for c in load_folder(out / "unaligned")}
    assert sorted(loaded) == ["a1", "a2"]
    assert loaded["a1"].pat[0, 0] == 1.0 and loaded["a1"].pat[-1, -1] == 0.0
    np.testing.assert_allclose(loaded["a2"].pat, (arrays[("B", "a2")] + 1) / 2, atol=1e-5)

    # external: native size, 8-bit
    fused = iio.imread(out / "external" / "pamrfuse-v1" / "1.png")
    assert fused.shape == (30, 30) and fused.dtype == np.uint8
    assert np.abs(fused.astype(int) - _blocks(30, 30, seed=201)).max() <= 3

    # a second import into the same folder rewrites the same files
    import_pamrfuse_v1(repo, out)


def test_unaligned_as_npy_is_exact(tmp_path):
    repo, out = tmp_path / "r", tmp_path / "o"
    _, arrays = _pamrfuse_repo(repo)
    import_pamrfuse_v1(repo, out, parts=["unaligned"], unaligned_format="npy")
    got = np.load(out / "unaligned" / "mri" / "a2.npy")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, (arrays[("A", "a2")] + 1) / 2, atol=1e-7)
    assert got.min() == 0.0 and got.max() == 1.0
    assert not (out / "registered").exists() and not (out / "external").exists()
    cases = {c.id: c for c in load_folder(out / "unaligned", intensity="none")}
    np.testing.assert_array_equal(cases["a2"].mri, got)


def test_unaligned_pairs_follow_the_repositorys_sorted_order_when_names_differ(tmp_path):
    root = tmp_path / "r" / "reg_data" / "val2D"
    for sub, names in (("A", ("1_mri", "2_mri")), ("B", ("1_pat", "2_pat"))):
        (root / sub).mkdir(parents=True)
        for k, name in enumerate(names):
            np.save(root / sub / f"{name}.npy", np.full((4, 4), -1.0 + k))  # -1, then 0
    report = import_pamrfuse_v1(tmp_path / "r", tmp_path / "o", parts=["unaligned"])
    assert "paired in sorted order" in report.lines()[-1]
    assert iio.imread(tmp_path / "o" / "unaligned" / "pat" / "1_mri.png").max() == 0
    assert np.all(iio.imread(tmp_path / "o" / "unaligned" / "pat" / "2_mri.png") == 32768)  # 0 -> 0.5
    manifest = (tmp_path / "o" / "unaligned" / "manifest.csv").read_text().splitlines()
    assert manifest[1] == "1_mri,pat/1_mri.png,mri/1_mri.png,reg_data/val2D/B/1_pat.npy,reg_data/val2D/A/1_mri.npy"


def test_pamrfuse_errors_name_the_file(tmp_path):
    repo = tmp_path / "r"
    _pamrfuse_repo(repo)
    reg = repo / "fusion_data" / "OursregPATMRI"

    with pytest.raises(ImageError, match=r"nope: PAMRFuse v1 repository not found"):
        import_pamrfuse_v1(tmp_path / "nope", tmp_path / "o")
    _jpeg(reg / "u3.jpg", _blocks(32, 32, 9), rgb=False)
    with pytest.raises(ImageError, match=r"u3\.jpg: PAT image of pair '3' without its MRI partner \(o3\.<ext>\)"):
        import_pamrfuse_v1(repo, tmp_path / "o")
    _jpeg(reg / "o3.jpg", _blocks(30, 32, 9), rgb=True)
    with pytest.raises(ImageError, match=r"u3\.jpg: PAT 32x32 and MRI o3\.jpg 30x32 differ in size"):
        import_pamrfuse_v1(repo, tmp_path / "o")
    (reg / "o3.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ImageError, match=r"o3\.jpg: unreadable file"):
        import_pamrfuse_v1(repo, tmp_path / "o")
    (reg / "o3.jpg").unlink()
    (reg / "u3.jpg").unlink()
    _jpeg(repo / "fusion_result" / "7.jpg", _blocks(30, 30, 9), rgb=False)
    with pytest.raises(ImageError, match=r"7\.jpg: fused image '7' has no registered pair"):
        import_pamrfuse_v1(repo, tmp_path / "o")
    (repo / "fusion_result" / "7.jpg").unlink()
    assert not (tmp_path / "o").exists()  # nothing written while the inputs were wrong

    val = repo / "reg_data" / "val2D"
    np.save(val / "A" / "a3.npy", np.zeros((4, 4)))
    with pytest.raises(ImageError, match=r"A/a3\.npy: no B \(PAT\) partner \(A/ holds 3 files, B/ 2"):
        import_pamrfuse_v1(repo, tmp_path / "o", parts=["unaligned"])
    np.save(val / "B" / "a3.npy", np.zeros((4, 5)))
    with pytest.raises(ImageError, match=r"B/a3\.npy: PAT \(B\) 4x5 and MRI \(A\) a3\.npy 4x4 differ in size"):
        import_pamrfuse_v1(repo, tmp_path / "o", parts=["unaligned"])
    np.save(val / "B" / "a3.npy", np.full((4, 4), 255.0))
    with pytest.raises(ImageError, match=r"B/a3\.npy: values \[255, 255\] lie outside \[-1, 1\]"):
        import_pamrfuse_v1(repo, tmp_path / "o", parts=["unaligned"])
    (val / "B" / "a3.npy").unlink()
    (val / "A" / "a3.npy").unlink()

    import_pamrfuse_v1(repo, tmp_path / "o", parts=["registered"])
    (tmp_path / "o" / "registered" / "pat" / "old.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"old\.png: in the output folder but not written by this import"):
        import_pamrfuse_v1(repo, tmp_path / "o", parts=["registered"])


# ---------------------------------------------------------------------------------------------
# COCO


def test_rasterize_follows_the_pixel_centre_rule():
    square = np.array([[2, 2], [6, 2], [6, 6], [2, 6]], float)  # x, y
    lab = rasterize_polygons((8, 8), [(3, [square])])
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 2:6] = 3  # the 16 pixels whose centres (c + .5, r + .5) lie inside: the square's area
    np.testing.assert_array_equal(lab, expected)
    # a right triangle x + y < 8.2 from (1, 1): centres (c + .5, r + .5) with c, r >= 1, c + r <= 7
    tri = np.array([[1, 1], [7.2, 1], [1, 7.2]])
    assert int(rasterize_polygons((10, 10), [(1, [tri])]).sum()) == 21
    # two polygons sharing an edge share no pixel (half-open rule); together they tile the rectangle
    left, right = np.array([[0, 0], [3, 0], [3, 4], [0, 4]], float), np.array([[3, 0], [6, 0], [6, 4], [3, 4]], float)
    assert not np.any(polygon_mask((6, 8), left) & polygon_mask((6, 8), right))
    assert int((polygon_mask((6, 8), left) | polygon_mask((6, 8), right)).sum()) == 24
    # away from ties it is scikit-image's polygon at the pixel-centre shift
    from skimage.draw import polygon

    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(-3, 23, size=(7, 2)) + 1e-7
        rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, (20, 24))
        ref = np.zeros((20, 24), bool)
        ref[rr, cc] = True
        np.testing.assert_array_equal(polygon_mask((20, 24), xy), ref)
    # outside the image: clipped
    assert int(rasterize_polygons((4, 4), [(1, [np.array([[-5, -5], [2, -5], [2, 2], [-5, 2]], float)])]).sum()) == 4


def _coco(tmp_path, categories=None, extra_annotations=()):
    images = tmp_path / "JPEGImages"
    images.mkdir(exist_ok=True)
    _jpeg(images / "a.jpg", _blocks(10, 12, 1), rgb=False)
    _jpeg(images / "b.jpg", _blocks(10, 12, 2), rgb=True)
    _jpeg(images / "c.jpg", _blocks(10, 12, 3), rgb=False)
    cats = categories or [{"id": 0, "name": "_background_"}, {"id": 1, "name": "body"},
                          {"id": 2, "name": "liver"}, {"id": 3, "name": "vert"}, {"id": 4, "name": "vessel"},
                          {"id": 5, "name": "kidney"}, {"id": 6, "name": "spleen"}]
    sq = lambda x0, y0, x1, y1: [x0, y0, x1, y0, x1, y1, x0, y1]  # noqa: E731
    anns = [
        # image a: the liver is listed before the body but the body is drawn first; the kidney,
        # listed after the liver, wins where they overlap
        {"id": 1, "image_id": 10, "category_id": 2, "segmentation": [sq(2, 2, 6, 6)], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 1, "segmentation": [sq(1, 1, 11, 9)], "iscrowd": 0},
        {"id": 3, "image_id": 10, "category_id": 5, "segmentation": [sq(5, 5, 8, 8)], "iscrowd": 0},
        # image b: two polygons of one vertebra annotation, a vessel as one flat polygon
        {"id": 4, "image_id": 11, "category_id": 3, "segmentation": [sq(0, 0, 2, 2), sq(10, 8, 12, 10)]},
        {"id": 5, "image_id": 11, "category_id": 4, "segmentation": sq(4, 4, 5, 7)},
        *extra_annotations,
    ]
    data = {"images": [{"id": 10, "file_name": "a.jpg", "height": 10, "width": 12},
                       {"id": 11, "file_name": "JPEGImages/b.jpg", "height": 10, "width": 12},
                       {"id": 12, "file_name": "c.jpg", "height": 10, "width": 12}],
            "annotations": anns, "categories": cats}
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    return images, tmp_path / "annotations.json"


def test_coco_import_writes_exact_label_maps(tmp_path):
    images, ann = _coco(tmp_path)
    out = tmp_path / "out"
    report = import_coco(images, ann, out)
    assert report.parts[0].count == 3 and report.parts[0].sizes == [(10, 12)]
    assert "2 with a label map (labels_pat/), 1 without annotations" in "\n".join(report.lines())

    a = iio.imread(out / "labels_pat" / "a.png")
    assert a.dtype == np.uint8
    expected = np.zeros((10, 12), np.uint8)
    expected[1:9, 1:11] = ORGAN_IDS["body"]
    expected[2:6, 2:6] = ORGAN_IDS["liver"]
    expected[5:8, 5:8] = ORGAN_IDS["kidneys"]  # drawn after the liver: wins the overlap pixel (5, 5)
    np.testing.assert_array_equal(a, expected)
    assert np.count_nonzero(a == 5) == 16 - 1 and np.count_nonzero(a == 7) == 9

    b = iio.imread(out / "labels_pat" / "b.png")
    expected = np.zeros((10, 12), np.uint8)
    expected[0:2, 0:2] = expected[8:10, 10:12] = ORGAN_IDS["spine"]
    expected[4:7, 4] = ORGAN_IDS["vessels"]
    np.testing.assert_array_equal(b, expected)

    assert not (out / "labels_pat" / "c.png").exists()
    assert (out / "manifest.csv").read_text().splitlines() == [
        "id,pat,labels_pat", "a,pat/a.png,labels_pat/a.png", "b,pat/b.png,labels_pat/b.png", "c,pat/c.png,"]
    pat = iio.imread(out / "pat" / "b.png")  # an RGB JPEG of gray -> gray, within JPEG tolerance
    assert pat.dtype == np.uint8 and pat.shape == (10, 12)
    assert np.abs(pat.astype(int) - _blocks(10, 12, 2)).max() <= 3


def test_coco_map_ignore_and_unknown_categories(tmp_path):
    images, ann = _coco(tmp_path, extra_annotations=[
        {"id": 6, "image_id": 12, "category_id": 7, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
        categories=[{"id": 1, "name": "body"}, {"id": 2, "name": "liver"}, {"id": 3, "name": "vert"},
                    {"id": 4, "name": "vessel"}, {"id": 5, "name": "kidney"}, {"id": 7, "name": "tumor"}])
    with pytest.raises(ImageError, match=r"annotations\.json: category 'tumor' \(1 annotations\) has no organ; "
                                         r"pass --map tumor=ORGAN"):
        import_coco(images, ann, tmp_path / "o")
    import_coco(images, ann, tmp_path / "o", mapping=parse_map(["tumor=tumour", "vessel=ignore"]))
    c = iio.imread(tmp_path / "o" / "labels_pat" / "c.png")
    assert np.count_nonzero(c == ORGAN_IDS["tumour"]) == 16
    assert not np.any(iio.imread(tmp_path / "o" / "labels_pat" / "b.png") == ORGAN_IDS["vessels"])
    with pytest.raises(ImageError, match=r"--map 'tumor=cancer': unknown organ 'cancer'"):
        parse_map(["tumor=cancer"])
    with pytest.raises(ImageError, match=r"expected NAME=ORGAN"):
        parse_map(["tumor"])


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"].append({"id": 9, "image_id": 10, "category_id": 1,
                                        "segmentation": {"counts": [0, 4], "size": [10, 12]}, "iscrowd": 1}),
     r"annotation id 9 \(image a\.jpg\): RLE segmentation"),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 10, "category_id": 1, "segmentation": [[1, 2, 3, 4]]}),
     r"annotation id 9 \(image a\.jpg\): polygon of 4 numbers"),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 99, "category_id": 1,
                                        "segmentation": [[1, 2, 3, 4, 5, 6]]}),
     r"annotation id 9: image_id 99 is not among the images"),
    (lambda d: d["images"].append({"id": 13, "file_name": "missing.jpg"}),
     r"missing\.jpg: image 'missing\.jpg' of annotations\.json not found"),
    (lambda d: d["images"][0].update(height=11),
     r"a\.jpg: image is 10x12 but annotations\.json says 11x12"),
    (lambda d: d.pop("categories"), r"annotations\.json: not a COCO annotation file \(no 'categories' list\)"),
])
def test_coco_errors_name_the_file(tmp_path, change, message):
    images, ann = _coco(tmp_path)
    data = json.loads(ann.read_text())
    change(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(ImageError, match=message):
        import_coco(images, ann, tmp_path / "o")


def test_coco_unreadable_json_and_missing_folder(tmp_path):
    images, ann = _coco(tmp_path)
    ann.write_text('{"images": [')
    with pytest.raises(ImageError, match=r"annotations\.json: not valid JSON \(line 1"):
        import_coco(images, ann, tmp_path / "o")
    with pytest.raises(ImageError, match=r"nowhere: image folder not found"):
        import_coco(tmp_path / "nowhere", ann, tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_imports_and_fails_with_one_line(tmp_path):
    repo = tmp_path / "repo"
    _pamrfuse_repo(repo)
    result = runner.invoke(app, ["data", "import", "pamrfuse-v1", str(repo), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "registered: 2 PAT/MRI pairs" in result.output and "external: 2 fused images" in result.output
    assert (tmp_path / "out" / "unaligned" / "pat" / "a2.png").is_file()

    images, ann = _coco(tmp_path)
    result = runner.invoke(app, ["data", "import", "coco", "--images", str(images), "--annotations", str(ann),
                                 str(tmp_path / "coco"), "--map", "vessel=ignore"])
    assert result.exit_code == 0, result.output
    assert "vessel->ignore 1" in result.output.replace("\n", " ")
    assert (tmp_path / "coco" / "labels_pat" / "a.png").is_file()

    (repo / "fusion_data" / "OursregPATMRI" / "o2.jpg").unlink()
    result = runner.invoke(app, ["data", "import", "pamrfuse-v1", str(repo), str(tmp_path / "out2")])
    assert result.exit_code == 2
    assert "u2.jpg: PAT image of pair '2' without its MRI partner" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["data", "import", "coco", "--images", str(images), "--annotations", str(ann),
                                 str(tmp_path / "coco2"), "--map", "vessel"])
    assert result.exit_code == 2 and "expected NAME=ORGAN" in result.output
