"""PAMRFuse+ two-stage training (tiny preset, CPU), its weights under the trainable-weights protocol
(fusionbench.weights) and the registered joint method."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from fusionbench.data import Case
from fusionbench.methods import FusionMethod, RegistrationMethod, create_method, get_method_info
from fusionbench.warp import warp
from fusionbench.weights import (PROVENANCE_FILE, WeightsError, cache_folder, canonical, data_fingerprint,
                                 prepare_weights, read_provenance, weights_digest)
from pamrfuse import method as pm  # registers pamrfuse+ and the ablations
from pamrfuse import trainer as trainer_module
from pamrfuse.model import prepare_arrays
from pamrfuse.presets import get_config
from pamrfuse.trainer import CHECKPOINT, Trainer, fit_pamrfuse

torch.set_num_threads(1)


def _cases(n=4, size=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mri = ndimage.gaussian_filter(rng.random((size, size)), 3).astype(np.float32)
        mri = (mri - mri.min()) / (mri.max() - mri.min())
        pat = np.roll(1 - mri, 2, axis=1)
        out.append(Case(id=f"c{i}", pat=pat.astype(np.float32), mri=mri))
    return out


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_both_stages_run_finite_and_resume_to_the_same_state(tmp_path):
    cases = _cases()
    net_a, prov = fit_pamrfuse(cases, tmp_path / "a", preset="tiny", device="cpu", progress=False)
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [h["stage"] for h in hist] == [1, 2]
    assert {"gan", "cycle", "reg", "disc", "recon", "decomp"} <= set(hist[0])
    assert {"reg", "int", "grad", "decomp"} <= set(hist[1])
    assert all(np.isfinite(v) for h in hist for v in h.values())
    assert (tmp_path / "a" / "losses.png").stat().st_size > 1000
    assert prov["vgg_source"].startswith("tiny-random") and prov["epochs"] == 2 and prov["n_cases"] == 4
    assert (tmp_path / "a" / CHECKPOINT).exists()  # the weights themselves are the caller's to save

    class Killed(Exception):
        pass

    def kill(trainer):
        raise Killed

    # Same run interrupted after epoch 1 (stage I), then resumed from the checkpoint.
    cfg = get_config("tiny")
    trainer = Trainer(cfg, tmp_path / "b", device="cpu", progress=False)
    (tmp_path / "b").mkdir()
    with pytest.raises(Killed):
        trainer.run(*prepare_arrays(cases, cfg.size), on_epoch=kill)
    assert (tmp_path / "b" / CHECKPOINT).exists() and trainer.epoch == 1
    net_b, _ = fit_pamrfuse(cases, tmp_path / "b", preset="tiny", device="cpu", progress=False)
    assert _states_equal(net_a.state_dict(), net_b.state_dict())
    # A finished run resumes to itself without training again.
    net_c, prov_c = fit_pamrfuse(cases, tmp_path / "a", preset="tiny", device="cpu", progress=False)
    assert _states_equal(net_a.state_dict(), net_c.state_dict()) and prov_c["epochs"] == 2


def test_checkpoint_of_another_config_is_refused(tmp_path):
    cases = _cases(n=2)
    fit_pamrfuse(cases, tmp_path, preset="tiny", device="cpu", progress=False, epochs=(1, 0))
    with pytest.raises(ValueError, match="different configuration"):
        fit_pamrfuse(cases, tmp_path, preset="tiny", device="cpu", progress=False, epochs=(1, 0), lr_mlr=1e-2)


@pytest.mark.slow
def test_resume_may_change_the_schedule_length_only(tmp_path):
    cases = _cases(n=2)
    fit_pamrfuse(cases, tmp_path, preset="tiny", device="cpu", progress=False, epochs=(2, 0))
    # Stage I cannot end before the two epochs already trained in it.
    with pytest.raises(ValueError, match="cannot resume with stage I = 1"):
        fit_pamrfuse(cases, tmp_path, preset="tiny", device="cpu", progress=False, epochs=(1, 1))
    _, prov = fit_pamrfuse(cases, tmp_path, preset="tiny", device="cpu", progress=False, epochs=(2, 1))
    hist = json.loads((tmp_path / "history.json").read_text())
    assert prov["epochs"] == 3 and [h["stage"] for h in hist] == [1, 1, 2]


@pytest.mark.parametrize("ablation", ["wo_p2m_mlr", "wo_feedback", "wo_two_stage"])
def test_ablations_train(tmp_path, ablation):
    _, prov = fit_pamrfuse(_cases(n=2), tmp_path, preset="tiny", device="cpu", progress=False, ablation=ablation)
    assert all(np.isfinite(v) for v in prov["final_losses"].values())
    if ablation == "wo_p2m_mlr":
        assert "reg" not in prov["final_losses"]


def test_registered_joint_method(tmp_path):
    info = get_method_info("pamrfuse+")
    assert info.role == "joint" and not info.needs_alignment and info.trainable
    for variant in ("wo_p2m", "wo_p2m_mlr", "wo_feedback", "wo_two_stage"):
        assert get_method_info(f"pamrfuse+_{variant}").role == "joint"
    m = create_method("pamrfuse+", preset="tiny", weights=None, device="cpu")
    assert isinstance(m, FusionMethod) and isinstance(m, RegistrationMethod)
    assert m.provenance == {} and m.weights_note() == "untrained" and m.config()["preset"] == "tiny"
    # train_config: the code version and every preset field, nothing else.
    assert m.train_config() == {"version": pm.PAMRFusePlus.version, **get_config("tiny").to_dict()}
    cases = _cases(n=2)
    record = m.fit(cases, tmp_path)
    assert record["epochs"] == 2 and record["n_cases"] == 2 and (tmp_path / CHECKPOINT).exists()
    pat, mri = cases[0].pat[:37, :38], cases[0].mri[:37, :38]  # any size: resized to the preset's
    warped, flow = m.register(pat, mri)
    assert flow.shape == (2, 37, 38) and flow.dtype == np.float32 and np.isfinite(flow).all()
    np.testing.assert_allclose(warped, warp(pat, flow), atol=1e-6)

    calls = []
    original = m.predict_flow
    m.predict_flow = lambda *a: calls.append(1) or original(*a)
    fused = m.fuse(warped, mri)  # the harness passes the registered PAT: no second registration
    assert calls == []
    assert fused.shape == (37, 38) and fused.dtype == np.float32
    assert fused.min() == pytest.approx(0.0) and fused.max() == pytest.approx(1.0)  # min-max output
    m.fuse(pat, mri)  # unregistered input: fuse registers first
    assert calls == [1]
    # A second fit in the same work folder finds the finished checkpoint and trains nothing.
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    assert m.fit(cases, tmp_path)["epochs"] == 2
    assert _states_equal(before, m.net.state_dict())
    with pytest.raises(ValueError, match="shape"):
        m.register(pat, mri[:-1])


def test_prepare_weights_fits_caches_and_records_the_provenance(tmp_path):
    cases = _cases(n=2)
    m = pm.PAMRFusePlus(preset="tiny", device="cpu")  # no tiny weights are shipped: left untrained
    assert m.shipped_weights() == pm.WEIGHTS_DIR / "pamrfuse_tiny" and m.provenance == {}
    assert prepare_weights("pamrfuse+", m, cases, cache_dir=tmp_path) == "untrained"
    assert prepare_weights("pamrfuse+", m, cases, cache_dir=tmp_path, allow_fit=True,
                           data="two noise pairs") == "fitted"
    weights = Path(m.provenance["folder"])
    # a fit from the seeded initialisation: the key names no starting weights
    assert weights.parent == cache_folder("pamrfuse+", pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu"),
                                          data_fingerprint(cases), tmp_path)
    assert sorted(p.name for p in weights.iterdir()) == sorted([PROVENANCE_FILE, "weights.pt"])
    record = read_provenance(weights)
    assert m.provenance == {**record, "folder": str(weights)} and record["method"] == "pamrfuse+"
    assert record["init_weights"] is None
    assert record["train_config"] == canonical(m.train_config())
    assert record["train_config"]["preset"] == "tiny" and record["train_config"]["version"] == pm.PAMRFusePlus.version
    assert record["data"] == {"fingerprint": data_fingerprint(cases), "description": "two noise pairs"}
    assert record["metrics"]["epochs"] == 2 and record["metrics"]["n_cases"] == 2
    assert record["metrics"]["final_losses"]["stage"] == 2
    assert record["weights_sha256"] == weights_digest(weights)
    assert [h["stage"] for h in json.loads((weights.parent / "work" / "history.json").read_text())] == [1, 2]

    # A fresh method gets the same weights from the cache, or from the folder by path.
    again = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu")
    assert prepare_weights("pamrfuse+", again, cases, cache_dir=tmp_path) == "cached"
    assert _states_equal(m.net.state_dict(), again.net.state_dict())
    by_path = pm.PAMRFusePlus(preset="tiny", weights=str(weights), device="cpu")
    assert _states_equal(m.net.state_dict(), by_path.net.state_dict())
    assert by_path.weights_note() == f"trained on two noise pairs [{record['weights_sha256'][:8]}]"
    # Any other training setting is another key, and its weights are refused by path.
    other = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu", lr_mlr=1e-2)
    assert prepare_weights("pamrfuse+", other, cases, cache_dir=tmp_path) == "untrained"
    with pytest.raises(WeightsError, match="another train_config"):
        pm.PAMRFusePlus(preset="tiny", weights=str(weights), device="cpu", lr_mlr=1e-2)


def test_an_interrupted_fit_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    class Killed(Exception):
        pass

    cases = _cases(n=2)
    sessions = []  # per session, the epochs done each time the trainer draws its loss curves
    draw = trainer_module.save_loss_curves

    def curves(history, path):  # called right after each epoch's checkpoint
        sessions[-1].append(len(history))
        if len(sessions) == 1:
            raise Killed
        draw(history, path)

    monkeypatch.setattr(trainer_module, "save_loss_curves", curves)
    sessions.append([])
    killed = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu")
    with pytest.raises(Killed):
        prepare_weights("pamrfuse+", killed, cases, cache_dir=tmp_path / "a", allow_fit=True)
    folder = cache_folder("pamrfuse+", killed, data_fingerprint(cases), tmp_path / "a")
    assert (folder / "work" / CHECKPOINT).is_file() and not (folder / "weights").exists()
    assert killed.provenance == {}

    sessions.append([])
    resumed = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu")
    assert prepare_weights("pamrfuse+", resumed, cases, cache_dir=tmp_path / "a", allow_fit=True) == "fitted"
    assert sessions == [[1], [2]]  # the rerun trained epoch 2 only
    assert resumed.provenance["metrics"]["epochs"] == 2
    # ... and ends where an uninterrupted fit ends (per-epoch data order from (seed, epoch)).
    sessions.append([])
    whole = pm.PAMRFusePlus(preset="tiny", weights=None, device="cpu")
    assert prepare_weights("pamrfuse+", whole, cases, cache_dir=tmp_path / "b", allow_fit=True) == "fitted"
    assert sessions[2] == [1, 2]
    assert _states_equal(resumed.net.state_dict(), whole.net.state_dict())
    assert resumed.provenance["weights_sha256"] == whole.provenance["weights_sha256"]


def test_translate_with_trained_generator(tmp_path):
    net, _ = fit_pamrfuse(_cases(n=2), tmp_path, preset="tiny", device="cpu", progress=False, epochs=(1, 0))
    from pamrfuse.p2m import translate

    out = translate(_cases(n=1)[0].pat, net.p2m)
    assert out.shape == (40, 40) and np.isfinite(out).all()
    assert pm.PAMRFusePlus.needs_alignment is False


@pytest.mark.parametrize("reg_to_p2m", [False, True])
def test_registration_loss_reaches_p2m_only_when_asked(tmp_path, reg_to_p2m):
    # With the P2M losses weighted 0, only L_reg can move the P2M generator in stage I.
    cfg = get_config("tiny", lambda_cyc=0.0, lambda_gan=0.0, reg_to_p2m=reg_to_p2m)
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    before = {k: v.clone() for k, v in trainer.net.p2m.g_pm.state_dict().items()}
    pats, mris = prepare_arrays(_cases(n=2, size=32), cfg.size)
    trainer.step_stage1(torch.from_numpy(pats), torch.from_numpy(mris))
    moved = not _states_equal(before, trainer.net.p2m.g_pm.state_dict())
    assert moved == reg_to_p2m


def test_code_p2m_objective_trains_with_its_extra_terms(tmp_path):
    cfg = get_config("tiny", p2m_loss="code")
    trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    pats, mris = prepare_arrays(_cases(n=2, size=32), cfg.size)
    before = {k: v.clone() for k, v in trainer.net.p2m.g_pm.state_dict().items()}
    log = trainer.step_stage1(torch.from_numpy(pats), torch.from_numpy(mris))
    assert {"idt", "cross", "edge", "xcycle", "gan", "cycle", "reg"} <= set(log)
    assert all(np.isfinite(v) and v > 0 for v in log.values())
    assert not _states_equal(before, trainer.net.p2m.g_pm.state_dict())


def test_shipped_lite_weights_register_the_phantom():
    """Regression guard of the shipped `lite` weights on the first 8 phantom test pairs.

    Measured on these 8 (docs/pamrfuse.md has all 48): NCC with the MRI 0.509 vs 0.435
    unregistered, higher on every pair, while the endpoint error against the true flow grows from
    2.57 to 3.02 px: MLR makes the pair look more alike without aligning the anatomy.
    """
    from fusionbench.data import load_dataset
    from fusionbench.metrics.registration import endpoint_error, ncc
    model = create_method("pamrfuse+", device="cpu")
    # The lite preset, loaded because its provenance names the current train_config; trained on the
    # phantom train split (data_fingerprint of load_dataset("phantom", "train"), phantom 2.0).
    assert model.cfg == get_config("lite") and model.shipped_weights() == pm.WEIGHTS_DIR / "pamrfuse_lite"
    assert model.provenance["train_config"] == canonical(model.train_config())
    assert model.provenance["data"]["fingerprint"] == "d94f6103de24ea9e"
    epe, epe_identity = [], []
    for case in load_dataset("phantom", "test")[:8]:
        registered, flow = model.register(case.pat, case.mri)
        mask = case.labels_mri > 0
        epe.append(endpoint_error(flow, case.flow_true, mask=mask)["mean"])
        epe_identity.append(endpoint_error(np.zeros_like(flow), case.flow_true, mask=mask)["mean"])
        assert ncc(registered, case.mri) > ncc(case.pat, case.mri) + 0.03, case.id
    assert np.mean(epe_identity) == pytest.approx(2.569, abs=1e-3)
    assert np.mean(epe) == pytest.approx(3.016, abs=0.02)


def test_p2m_vm_is_keyed_on_the_p2m_generator_alone():
    """New MLR or DFDF weights keep p2m+vm's weights valid; a new P2M generator makes them stale."""
    from pamrfuse.p2m_vm import P2MVoxelMorph

    vm = P2MVoxelMorph(weights=None, device="cpu")
    before = vm.train_config()["p2m_generator"]
    model = vm.p2m_model()
    with torch.no_grad():
        for p in list(model.net.mlr.parameters()) + list(model.net.dfdf.parameters()):
            p.add_(0.5)
    assert vm.train_config()["p2m_generator"] == before
    with torch.no_grad():
        next(model.net.p2m.g_pm.parameters()).add_(0.5)
    assert vm.train_config()["p2m_generator"] != before
