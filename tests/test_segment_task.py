"""The task entry: a run folder in, contour and organ tables plus an overlay figure out."""
import json

import numpy as np
import pandas as pd
import pytest

from fusionbench.data import load_dataset, write_image
from fusionbench.results import COLUMNS, load_results

DATASET = "phantom:n=4,size=48,n_train_animals=2,n_val_animals=1"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cases = load_dataset(DATASET, "test")
    for c in cases:
        write_image(out / "fused" / "average" / f"{c.id}.png", 0.5 * (c.pat + c.mri))
    record = {"methods": ["average"], "registration": "identity", "dataset": DATASET,
              "cases": [c.id for c in cases], "device": "cpu"}
    (out / "run.json").write_text(json.dumps(record))
    return out


def test_run_tasks_writes_tables_figure_and_identical_configs(run_dir):
    import torch

    from segment import register_tasks
    from segment.task import run_tasks

    torch.set_num_threads(1)
    assert set(register_tasks()) == {"contour", "organs"}
    tiny = {"epochs": 1, "size": 32, "channels": (4, 8), "strides": (2,), "batch_size": 8}
    result = run_tasks(run_dir, tasks=("contour", "organs"), preset="quick", jobs=1, train_overrides=tiny)
    seg = run_dir / "segment"
    for name in ("results.csv", "failures.csv", "contour.csv", "contour.tex", "contour.md", "organs.csv",
                 "organs.tex", "organs.md", "overlay.png"):
        assert (seg / name).exists(), name
    assert result["sources"] == ["PAT", "MRI", "average"]
    contour = pd.read_csv(seg / "contour.csv", index_col=0)
    assert list(contour.index) == ["PAT", "MRI", "average"]
    assert contour["dsc_mean"].between(50, 100).all()  # the hand-made contour finds the bodies
    assert "Body" in (seg / "organs.md").read_text()
    # The rows read back through the core's reader; the tables are their means.
    rows = load_results(seg)
    assert list(rows.columns) == COLUMNS
    assert set(rows["group"]) == {"contour", "organs"} and set(rows["method"]) == set(result["sources"])
    pd.testing.assert_frame_equal(rows, result["results"], rtol=1e-9)  # to the CSV's 10 digits
    dsc = rows[(rows["group"] == "contour") & (rows["metric"] == "dsc")].groupby("method")["value"]
    assert (dsc.size() == len(json.loads((run_dir / "run.json").read_text())["cases"])).all()  # one per image
    np.testing.assert_allclose(contour["dsc_mean"], dsc.mean().reindex(contour.index), rtol=1e-9)
    # the std of values read back at 10 digits differs from the table's in the 9th
    np.testing.assert_allclose(contour["dsc_std"], dsc.std(ddof=1).reindex(contour.index), rtol=1e-7)
    organs = pd.read_csv(seg / "organs.csv", index_col=0)
    body = rows[(rows["group"] == "organs") & (rows["metric"] == "body")].groupby("method")["value"].mean()
    np.testing.assert_allclose(organs["body_mean"], body.reindex(organs.index), rtol=1e-9)
    # Train images of the fused source were produced by running the method on the train split.
    train = load_dataset(DATASET, "train")
    assert len(list((seg / "train_images" / "average").glob("*.png"))) == len(train)
    configs = [json.loads((seg / "organ_models" / s / "config.json").read_text()) for s in result["sources"]]
    keys = ("seed", "epochs", "batch_size", "lr", "channels", "size", "preset")
    assert all({k: c[k] for k in keys} == {k: configs[0][k] for k in keys} for c in configs)
    assert all(c["n_train"] == len(train) for c in configs)


def test_learned_contour_costs_are_kept_and_reused(run_dir, monkeypatch):
    import torch

    from segment import task
    from segment.contour import ContourSegmenter
    from segment.task import run_tasks

    torch.set_num_threads(1)
    tiny = {"cost": "learned", "steps": 3, "size": 32, "channels": (4, 8), "batch_size": 4}
    monkeypatch.setitem(task.CONTOUR_PRESETS, "standard", tiny)
    first = run_tasks(run_dir, tasks=("contour",), preset="standard", jobs=1)
    folders = sorted(p.name for p in (run_dir / "segment" / "contour_models").iterdir())
    assert folders == ["MRI", "PAT", "average"]
    record = json.loads((run_dir / "segment" / "contour_models" / "PAT" / "config.json").read_text())
    assert record["config"]["train"]["steps"] == 3 and len(record["losses"]) == 3
    # A second evaluation (after an interruption, or with another task) trains no contour cost
    # and scores the same contours.
    monkeypatch.setattr(ContourSegmenter, "fit", lambda *a, **k: pytest.fail("a kept cost was trained again"))
    second = run_tasks(run_dir, tasks=("contour",), preset="standard", jobs=1)
    values = ["method", "case", "group", "metric", "value"]  # not the timings
    pd.testing.assert_frame_equal(first["results"][values], second["results"][values])
    # Other settings are another cost: trained anew.
    monkeypatch.setitem(task.CONTOUR_PRESETS, "standard", {**tiny, "steps": 4})
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        run_tasks(run_dir, tasks=("contour",), preset="standard", jobs=1)


def test_run_tasks_rejects_bad_requests(run_dir, tmp_path):
    from segment.task import run_tasks

    with pytest.raises(ValueError, match="unknown task"):
        run_tasks(run_dir, tasks=("contour", "depth"))
    with pytest.raises(FileNotFoundError, match="run.json"):
        run_tasks(tmp_path, tasks=("contour",))
    with pytest.raises(ValueError, match="no fused images"):
        run_tasks(run_dir, tasks=("contour",), methods=["gtf"])


