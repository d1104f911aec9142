"""The harness: end to end on a tiny phantom set, failures, resume (also after SIGKILL), executors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionbench.data.datasets import describe_dataset, load_dataset
from fusionbench.data.io import read_image
from fusionbench.methods import _REGISTRY, FusionMethod, Trainable, register_method
from fusionbench.metrics.fusion import fusion_suite
from fusionbench.metrics.registration import endpoint_error
from fusionbench.report import build_report
from fusionbench.results import load_failures, load_results
from fusionbench.runner import RunConfig, RunError, run

SPEC = "phantom:n=4,size=64"
# FMI_w dominates the scoring time at this size; every other metric keeps the tests fast.
FAST_METRICS = ["MI", "VIF", "Qabf", "SF", "SSIM", "FMI_pixel", "EN", "PSNR"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def phantom_cache(tmp_path_factory):
    """A private phantom/fit cache for this module, filled once."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("FUSIONBENCH_CACHE")
    os.environ["FUSIONBENCH_CACHE"] = str(cache)
    load_dataset(SPEC, "test", jobs=1)
    yield cache
    if old is None:
        os.environ.pop("FUSIONBENCH_CACHE", None)
    else:
        os.environ["FUSIONBENCH_CACHE"] = old


@pytest.fixture
def scratch_methods():
    """Methods registered by a test are removed afterwards."""
    from fusionbench.methods import load_plugins

    load_plugins()  # snapshot the full registry, not whatever was imported so far
    before = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


def _config(out, **kw):
    base = dict(methods=["average", "maximum"], out=out, dataset=SPEC, registration="identity", jobs=1,
                metrics=FAST_METRICS)
    return RunConfig(**{**base, **kw})


def _values(run_dir) -> pd.DataFrame:
    """The results without timing, which is the only thing allowed to differ between runs."""
    df = load_results(run_dir)
    return df[df["group"] != "time"].drop(columns="seconds").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "reference"
    summary = run(_config(out))
    build_report(out)
    return out, summary


def test_end_to_end_outputs_and_values(reference_run):
    out, summary = reference_run
    cases = load_dataset(SPEC, "test")
    assert [c.id for c in cases] == json.loads((out / "run.json").read_text())["cases"]
    assert {m: (s.ok, s.failed) for m, s in summary.methods.items()} == {
        "identity": (4, 0), "average": (4, 0), "maximum": (4, 0)}
    df = load_results(out)
    fusion = df[df["group"] == "fusion"]
    assert len(fusion) == 2 * 4 * len(FAST_METRICS)
    # One row per (method, case, group, metric): no duplicate, no half row.
    assert not df.duplicated(["method", "case", "group", "metric"]).any()
    case = cases[1]
    # The identity registration leaves PAT as it is, so the fused image is the mean of the inputs
    # (8-bit PNG: within half a grey level) and the metrics are those of fusion_suite on the inputs.
    fused_png = read_image(out / "fused" / "average" / f"{case.id}.png")
    np.testing.assert_allclose(fused_png, 0.5 * (case.pat + case.mri), atol=0.5 / 255 + 1e-6)
    expected = fusion_suite(case.pat, case.mri, 0.5 * (case.pat + case.mri), metrics=FAST_METRICS)
    got = fusion.query("method == 'average' and case == @case.id").set_index("metric")["value"]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12)
    flow = np.load(out / "flows" / "identity" / f"{case.id}.npy")
    assert flow.shape == (2, *case.shape) and not flow.any()
    reg = df.query("method == 'identity' and case == @case.id and group == 'registration'")
    reg = reg.set_index("metric")["value"]
    epe = endpoint_error(np.zeros_like(case.flow_true), case.flow_true, mask=case.labels_mri > 0)
    assert reg["EPE_mean"] == pytest.approx(epe["mean"], rel=1e-9)
    assert reg["EPE_mean"] > 0.1  # the phantom is misaligned
    times = df[df["group"] == "time"]
    assert set(times["metric"]) == {"registration", "fusion", "scoring"}
    assert (times["value"] >= 0).all()
    # The report: both tables, the figure, Markdown with bold best cells.
    for name in ("fusion.csv", "fusion.tex", "fusion.md", "registration.md", "runtime.md",
                 "significance.csv", "fused_grid.png", "README.md"):
        assert (out / "report" / name).stat().st_size > 0, name
    table = pd.read_csv(out / "report" / "fusion.csv", index_col="method")
    means = fusion.pivot_table(index="method", columns="metric", values="value")
    assert table.loc["maximum", "SF_mean"] == pytest.approx(means.loc["maximum", "SF"], rel=1e-9)
    assert table.loc["average", "MI_n"] == 4


