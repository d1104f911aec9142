"""Multi-organ segmentation trained per image source (paper §4.3.2, Table 4).

The seed paper trains SFE-GCN (Liang et al., Med. Image Anal. 2025), an organ-level instance
segmentation network, once per image source (PAT, MRI and every method's fused images) and
reports the per-organ DSC. SFE-GCN needs CUDA deformable convolutions and pretrained weights, so
this module uses the substitute of the planning notes (§2c): a MONAI ``UNet`` trained for
semantic segmentation of all :data:`fusionbench.data.ORGANS` with ``DiceCELoss``, then connected
components for instances. What makes the comparison fair is kept from the paper: the same
architecture, training budget and seed for every source (:data:`PRESETS`), so differences come
from the images. Each source's configuration is saved as JSON next to its weights.

Training recipe (:func:`train_unet`, :func:`predict_proba`), chosen so that small organs (at 256²
the phantom's spleen is about 20 x 6 px) are not lost before the network sees them:

* native resolution, no resampling: a fixed centre window of ``size``² pixels (176² of the 256²
  phantom, 27.5 mm, which holds the whole body) is cut from every image; outside it the
  prediction is background (the fraction of training labels outside is recorded);
* training on random ``patch``² sub-windows (one position per batch, random left-right flips so
  an organ's side is not a cue), a fixed number of AdamW steps with a one-cycle learning rate;
* inference by sliding windows of the same ``patch``² (50 % overlap, Gaussian blending of the
  softmax, MONAI ``sliding_window_inference``), so instance normalisation sees the same context
  size as in training;
* intensities z-scored with the *training set's* mean and standard deviation (stored with the
  model), not per image, so absolute levels keep their meaning;
* ``DiceCELoss`` with ``include_background=False`` and batch-wise Dice (an organ absent from one
  image is not a failure), class weights ``sqrt(median_freq / freq)`` from the source's own
  training labels (MONAI applies them to both terms), so small organs count.

Scoring (:func:`score_organs`, :func:`organ_table`):

* per test image and organ, the DSC (percent) of the predicted and reference masks; ``body`` is
  the whole animal (label > 0), as the paper's body annotation, the other columns one label each;
* an organ's mean DSC is taken over the test images whose reference holds it (``over=
  "either"``: also those where only the prediction does, counting 0); it is "/" when the model
  never predicts it on those images, or it never occurs in the reference, as the paper prints
  "/"; images where the organ is predicted but absent are counted separately;
* instances: 8-connected components of at least ``min_instance_px`` pixels per organ, counted in
  prediction and reference.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from fusionbench.data import ORGAN_IDS, ORGANS
from fusionbench.data.io import ImageError, as_image, as_label_map, atomic_write_bytes

__all__ = ["PRESETS", "TABLE4_ORGANS", "OrganModel", "train_unet", "predict_proba", "count_instances",
           "score_organs", "organ_table", "train_sources", "training_config", "class_weights",
           "centre_window"]

#: Table 4 columns: body (the whole animal) and the eight organs the paper annotates.
TABLE4_ORGANS: tuple[str, ...] = ("body", "brain", "lung", "heart", "intestines", "kidneys", "spleen",
                                  "spine", "tumour")

#: Training budgets, the same for every source. ``size``: side of the centre window (native
#: pixels; ``None``: the whole image); ``patch``: training patch and inference window (``None``:
#: the whole window); ``steps``: optimiser steps of ``batch_size`` patches, or ``epochs`` passes
#: over the training images instead (``steps = epochs * ceil(n / batch_size)``).
#: ``quick``: about 2-4 min per source on one CPU core (160 train images of 256²).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"size": 176, "patch": 112, "channels": (16, 32, 64, 128), "strides": (2, 2, 2),
              "num_res_units": 1, "steps": 600, "epochs": None, "batch_size": 8, "lr": 3e-3,
              "weight_decay": 1e-4, "overlap": 0.5, "seed": 0},
}
PRESETS["standard"] = {**PRESETS["quick"], "steps": 1200}

_N_CLASSES = len(ORGANS)
#: Keys of a saved record that differ between sources (data, statistics, timings), not the recipe.
_PER_SOURCE = ("source", "n_train", "train_hash", "losses", "seconds", "torch_threads", "steps_run",
               "intensity_mean", "intensity_std", "class_weights", "labels_outside_window", "window")


def _stack_images(images: Sequence, name: str) -> np.ndarray:
    if len(images) == 0:
        raise ValueError(f"{name}: no images")
    arrays = [as_image(im, f"{name}[{i}]") for i, im in enumerate(images)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ImageError(f"{name}: images differ in shape {sorted(shapes)}")
    return np.stack(arrays)


def _stack_labels(labels: Sequence, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    if len(labels) == 0:
        raise ValueError("labels: no label maps")
    out = []
    for i, lab in enumerate(labels):
        lab = as_label_map(lab, f"labels[{i}]")
        if lab.shape != shape:
            raise ImageError(f"labels[{i}]: shape {lab.shape} differs from image shape {shape}")
        if lab.min() < 0 or lab.max() >= n_classes:
            raise ImageError(f"labels[{i}]: label ids must lie in [0, {n_classes - 1}], got "
                             f"[{lab.min()}, {lab.max()}]")
        out.append(lab.astype(np.int64))
    return np.stack(out)


def centre_window(stack: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size`` x ``size`` window of an (..., H, W) array (a view); ``None``: unchanged.

    The window starts at ``((H - size) // 2, (W - size) // 2)``, so it is the same pixels for
    every image of one size.
    """
    if size is None:
        return stack
    h, w = stack.shape[-2:]
    if not 0 < int(size) <= min(h, w):
        raise ImageError(f"window size {size} does not fit images of {h}x{w}; choose a size of at most "
                         f"{min(h, w)} or size=None (whole image)")
    r0, c0 = (h - size) // 2, (w - size) // 2
    return stack[..., r0:r0 + size, c0:c0 + size]


