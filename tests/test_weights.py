"""The trainable-weights protocol: cache keys, stale weights, shipped provenance, interrupted fits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusionbench.data import Case
from fusionbench.methods import FusionMethod, Trainable, create_method, get_method_info, list_methods
from fusionbench.weights import (PROVENANCE_FILE, WeightsError, canonical, data_fingerprint, load_into,
                                 prepare_weights, read_provenance, ship_weights, shipped_state,
                                 start_from, weights_digest, weights_key, weights_note)


class Scaler(Trainable, FusionMethod):
    """Fuses ``scale * (pat + mri)``; ``fit`` learns scale = 1 / (steps + 1) and counts itself."""

    version = "1"
    fits = 0
    shipped: Path | None = None

    def __init__(self, steps: int = 3, crash_after_checkpoint: bool = False):
        self.steps, self.crash = steps, crash_after_checkpoint
        self.scale = None
        self.provenance = {}

    def train_config(self):
        return {"steps": self.steps, "version": self.version}

    def fit(self, cases, workdir):
        type(self).fits += 1
        ckpt = Path(workdir) / "ckpt.json"
        done = json.loads(ckpt.read_text()) if ckpt.exists() else 0
        for step in range(done, self.steps):
            ckpt.write_text(json.dumps(step + 1))
            if self.crash:
                raise KeyboardInterrupt("killed mid-fit")
        self.scale = 1.0 / (self.steps + 1)
        return {"resumed_from": done}

    def save_weights(self, folder):
        (Path(folder) / "scale.json").write_text(json.dumps(self.scale))

    def load_weights(self, folder):
        self.scale = json.loads((Path(folder) / "scale.json").read_text())

    def shipped_weights(self):
        return self.shipped

    def fuse(self, pat, mri):
        return self.scale * (pat + mri)


def _cases(n=3, value=0.25):
    return [Case(f"c{i}", np.full((4, 4), value, np.float32), np.full((4, 4), 0.5, np.float32)) for i in range(n)]


@pytest.fixture(autouse=True)
def _reset():
    Scaler.fits, Scaler.version, Scaler.shipped = 0, "1", None
    yield
    Scaler.version, Scaler.shipped = "1", None


def test_data_fingerprint_names_the_pixels_and_ids():
    a = data_fingerprint(_cases())
    assert a == data_fingerprint(_cases()) and len(a) == 16
    assert a != data_fingerprint(_cases(value=0.25 + 1 / 255))
    assert a != data_fingerprint(_cases(n=2))
    renamed = _cases()
    renamed[0].id = "other"
    assert a != data_fingerprint(renamed)


def test_key_changes_with_every_setting_the_version_and_the_data():
    key = weights_key("scaler", {"steps": 3, "version": "1"}, "f")
    assert key == weights_key("SCALER", {"version": "1", "steps": 3}, "f")  # order and case do not matter
    assert weights_key("s", {"t": (1, 2)}, "f") == weights_key("s", {"t": [1, 2]}, "f")  # as JSON reads it
    others = [weights_key("scaler", {"steps": 4, "version": "1"}, "f"),
              weights_key("scaler", {"steps": 3, "version": "2"}, "f"),
              weights_key("scaler", {"steps": 3, "version": "1"}, "g"),
              weights_key("other", {"steps": 3, "version": "1"}, "f")]
    assert len({key, *others}) == 5


def test_a_fit_is_cached_and_a_version_bump_or_setting_invalidates_it(tmp_path):
    cases = _cases()
    m = Scaler()
    assert prepare_weights("scaler", m, cases, cache_dir=tmp_path) == "untrained" and Scaler.fits == 0
    assert prepare_weights("scaler", m, cases, cache_dir=tmp_path, allow_fit=True) == "fitted"
    assert Scaler.fits == 1 and m.scale == pytest.approx(0.25)
    record = m.provenance
    assert record["train_config"] == {"steps": 3, "version": "1"}
    assert record["data"]["fingerprint"] == data_fingerprint(cases)
    assert record["metrics"] == {"resumed_from": 0}
    assert record["weights_sha256"] == weights_digest(next(tmp_path.glob("scaler/*/weights")))

    again = Scaler()
    assert prepare_weights("scaler", again, cases, cache_dir=tmp_path) == "cached"
    assert Scaler.fits == 1 and again.scale == pytest.approx(0.25)
    # The cache never hands out weights made by other code or other settings.
    Scaler.version = "2"
    assert prepare_weights("scaler", Scaler(), cases, cache_dir=tmp_path) == "untrained"
    Scaler.version = "1"
    assert prepare_weights("scaler", Scaler(steps=4), cases, cache_dir=tmp_path) == "untrained"
    assert prepare_weights("scaler", Scaler(), _cases(n=2), cache_dir=tmp_path) == "untrained"
    assert Scaler.fits == 1


def test_an_interrupted_fit_resumes_from_its_checkpoint(tmp_path):
    cases = _cases()
    with pytest.raises(KeyboardInterrupt):
        prepare_weights("scaler", Scaler(crash_after_checkpoint=True), cases, cache_dir=tmp_path, allow_fit=True)
    assert not list(tmp_path.glob("scaler/*/weights"))  # nothing half-written counts as weights
    m = Scaler()
    assert prepare_weights("scaler", m, cases, cache_dir=tmp_path, allow_fit=True) == "fitted"
    assert m.provenance["metrics"] == {"resumed_from": 1}


def test_shipped_weights_count_only_for_their_config_and_data(tmp_path):
    cases = _cases()
    fitted = Scaler()
    prepare_weights("scaler", fitted, cases, cache_dir=tmp_path / "cache", allow_fit=True)
    Scaler.shipped = tmp_path / "shipped"
    ship_weights(fitted, next((tmp_path / "cache").glob("scaler/*/weights")), require_converged=False)
    assert read_provenance(Scaler.shipped)["train_config"] == {"steps": 3, "version": "1"}
    assert not (Scaler.shipped / "work").exists()

    m = Scaler()
    assert shipped_state(m, data_fingerprint(cases)) == "match"
    assert prepare_weights("scaler", m, cases, cache_dir=tmp_path / "empty") == "shipped"
    assert m.scale == pytest.approx(0.25) and Scaler.fits == 1
    assert shipped_state(m, data_fingerprint(_cases(n=2))) == "other-data"
    Scaler.version = "2"
    assert shipped_state(Scaler()) == "stale"
    with pytest.raises(WeightsError, match="another train_config"):
        load_into(Scaler(), Scaler.shipped)
    assert shipped_state(Scaler(steps=5)) == "stale"


def test_every_shipped_weight_folder_matches_its_method(tmp_path):
    """Fails when one part is retrained and its dependants are not (p2m+vm names the digest of
    the P2M generator of the shipped PAMRFuse+ weights), or when code changes without retraining."""
    checked = []
    for name in list_methods():
        if not get_method_info(name).trainable:
            continue
        method = create_method(name, device="cpu")
        folder = method.shipped_weights()
        if folder is None or not Path(folder).exists():
            continue
        record = json.loads((Path(folder) / PROVENANCE_FILE).read_text())
        assert record["method"] == name
        assert record["train_config"] == canonical(method.train_config()), name
        assert record["weights_sha256"] == weights_digest(folder), f"{name}: weight files changed"
        assert method.provenance.get("weights_sha256") == record["weights_sha256"], f"{name} did not load them"
        checked.append(name)
    assert {"cnn", "ddcgan", "densefuse", "mefgan", "u2fusion", "voxelmorph", "p2m+vm", "pamrfuse+"} <= set(checked)


def test_all_shipped_weights_stay_small():
    root = Path(__file__).resolve().parents[1]
    total = sum(p.stat().st_size for d in ("baselines/weights", "pamrfuse/weights")
                for p in (root / d).rglob("*") if p.is_file())
    assert total < 30 * 2**20


def test_a_fit_on_other_data_starts_from_the_shipped_weights_and_the_key_says_so(tmp_path):
    phantom, real = _cases(), _cases(n=2, value=0.75)
    fitted = Scaler()
    prepare_weights("scaler", fitted, phantom, cache_dir=tmp_path / "c0", allow_fit=True)
    Scaler.shipped = tmp_path / "shipped"
    ship_weights(fitted, fitted.provenance["folder"], require_converged=False)
    shipped_sha = read_provenance(Scaler.shipped)["weights_sha256"]

    tuned = Scaler()
    assert prepare_weights("scaler", tuned, real, cache_dir=tmp_path / "c1", allow_fit=True) == "fitted"
    assert tuned.provenance["init_weights"] == shipped_sha
    assert Path(tuned.provenance["folder"]).parent.name == weights_key(
        "scaler", {"steps": 3, "version": "1"}, data_fingerprint(real), init=shipped_sha)
    # without --fit the same data get the shipped weights, and the tables say they are the phantom's
    plain = Scaler()
    assert prepare_weights("scaler", plain, _cases(n=1, value=0.5), cache_dir=tmp_path / "c1") == "shipped-other-data"
    assert plain.provenance["weights_sha256"] == shipped_sha


def test_a_weights_folder_given_at_creation_is_used_on_any_data_and_never_refitted(tmp_path):
    """``run --set METHOD.weights=FOLDER``: weights fitted on one dataset, applied to another."""
    phantom, real = _cases(), _cases(n=2, value=0.75)
    fitted = Scaler(steps=4)
    prepare_weights("scaler", fitted, phantom, cache_dir=tmp_path / "c0", allow_fit=True)
    folder = fitted.provenance["folder"]

    given = Scaler(steps=4)
    load_into(given, folder)  # what a method's ``weights=FOLDER`` does when it is created
    assert prepare_weights("scaler", given, real, cache_dir=tmp_path / "c1", allow_fit=True) == "given"
    assert Scaler.fits == 1 and given.scale == pytest.approx(0.2)  # 1 / (4 + 1), not refitted on ``real``
    assert given.provenance["data"]["fingerprint"] == data_fingerprint(phantom)
    assert weights_note(given.provenance, "given").startswith("given: ")
    # Loading the shipped folder at creation is not a choice of weights: the usual order applies.
    Scaler.shipped = tmp_path / "shipped"
    ship_weights(fitted, folder, require_converged=False)
    own = Scaler(steps=4)
    load_into(own, Scaler.shipped)
    assert prepare_weights("scaler", own, phantom, cache_dir=tmp_path / "c2") == "shipped"
    assert prepare_weights("scaler", Scaler(steps=4), real, cache_dir=tmp_path / "c2") == "shipped-other-data"


def test_a_fit_started_from_a_folder_is_keyed_on_it_and_not_overridden_by_shipped_weights(tmp_path):
    """``fit --init FOLDER``: fine-tuning from weights made with other settings."""
    phantom, real = _cases(), _cases(n=2, value=0.75)
    first = Scaler(steps=4)
    prepare_weights("scaler", first, phantom, cache_dir=tmp_path / "c0", allow_fit=True)
    start_sha = first.provenance["weights_sha256"]
    Scaler.shipped = tmp_path / "shipped"  # shipped weights of the same settings, other data
    fitted = Scaler()
    prepare_weights("scaler", fitted, phantom, cache_dir=tmp_path / "c1", allow_fit=True)
    ship_weights(fitted, fitted.provenance["folder"], require_converged=False)

    tuned = Scaler()  # steps=3: another train_config than the start's
    start_from(tuned, first.provenance["folder"])
    assert tuned.scale == pytest.approx(0.2) and "folder" not in tuned.provenance
    assert prepare_weights("scaler", tuned, real, cache_dir=tmp_path / "c2", allow_fit=True) == "fitted"
    assert tuned.provenance["init_weights"] == start_sha  # not the shipped weights' digest
    assert Path(tuned.provenance["folder"]).parent.name == weights_key(
        "scaler", {"steps": 3, "version": "1"}, data_fingerprint(real), init=start_sha)
    with pytest.raises(WeightsError, match="nowhere"):
        start_from(Scaler(), tmp_path / "nowhere")