def test_resume_recomputes_only_missing_cases(reference_run, tmp_path):
    import shutil

    ref, _ = reference_run
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    removed = sorted((out / "cases" / "maximum").glob("*.json"))[2]
    removed.unlink()
    kept = out / "cases" / "average" / removed.name
    stamp = kept.stat().st_mtime_ns
    with pytest.raises(RunError, match="--resume"):
        run(_config(out))
    summary = run(_config(out, resume=True))
    assert (summary.methods["maximum"].ok, summary.methods["maximum"].skipped) == (1, 3)
    assert summary.methods["average"].ok == 0 and summary.methods["average"].skipped == 4
    assert kept.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(_values(out), _values(ref))
    with pytest.raises(RunError, match="dataset_fingerprint"):
        run(_config(out, resume=True, dataset="phantom:n=4,size=64,misalign=severe"))


def test_resume_redoes_a_method_whose_weights_changed(tmp_path, scratch_methods):
    weights = {"sha256": "aaaa"}

    @register_method("reweighted", kind="traditional")
    class Reweighted(FusionMethod):
        def config(self):
            return dict(weights)

        def fuse(self, pat, mri):
            return 0.5 * (pat + mri) if weights["sha256"] == "aaaa" else np.maximum(pat, mri)

    out = tmp_path / "run"
    run(_config(out, methods=["average", "reweighted"]))
    first = _values(out)
    again = run(_config(out, methods=["average", "reweighted"], resume=True))
    assert again.methods["reweighted"].skipped == 4 and again.methods["reweighted"].ok == 0
    weights["sha256"] = "bbbb"  # new weights: its 4 cases are stale, average's are not
    changed = run(_config(out, methods=["average", "reweighted"], resume=True))
    assert (changed.methods["reweighted"].ok, changed.methods["reweighted"].skipped) == (4, 0)
    assert (changed.methods["average"].ok, changed.methods["average"].skipped) == (0, 4)
    sf = _values(out).query("metric == 'SF'").set_index("method")["value"]
    sf_first = first.query("metric == 'SF'").set_index("method")["value"]
    assert sf.loc["reweighted"].mean() > sf_first.loc["reweighted"].mean()  # max keeps the sharper edges


def test_failing_method_is_isolated(tmp_path, scratch_methods):
    @register_method("explodes", kind="traditional")
    class Explodes(FusionMethod):
        def fuse(self, pat, mri):
            raise RuntimeError("kaboom")

    @register_method("bad_output", kind="traditional")
    class BadOutput(FusionMethod):
        def fuse(self, pat, mri):  # a wrong shape on the first case only (--jobs 1: one instance)
            self.calls = getattr(self, "calls", 0) + 1
            return pat[:-1] if self.calls == 1 else pat

    summary = run(_config(tmp_path / "run", methods=["average", "explodes", "bad_output"]))
    assert summary.methods["explodes"].state == "failed"
    assert summary.methods["explodes"].errors == ["RuntimeError: kaboom"]
    assert (summary.methods["bad_output"].ok, summary.methods["bad_output"].failed) == (3, 1)
    assert "shape mismatch" in summary.methods["bad_output"].errors[0]
    assert summary.methods["average"].state == "ok" and not summary.all_failed
    failures = load_failures(tmp_path / "run")
    assert sorted(failures["method"].value_counts().items()) == [("bad_output", 1), ("explodes", 4)]
    assert set(load_results(tmp_path / "run").query("group == 'fusion'")["method"]) == {"average", "bad_output"}
    only_failures = run(_config(tmp_path / "run2", methods=["explodes"]))
    assert only_failures.all_failed


class _Trainable(Trainable, FusionMethod):
    """Counts fits; untrained until fitted (like a deep method without shipped weights)."""

    fits = 0
    shipped = None

    def __init__(self):
        self.level, self.provenance = None, {}

    def train_config(self):
        return {"version": "1"}

    def fit(self, cases, workdir):
        type(self).fits += 1
        self.level = float(np.mean([c.pat.mean() for c in cases]))
        return {}

    def save_weights(self, folder):
        (Path(folder) / "level.json").write_text(json.dumps(self.level))

    def load_weights(self, folder):
        self.level = json.loads((Path(folder) / "level.json").read_text())

    def shipped_weights(self):
        return type(self).shipped

    def fuse(self, pat, mri):
        return np.clip(np.minimum(pat, mri) * (1 + self.level), 0, 1)


