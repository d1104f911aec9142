"""Long training runs: time budget, validation curve, its tail trend and the shipping rule
(fusionbench.fitting), through the three training loops (deep fusion baselines, VoxelMorph,
PAMRFuse+)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from fusionbench.data import Case
from fusionbench.fitting import (BudgetExhausted, FitControl, TrainingClock, parse_budget, tail_trend,
                                 validation_metric, validation_scores)
from fusionbench.methods import create_method
from fusionbench.metrics import fusion as fm
from fusionbench.weights import WeightsError, cache_folder, converged, data_fingerprint, prepare_weights, ship_weights

torch.set_num_threads(1)


def _pairs(n=3, size=40, seed=0, shift=2):
    """Smooth MRI, its negative as PAT shifted by ``shift`` columns, the true flow and a body label."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mri = ndimage.gaussian_filter(rng.random((size, size)), 3)
        mri = ((mri - mri.min()) / (mri.max() - mri.min())).astype(np.float32)
        pat = np.roll(1 - mri, shift, axis=1).astype(np.float32)
        flow = np.zeros((2, size, size), np.float32)
        flow[1] = shift  # warp(pat, flow)(x) = pat(x + shift) = 1 - mri(x)
        labels = np.zeros((size, size), np.uint8)
        labels[8:-8, 8:-8] = 1
        out.append(Case(id=f"p{i}", pat=pat, mri=mri, flow_true=flow, labels_mri=labels))
    return out


# ----------------------------------------------------------------------------- budget parsing

@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45),
                                           ("1.5h", 5400), ("90", 90), (30, 30), ("1d", 86400)])
