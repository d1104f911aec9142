"""Multi-organ segmentation trained per image source (paper §4.3.2, Table 4).

The seed paper trains SFE-GCN (Liang et al., Med. Image Anal. 2025), an organ-level instance
segmentation network, once per image source (PAT, MRI and every method's fused images) and
reports the per-organ DSC. SFE-GCN needs CUDA deformable convolutions and pretrained weights, so
this module uses the substitute of the planning notes (§2c): a MONAI ``UNet`` trained for
semantic segmentation of all :data:`fusionbench.data.ORGANS` with ``DiceCELoss``, then connected
components for instances. What makes the comparison fair is kept from the paper: the same
architecture, training budget and seed for every source (:data:`PRESETS`), so differences come
from the images. Each source's configuration is saved as JSON next to its weights.

Scoring (:func:`score_organs`, :func:`organ_table`):

* per test image and organ, the DSC (percent) of the predicted and reference masks; ``body`` is
  the whole animal (label > 0), as the paper's body annotation, the other columns one label each;
* an organ's mean DSC is taken over the images where it is present in the reference or the
  prediction (absent from both: not this slice); it is "/" when the model never predicts it on
  the whole test split, or it never occurs in the reference, as the paper prints "/";
* instances: 8-connected components of at least ``min_instance_px`` pixels per organ, counted in
  prediction and reference.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from fusionbench.data import ORGAN_IDS, ORGANS
from fusionbench.data.io import ImageError, as_image, as_label_map, atomic_write_bytes

__all__ = ["PRESETS", "TABLE4_ORGANS", "OrganModel", "train_unet", "predict_proba", "count_instances",
           "score_organs", "organ_table", "train_sources", "training_config"]

#: Table 4 columns: body (the whole animal) and the eight organs the paper annotates.
TABLE4_ORGANS: tuple[str, ...] = ("body", "brain", "lung", "heart", "intestines", "kidneys", "spleen",
                                  "spine", "tumour")

#: Training budgets. ``quick``: minutes per source on one CPU core; ``standard``: the mid preset
#: of the planning notes (§2c, about 11-15 min per source on 2 cores at 128²).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"size": 96, "channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1,
              "epochs": 15, "batch_size": 16, "lr": 2e-3, "seed": 0},
    "standard": {"size": 128, "channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1,
                 "epochs": 35, "batch_size": 16, "lr": 2e-3, "seed": 0},
}

_N_CLASSES = len(ORGANS)


def _resize(stack: np.ndarray, size: int | None, order: int) -> np.ndarray:
    """Resize (N, H, W) to (N, size, size) (``order`` 1: images, 0: labels); no-op if size is None."""
    if size is None or stack.shape[1:] == (size, size):
        return stack
    factors = (1, size / stack.shape[1], size / stack.shape[2])
    return ndi.zoom(stack, factors, order=order, mode="nearest", grid_mode=True)


def _stack_images(images: Sequence, name: str) -> np.ndarray:
    if len(images) == 0:
        raise ValueError(f"{name}: no images")
    arrays = [as_image(im, f"{name}[{i}]") for i, im in enumerate(images)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ImageError(f"{name}: images differ in shape {sorted(shapes)}")
    return np.stack(arrays)


def _stack_labels(labels: Sequence, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
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


def _make_unet(n_classes: int, channels, strides, num_res_units: int):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=n_classes, channels=tuple(channels),
                strides=tuple(strides), num_res_units=num_res_units)


def _pad_to(x, multiple: int):
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def train_unet(images: Sequence, labels: Sequence, *, n_classes: int = _N_CLASSES,
               channels=(8, 16, 32, 64), strides=None, num_res_units: int = 1, epochs: int = 15,
               batch_size: int = 16, lr: float = 2e-3, seed: int = 0, size: int | None = None,
               augment: bool = True):
    """Train a MONAI ``UNet`` with ``DiceCELoss(softmax)`` and AdamW; deterministic for a seed.

    Parameters
    ----------
    images : sequence of (H, W) arrays in [0, 1]
    labels : sequence of (H, W) integer arrays with ids in [0, n_classes)
    channels, strides, num_res_units : the ``monai.networks.nets.UNet`` architecture
        (``strides`` default: 2 between every pair of levels).
    epochs, batch_size, lr, seed : the budget; the seed fixes initialisation, shuffling and the
        random flips, so two sources differ only by their images.
    size : int, optional
        Train at ``size × size`` (bilinear images, nearest labels); ``None`` keeps the input size.
    augment : bool
        Random horizontal and vertical flips.

    Returns
    -------
    model : torch.nn.Module (eval mode, CPU), with ``model.fb_size`` the training size
    losses : list of float, the mean loss of every epoch
    """
    import torch
    from monai.losses import DiceCELoss

    from fusionbench.nn.training import seed_everything

    x = _stack_images(images, "images")
    y = _stack_labels(labels, x.shape[1:], n_classes)
    x, y = _resize(x, size, 1), _resize(y, size, 0)
    strides = tuple(strides) if strides is not None else (2,) * (len(channels) - 1)
    generator = seed_everything(seed)
    model = _make_unet(n_classes, channels, strides, num_res_units)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    xt = torch.from_numpy(np.ascontiguousarray(x[:, None], dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y[:, None]))
    multiple = int(np.prod(strides))
    losses: list[float] = []
    model.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = xt[idx], yt[idx]
            if augment:
                flips = torch.rand(2, generator=generator) < 0.5
                dims = [d for d, f in zip((2, 3), flips.tolist()) if f]
                if dims:
                    xb, yb = xb.flip(dims), yb.flip(dims)
            xb, _ = _pad_to(xb, multiple)
            yb, _ = _pad_to(yb.float(), multiple)
            optimiser.zero_grad()
            loss = loss_fn(model(xb), yb.long())
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        losses.append(total / len(xt))
    model.eval()
    model.fb_size = size
    model.fb_multiple = multiple
    return model, losses


def predict_proba(model, images: Sequence, *, batch_size: int = 16) -> np.ndarray:
    """Class probabilities (N, C, H, W) float32 at the images' own size."""
    import torch

    x = _stack_images(images, "images")
    shape = x.shape[1:]
    size = getattr(model, "fb_size", None)
    xs = _resize(x, size, 1)
    multiple = getattr(model, "fb_multiple", 8)
    out = []
    with torch.no_grad():
        for start in range(0, len(xs), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(xs[start:start + batch_size, None], dtype=np.float32))
            xb, (h, w) = _pad_to(xb, multiple)
            out.append(torch.softmax(model(xb), dim=1)[..., :h, :w].numpy())
    prob = np.concatenate(out)
    if prob.shape[2:] != shape:
        prob = ndi.zoom(prob, (1, 1, shape[0] / prob.shape[2], shape[1] / prob.shape[3]), order=1,
                        mode="nearest", grid_mode=True)
    return prob.astype(np.float32)