def test_untrained_methods_are_skipped_unless_named_or_fit(tmp_path, scratch_methods):
    register_method("slowlearner", kind="cnn")(_Trainable)
    _Trainable.fits, _Trainable.shipped = 0, None
    cache = tmp_path / "weights"
    summary = run(_config(tmp_path / "auto", methods=["average", "slowlearner"], fit=[], cache_dir=cache))
    assert summary.methods["slowlearner"].state == "untrained"
    assert "fusionbench fit slowlearner" in summary.methods["slowlearner"].untrained
    assert _Trainable.fits == 0
    assert set(load_results(tmp_path / "auto")["method"]) == {"identity", "average"}
    # named explicitly: trained once, cached, then run on every case
    summary = run(_config(tmp_path / "named", methods=["slowlearner"], fit=["slowlearner"], cache_dir=cache))
    assert _Trainable.fits == 1 and summary.methods["slowlearner"].ok == 4
    record = json.loads((tmp_path / "named" / "run.json").read_text())
    assert record["weights"]["slowlearner"].startswith(f"fit: {describe_dataset(SPEC)} train split [")
    # the cached weights count: an unnamed selection now runs it without training again
    summary = run(_config(tmp_path / "again", methods=["slowlearner"], fit=[], cache_dir=cache))
    assert _Trainable.fits == 1 and summary.methods["slowlearner"].ok == 4


def _ship_a_fit(name, tmp_path):
    """Register ``_Trainable`` as ``name``, fit it on SPEC's train split and ship the weights."""
    from fusionbench.weights import ship_weights

    register_method(name, kind="cnn")(_Trainable)
    _Trainable.fits, _Trainable.shipped = 0, None
    run(_config(tmp_path / "fit", methods=[name], fit=True, cache_dir=tmp_path / "c1"))
    _Trainable.shipped = tmp_path / "shipped"
    ship_weights(_Trainable(), next((tmp_path / "c1").glob(f"{name}/*/weights")), require_converged=False)


def test_shipped_weights_for_these_data_are_used_without_fit(tmp_path, scratch_methods):
    _ship_a_fit("shippedlearner", tmp_path)
    try:
        summary = run(_config(tmp_path / "w", methods=["shippedlearner"], fit=[], cache_dir=tmp_path / "c2"))
    finally:
        _Trainable.shipped = None
    assert _Trainable.fits == 1 and summary.methods["shippedlearner"].ok == 4
    assert not (tmp_path / "c2").exists()


def test_an_untrained_shared_registration_stops_the_run_before_any_work(tmp_path, scratch_methods):
    from fusionbench.methods import RegistrationMethod

    @register_method("reg-to-train", kind="registration")
    class RegToTrain(_Trainable, RegistrationMethod):
        def register(self, moving, fixed):
            return moving, np.zeros((2, *fixed.shape), np.float32)

    with pytest.raises(RunError, match="--registration reg-to-train: no weights"):
        run(_config(tmp_path / "r", registration="reg-to-train", fit=[], cache_dir=tmp_path / "c"))
    assert not (tmp_path / "r" / "cases").exists()


def test_run_leaves_the_callers_config_unchanged(tmp_path):
    config = _config(tmp_path / "m", metrics=["mi", "ssim"])
    before = repr(config)
    run(config)
    assert repr(config) == before