def class_weights(labels, n_classes: int) -> np.ndarray:
    """Class weights ``sqrt(median_freq / freq)``, normalised to mean 1 over the classes present.

    ``freq`` is each class's pixel count in ``labels`` and the median is taken over the classes
    present; classes absent from ``labels`` get weight 0 (nothing to learn from). The square root
    softens plain inverse frequency (median-frequency balancing, Eigen & Fergus, ICCV 2015) so
    tiny organs count without dominating.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        raise ValueError(f"class_weights: expected a non-empty integer label array, got dtype {labels.dtype}, "
                         f"size {labels.size}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"class_weights: label ids must lie in [0, {n_classes - 1}], got "
                         f"[{labels.min()}, {labels.max()}]")
    freq = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)
    seen = freq > 0
    weights = np.zeros(n_classes)
    weights[seen] = np.sqrt(np.median(freq[seen]) / freq[seen])
    return (weights / weights[seen].mean()).astype(np.float32)


def _make_unet(n_classes: int, channels, strides, num_res_units: int):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=n_classes, channels=tuple(channels),
                strides=tuple(strides), num_res_units=num_res_units)


def _window_shape(shape: tuple[int, int], patch: int | None, multiple: int) -> tuple[int, int]:
    """Training patch / inference window: ``patch``² or, for ``None``, the image rounded up to ``multiple``."""
    if patch is None:
        return tuple(multiple * math.ceil(s / multiple) for s in shape)
    patch = int(patch)
    if patch % multiple:
        raise ValueError(f"patch {patch} must be a multiple of {multiple} (the product of the U-Net strides)")
    if patch > min(shape):
        raise ImageError(f"patch {patch} is larger than the {shape[0]}x{shape[1]} training window; "
                         f"use a smaller patch or patch=None")
    return (patch, patch)


def _pad_to(stack: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Edge-pad (N, H, W) at the bottom/right up to at least ``window``."""
    ph, pw = max(0, window[0] - stack.shape[-2]), max(0, window[1] - stack.shape[-1])
    if ph or pw:
        stack = np.pad(stack, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return stack


def train_unet(images: Sequence, labels: Sequence, *, n_classes: int = _N_CLASSES,
               channels=(16, 32, 64, 128), strides=None, num_res_units: int = 1, steps: int | None = None,
               epochs: int | None = None, batch_size: int = 8, lr: float = 3e-3, weight_decay: float = 1e-4,
               seed: int = 0, size: int | None = None, patch: int | None = None, overlap: float = 0.5,
               augment: bool = True, log=None):
    """Train a MONAI ``UNet`` on random patches of a centre window (the module's recipe).

    Parameters
    ----------
    images : sequence of (H, W) arrays in [0, 1]
    labels : sequence of (H, W) integer arrays with ids in [0, n_classes)
    channels, strides, num_res_units : the ``monai.networks.nets.UNet`` architecture
        (``strides`` default: 2 between every pair of levels).
    steps, epochs : int
        The budget, exactly one of them: ``steps`` AdamW steps, or ``epochs`` passes over the
        images, i.e. ``epochs * ceil(n / batch_size)`` steps.
    batch_size, lr, weight_decay, seed : ``batch_size`` patches per step (one position per
        batch), peak learning rate of the one-cycle schedule; the seed fixes initialisation,
        sampling and flips, so two sources differ only by their images.
    size : int, optional
        Side of the centre window cut from every image at native resolution; ``None``: whole image.
    patch : int, optional
        Side of the training patches and of the inference window (a multiple of the strides'
        product); ``None``: the whole window.
    overlap : float
        Overlap of the sliding windows at inference (stored with the model).
    augment : bool
        Random left-right flips.
    log : callable, optional
        Receives a progress line every 50 steps.

    Returns
    -------
    model : torch.nn.Module (eval mode, CPU); ``model.fb_inference`` holds what
        :func:`predict_proba` needs (window, intensity statistics, overlap) and
        ``model.fb_training`` the per-source statistics (class weights, labels outside the window).
    losses : list of float, the loss of every step
    """
    import torch
    from monai.losses import DiceCELoss

    from fusionbench.nn.training import seed_everything

    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps and epochs, got steps={steps}, epochs={epochs}")
    if int(batch_size) < 1 or (steps is not None and int(steps) < 1) or (epochs is not None and int(epochs) < 1):
        raise ValueError(f"batch_size, steps and epochs must be >= 1, got {batch_size}, {steps}, {epochs}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    x = _stack_images(images, "images")
    y = _stack_labels(labels, x.shape[1:], n_classes)
    strides = tuple(strides) if strides is not None else (2,) * (len(channels) - 1)
    window = _window_shape(centre_window(x[:1], size).shape[1:], patch, int(np.prod(strides)))
    inside = int(np.count_nonzero(centre_window(y, size)))
    outside = 1.0 - inside / max(1, int(np.count_nonzero(y)))
    if outside > 0.01:
        warnings.warn(f"{100 * outside:.1f} % of the labelled pixels lie outside the {size}² centre window; "
                      "they are predicted as background", stacklevel=2)
    x, y = centre_window(x, size), centre_window(y, size)
    # Training-set statistics, not per image: absolute intensities (PAT's zero level, T2w levels)
    # keep their meaning instead of depending on how much of the window the body fills.
    mean, std = float(x.mean()), float(x.std()) + 1e-6
    weights = class_weights(y, n_classes)
    n_steps = int(steps) if steps is not None else int(epochs) * math.ceil(len(x) / int(batch_size))

    seed_everything(seed)
    model = _make_unet(n_classes, channels, strides, num_res_units)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True,
                         weight=torch.from_numpy(weights))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # One-cycle: warm-up over the first 10 % of the steps (none when that is under one step,
    # where torch's phase arithmetic would divide by zero), then cosine annealing.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=n_steps,
                                                   pct_start=0.1 if n_steps > 10 else 0.0)
    xt = torch.from_numpy(_pad_to((x - mean) / std, window).astype(np.float32))[:, None]
    yt = torch.from_numpy(_pad_to(y, window))[:, None]
    spans = np.array(xt.shape[-2:]) - np.array(window)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    model.train()
    for step in range(n_steps):
        idx = rng.choice(len(xt), size=int(batch_size), replace=int(batch_size) > len(xt))
        r0, c0 = rng.integers(0, spans + 1)
        xb = xt[idx, :, r0:r0 + window[0], c0:c0 + window[1]]
        yb = yt[idx, :, r0:r0 + window[0], c0:c0 + window[1]]
        if rng.random() < 0.5 and augment:  # organ identity must come from appearance, not side
            xb, yb = xb.flip(-1), yb.flip(-1)
        optimiser.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.item()))
        if log and (step + 1) % 50 == 0:
            log(f"  step {step + 1}/{n_steps} loss {np.mean(losses[-50:]):.3f}")
    model.eval()
    model.fb_inference = {"size": size, "window": list(window), "mean": mean, "std": std, "overlap": float(overlap)}
    model.fb_training = {"class_weights": weights.tolist(), "labels_outside_window": outside, "steps_run": n_steps}
    return model, losses


