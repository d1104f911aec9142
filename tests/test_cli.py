"""The command line, driven in-process with typer's runner."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fusionbench.cli import app
from fusionbench.data.io import write_image
from fusionbench.methods import _REGISTRY, FusionMethod, register_method
from fusionbench.scoring import score_triplet

runner = CliRunner()


@pytest.fixture
def triplet(tmp_path):
    rng = np.random.default_rng(1)
    pat, mri = rng.random((32, 32)).astype(np.float32), rng.random((32, 32)).astype(np.float32)
    paths = {}
    for name, img in (("pat", pat), ("mri", mri), ("fused", np.maximum(pat, mri))):
        paths[name] = tmp_path / f"{name}.png"
        write_image(paths[name], img)
    return paths


def test_list_shows_methods_with_roles():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "average" in result.output and "identity" in result.output and "registration" in result.output


def test_score_json_matches_the_library(triplet):
    result = runner.invoke(app, ["score", "--pat", str(triplet["pat"]), "--mri", str(triplet["mri"]),
                                 "--fused", str(triplet["fused"]), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    from fusionbench.data.io import read_image

    expected = score_triplet(*(read_image(triplet[k]) for k in ("pat", "mri", "fused")))
    assert scores.keys() == expected.keys()
    assert scores["fusion"] == pytest.approx(expected["fusion"])
    assert set(scores["registration"]) == {"MI", "NMI", "NCC"}


def test_score_bad_input_is_one_clear_line(triplet, tmp_path):
    result = runner.invoke(app, ["score", "--pat", str(tmp_path / "missing.png"), "--mri", str(triplet["mri"]),
                                 "--fused", str(triplet["fused"])])
    assert result.exit_code == 2
    assert "missing.png: file not found" in result.output and "Traceback" not in result.output
    write_image(tmp_path / "small.png", np.zeros((8, 8), np.float32))
    result = runner.invoke(app, ["score", "--pat", str(tmp_path / "small.png"), "--mri", str(triplet["mri"]),
                                 "--fused", str(triplet["fused"])])
    assert result.exit_code == 2 and "shape mismatch" in result.output


@pytest.mark.slow
def test_run_errors_and_exit_codes(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["run", "--methods", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "not_a_run")])
    assert result.exit_code == 2 and "no such run folder" in result.output

    before = dict(_REGISTRY)

    @register_method("always_fails", kind="traditional")
    class AlwaysFails(FusionMethod):
        def fuse(self, pat, mri):
            raise ValueError("no luck")

    try:
        args = ["run", "--dataset", "phantom:n=4,size=64", "--registration", "identity", "--jobs", "1",
                "--metrics", "SF,EN", "--limit", "2"]
        failed = runner.invoke(app, args + ["--methods", "always_fails", "--out", str(tmp_path / "f")])
        assert failed.exit_code == 1, failed.output
        assert "ValueError: no luck" in failed.output
        mixed = runner.invoke(app, args + ["--methods", "always_fails,average", "--out", str(tmp_path / "m")])
        assert mixed.exit_code == 0, mixed.output
        assert (tmp_path / "m" / "report" / "fusion.md").exists()
        report = runner.invoke(app, ["report", str(tmp_path / "m")])
        assert report.exit_code == 0 and "| average |" in report.output
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(before)


@pytest.mark.slow
def test_run_with_contour_task_writes_table_3(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "t"
    result = runner.invoke(app, ["run", "--dataset", "phantom:n=4,size=64", "--registration", "identity",
                                 "--jobs", "1", "--metrics", "SF", "--methods", "average,maximum", "--out",
                                 str(out), "--tasks", "contour", "--no-report"])  # the task, not the report
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "segment" / "contour.csv").set_index("method")
    assert set(table.index) == {"PAT", "MRI", "average", "maximum"}
    assert table.loc["MRI", "dsc_mean"] > 95 and table.loc["PAT", "dsc_mean"] > 70
    # `segment --methods` evaluates only the named methods (the sources PAT and MRI always).
    again = runner.invoke(app, ["segment", str(out), "--tasks", "contour", "--methods", "average", "--jobs", "1"])
    assert again.exit_code == 0, again.output
    table = pd.read_csv(out / "segment" / "contour.csv").set_index("method")
    assert set(table.index) == {"PAT", "MRI", "average"}
    unknown = runner.invoke(app, ["segment", str(out), "--tasks", "nope"])
    assert unknown.exit_code == 2 and "unknown task(s) nope" in unknown.output
    not_a_run = runner.invoke(app, ["segment", str(tmp_path)])
    assert not_a_run.exit_code == 2 and "no run.json" in not_a_run.output


@pytest.mark.slow
def test_fit_with_a_preset_is_the_fit_a_run_with_the_same_settings_uses(tmp_path, monkeypatch):
    # `fusionbench fit pamrfuse+ --preset paper --device cuda` is the command; the tiny
    # preset keeps the same path cheap.
    from fusionbench.weights import read_provenance

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    data = "phantom:n=4,size=64"
    fitted = runner.invoke(app, ["fit", "pamrfuse+", "--dataset", data, "--preset", "tiny", "--device", "cpu"])
    assert fitted.exit_code == 0, fitted.output
    assert "fitted weights" in fitted.output
    folders = list((tmp_path / "cache" / "weights" / "pamrfuse+").glob("*/weights"))
    assert len(folders) == 1 and (folders[0] / "weights.pt").is_file()
    record = read_provenance(folders[0])
    record_sha = record["weights_sha256"]
    assert record["train_config"]["preset"] == "tiny" and record["metrics"]["epochs"] >= 1
    again = runner.invoke(app, ["fit", "pamrfuse+", "--dataset", data, "--preset", "tiny", "--device", "cpu"])
    assert again.exit_code == 0 and "cached weights" in again.output

    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--dataset", data, "--registration", "identity", "--jobs", "1",
                                 "--metrics", "SF", "--limit", "1", "--device", "cpu", "--methods", "pamrfuse+",
                                 "--set", "pamrfuse+.preset=tiny", "--out", str(out), "--no-report"])
    assert result.exit_code == 0, result.output
    assert "fitting" not in result.output  # the cached fit was used, not a new training
    record = json.loads((out / "run.json").read_text())
    assert record["method_settings"] == {"pamrfuse+": {"preset": "tiny"}}
    assert record["method_configs"]["pamrfuse+"]["config"]["preset"] == "tiny"
    assert record["weights"]["pamrfuse+"].startswith("fit: phantom 2.0 (n=4,size=64) train split [")

    # The fit's folder applied to other data (e.g. real pairs): used as given, nothing refitted.
    other = "phantom:n=4,size=64,seed=7"
    given = runner.invoke(app, ["run", "--dataset", other, "--registration", "identity", "--jobs", "1",
                                "--metrics", "SF", "--limit", "1", "--device", "cpu", "--methods", "pamrfuse+",
                                "--set", "pamrfuse+.preset=tiny", "--set", f'pamrfuse+.weights="{folders[0]}"',
                                "--out", str(tmp_path / "given"), "--no-report"])
    assert given.exit_code == 0, given.output
    assert "fitting" not in given.output
    assert json.loads((tmp_path / "given" / "run.json").read_text())["weights"]["pamrfuse+"] == (
        f"given: phantom 2.0 (n=4,size=64) train split [{record_sha[:8]}]")
    refit = runner.invoke(app, ["fit", "pamrfuse+", "--dataset", other, "--preset", "tiny", "--device", "cpu",
                                "--set", f'weights="{folders[0]}"'])
    assert refit.exit_code != 0 and "a weights folder is for `fusionbench run" in refit.output


def test_bad_method_settings_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "--dataset", "phantom:n=4,size=64", "--registration", "identity", "--jobs", "1",
            "--metrics", "SF", "--limit", "1", "--methods", "average"]
    no_method = runner.invoke(app, args + ["--set", "preset=paper", "--out", str(tmp_path / "a")])
    assert no_method.exit_code == 2 and "expected METHOD.KEY=VALUE" in no_method.output
    elsewhere = runner.invoke(app, args + ["--set", "maximum.x=1", "--out", str(tmp_path / "b")])
    assert elsewhere.exit_code == 2 and "not in this run: maximum" in elsewhere.output
    unknown = runner.invoke(app, args + ["--set", "average.colour=2", "--out", str(tmp_path / "c")])
    assert unknown.exit_code == 1 and "average: settings {'colour': 2} not accepted" in unknown.output


def test_fit_init_fine_tunes_from_a_folder_and_keeps_what_it_does_not_train(tmp_path, monkeypatch):
    """``fit --init``: stage II alone with the released code's PAT branch, from a finished fit.
    P2M is frozen in stage II, so its generator (what ``p2m+vm`` is keyed on) is the start's."""
    from fusionbench.nn.training import state_digest
    from fusionbench.weights import read_provenance
    from pamrfuse.method import PAMRFusePlus

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    data = ["--dataset", "phantom:n=4,size=64", "--preset", "tiny", "--device", "cpu"]
    assert runner.invoke(app, ["fit", "pamrfuse+", *data]).exit_code == 0
    (start,) = (tmp_path / "cache" / "weights" / "pamrfuse+").glob("*/weights")
    tuned = runner.invoke(app, ["fit", "pamrfuse+", *data, "--set", "mlr_pat_branch=true",
                                "--set", "epochs_stage1=0", "--set", "epochs_stage2=1", "--init", str(start)])
    assert tuned.exit_code == 0, tuned.output
    (folder,) = [f for f in (tmp_path / "cache" / "weights" / "pamrfuse+").glob("*/weights") if f != start]
    record = read_provenance(folder)
    assert record["init_weights"] == read_provenance(start)["weights_sha256"]
    before = PAMRFusePlus(preset="tiny", weights=str(start), device="cpu").net
    after = PAMRFusePlus(preset="tiny", mlr_pat_branch=True, epochs_stage1=0, epochs_stage2=1,
                         weights=str(folder), device="cpu").net
    assert state_digest(after.p2m.g_pm) == state_digest(before.p2m.g_pm)
    assert state_digest(after.mlr) != state_digest(before.mlr)
    # weights whose networks differ (another preset's sizes): one line naming the folder
    bad = runner.invoke(app, ["fit", "pamrfuse+", "--dataset", "phantom:n=4,size=64", "--device", "cpu",
                              "--init", str(start)])
    assert bad.exit_code == 2 and f"{start}: cannot start pamrfuse+ from these weights" in bad.output
    assert "Traceback" not in bad.output