def test_unknown_options_raise_before_any_work(tmp_path):
    with pytest.raises(RunError, match="unknown method"):
        run(_config(tmp_path / "a", methods=["no_such_method"]))
    with pytest.raises(RunError, match="not a registration"):
        run(_config(tmp_path / "b", registration="average"))
    with pytest.raises(RunError, match="unknown fusion metric"):
        run(_config(tmp_path / "c", metrics=["MI", "sharpness"]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "cases").exists()


def test_no_methods_writes_the_run_record_and_sources_only(tmp_path):
    from fusionbench.methods import resolve_methods

    assert resolve_methods("none") == [] and resolve_methods(" None ") == []
    with pytest.raises(KeyError, match="cannot be combined"):
        resolve_methods("none,average")
    summary = run(_config(tmp_path / "r", methods=[], registration=None))
    assert summary.methods == {} and summary.registration is None and not summary.all_failed
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["methods"] == record["registration_methods"] == [] and record["registration"] is None
    cases = load_dataset(SPEC, "test")
    assert record["cases"] == [c.id for c in cases]
    for c in cases:  # a pair dataset: both sources, for the task evaluations' PAT and MRI rows
        np.testing.assert_allclose(read_image(tmp_path / "r" / "sources" / c.id / "mri.png"), c.mri, atol=0.5 / 255)
    assert not (tmp_path / "r" / "cases").exists() and load_results(tmp_path / "r").empty
    build_report(tmp_path / "r")  # nothing to tabulate, nothing breaks


@pytest.mark.slow
def test_process_pool_and_dask_give_identical_results(reference_run, tmp_path):
    ref, _ = reference_run
    run(_config(tmp_path / "jobs2", jobs=2))
    pd.testing.assert_frame_equal(_values(tmp_path / "jobs2"), _values(ref))
    pytest.importorskip("distributed")
    summary = run(_config(tmp_path / "dask", scheduler="local:2"))
    assert summary.executor.startswith("dask")
    pd.testing.assert_frame_equal(_values(tmp_path / "dask"), _values(ref))


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_tables(reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fusionbench.cli", "run", "--methods", "average,maximum",
           "--dataset", SPEC, "--out", str(out), "--registration", "identity", "--jobs", "1",
           "--metrics", ",".join(FAST_METRICS)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd + ["--no-report"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "cases" / "average").glob("*.json"))) >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list((out / "cases").glob("*/*.json"))
    assert 0 < len(done) < 12
    for path in done:  # every case file that exists is complete
        assert json.loads(path.read_text())["status"] == "ok"
    result = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    pd.testing.assert_frame_equal(_values(out), _values(ref))
    build_report(ref)
    for table in ("fusion.csv", "registration.csv"):
        # wall-clock columns are the only ones allowed to differ
        got, want = (pd.read_csv(d / "report" / table) for d in (out, ref))
        got, want = (t.loc[:, ~t.columns.str.startswith("time_")] for t in (got, want))
        pd.testing.assert_frame_equal(got, want)


def test_registration_methods_named_in_methods_are_scored_as_registration(tmp_path, scratch_methods):
    from fusionbench.methods import RegistrationMethod
    from fusionbench.warp import warp

    @register_method("true-flow", kind="registration", reference="test: a registration that knows the answer")
    class TrueFlow(RegistrationMethod):
        def register(self, moving, fixed):
            case = next(c for c in load_dataset(SPEC, "test") if np.array_equal(c.mri, fixed))
            return warp(moving, case.flow_true), case.flow_true

    out = tmp_path / "reg"
    run(_config(out, methods=["average", "true-flow"], metrics=["SF"]))
    record = json.loads((out / "run.json").read_text())
    assert record["registration_methods"] == ["identity", "true-flow"] and record["methods"] == ["average"]
    df = load_results(out)
    epe = df[(df["group"] == "registration") & (df["metric"] == "EPE_mean")].groupby("method")["value"].mean()
    assert epe["true-flow"] == pytest.approx(0.0, abs=1e-9) and epe["identity"] > 0.1
    # the fusion still ran after the shared (identity) registration
    assert set(df.loc[df["group"] == "fusion", "method"]) == {"average"}


def _pair_folder(root, n=3, size=32, seed=0):
    """A folder dataset of ``n`` smooth random pairs (pat/ and mri/ matched by name, no split)."""
    from scipy import ndimage as ndi

    from fusionbench.data.io import write_image

    rng = np.random.default_rng(seed)
    for i in range(n):
        for role in ("pat", "mri"):
            img = ndi.gaussian_filter(rng.random((size, size)), 2)
            img = (img - img.min()) / (img.max() - img.min())
            write_image(root / role / f"p{i}.png", img.astype(np.float32))
    return f"folder:{root}"


def test_shipped_weights_run_on_other_data_and_every_table_says_so(tmp_path, scratch_methods):
    _ship_a_fit("portable", tmp_path)
    data = _pair_folder(tmp_path / "pairs")  # no train split: nothing to fit on, shipped weights run
    try:
        summary = run(_config(tmp_path / "real", methods=["average", "portable"], dataset=data,
                              cache_dir=tmp_path / "c2"))
        with pytest.raises(RunError, match="--fit portable: .*split"):
            run(_config(tmp_path / "refit", methods=["portable"], dataset=data, fit=True, cache_dir=tmp_path / "c2"))
    finally:
        _Trainable.shipped = None
    assert _Trainable.fits == 1 and summary.methods["portable"].ok == 3
    note = summary.methods["portable"].weights
    assert note.startswith(f"shipped: {describe_dataset(SPEC)} train split [") and summary.methods["average"].weights == ""
    assert json.loads((tmp_path / "real" / "run.json").read_text())["weights"] == {"portable": note}
    build_report(tmp_path / "real")
    md = (tmp_path / "real" / "report" / "fusion.md").read_text()
    assert "| Weights |" in md and note in md
    csv = pd.read_csv(tmp_path / "real" / "report" / "fusion.csv").set_index("method")
    assert csv.at["portable", "weights"] == note and pd.isna(csv.at["average", "weights"])


