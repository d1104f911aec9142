"""The organ model of one image source: its training configuration (:data:`PRESETS`,
:func:`training_config`) and :class:`OrganModel` (fit, save with its record, load, predict).
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fusionbench.data.io import atomic_write_bytes

from .organ_data import N_CLASSES, data_hash, stack_images, stack_labels
from .organ_unet import make_unet, predict_proba, train_unet

__all__ = ["PRESETS", "training_config", "OrganModel"]

#: Training budgets, the same for every source. ``size``: side of the centre window (native
#: pixels; ``None``: the whole image); ``patch``: training patch and inference window (``None``:
#: the whole window); ``steps``: optimiser steps of ``batch_size`` patches, or ``epochs`` passes
#: over the training images instead (``steps = epochs * ceil(n / batch_size)``).
#: ``quick``: about 2-4 min per source on one CPU core (160 train images of 256²).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"size": 176, "patch": 112, "channels": (16, 32, 64, 128), "strides": (2, 2, 2),
              "num_res_units": 1, "steps": 600, "epochs": None, "batch_size": 8, "lr": 3e-3,
              "weight_decay": 1e-4, "overlap": 0.5, "seed": 0, "augment": True},
}
PRESETS["standard"] = {**PRESETS["quick"], "steps": 1200}

#: Keys of a saved record that differ between sources (data, statistics, timings), not the recipe.
_PER_SOURCE = ("source", "n_train", "train_hash", "losses", "seconds", "torch_threads", "steps_run",
               "intensity_mean", "intensity_std", "class_weights", "labels_outside_window", "window")


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
    cfg["n_classes"] = N_CLASSES
    cfg["architecture"] = "monai.networks.nets.UNet"
    cfg["loss"] = ("monai.losses.DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True, "
                   "weight=sqrt(median_freq/freq) of the source's training labels)")
    cfg["optimizer"] = "AdamW + OneCycleLR"
    cfg["normalisation"] = "z-score with the training set's mean and std"
    cfg["inference"] = "monai sliding_window_inference, gaussian blending of the softmax"
    return cfg



_TRAIN_KEYS = ("channels", "strides", "num_res_units", "steps", "epochs", "batch_size", "lr", "weight_decay",
               "seed", "size", "patch", "overlap", "augment")


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
        x = stack_images(images, "images")
        inference = self.model.fb_inference
        record = {"source": self.source, **self.config, "n_train": len(x),
                  "train_hash": data_hash(x, stack_labels(labels, x.shape[1:], self.config["n_classes"])),
                  "intensity_mean": inference["mean"], "intensity_std": inference["std"],
                  "window": inference["window"], **self.model.fb_training,
                  "losses": self.losses, "seconds": seconds, "torch_threads": torch.get_num_threads()}
        self.record = record
        if workdir is not None:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
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
        model = make_unet(record["n_classes"], record["channels"], record["strides"], record["num_res_units"])
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
