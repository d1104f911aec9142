"""Organ segmentation: metrics on hand-built masks, result rows, "/" rules, the training recipe on
tiny data, identical per-source budgets."""
import json

import numpy as np
import pandas as pd
import pytest

from fusionbench.data import ORGAN_IDS
from fusionbench.data.io import ImageError
from fusionbench.results import COLUMNS
from segment.organ_data import centre_window, class_weights
from segment.organ_model import PRESETS, OrganModel, training_config
from segment.organ_scoring import count_instances, organ_rows, score_organs
from segment.organ_training import train_sources
from segment.organ_unet import predict_proba, train_unet
from segment.report import organ_table

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


def _results(scores_by_source):
    """The long-form result rows of several sources' :func:`score_organs` rows."""
    return pd.DataFrame([r for s, scores in scores_by_source.items() for r in organ_rows(s, scores)], columns=COLUMNS)


def _sum(results, source, metric):
    return results.loc[(results["method"] == source) & (results["metric"] == metric), "value"].sum()


def test_organ_rows_are_the_core_long_form():
    ref = _two_kidneys()
    stray = ref.copy()
    stray[30:33, 30:33] = SP  # a 9-pixel spleen where the reference has none
    rows = organ_rows("PAT", score_organs([stray], [ref], organs=("kidneys", "spleen", "brain")))
    assert all(list(r) == COLUMNS and r["group"] == "organs" and r["method"] == "PAT" and r["case"] == "0"
               for r in rows)
    by_metric = {r["metric"]: r["value"] for r in rows}
    # Kidneys are in the reference: DSC and detection rows; spleen and brain are not: false positives.
    assert by_metric == {"kidneys": 100.0, "kidneys.detected": 1.0, "kidneys.n_pred": 2.0, "kidneys.n_ref": 2.0,
                         "spleen.false_pos": 1.0, "spleen.n_pred": 1.0, "spleen.n_ref": 0.0,
                         "brain.false_pos": 0.0, "brain.n_pred": 0.0, "brain.n_ref": 0.0}
    assert all(r["seconds"] >= 0 for r in rows)


def test_organ_table_prints_slash_for_organs_never_found():
    ref = _two_kidneys()
    miss = ref.copy()
    miss[miss == K] = 1
    organs = ("body", "kidneys", "brain")
    scores = {"good": score_organs([ref, ref], [ref, ref], organs=organs),
              "blind": score_organs([miss, ref], [ref, ref], organs=organs)}
    table = organ_table(_results(scores), ["good", "blind"], organs=organs)
    assert table.mean.at["good", "kidneys"] == pytest.approx(100.0)
    assert table.mean.at["blind", "kidneys"] == pytest.approx(50.0)  # mean of 0 and 100
    assert table.std.at["blind", "kidneys"] == pytest.approx(np.std([0, 100], ddof=1))
    assert np.isnan(table.mean.at["good", "brain"])                 # never in the reference: "/"
    scores["never"] = score_organs([miss, miss], [ref, ref], organs=organs)
    results = _results(scores)
    table = organ_table(results, ["good", "blind", "never"], organs=organs)
    assert np.isnan(table.mean.at["never", "kidneys"])               # never predicted: "/" ...
    assert table.avg_rank["never"] > table.avg_rank["blind"] > table.avg_rank["good"]  # ... ranked at DSC 0
    assert table.columns == list(organs) and table.label("kidneys") == "Kidneys"
    assert _sum(results, "good", "kidneys.n_ref") == 4 and _sum(results, "never", "kidneys.n_pred") == 0


def test_organ_table_averages_over_images_holding_the_organ():
    ref = _two_kidneys()
    no_kidney = ref.copy()
    no_kidney[no_kidney == K] = 1
    stray = no_kidney.copy()
    stray[30, 30] = K  # one hallucinated kidney pixel on a slice without kidneys
    results = _results({"s": score_organs([ref, stray, stray], [ref, no_kidney, no_kidney], organs=("kidneys",))})
    table = organ_table(results, ["s"], organs=("kidneys",))
    assert table.mean.at["s", "kidneys"] == pytest.approx(100.0)   # the one slice that holds kidneys
    assert table.n.at["s", "kidneys"] == 1
    assert _sum(results, "s", "kidneys.false_pos") == 2            # the strays are counted, not averaged
    # Predicted only where absent: "/".
    results = _results({"s": score_organs([stray], [no_kidney], organs=("kidneys",)) +
                        score_organs([no_kidney], [ref], organs=("kidneys",), case_ids=["1"])})
    assert np.isnan(organ_table(results, ["s"], organs=("kidneys",)).mean.at["s", "kidneys"])