def predict_proba(model, images: Sequence, *, batch_size: int = 8) -> np.ndarray:
    """Class probabilities (N, C, H, W) float32 at the images' own size.

    Sliding windows of the training window over the centre window (Gaussian blending of the
    softmax, ``model.fb_inference["overlap"]``); outside the centre window: background.
    """
    import torch
    from monai.inferers import sliding_window_inference

    info = getattr(model, "fb_inference", None)
    if info is None:
        raise ValueError("predict_proba: the model carries no inference settings; train it with train_unet "
                         "or load it with OrganModel.load")
    x = _stack_images(images, "images")
    inner = centre_window(x, info["size"])
    z = _pad_to((inner - info["mean"]) / info["std"], tuple(info["window"])).astype(np.float32)

    def softmax(batch):
        return torch.softmax(model(batch), dim=1)

    chunks = []
    with torch.no_grad():
        for start in range(0, len(z), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(z[start:start + batch_size, None]))
            chunks.append(sliding_window_inference(xb, roi_size=tuple(info["window"]), sw_batch_size=batch_size,
                                                   predictor=softmax, overlap=info["overlap"],
                                                   mode="gaussian").numpy())
    prob = np.concatenate(chunks)[..., :inner.shape[-2], :inner.shape[-1]]
    out = np.zeros((x.shape[0], prob.shape[1], *x.shape[1:]), np.float32)
    out[:, 0] = 1.0  # outside the window: background
    centre_window(out, info["size"])[...] = prob
    return out


