"""PAT-only labelled data (the COCO importer's output) as a dataset: loader, `run --methods none`,
the task tables with the PAT row alone, and the errors for what needs an MRI."""
from __future__ import annotations

import csv
import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fusionbench.cli import app
from fusionbench.data import Case, ImageError, load_dataset, load_folder
from fusionbench.data.folder import auto_split
from fusionbench.data.importers import import_coco
from fusionbench.runner import RunConfig, RunError, run

SIZE = 48
WATER, BODY, LIVER = 100, 210, 180  # 8-bit levels: a bright body on mid-gray coupling water
cli = CliRunner()


def _names(n_train=3, n_test=3) -> list[str]:
    """Case ids that ``split=auto`` puts in train and test (the hash decides, so choose the ids)."""
    chosen = {"train": [], "test": []}
    for k in range(200):
        name = f"m{k:02d}"
        split = auto_split(name)
        if split in chosen and len(chosen[split]) < {"train": n_train, "test": n_test}[split]:
            chosen[split].append(name)
    return sorted(chosen["train"] + chosen["test"])


def _disc(cx, cy, r, shape=(SIZE, SIZE)) -> np.ndarray:
    """The pixels whose centres lie inside the circle (COCO coordinates: centre of pixel (r, c) at (c+.5, r+.5))."""
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2


def _circle(cx, cy, r, n=96) -> list[float]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).ravel().round(3).tolist()


def _coco(root, names):
    """A tiny COCO set: per image a body disc (with a liver disc inside) on water, as polygons."""
    images = root / "images"
    images.mkdir(parents=True)
    entries, anns, shapes = [], [], {}
    for k, name in enumerate(names):
        cx, cy, r = 24 + (k % 3) - 1, 24 + (k % 2), 13 + k % 4
        img = np.full((SIZE, SIZE), WATER, np.uint8)
        img[_disc(cx, cy, r)] = BODY
        img[_disc(cx + 3, cy, r / 3)] = LIVER
        iio.imwrite(images / f"{name}.png", img)
        entries.append({"id": k, "file_name": f"{name}.png", "height": SIZE, "width": SIZE})
        anns.append({"id": 2 * k, "image_id": k, "category_id": 1, "segmentation": [_circle(cx, cy, r)]})
        anns.append({"id": 2 * k + 1, "image_id": k, "category_id": 2,
                     "segmentation": [_circle(cx + 3, cy, r / 3)]})
        shapes[name] = (cx, cy, r)
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns,
                                "categories": [{"id": 1, "name": "body"}, {"id": 2, "name": "liver"}]}))
    return images, path, shapes


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    images, ann, shapes = _coco(root, _names())
    out = root / "out"
    import_coco(images, ann, out)
    return out, shapes


def _dsc(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 200.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# --- the Case record -------------------------------------------------------------------------------

def test_pat_only_case():
    pat = np.zeros((6, 5), np.float32)
    case = Case("a", pat, labels_pat=np.ones((6, 5), np.uint8))
    assert case.mri is None and not case.has_mri and case.shape == (6, 5)
    assert Case("b", pat, pat).has_mri
    with pytest.raises(ImageError, match=r"a/labels_mri: given for a PAT-only case \(mri is None\)"):
        Case("a", pat, labels_mri=np.ones((6, 5), np.uint8))
    with pytest.raises(ImageError, match=r"a/flow_true: given for a PAT-only case"):
        Case("a", pat, None, flow_true=np.zeros((2, 6, 5), np.float32))
    with pytest.raises(ImageError, match=r"a/labels_pat: shape \(5, 5\) differs from image shape \(6, 5\)"):
        Case("a", pat, labels_pat=np.ones((5, 5), np.uint8))


# --- the loader ------------------------------------------------------------------------------------

def test_coco_output_loads_as_a_split_dataset(coco_folder):
    out, shapes = coco_folder
    assert (out / "manifest.csv").read_text().splitlines()[0] == "id,pat,labels_pat"
    cases = load_folder(out, split_fractions="auto")
    assert [c.id for c in cases] == sorted(shapes)
    for c in cases:
        assert c.mri is None and not c.has_mri and c.shape == (SIZE, SIZE)
        assert c.labels_mri is None and c.flow_true is None
        assert c.meta["split"] == auto_split(c.id)
        np.testing.assert_array_equal(c.pat, iio.imread(out / "pat" / f"{c.id}.png") / np.float32(255))
        cx, cy, r = shapes[c.id]
        # The importer's rasterised polygon is the disc but for pixels whose centre sits near the rim.
        assert _dsc(c.labels_pat > 0, _disc(cx, cy, r)) > 98
        assert set(np.unique(c.labels_pat)) == {0, 1, 5}  # background, body, liver
    train = load_dataset(f"folder:{out},split=auto", "train")
    test = load_dataset(f"folder:{out},split=auto", "test")
    assert [c.id for c in train] == [c.id for c in cases if c.meta["split"] == "train"] and len(train) == 3
    assert [c.id for c in test] == [c.id for c in cases if c.meta["split"] == "test"] and len(test) == 3


def test_pat_subfolder_and_empty_mri_column_are_pat_only(tmp_path):
    pat, lab = np.full((8, 9), 40, np.uint8), np.eye(8, 9, dtype=np.uint8)
    for name in ("a", "b"):
        for role, arr in (("pat", pat), ("labels_pat", lab)):
            (tmp_path / role).mkdir(exist_ok=True)
            iio.imwrite(tmp_path / role / f"{name}.png", arr)
    (tmp_path / "labels_pat" / "b.png").unlink()  # partial annotation
    a, b = load_folder(tmp_path)
    assert (a.mri, b.mri) == (None, None) and b.labels_pat is None
    np.testing.assert_array_equal(a.labels_pat, lab)
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "pat", "mri", "split"], ["a", "pat/a.png", "", "train"],
                                  ["b", "pat/b.png", "", "test"]])
    (b,) = load_folder(tmp_path, split="test")
    assert b.id == "b" and b.mri is None and b.meta["split"] == "test"