def test_score_organs_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="predictions"):
        score_organs([np.zeros((4, 4), int)], [])
    with pytest.raises(ImageError, match="shape"):
        score_organs([np.zeros((4, 4), int)], [np.zeros((5, 4), int)])


def test_class_weights_are_square_root_median_frequency():
    # Pixel counts 100, 25, 0, 4: median of the present classes 25, raw weights 0.5, 1, -, 2.5,
    # mean 4/3 -> 0.375, 0.75, 0 (absent), 1.875.
    labels = np.repeat([0, 1, 3], [100, 25, 4])
    assert class_weights(labels, 4) == pytest.approx([0.375, 0.75, 0.0, 1.875])
    assert class_weights(np.full(10, 2), 3) == pytest.approx([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="label ids"):
        class_weights(np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="integer"):
        class_weights(np.array([0.5]), 4)


def test_centre_window_takes_the_same_central_pixels():
    stack = np.arange(2 * 7 * 6).reshape(2, 7, 6)
    win = centre_window(stack, 4)
    assert win.shape == (2, 4, 4)
    assert np.array_equal(win[1], stack[1, 1:5, 1:5])   # (7 - 4) // 2 = 1, (6 - 4) // 2 = 1
    assert centre_window(stack, None) is stack
    with pytest.raises(ImageError, match="does not fit"):
        centre_window(stack, 7)


def _tiny_data(n=6, seed=0, size=32):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        lab = np.zeros((size, size), np.int64)
        r, c = rng.integers(11, size - 11, size=2)
        lab[r - 6:r + 6, c - 6:c + 6] = 1
        lab[r - 2:r + 3, c - 2:c + 3] = LV
        img = 0.05 + 0.4 * (lab == 1) + 0.9 * (lab == LV) + 0.02 * rng.standard_normal((size, size))
        images.append(np.clip(img, 0, 1).astype(np.float32))
        labels.append(lab)
    return images, labels


# The recipe of the presets at toy scale: a 24² centre window of 32² images, 16² patches.
TINY = {"steps": 3, "size": 24, "patch": 16, "channels": (4, 8), "strides": (2,), "batch_size": 3, "lr": 1e-2}


def test_tiny_fit_lowers_the_loss_and_predicts_label_maps(tmp_path):
    import torch

    torch.set_num_threads(1)
    images, labels = _tiny_data()
    model = OrganModel.create("MRI", "quick", **{**TINY, "steps": 40}).fit(images, labels, tmp_path)
    assert len(model.losses) == 40 and model.record["steps_run"] == 40
    assert np.mean(model.losses[-5:]) < np.mean(model.losses[:5])
    # Intensities are z-scored with the statistics of the training windows, stored with the model.
    windows = centre_window(np.stack(images), 24)
    assert model.record["intensity_mean"] == pytest.approx(windows.mean(), rel=1e-5)
    assert model.record["intensity_std"] == pytest.approx(windows.std() + 1e-6, rel=1e-5)
    assert model.record["labels_outside_window"] == 0.0  # the bodies lie inside the window
    pred = model.predict(images[:2])
    assert pred[0].shape == (32, 32) and pred[0].dtype == np.uint8
    assert not pred[0][:4].any() and not pred[0][:, 28:].any()  # outside the window: background
    loaded = OrganModel.load(tmp_path)
    assert loaded.config == model.config
    assert np.array_equal(loaded.predict(images[:2])[0], pred[0])


def test_predict_proba_is_the_softmax_of_the_normalised_window():
    import torch

    torch.set_num_threads(1)
    images, labels = _tiny_data(n=4)
    # Patch = whole window: one sliding window, so the blend must equal a plain forward pass.
    model, losses = train_unet(images, labels, channels=(4, 8), steps=2, size=24, patch=None, batch_size=2)
    prob = predict_proba(model, images[:2])
    assert prob.shape == (2, 12, 32, 32)
    assert np.allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    info = model.fb_inference
    z = (centre_window(np.stack(images[:2]), 24) - info["mean"]) / info["std"]
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(z[:, None].astype(np.float32))), 1).numpy()
    assert np.allclose(centre_window(prob, 24), direct, atol=1e-5)
    assert np.all(prob[:, 0, :4] == 1.0)  # above the window: certain background


