"""The task entry: a run folder in, contour and organ tables plus an overlay figure out."""
import json

import numpy as np
import pandas as pd
import pytest

from fusionbench.data import load_dataset, write_image

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
    for name in ("contour.csv", "contour.tex", "contour.md", "organs.csv", "organs.tex", "organs.md",
                 "organ_instances.csv", "overlay.png"):
        assert (seg / name).exists(), name
    assert result["sources"] == ["PAT", "MRI", "average"]
    contour = pd.read_csv(seg / "contour.csv", index_col=0)
    assert list(contour.index) == ["PAT", "MRI", "average"]
    assert contour["dsc_mean"].between(50, 100).all()  # the hand-made contour finds the bodies
    assert "Body" in (seg / "organs.md").read_text()
    # Train images of the fused source were produced by running the method on the train split.
    train = load_dataset(DATASET, "train")
    assert len(list((seg / "train_images" / "average").glob("*.png"))) == len(train)
    configs = [json.loads((seg / "organ_models" / s / "config.json").read_text()) for s in result["sources"]]
    keys = ("seed", "epochs", "batch_size", "lr", "channels", "size", "preset")
    assert all({k: c[k] for k in keys} == {k: configs[0][k] for k in keys} for c in configs)
    assert all(c["n_train"] == len(train) for c in configs)


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
    paths = [run_dir / "segment" / "train_images" / "average" / f"{c.id}.png" for c in cases]
    first = _fused_train_images(run_dir, {**record, "method_configs": {"average": {"weights": "a"}}}, "average", cases)
    stamps = [p.stat().st_mtime_ns for p in paths]
    np.testing.assert_allclose(first[0], 0.5 * (cases[0].pat + cases[0].mri), atol=1 / 255)
    _fused_train_images(run_dir, {**record, "method_configs": {"average": {"weights": "a"}}}, "average", cases)
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # cached
    _fused_train_images(run_dir, {**record, "method_configs": {"average": {"weights": "b"}}}, "average", cases)
    assert all(p.stat().st_mtime_ns > s for p, s in zip(paths, stamps))