def _manifest(root, header, rows):
    for name in ("a", "b"):
        for role in ("pat", "mri", "labels_mri"):
            (root / role).mkdir(exist_ok=True)
            iio.imwrite(root / role / f"{name}.png", np.zeros((6, 6), np.uint8))
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


def test_mixed_manifest_is_one_error_naming_it(tmp_path):
    _manifest(tmp_path, ["id", "pat", "mri"], [["a", "pat/a.png", "mri/a.png"], ["b", "pat/b.png", ""]])
    with pytest.raises(ImageError) as info:
        load_folder(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'manifest.csv'}: mixes PAT/MRI pairs and PAT-only rows")
    assert "line 2, id a, has an mri file; line 3, id b, has none" in message


def test_labels_mri_without_mri_is_an_error(tmp_path):
    _manifest(tmp_path, ["id", "pat", "labels_mri"], [["a", "pat/a.png", "labels_mri/a.png"]])
    with pytest.raises(ImageError, match=r"manifest\.csv line 2 \(id a\): labels_mri given without an mri file"):
        load_folder(tmp_path)
    (tmp_path / "manifest.csv").unlink()
    for p in (tmp_path / "mri").iterdir():
        p.unlink()
    (tmp_path / "mri").rmdir()
    with pytest.raises(ImageError, match=r"labels_mri: labels_mri/ without an mri/ folder"):
        load_folder(tmp_path)


def test_split_folders_must_agree_and_misalign_needs_mri(tmp_path):
    for split, roles in (("train", ("pat", "mri")), ("test", ("pat",))):
        for role in roles:
            (tmp_path / split / role).mkdir(parents=True)
            iio.imwrite(tmp_path / split / role / f"{split}1.png", np.zeros((6, 6), np.uint8))
    with pytest.raises(ImageError, match=r"split folders train/ have an mri/ folder but test/ not"):
        load_folder(tmp_path)
    for p in (tmp_path / "train" / "mri").iterdir():
        p.unlink()
    (tmp_path / "train" / "mri").rmdir()
    assert [(c.id, c.meta["split"], c.mri) for c in load_folder(tmp_path)] == [("test1", "test", None),
                                                                                ("train1", "train", None)]
    with pytest.raises(ImageError, match=r"misalign= needs PAT/MRI pairs .* this dataset is PAT-only"):
        load_folder(tmp_path, misalign="mild")


# --- runs and tasks --------------------------------------------------------------------------------