def test_same_seed_and_data_give_the_same_training():
    import torch

    torch.set_num_threads(1)
    images, labels = _tiny_data(n=4)
    kw = {"channels": (4, 8), "steps": 3, "size": 24, "patch": 16, "batch_size": 2}
    _, a = train_unet(images, labels, **kw)
    _, b = train_unet(images, labels, **kw)
    _, c = train_unet(images, labels, **kw, seed=1)
    assert a == b and a != c


def test_train_unet_rejects_bad_budgets_and_windows():
    images, labels = _tiny_data(n=2)
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        train_unet(images, labels, steps=2, epochs=1)
    with pytest.raises(ImageError, match="does not fit"):
        train_unet(images, labels, steps=1, size=40)
    with pytest.raises(ValueError, match="multiple of 2"):
        train_unet(images, labels, channels=(4, 8), steps=1, patch=15)
    with pytest.raises(ImageError, match="label ids"):
        train_unet(images, [np.full((32, 32), 12)] * 2, steps=1)


def test_every_source_trains_with_identical_seed_and_budget(tmp_path):
    import torch

    torch.set_num_threads(1)
    data = {"PAT": _tiny_data(seed=1), "MRI": _tiny_data(seed=2), "average": _tiny_data(seed=3)}
    models = train_sources(data, tmp_path, "quick", jobs=1, **TINY)
    configs = {s: json.loads((tmp_path / s / "config.json").read_text()) for s in data}
    per_source = {"source", "train_hash", "losses", "seconds", "torch_threads", "intensity_mean", "intensity_std",
                  "class_weights"}
    shared = [{k: v for k, v in c.items() if k not in per_source} for c in configs.values()]
    assert shared[0] == shared[1] == shared[2]
    assert shared[0]["seed"] == 0 and shared[0]["steps"] == 3 and shared[0]["preset"] == "quick"
    assert shared[0]["steps_run"] == 3 and shared[0]["window"] == [16, 16] and shared[0]["n_train"] == 6
    assert shared[0]["channels"] == [4, 8] and shared[0]["size"] == 24
    assert len({c["train_hash"] for c in configs.values()}) == 3  # the images do differ ...
    assert len({c["intensity_mean"] for c in configs.values()}) == 3  # ... and so do their statistics
    assert set(models) == set(data)
    # A second call reuses the saved models instead of training again.
    again = train_sources(data, tmp_path, "quick", jobs=1, **TINY)
    assert again["PAT"].losses == models["PAT"].losses
    assert again["PAT"].record["seconds"] == configs["PAT"]["seconds"]


def test_presets_differ_only_by_their_step_budget():
    quick, standard = training_config("quick"), training_config("standard")
    assert {k: v for k, v in quick.items() if k not in ("preset", "steps")} == \
           {k: v for k, v in standard.items() if k not in ("preset", "steps")}
    assert (quick["steps"], standard["steps"]) == (600, 1200)
    assert (quick["size"], quick["patch"], quick["batch_size"], quick["channels"]) == (176, 112, 8, [16, 32, 64, 128])
    assert PRESETS["quick"]["epochs"] is None


def test_training_config_overrides():
    by_epochs = training_config("quick", epochs=2)
    assert (by_epochs["epochs"], by_epochs["steps"]) == (2, None)   # epochs replace the step budget
    assert training_config("quick", size=64)["patch"] == 64         # the patch never exceeds the window
    assert training_config("quick", channels=(4, 8, 16))["strides"] == [2, 2]
    with pytest.raises(ValueError, match="unknown preset"):
        training_config("huge")
    with pytest.raises(ValueError, match="unknown training option"):
        training_config("quick", epochz=3)
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        training_config("quick", steps=10, epochs=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        training_config("quick", patch=100)
    with pytest.raises(ValueError, match="strides"):
        training_config("quick", channels=(4, 8), strides=(2, 2))