def test_external_fused_images_are_scored_as_rows(tmp_path):
    from fusionbench.data.io import write_image

    data = _pair_folder(tmp_path / "pairs", size=32)
    cases = load_dataset(data, "test")
    ext = tmp_path / "ext"
    for c in cases:  # another tool's fusion: the average, 28x28 as after valid convolutions
        write_image(ext / f"{c.id}.png", (0.5 * (c.pat + c.mri))[2:-2, 2:-2])
    base = dict(methods=["average"], dataset=data, metrics=["SF", "SSIM"])
    with pytest.raises(RunError, match=r"p0\.png: fused image of 28x28 for a 32x32 pair; add ,size=resize"):
        run(_config(tmp_path / "a", external=[f"other={ext}"], **base))
    run(_config(tmp_path / "b", external=[f"other={ext},size=crop"], **base))
    df = load_results(tmp_path / "b").query("group == 'fusion'")
    sf = df[df["metric"] == "SF"].set_index(["method", "case"])["value"]
    for c in cases:  # scored on the pair's centre crop: SF of the crop of the average, 8-bit rounded
        fused = read_image(ext / f"{c.id}.png").astype(np.float64)
        np.testing.assert_allclose(fused, 0.5 * (c.pat + c.mri)[2:-2, 2:-2], atol=0.5 / 255 + 1e-6)
        want = np.sqrt(np.mean(np.diff(fused, axis=0) ** 2) + np.mean(np.diff(fused, axis=1) ** 2))
        assert sf[("other", c.id)] == pytest.approx(want, rel=1e-6)
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["methods"] == ["average", "other"] and record["weights"]["other"].startswith("external: ")
    run(_config(tmp_path / "c", external=[f"other={ext},size=pad"], **base))
    assert set(load_results(tmp_path / "c").query("group == 'fusion'")["method"]) == {"average", "other"}
    # size=resize scores the pair resized to 28x28: a fused image equal to the resized average has
    # the SSIM of that average against its resized sources
    import cv2

    for c in cases:
        small = [cv2.resize(x, (28, 28), interpolation=cv2.INTER_LINEAR) for x in (c.pat, c.mri)]
        write_image(ext / f"{c.id}.png", 0.5 * (small[0] + small[1]))
    run(_config(tmp_path / "r", external=[f"other={ext},size=resize"], methods=["average"], dataset=data,
                metrics=["SSIM"]))
    ssim = load_results(tmp_path / "r").query("group == 'fusion'").set_index(["method", "case"])["value"]
    from fusionbench.metrics.fusion import fusion_suite

    for c in cases:
        small = [cv2.resize(x, (28, 28), interpolation=cv2.INTER_LINEAR) for x in (c.pat, c.mri)]
        want = fusion_suite(*small, read_image(ext / f"{c.id}.png"), metrics=["SSIM"])["SSIM"]
        assert ssim[("other", c.id)] == pytest.approx(want, rel=1e-9)
    (ext / "p1.png").unlink()
    with pytest.raises(RunError, match=r"ext/p1\.\*: no fused image for case 'p1'"):
        run(_config(tmp_path / "d", external=[f"other={ext},size=crop"], **base))
    (ext / "p1.png").write_bytes(b"not an image")
    with pytest.raises(RunError, match=r"p1\.png"):
        run(_config(tmp_path / "e", external=[f"other={ext},size=crop"], **base))
    with pytest.raises(RunError, match="unknown option"):
        run(_config(tmp_path / "f", external=[f"other={ext},size=stretch"], **base))


def test_endpoint_error_is_measured_inside_the_roi_when_there_are_no_labels():
    from fusionbench.scoring import score_registration

    mri = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    flow_true = np.full((2, 8, 8), 3.0, np.float32)
    roi = np.zeros((8, 8), bool)
    roi[2:6, 2:6] = True
    flow_true[:, roi] = 0.6  # |(0.6, 0.6)| = 0.8485 inside, |(3, 3)| = 4.243 outside
    rows = {r["metric"]: r["value"] for r in score_registration(mri, mri, flow_true=flow_true, roi=roi)}
    assert rows["EPE_mean"] == pytest.approx(0.6 * np.sqrt(2), rel=1e-6)
    rows = {r["metric"]: r["value"] for r in score_registration(mri, mri, flow_true=flow_true)}
    assert rows["EPE_mean"] == pytest.approx((16 * 0.6 + 48 * 3.0) * np.sqrt(2) / 64, rel=1e-6)