def test_fusion_on_pat_only_data_is_refused_up_front(coco_folder, tmp_path):
    out, _ = coco_folder
    with pytest.raises(RunError, match=r"is PAT-only \(no MRI images\), but registration and fusion methods "
                                       r"need PAT/MRI pairs \(average\); run it with --methods none --tasks"):
        run(RunConfig(methods=["average"], out=tmp_path / "r", dataset=f"folder:{out}", jobs=1))
    assert not (tmp_path / "r").exists()  # refused before any work
    result = cli.invoke(app, ["run", "--dataset", f"folder:{out}", "--methods", "average,maximum",
                              "--out", str(tmp_path / "r"), "--jobs", "1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert "PAT-only" in result.output and "--methods none" in result.output and "average, maximum" in result.output
    assert lines[0].startswith("error:") and len(" ".join(lines)) < 400  # one message (the terminal may wrap it)


def test_run_methods_none_then_contour_table_has_the_pat_row(coco_folder, tmp_path):
    from segment.contour import ContourSegmenter

    out, shapes = coco_folder
    dataset = f"folder:{out},split=auto"
    run_dir = tmp_path / "run"
    result = cli.invoke(app, ["run", "--dataset", dataset, "--methods", "none", "--tasks", "contour",
                              "--preset", "quick", "--out", str(run_dir), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "run.json").read_text())
    test_ids = [c.id for c in load_dataset(dataset, "test")]
    assert record["methods"] == [] and record["registration_methods"] == [] and record["registration"] is None
    assert record["cases"] == test_ids and record["dataset"] == dataset
    for case_id in test_ids:
        assert (run_dir / "sources" / case_id / "pat.png").exists()
        assert not (run_dir / "sources" / case_id / "mri.png").exists()
    assert not (run_dir / "cases").exists() and (run_dir / "report" / "index.html").exists()

    seg = run_dir / "segment"
    contour = pd.read_csv(seg / "contour.csv", index_col=0)
    assert list(contour.index) == ["PAT"]
    assert json.loads((seg / "segment.json").read_text())["sources"] == ["PAT"]
    assert (seg / "overlay.png").exists() and "| PAT |" in (seg / "contour.md").read_text()
    rows = pd.read_csv(seg / "results.csv")
    dsc = rows[rows["metric"] == "dsc"].set_index("case")["value"]
    assert set(rows["method"]) == {"PAT"} and sorted(dsc.index) == test_ids
    # Independently: the hand-made contour on the stored PAT, Dice by counting against the stored label map.
    ours = []
    for case_id in test_ids:
        pat = iio.imread(out / "pat" / f"{case_id}.png") / 255.0
        body = iio.imread(out / "labels_pat" / f"{case_id}.png") > 0
        mask = ContourSegmenter(cost="hand").segment(pat).mask
        ours.append(_dsc(mask, body))
        assert dsc[case_id] == pytest.approx(ours[-1], rel=1e-9)  # results.csv: 10 digits
        assert dsc[case_id] > 90  # a bright disc on mid-gray water is found
        assert _dsc(mask, _disc(*shapes[case_id])) > 90  # ... and it is the drawn disc
    assert contour.loc["PAT", "dsc_mean"] == pytest.approx(np.mean(ours), rel=1e-9)
    assert contour.loc["PAT", "dsc_std"] == pytest.approx(np.std(ours, ddof=1), rel=1e-8)

    # `fusionbench segment` on the same run afterwards; --methods none (PAT and MRI only) too.
    again = cli.invoke(app, ["segment", str(run_dir), "--tasks", "contour", "--methods", "none"])
    assert again.exit_code == 0, again.output
    assert list(pd.read_csv(seg / "contour.csv", index_col=0).index) == ["PAT"]


def test_organs_task_on_pat_only_run(coco_folder, tmp_path):
    import torch

    from segment.organ_model import OrganModel
    from segment.task import run_tasks

    torch.set_num_threads(1)
    out, _ = coco_folder
    run_dir = tmp_path / "run"
    run(RunConfig(methods=[], out=run_dir, dataset=f"folder:{out},split=auto", jobs=1))
    tiny = {"epochs": 1, "size": 32, "channels": (4, 8), "strides": (2,), "batch_size": 8}
    result = run_tasks(run_dir, tasks=("contour", "organs"), preset="quick", jobs=1, train_overrides=tiny)
    assert result["sources"] == ["PAT"]
    organs = pd.read_csv(run_dir / "segment" / "organs.csv", index_col=0)
    assert list(organs.index) == ["PAT"]
    config = json.loads((run_dir / "segment" / "organ_models" / "PAT" / "config.json").read_text())
    assert config["n_train"] == 3  # the train split's three labelled images
    rows = result["results"]
    body = rows[(rows["group"] == "organs") & (rows["metric"] == "body")].set_index("case")["value"]
    # Independently: the saved PAT model on the test PAT images, Dice of the whole animal (label > 0).
    model = OrganModel.load(run_dir / "segment" / "organ_models" / "PAT")
    test = load_dataset(f"folder:{out},split=auto", "test")
    ours = [_dsc(pred > 0, c.labels_pat > 0) for pred, c in zip(model.predict([c.pat for c in test]), test)]
    np.testing.assert_allclose(body.reindex([c.id for c in test]), ours, rtol=1e-9)
    assert organs.loc["PAT", "body_mean"] == pytest.approx(np.mean(ours), rel=1e-9)


def test_tasks_on_pat_only_data_need_labels_pat(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "data" / "pat").mkdir(parents=True, exist_ok=True)
        iio.imwrite(tmp_path / "data" / "pat" / f"{name}.png", np.full((32, 32), 90, np.uint8))
    run(RunConfig(methods=[], out=tmp_path / "run", dataset=f"folder:{tmp_path / 'data'}", jobs=1))
    result = cli.invoke(app, ["segment", str(tmp_path / "run"), "--tasks", "contour"])
    assert result.exit_code == 2
    assert "need label maps (labels_pat) on every test case; 2 of 2 lack them" in " ".join(result.output.split())