def training_config(preset: str | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The full training configuration of a preset name (or dict), with overrides.

    ``epochs`` given without ``steps`` replaces the preset's step budget; a ``patch`` larger
    than ``size`` is clamped to it; ``channels`` given without ``strides`` gets strides of 2.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        cfg = {"preset": preset, **PRESETS[preset]}
    else:
        cfg = {"preset": "custom", **PRESETS["quick"], **dict(preset)}
    unknown = set(overrides) - set(PRESETS["quick"])
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(PRESETS['quick'])}")
    if overrides.get("epochs") is not None and "steps" not in overrides:
        overrides = {**overrides, "steps": None}
    if "channels" in overrides and "strides" not in overrides:
        overrides = {**overrides, "strides": (2,) * (len(overrides["channels"]) - 1)}
    cfg.update(overrides)
    if (cfg["steps"] is None) == (cfg["epochs"] is None):
        raise ValueError(f"give exactly one of steps and epochs, got steps={cfg['steps']}, epochs={cfg['epochs']}")
    if len(cfg["strides"]) != len(cfg["channels"]) - 1:
        raise ValueError(f"{len(cfg['channels'])} channel levels need {len(cfg['channels']) - 1} strides, "
                         f"got {list(cfg['strides'])}")
    if cfg["patch"] is not None and cfg["size"] is not None:
        cfg["patch"] = min(int(cfg["patch"]), int(cfg["size"]))
    multiple = int(np.prod(cfg["strides"]))
    if cfg["patch"] is not None and cfg["patch"] % multiple:
        raise ValueError(f"patch {cfg['patch']} must be a multiple of {multiple} (the product of the strides)")
    cfg["channels"] = list(cfg["channels"])
    cfg["strides"] = list(cfg["strides"])
    cfg["n_classes"] = _N_CLASSES
    cfg["architecture"] = "monai.networks.nets.UNet"
    cfg["loss"] = ("monai.losses.DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True, "
                   "weight=sqrt(median_freq/freq) of the source's training labels)")
    cfg["optimizer"] = "AdamW + OneCycleLR"
    cfg["normalisation"] = "z-score with the training set's mean and std"
    cfg["inference"] = "monai sliding_window_inference, gaussian blending of the softmax"
    return cfg