def test_train_fusions_are_redone_when_the_method_changed(run_dir):
    from segment.task import _fused_train_images

    record = json.loads((run_dir / "run.json").read_text())
    cases = load_dataset(DATASET, "train")[:2]
    folder = run_dir / "segment" / "train_images" / "average"
    paths = [folder / f"{c.id}.png" for c in cases]
    first = _fused_train_images(run_dir, record, "average", cases)
    stamps = [p.stat().st_mtime_ns for p in paths]
    np.testing.assert_allclose(first[0], 0.5 * (cases[0].pat + cases[0].mri), atol=1 / 255)
    _fused_train_images(run_dir, record, "average", cases)
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # cached
    # fusions left by another configuration (an older run in the same folder) are redone
    (folder / "fingerprint.txt").write_text("another configuration")
    _fused_train_images(run_dir, record, "average", cases)
    assert all(p.stat().st_mtime_ns > s for p, s in zip(paths, stamps))
    # a method whose weights or settings are no longer those of the test images is refused
    changed = {**record, "method_configs": {"average": {"config": {"other": 1}}}}
    with pytest.raises(ValueError, match="average: its configuration or weights differ"):
        _fused_train_images(run_dir, changed, "average", cases)


def _row(method, case, metric, value, group="contour"):
    return {"method": method, "case": case, "group": group, "metric": metric, "value": value, "seconds": 0.001}


def test_rows_go_through_the_core_writer_and_the_tables_are_their_means(tmp_path):
    from fusionbench.report.tables import to_markdown
    from segment.report import contour_table, write_results

    values = {"MRI": {"dsc": [98.0, 96.0, 97.0], "hausdorff": [0.5, 0.7, 0.6]},
              "PAT": {"dsc": [90.0, 94.0, 92.0], "hausdorff": [1.0, float("inf"), 2.0]}}
    rows = [_row(m, f"c{i}", metric, v) for m, by_metric in values.items() for metric, vs in by_metric.items()
            for i, v in enumerate(vs)]
    write_results(tmp_path, rows + [_row("MRI", "c0", "body", 99.0, group="organs")])
    assert (tmp_path / "cases" / "PAT" / "c1.json").exists()
    back = load_results(tmp_path)
    assert list(back.columns) == COLUMNS and len(back) == 13
    assert back.dtypes["value"] == float and back.dtypes["seconds"] == float
    assert np.isinf(back.loc[(back["method"] == "PAT") & (back["case"] == "c1") & (back["metric"] == "hausdorff"),
                             "value"]).all()
    table = contour_table(back, ["PAT", "MRI"], unit="mm")
    assert table.mean.at["MRI", "dsc"] == pytest.approx(97.0)           # the mean of the rows ...
    assert table.std.at["MRI", "dsc"] == pytest.approx(1.0)             # ... and their sample std
    assert table.mean.at["PAT", "hausdorff"] == pytest.approx(1.5)      # the infinite distance left out
    assert table.n.at["PAT", "hausdorff"] == 2
    assert table.higher == {"dsc": True, "hausdorff": False, "iou": True, "msd": False}
    assert table.best() == {"dsc": {"MRI"}, "hausdorff": {"MRI"}}       # the distance is lower-is-better
    assert list(table.avg_rank) == [2.0, 1.0]
    md = to_markdown(table)
    assert "| MRI | **97.0 ± 1.0** | **0.60 ± 0.10** | – | – | **1.00** |" in md and "Haus (mm) ↓" in md
    # A second call replaces the rows of its task and keeps the other task's rows.
    write_results(tmp_path, [_row("MRI", "c0", "dsc", 50.0)])
    back = load_results(tmp_path)
    mri_c0 = back[(back["method"] == "MRI") & (back["case"] == "c0")].set_index("metric")["value"]
    assert mri_c0.to_dict() == {"body": 99.0, "dsc": 50.0}


def test_organ_significance_against_the_better_single_modality():
    import pandas as pd

    from segment.report import organ_significance

    cases = [f"c{i}" for i in range(8)]
    mri = np.array([70, 72, 68, 75, 71, 69, 74, 73], float)
    rows = []
    for method, values in {"PAT": mri - 20, "MRI": mri, "fuse_a": mri + 10,
                           "fuse_b": mri + np.array([1, -2, 3, -4, 5, -6, 7, -8])}.items():
        rows += [{"method": method, "case": c, "group": "organs", "metric": "liver", "value": v, "seconds": 0.0}
                 for c, v in zip(cases, values)]
    table = organ_significance(pd.DataFrame(rows), ["PAT", "MRI", "fuse_a", "fuse_b"], organs=["liver"])
    assert list(table["reference"]) == ["MRI", "MRI"]  # MRI's mean beats PAT's
    a = table.set_index("method").loc["fuse_a"]
    # All 8 differences positive: the exact two-sided signed-rank p is 2 / 2^8; Holm over the two
    # methods doubles the smallest p.
    assert a["n"] == 8 and a["mean_diff"] == pytest.approx(10.0)
    assert a["p"] == pytest.approx(2 / 2 ** 8) and a["p_holm"] == pytest.approx(4 / 2 ** 8)
    assert a["verdict"] == "better"
    b = table.set_index("method").loc["fuse_b"]
    assert b["mean_diff"] == pytest.approx(-0.5) and b["verdict"] == "n.s."