def test_budget_texts(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", [None, "", "none"])
def test_no_budget(text):
    assert parse_budget(text) is None


@pytest.mark.parametrize("text", ["2x", "h", "2h banana", "-5", "0", "0m"])
def test_bad_budget_is_refused_with_the_text(text):
    with pytest.raises(ValueError, match="budget"):
        parse_budget(text)


def test_spent_and_validation_interval():
    assert not FitControl().spent()
    assert FitControl(budget=1e-9).spent()
    assert not FitControl(budget=3600).spent()
    # about 50 points per run, rounded up to whole checkpoint intervals
    assert FitControl().every(10_000, 50) == 200
    assert FitControl().every(1000, 50) == 50
    assert FitControl().every(100, 1) == 2
    assert FitControl(val_every=70).every(1000, 50) == 100


# ----------------------------------------------------------------------------- tail trend

def test_tail_trend_of_a_curve_still_improving():
    # value = 0.5 + 0.001 step, points every 5 steps to 100: the tail (step > 80) is 85, 90, 95, 100.
    pts = [(s, 0.5 + 0.001 * s) for s in range(0, 101, 5)]
    t = tail_trend(pts, higher_is_better=True)
    assert t["points"] == 4
    assert t["slope_per_1k"] == pytest.approx(1.0)
    # gain over the tail 0.001 * 15 = 0.015, over its mean 0.5925: 2.53 % > 1 %
    assert t["relative_gain"] == pytest.approx(0.015 / 0.5925)
    assert t["plateaued"] is False
    # the same numbers as an error (lower is better) are getting worse: stopped improving
    t = tail_trend(pts, higher_is_better=False)
    assert t["relative_gain"] == pytest.approx(-0.015 / 0.5925) and t["plateaued"] is True


def test_tail_trend_of_a_flat_or_slow_curve_and_of_too_few_points():
    flat = [(s, 2.0) for s in range(0, 101, 5)]
    t = tail_trend(flat, higher_is_better=False)
    assert t["relative_gain"] == pytest.approx(0.0, abs=1e-12) and t["plateaued"] is True
    # an error falling 0.4 % across the tail: below the 1 % tolerance
    slow = [(s, 2.0 - 0.0004 * s) for s in range(0, 101, 5)]
    t = tail_trend(slow, higher_is_better=False)
    assert t["relative_gain"] == pytest.approx(0.0004 * 15 / (2.0 - 0.0004 * 92.5))
    assert t["plateaued"] is True
    # a run meant to last 1000 steps, stopped at 100: the tail (step > 800) is empty
    assert tail_trend(slow, higher_is_better=False, total_steps=1000)["plateaued"] is None
    assert tail_trend([(90, 1.0), (100, 1.0)], higher_is_better=True)["plateaued"] is None
    assert tail_trend([], higher_is_better=True)["points"] == 0


def test_converged_reads_the_provenance():
    assert converged({})[0] is False
    assert "no validation curve" in converged({"metrics": {}})[1]
    rec = {"metrics": {"validation": {"metric": "EPE", "trend": tail_trend([(s, 2.0 - 0.01 * s) for s in
                                                                            range(0, 101, 5)], False)}}}
    ok, why = converged(rec)
    assert not ok and "still improves" in why and "EPE" in why
    rec["metrics"]["validation"]["trend"] = tail_trend([(s, 2.0) for s in range(0, 101, 5)], False)
    assert converged(rec)[0] is True


# ----------------------------------------------------------------------------- validation scores

def test_validation_of_a_registration_is_the_endpoint_error_inside_the_labels():
    identity = create_method("identity")
    cases = _pairs(n=2, shift=3)
    assert validation_metric(identity) == ("EPE", False)
    # the identity's flow is zero; the true one is 3 px everywhere
    assert validation_scores(identity, cases) == {"EPE": pytest.approx(3.0)}
    # without true flows: NaN error and the NCC of the unregistered pair instead
    bare = [Case(id=c.id, pat=c.pat, mri=c.mri) for c in cases]
    from fusionbench.metrics.registration import ncc

    scores = validation_scores(identity, bare)
    assert np.isnan(scores["EPE"]) and scores["NCC"] == pytest.approx(np.mean([ncc(c.pat, c.mri) for c in bare]))


def test_validation_of_a_fusion_scores_the_truly_aligned_pair():
    average = create_method("average")
    cases = _pairs(n=2, shift=3)
    assert validation_metric(average) == ("SSIM_Qabf", True)
    want = []
    for c in cases:
        aligned = np.roll(c.pat, -3, axis=1)  # the true flow undoes the shift (wrap-around columns aside)
        inner = (slice(None), slice(4, -4))
        assert np.allclose(_warped(c)[inner], aligned[inner], atol=1e-6)
        a = _warped(c)
        f = average.fuse(a, c.mri)
        want.append(0.5 * (fm.ssim(a, c.mri, f) + fm.qabf(a, c.mri, f)))
    assert validation_scores(average, cases) == {"SSIM_Qabf": pytest.approx(np.mean(want))}
    with pytest.raises(ValueError, match="at least one"):
        validation_scores(average, [])


def _warped(case):
    from fusionbench.warp import warp

    return warp(case.pat, case.flow_true)


def test_training_clock_adds_the_checkpoints_count(monkeypatch):
    import fusionbench.fitting as fitting

    now = [50.0]
    monkeypatch.setattr(fitting.time, "perf_counter", lambda: now[0])
    fresh, resumed, legacy = TrainingClock.resume(None), TrainingClock.resume({"train_seconds": 1000.0}), \
        TrainingClock.resume({"history": []})
    now[0] = 62.3
    assert fresh.total() == pytest.approx(12.3) and resumed.total() == pytest.approx(1012.3)
    assert legacy.total() is None  # a checkpoint without the count: unknown, not a part passed off as the whole
    assert resumed.stamp({"epoch": 3}) == {"epoch": 3, "train_seconds": pytest.approx(1012.3)}
    assert legacy.stamp({"epoch": 3}) == {"epoch": 3}


def _pretend_earlier_sessions(ckpt: Path, seconds: float, pickled: bool = False) -> None:
    """Rewrite checkpoint ``ckpt`` as if the sessions before it had trained ``seconds``."""
    blob = torch.load(ckpt, weights_only=not pickled)
    blob["train_seconds"] = seconds
    torch.save(blob, ckpt)


# ----------------------------------------------------------------------------- the three loops

def test_deep_fusion_stops_on_budget_and_resumes_to_the_same_run(tmp_path):
    from baselines.fusion._deep import TrainingData
    from baselines.fusion.densefuse import DenseFuse

    cases = _pairs(n=3)
    data = TrainingData(cases, natural=False)
    kw = dict(weights="random", device="cpu", batch=2, patch=32, lr=1e-3)
    control = dict(val_cases=cases[:2], val_every=1)
    straight = DenseFuse(**kw)
    h1 = straight.train(data, steps=4, checkpoint_every=1, control=FitControl(**control))
    assert [s for s, _ in straight.val_history] == [1, 2, 3, 4]
    ckpt = tmp_path / "train.ckpt"
    stopped = DenseFuse(**kw)
    with pytest.raises(BudgetExhausted, match="step 1/4") as info:
        stopped.train(data, steps=4, checkpoint=ckpt, checkpoint_every=1, control=FitControl(budget=1e-9, **control))
    assert info.value.step == 1 and ckpt.is_file() and (tmp_path / "curves.png").is_file()
    assert 0 < torch.load(ckpt, weights_only=True)["train_seconds"] < 600
    _pretend_earlier_sessions(ckpt, 1000.0)
    resumed = DenseFuse(**kw)
    t0 = time.perf_counter()
    h2 = resumed.train(data, steps=4, checkpoint=ckpt, checkpoint_every=1, control=FitControl(**control))
    # the whole schedule's training time: the earlier sessions' count plus this session's
    assert 1000.0 < resumed.clock.total() <= 1000.0 + time.perf_counter() - t0 + 0.1
    # scoring between steps moves no random stream: same losses, same curve as the uninterrupted run
    assert h2 == pytest.approx(h1, rel=1e-5)
    assert np.allclose(np.asarray(resumed.val_history), np.asarray(straight.val_history), rtol=1e-5)
    plain = DenseFuse(**kw).train(data, steps=4)
    assert plain == pytest.approx(h1, rel=1e-5)


def test_a_fit_records_the_curve_and_only_a_converged_fit_ships(tmp_path):
    from baselines.fusion.densefuse import DenseFuse

    cases = _pairs(n=3)
    m = DenseFuse(weights="random", device="cpu", steps=4, batch=2, patch=32)
    control = FitControl(val_cases=cases[:2], val_every=1)
    assert prepare_weights("densefuse", m, cases, cache_dir=tmp_path, allow_fit=True, control=control) == "fitted"
    val = m.provenance["metrics"]["validation"]
    assert val["metric"] == "SSIM_Qabf" and val["higher_is_better"] is True and val["cases"] == 2
    assert [p[0] for p in val["points"]] == [1, 2, 3, 4]
    assert val["trend"]["points"] == 1 and val["trend"]["plateaued"] is None  # only step 4 is past 3.2
    assert (tmp_path.glob("densefuse/*/work/curves.png").__next__()).is_file()
    target = tmp_path / "shipped"
    m.shipped_weights = lambda: target  # ship into the test folder, not the package
    with pytest.raises(WeightsError, match="not shipped: too few validation points"):
        ship_weights(m, m.provenance["folder"])
    assert not target.exists()


def test_voxelmorph_checkpoints_stops_on_budget_and_resumes_to_the_same_weights(tmp_path):
    from baselines.registration.voxelmorph import VoxelMorph

    cases = _pairs(n=3, size=32)
    kw = dict(weights=None, device="cpu", steps=4, batch=2, size=32)

    def fresh():
        m = VoxelMorph(**kw)
        m.checkpoint_every = 1
        return m

    control = dict(val_cases=cases[:2], val_every=1)
    whole = fresh()
    assert prepare_weights("voxelmorph", whole, cases, cache_dir=tmp_path / "a", allow_fit=True,
                           control=FitControl(**control)) == "fitted"
    stopped = fresh()
    with pytest.raises(BudgetExhausted, match="step 1/4"):
        prepare_weights("voxelmorph", stopped, cases, cache_dir=tmp_path / "b", allow_fit=True,
                        control=FitControl(budget=1e-9, **control))
    folder = cache_folder("voxelmorph", stopped, data_fingerprint(cases), tmp_path / "b")
    assert (folder / "work" / "train.ckpt").is_file() and not (folder / "weights").exists()
    _pretend_earlier_sessions(folder / "work" / "train.ckpt", 1000.0)
    resumed = fresh()
    t0 = time.perf_counter()
    assert prepare_weights("voxelmorph", resumed, cases, cache_dir=tmp_path / "b", allow_fit=True,
                           control=FitControl(**control)) == "fitted"
    # the provenance counts every session of the schedule, not only the one that finished it
    assert 1000.0 < resumed.provenance["train_seconds"] <= 1000.0 + time.perf_counter() - t0 + 0.1
    assert whole.provenance["train_seconds"] < 1000.0
    assert resumed.provenance["weights_sha256"] == whole.provenance["weights_sha256"]
    a, b = whole.provenance["metrics"]["validation"], resumed.provenance["metrics"]["validation"]
    assert a["metric"] == "EPE" and a["higher_is_better"] is False
    assert [p[0] for p in b["points"]] == [1, 2, 3, 4]
    assert np.allclose([p[1] for p in a["points"]], [p[1] for p in b["points"]])


def test_pamrfuse_scores_every_epoch_and_stops_on_budget(tmp_path):
    from pamrfuse import method as pm

    cases = _pairs(n=2, size=40)
    stopped = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu")
    with pytest.raises(BudgetExhausted, match="epoch 1/2") as info:
        prepare_weights("pamrfuse+", stopped, cases, cache_dir=tmp_path, allow_fit=True,
                        control=FitControl(budget=1e-9, val_cases=cases))
    _pretend_earlier_sessions(Path(info.value.checkpoint), 1000.0, pickled=True)
    resumed = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu")
    t0 = time.perf_counter()
    assert prepare_weights("pamrfuse+", resumed, cases, cache_dir=tmp_path, allow_fit=True,
                           control=FitControl(val_cases=cases)) == "fitted"
    assert 1000.0 < resumed.provenance["train_seconds"] <= 1000.0 + time.perf_counter() - t0 + 0.1
    assert resumed.provenance["metrics"]["last_session_seconds"] < 1000.0
    val = resumed.provenance["metrics"]["validation"]
    assert val["metric"] == "EPE" and val["unit"] == "epoch" and [p[0] for p in val["points"]] == [1, 2]
    work = Path(resumed.provenance["folder"]).parent / "work"
    history = json.loads((work / "history.json").read_text())
    assert all("val_EPE" in h and "val_SSIM_Qabf" in h for h in history)
    # the recorded error is the held-out cases' error of the network at that epoch: the last one
    # equals a fresh scoring of the trained weights
    assert val["points"][-1][1] == pytest.approx(validation_scores(resumed, cases)["EPE"], rel=1e-5)


def test_fit_command_stops_on_its_budget_and_the_same_command_finishes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fusionbench.cli import app
    from fusionbench.weights import read_provenance

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    args = ["fit", "voxelmorph", "--dataset", "phantom:n=4,size=32", "--device", "cpu", "--set", "steps=60",
            "--set", "batch=2", "--set", "size=32", "--val-every", "5"]
    bad = runner.invoke(app, args + ["--budget", "2x"])
    assert bad.exit_code == 2 and "budget '2x'" in bad.output
    stopped = runner.invoke(app, args + ["--budget", "0.001"])
    assert stopped.exit_code == 75, stopped.output
    assert "time budget spent at step 50/60" in stopped.output
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "fitted weights" in done.output and "converged" in done.output
    record = read_provenance(next((tmp_path / "cache" / "weights" / "voxelmorph").glob("*/weights")))
    val = record["metrics"]["validation"]
    assert val["metric"] == "EPE" and val["cases"] == 4
    assert [p[0] for p in val["points"]] == list(range(5, 61, 5))
    assert val["trend"]["points"] == 3  # steps 50, 55, 60 are past 48


def test_pseudo_mri_scores_compare_the_true_mri_after_the_true_flow():
    from pamrfuse import method as pm
    from fusionbench.warp import warp

    cases = _pairs(n=2, size=40, shift=3)
    m = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu")

    class Oracle(torch.nn.Module):  # a P2M that returns 1 - PAT: the MRI up to the shift
        def forward(self, pat01):
            return 1 - pat01

    m.net.p2m = Oracle()
    m.cfg = type(m.cfg).from_dict({**m.cfg.to_dict(), "size": 40})
    scores = m.pseudo_mri_scores(cases)
    want_l1 = np.mean([np.abs(warp(1 - c.pat, c.flow_true) - c.mri)[c.labels_mri > 0].mean() for c in cases])
    assert scores["P2M_L1"] == pytest.approx(want_l1, abs=1e-6)
    assert want_l1 < 1e-5  # inside the labels the shift is undone exactly
    assert 0.9 < scores["P2M_SSIM"] <= 1.0  # only the wrapped-around columns differ
    assert m.pseudo_mri_scores([Case(id="x", pat=cases[0].pat, mri=cases[0].mri)]) == {}
    m.net.p2m = None
    assert m.pseudo_mri_scores(cases) == {}


def test_mefgan_is_scored_with_recalibrated_statistics_without_changing_its_training():
    from baselines.fusion._deep import TrainingData
    from baselines.fusion.mefgan import MEFGAN

    cases = _pairs(n=3, size=48)
    data = TrainingData(cases, natural=False)
    kw = dict(weights="random", device="cpu", batch=2, patch=40, calibration_batches=2)
    plain = MEFGAN(**kw)
    h1 = plain.train(data, steps=3)
    scored = MEFGAN(**kw)
    h2 = scored.train(data, steps=3, checkpoint_every=1, control=FitControl(val_cases=cases[:1], val_every=1))
    assert h2 == pytest.approx(h1, rel=1e-6)
    a, b = plain.net["g"].state_dict(), scored.net["g"].state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-6, atol=1e-7) for k in a)
    # the last point is the shipped generator's score (recalibrated, as train() leaves it)
    assert scored.val_history[-1][1] == pytest.approx(validation_scores(scored, cases[:1])["SSIM_Qabf"], rel=1e-5)