def _data_hash(x: np.ndarray, y: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


_TRAIN_KEYS = ("channels", "strides", "num_res_units", "steps", "epochs", "batch_size", "lr", "weight_decay",
               "seed", "size", "patch", "overlap")


@dataclass
class OrganModel:
    """A multi-organ segmenter for one image source: fit, predict, and its saved configuration."""

    source: str
    config: dict[str, Any]
    model: Any = None
    losses: list[float] | None = None

    @classmethod
    def create(cls, source: str, preset: str | Mapping[str, Any] = "quick", **overrides: Any) -> "OrganModel":
        return cls(source=str(source), config=training_config(preset, **overrides))

    def fit(self, images: Sequence, labels: Sequence, workdir: str | os.PathLike | None = None,
            log=None) -> "OrganModel":
        """Train on this source's images; writes ``workdir/config.json`` and ``model.pt`` if given.

        The record holds the shared configuration and this source's own values: training-set
        hash, intensity mean and std (used by :meth:`predict`), class weights, losses, seconds.
        """
        import torch

        t0 = time.perf_counter()
        self.model, self.losses = train_unet(images, labels, n_classes=self.config["n_classes"], log=log,
                                             **{k: self.config[k] for k in _TRAIN_KEYS})
        seconds = time.perf_counter() - t0
        x = _stack_images(images, "images")
        inference = self.model.fb_inference
        record = {"source": self.source, **self.config, "n_train": len(x),
                  "train_hash": _data_hash(x, _stack_labels(labels, x.shape[1:], self.config["n_classes"])),
                  "intensity_mean": inference["mean"], "intensity_std": inference["std"],
                  "window": inference["window"], **self.model.fb_training,
                  "losses": self.losses, "seconds": seconds, "torch_threads": torch.get_num_threads()}
        self.record = record
        if workdir is not None:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            import io

            buf = io.BytesIO()
            torch.save(self.model.state_dict(), buf)
            atomic_write_bytes(workdir / "model.pt", buf.getvalue())
            atomic_write_bytes(workdir / "config.json", (json.dumps(record, indent=1) + "\n").encode())
        return self

    @classmethod
    def load(cls, workdir: str | os.PathLike) -> "OrganModel":
        """Load a model written by :meth:`fit`."""
        import torch

        workdir = Path(workdir)
        record = json.loads((workdir / "config.json").read_text())
        if "window" not in record:
            raise ValueError(f"{workdir}: organ model saved by an older fusionbench (no inference window); "
                             "train it again")
        model = _make_unet(record["n_classes"], record["channels"], record["strides"], record["num_res_units"])
        model.load_state_dict(torch.load(workdir / "model.pt", weights_only=True))
        model.eval()
        model.fb_inference = {"size": record["size"], "window": record["window"], "mean": record["intensity_mean"],
                              "std": record["intensity_std"], "overlap": record["overlap"]}
        model.fb_training = {k: record[k] for k in ("class_weights", "labels_outside_window", "steps_run")}
        cfg = {k: v for k, v in record.items() if k not in _PER_SOURCE}
        out = cls(source=record["source"], config=cfg, model=model, losses=record["losses"])
        out.record = record
        return out

    def predict(self, images: Sequence) -> list[np.ndarray]:
        """Label maps (uint8, ids of ORGANS), one per image."""
        if self.model is None:
            raise RuntimeError(f"organ model of {self.source!r} is not fitted")
        prob = predict_proba(self.model, images)
        return [p.argmax(axis=0).astype(np.uint8) for p in prob]


def _organ_mask(label_map: np.ndarray, organ: str) -> np.ndarray:
    if organ == "body":
        return label_map > 0
    return label_map == ORGAN_IDS[organ]


def count_instances(label_map, organ: str, *, min_instance_px: int = 5) -> int:
    """Number of 8-connected components of ``organ`` with at least ``min_instance_px`` pixels."""
    if organ != "body" and organ not in ORGAN_IDS:
        raise ValueError(f"unknown organ {organ!r}; expected 'body' or one of {sorted(ORGAN_IDS)}")
    mask = _organ_mask(np.asarray(label_map), organ)
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int(np.count_nonzero(sizes >= min_instance_px))


def score_organs(pred_maps: Sequence, ref_maps: Sequence, *, organs: Sequence[str] = TABLE4_ORGANS,
                 case_ids: Sequence[str] | None = None, min_instance_px: int = 5) -> list[dict[str, Any]]:
    """Per (case, organ) rows: DSC (percent, ``nan`` if the organ is in neither map) and instance counts.

    Returns
    -------
    list of dict
        Keys ``case, organ, dsc, in_pred, in_ref, n_pred, n_ref``.
    """
    from fusionbench.metrics.segmentation import dsc

    if len(pred_maps) != len(ref_maps):
        raise ValueError(f"score_organs: {len(pred_maps)} predictions for {len(ref_maps)} references")
    case_ids = list(case_ids) if case_ids is not None else [str(i) for i in range(len(ref_maps))]
    rows = []
    for cid, pred, ref in zip(case_ids, pred_maps, ref_maps):
        pred, ref = np.asarray(pred), np.asarray(ref)
        if pred.shape != ref.shape:
            raise ImageError(f"{cid}: prediction shape {pred.shape} differs from reference {ref.shape}")
        for organ in organs:
            p, r = _organ_mask(pred, organ), _organ_mask(ref, organ)
            in_pred, in_ref = bool(p.any()), bool(r.any())
            rows.append({"case": cid, "organ": organ,
                         "dsc": dsc(p, r) if (in_pred or in_ref) else float("nan"),
                         "in_pred": in_pred, "in_ref": in_ref,
                         "n_pred": count_instances(pred, organ, min_instance_px=min_instance_px),
                         "n_ref": count_instances(ref, organ, min_instance_px=min_instance_px)})
    return rows


def organ_table(rows_by_source: Mapping[str, Sequence[Mapping[str, Any]]],
                organs: Sequence[str] = TABLE4_ORGANS, *, over: str = "reference"):
    """Table 4: mean DSC per (source, organ), ``nan`` for "/", plus instance and false-positive counts.

    Parameters
    ----------
    rows_by_source : mapping source -> rows of :func:`score_organs`
    organs : the columns
    over : {"reference", "either"}
        Which test images an organ's mean is taken over. ``"reference"`` (default): those whose
        reference holds the organ, the convention of per-organ Dice in the segmentation
        literature (MONAI ``DiceMetric(ignore_empty=True)``); an organ predicted on a slice that
        does not hold it is counted separately (``false_pos_images``), so a few stray pixels on
        the many slices without, say, a brain do not swamp the segmentation score. ``"either"``:
        those where it is in the reference or the prediction (a hallucinated organ is a 0 in the
        mean, as nnU-Net's evaluation counts it).

    Returns
    -------
    dsc : pandas.DataFrame
        Sources x organs, mean DSC (percent); ``nan`` ("/") if the organ never occurs in the
        reference, or the model never predicts it on an image that holds it (``"reference"``) or
        anywhere (``"either"``).
    instances : pandas.DataFrame
        Sources x (organ, "pred" / "ref" / "false_pos_images"): total instance counts over the
        test split and the number of images where the organ is predicted but absent.
    """
    import pandas as pd

    if over not in ("reference", "either"):
        raise ValueError(f"over must be 'reference' or 'either', got {over!r}")
    dsc_rows, inst_rows = {}, {}
    for source, rows in rows_by_source.items():
        frame = pd.DataFrame(list(rows))
        means, inst = {}, {}
        for organ in organs:
            sub = frame[frame["organ"] == organ] if not frame.empty else frame
            if sub.empty:
                means[organ] = float("nan")
                inst.update({(organ, "pred"): 0, (organ, "ref"): 0, (organ, "false_pos_images"): 0})
                continue
            if over == "reference":
                sub_mean = sub[sub["in_ref"]]
                never = not (sub["in_ref"] & sub["in_pred"]).any()
            else:
                sub_mean = sub
                never = not sub["in_pred"].any() or not sub["in_ref"].any()
            means[organ] = float("nan") if never else float(sub_mean["dsc"].dropna().mean())
            inst[(organ, "pred")] = int(sub["n_pred"].sum())
            inst[(organ, "ref")] = int(sub["n_ref"].sum())
            inst[(organ, "false_pos_images")] = int((sub["in_pred"] & ~sub["in_ref"]).sum())
        dsc_rows[source], inst_rows[source] = means, inst
    dsc_frame = pd.DataFrame.from_dict(dsc_rows, orient="index").reindex(columns=list(organs))
    inst_frame = pd.DataFrame.from_dict(inst_rows, orient="index")
    inst_frame.columns = pd.MultiIndex.from_tuples(inst_frame.columns, names=["organ", "count"])
    return dsc_frame, inst_frame


def _train_one(source: str, config: dict, images: np.ndarray, labels: np.ndarray, workdir: str,
               threads: int | None, log=None) -> str:
    import torch

    if threads is not None:  # None: in this process, keep the caller's torch / OMP_NUM_THREADS setting
        torch.set_num_threads(max(1, int(threads)))
    model = OrganModel(source=source, config=dict(config)).fit(list(images), list(labels), workdir, log=log)
    if log:
        log(f"organ model {source}: {model.record['steps_run']} steps in {model.record['seconds']:.0f} s")
    return workdir


def train_sources(data: Mapping[str, tuple[Sequence, Sequence]], workdir: str | os.PathLike,
                  preset: str | Mapping[str, Any] = "quick", *, jobs: int | None = None,
                  scheduler: str | None = None, reuse: bool = True, log=None, **overrides: Any
                  ) -> dict[str, OrganModel]:
    """Train one organ model per source with the same configuration, in parallel.

    Parameters
    ----------
    data : mapping source -> (images, labels)
        The training set of every source.
    workdir : path
        Each source's model goes to ``workdir/SOURCE/`` (``config.json`` and ``model.pt``).
    preset, **overrides : the training configuration shared by all sources.
    jobs : int, optional
        Local worker processes (default: one per available core, at most one per source);
        ``1`` trains in this process with its current torch threads (``OMP_NUM_THREADS``); each
        worker process gets ``cores // jobs`` torch threads.
    scheduler : str, optional
        A Dask scheduler address (``tcp://HOST:8786``); needs ``dask[distributed]``.
    reuse : bool
        Load a source's model instead of training when its saved config and training-data hash
        match.
    """
    from fusionbench.executors import default_jobs

    config = training_config(preset, **overrides)
    workdir = Path(workdir)
    todo, models = {}, {}
    for source, (images, labels) in data.items():
        folder = workdir / _safe(source)
        x = _stack_images(images, f"{source}/images")
        y = _stack_labels(labels, x.shape[1:], config["n_classes"])
        if reuse and (folder / "config.json").exists() and (folder / "model.pt").exists():
            saved = json.loads((folder / "config.json").read_text())
            if saved.get("train_hash") == _data_hash(x, y) and all(saved.get(k) == v for k, v in config.items()):
                models[source] = OrganModel.load(folder)
                continue
        todo[source] = (x, y, str(folder))
    if not todo:
        return models
    cores = default_jobs()
    jobs = min(len(todo), cores if jobs is None or jobs <= 0 else jobs)
    threads = max(1, cores // jobs)
    if log:
        log(f"training {len(todo)} organ model(s) ({config['preset']} preset) on {jobs} worker(s)")
    if scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            futures = [client.submit(_train_one, s, config, x, y, f, threads, pure=False)
                       for s, (x, y, f) in todo.items()]
            client.gather(futures)
    elif jobs == 1:
        for s, (x, y, f) in todo.items():
            if log:
                log(f"training the organ model of {s}")
            _train_one(s, config, x, y, f, None, log)
    else:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train_one, s, config, x, y, f, threads) for s, (x, y, f) in todo.items()]
            for fut in as_completed(futures):
                fut.result()
    for s, (_, _, f) in todo.items():
        models[s] = OrganModel.load(f)
    return {s: models[s] for s in data}


def _safe(source: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in str(source))
