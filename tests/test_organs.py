"""Organ segmentation: metrics on hand-built masks, "/" rules, tiny fits, identical per-source budgets."""
import json

import numpy as np
import pytest

from fusionbench.data import ORGAN_IDS
from fusionbench.data.io import ImageError
from segment.organs import (OrganModel, count_instances, organ_table, score_organs, train_sources,
                            training_config)

K, SP, LV = ORGAN_IDS["kidneys"], ORGAN_IDS["spleen"], ORGAN_IDS["liver"]


def _two_kidneys():
    lab = np.zeros((40, 40), np.uint8)
    lab[5:35, 5:35] = 1
    lab[10:20, 8:16] = K   # left kidney, 80 px
    lab[10:20, 24:32] = K  # right kidney, 80 px
    return lab


def test_instances_are_connected_components_above_the_size_floor():
    lab = _two_kidneys()
    assert count_instances(lab, "kidneys") == 2
    lab[30, 30] = K  # a 1-pixel speck is not an instance
    assert count_instances(lab, "kidneys") == 2
    assert count_instances(lab, "kidneys", min_instance_px=1) == 3
    assert count_instances(lab, "body") == 1
    with pytest.raises(ValueError, match="unknown organ"):
        count_instances(lab, "appendix")


def test_hand_built_dsc_and_counts():
    ref = _two_kidneys()
    pred = ref.copy()
    pred[10:20, 24:32] = 1        # right kidney missed: kidneys DSC = 2*80/(80+160) = 66.67
    pred[22:26, 10:15] = SP       # a spleen that is not in the reference: DSC 0
    rows = {r["organ"]: r for r in score_organs([pred], [ref], organs=("body", "kidneys", "spleen", "brain"))}
    assert rows["kidneys"]["dsc"] == pytest.approx(200 * 80 / 240)
    assert (rows["kidneys"]["n_pred"], rows["kidneys"]["n_ref"]) == (1, 2)
    assert rows["body"]["dsc"] == pytest.approx(100.0)  # body = whole animal, unchanged
    assert rows["spleen"]["dsc"] == 0.0 and rows["spleen"]["in_pred"] and not rows["spleen"]["in_ref"]
    assert np.isnan(rows["brain"]["dsc"])  # in neither map: not this slice


def test_organ_table_prints_slash_for_organs_never_found():
    ref = _two_kidneys()
    miss = ref.copy()
    miss[miss == K] = 1
    rows = {"good": score_organs([ref, ref], [ref, ref], organs=("body", "kidneys", "brain")),
            "blind": score_organs([miss, ref], [ref, ref], organs=("body", "kidneys", "brain"))}
    dsc, inst = organ_table(rows, organs=("body", "kidneys", "brain"))
    assert dsc.at["good", "kidneys"] == pytest.approx(100.0)
    assert dsc.at["blind", "kidneys"] == pytest.approx(50.0)  # mean of 0 and 100
    assert np.isnan(dsc.at["good", "brain"])                 # never in the reference: "/"
    rows["never"] = score_organs([miss, miss], [ref, ref], organs=("body", "kidneys", "brain"))
    dsc, inst = organ_table(rows, organs=("body", "kidneys", "brain"))
    assert np.isnan(dsc.at["never", "kidneys"])               # never predicted: "/"
    assert inst.at["good", ("kidneys", "ref")] == 4 and inst.at["never", ("kidneys", "pred")] == 0


def test_score_organs_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="predictions"):
        score_organs([np.zeros((4, 4), int)], [])
    with pytest.raises(ImageError, match="shape"):
        score_organs([np.zeros((4, 4), int)], [np.zeros((5, 4), int)])


def _tiny_data(n=6, seed=0, size=32):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        lab = np.zeros((size, size), np.int64)
        r, c = rng.integers(8, size - 8, size=2)
        lab[r - 6:r + 6, c - 6:c + 6] = 1
        lab[r - 2:r + 3, c - 2:c + 3] = LV
        img = 0.05 + 0.4 * (lab == 1) + 0.9 * (lab == LV) + 0.02 * rng.standard_normal((size, size))
        images.append(np.clip(img, 0, 1).astype(np.float32))
        labels.append(lab)
    return images, labels


TINY = {"epochs": 3, "size": 32, "channels": (4, 8), "strides": (2,), "batch_size": 3, "lr": 1e-2}


def test_tiny_fit_lowers_the_loss_and_predicts_label_maps(tmp_path):
    import torch

    torch.set_num_threads(1)
    images, labels = _tiny_data()
    model = OrganModel.create("MRI", "quick", **{**TINY, "epochs": 6}).fit(images, labels, tmp_path)
    assert model.losses[-1] < model.losses[0]
    pred = model.predict(images[:2])
    assert pred[0].shape == (32, 32) and pred[0].dtype == np.uint8
    loaded = OrganModel.load(tmp_path)
    assert np.array_equal(loaded.predict(images[:2])[0], pred[0])


def test_every_source_trains_with_identical_seed_and_budget(tmp_path):
    import torch

    torch.set_num_threads(1)
    data = {"PAT": _tiny_data(seed=1), "MRI": _tiny_data(seed=2), "average": _tiny_data(seed=3)}
    models = train_sources(data, tmp_path, "quick", jobs=1, **TINY)
    configs = {s: json.loads((tmp_path / s / "config.json").read_text()) for s in data}
    per_source = {"source", "train_hash", "losses", "seconds", "torch_threads"}
    shared = [{k: v for k, v in c.items() if k not in per_source} for c in configs.values()]
    assert shared[0] == shared[1] == shared[2]
    assert shared[0]["seed"] == 0 and shared[0]["epochs"] == 3 and shared[0]["preset"] == "quick"
    assert len({c["train_hash"] for c in configs.values()}) == 3  # the images do differ
    assert set(models) == set(data)
    # A second call reuses the saved models instead of training again.
    again = train_sources(data, tmp_path, "quick", jobs=1, **TINY)
    assert again["PAT"].losses == models["PAT"].losses


def test_presets_share_seed_and_reject_unknown_options():
    assert training_config("quick")["seed"] == training_config("standard")["seed"]
    with pytest.raises(ValueError, match="unknown preset"):
        training_config("huge")
    with pytest.raises(ValueError, match="unknown training option"):
        training_config("quick", epochz=3)