def training_config(preset: str | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The full training configuration of a preset name (or dict), with overrides."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        cfg = {"preset": preset, **PRESETS[preset]}
    else:
        cfg = {"preset": "custom", **dict(preset)}
    unknown = set(overrides) - set(PRESETS["quick"])
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(PRESETS['quick'])}")
    cfg.update(overrides)
    cfg["channels"] = list(cfg["channels"])
    cfg["strides"] = list(cfg["strides"])
    cfg["n_classes"] = _N_CLASSES
    cfg["architecture"] = "monai.networks.nets.UNet"
    cfg["loss"] = "monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)"
    cfg["optimizer"] = "AdamW"
    return cfg


def _data_hash(x: np.ndarray, y: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


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

    def fit(self, images: Sequence, labels: Sequence, workdir: str | os.PathLike | None = None) -> "OrganModel":
        """Train on this source's images; writes ``workdir/config.json`` and ``model.pt`` if given."""
        import torch

        keys = ("channels", "strides", "num_res_units", "epochs", "batch_size", "lr", "seed", "size")
        t0 = time.perf_counter()
        self.model, self.losses = train_unet(images, labels, n_classes=self.config["n_classes"],
                                             **{k: self.config[k] for k in keys})
        seconds = time.perf_counter() - t0
        x = _stack_images(images, "images")
        record = {"source": self.source, **self.config, "n_train": len(x),
                  "train_hash": _data_hash(x, _stack_labels(labels, x.shape[1:], self.config["n_classes"])),
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
        model = _make_unet(record["n_classes"], record["channels"], record["strides"], record["num_res_units"])
        model.load_state_dict(torch.load(workdir / "model.pt", weights_only=True))
        model.eval()
        model.fb_size = record["size"]
        model.fb_multiple = int(np.prod(record["strides"]))
        cfg = {k: v for k, v in record.items()
               if k not in ("source", "n_train", "train_hash", "losses", "seconds", "torch_threads")}
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
                organs: Sequence[str] = TABLE4_ORGANS):
    """Table 4: mean DSC per (source, organ), ``nan`` for "/", plus instance totals.

    Returns
    -------
    dsc : pandas.DataFrame
        Sources x organs, mean DSC (percent) over the cases where the organ is in the reference or
        the prediction; ``nan`` ("/") if the source's model never predicts it or it never occurs
        in the reference.
    instances : pandas.DataFrame
        Sources x (organ, "pred"/"ref") total instance counts over the test split.
    """
    import pandas as pd

    dsc_rows, inst_rows = {}, {}
    for source, rows in rows_by_source.items():
        frame = pd.DataFrame(list(rows))
        means, inst = {}, {}
        for organ in organs:
            sub = frame[frame["organ"] == organ] if not frame.empty else frame
            never = sub.empty or not sub["in_pred"].any() or not sub["in_ref"].any()
            means[organ] = float("nan") if never else float(sub["dsc"].dropna().mean())
            inst[(organ, "pred")] = int(sub["n_pred"].sum()) if not sub.empty else 0
            inst[(organ, "ref")] = int(sub["n_ref"].sum()) if not sub.empty else 0
        dsc_rows[source], inst_rows[source] = means, inst
    dsc_frame = pd.DataFrame.from_dict(dsc_rows, orient="index").reindex(columns=list(organs))
    inst_frame = pd.DataFrame.from_dict(inst_rows, orient="index")
    inst_frame.columns = pd.MultiIndex.from_tuples(inst_frame.columns, names=["organ", "count"])
    return dsc_frame, inst_frame


def _train_one(source: str, config: dict, images: np.ndarray, labels: np.ndarray, workdir: str,
               threads: int) -> str:
    import torch

    torch.set_num_threads(max(1, int(threads)))
    OrganModel(source=source, config=dict(config)).fit(list(images), list(labels), workdir)
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
        ``1`` trains in this process. Each worker gets ``cores // jobs`` torch threads.
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
            _train_one(s, config, x, y, f, threads)
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
