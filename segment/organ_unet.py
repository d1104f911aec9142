"""The organ U-Net recipe: training (:func:`train_unet`) and inference (:func:`predict_proba`).

Chosen so that small organs (at 256² the phantom's spleen is about 20 x 6 px) are not lost before
the network sees them:

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
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from fusionbench.data.io import ImageError

from .organ_data import N_CLASSES, centre_window, class_weights, stack_images, stack_labels

__all__ = ["make_unet", "train_unet", "predict_proba"]


def make_unet(n_classes: int, channels, strides, num_res_units: int):
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


def train_unet(images: Sequence, labels: Sequence, *, n_classes: int = N_CLASSES,
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
    augment : bool or "full"
        ``True``: random left-right flips. ``"full"``: flips, a random similarity transform per
        patch (rotation within +-15 degrees, scale 0.9-1.1, shift up to 5 % of the window),
        intensity changes (gamma 0.7-1.4 on the [0, 1] image, contrast 0.75-1.33, offset
        +-0.2 SD, Gaussian noise up to 0.1 SD) and, on a quarter of the patches, a black
        frame-padding band along one edge, for images from another scanner or session than the
        training ones. ``False``: none.
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
    if augment not in (True, False, "full"):
        raise ValueError(f"augment must be True, False or 'full', got {augment!r}")
    x = stack_images(images, "images")
    y = stack_labels(labels, x.shape[1:], n_classes)
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
    model = make_unet(n_classes, channels, strides, num_res_units)
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
        if augment == "full":
            xb, yb = _augment(xb, yb, rng, mean, std)
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


def _augment(xb, yb, rng: np.random.Generator, mean: float, std: float):
    """Random similarity transform and intensity change of a batch of z-scored patches."""
    import torch
    import torch.nn.functional as F

    n = xb.shape[0]
    angle = np.deg2rad(rng.uniform(-15.0, 15.0, n))
    scale = rng.uniform(0.9, 1.1, n)
    shift = rng.uniform(-0.05, 0.05, (n, 2)) * 2.0  # affine_grid units: the window spans [-1, 1]
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = np.cos(angle) / scale
    theta[:, 0, 1] = -np.sin(angle) / scale
    theta[:, 1, 0] = np.sin(angle) / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.from_numpy(theta), list(xb.shape), align_corners=False)
    xb = F.grid_sample(xb, grid, mode="bilinear", padding_mode="border", align_corners=False)
    yb = F.grid_sample(yb.float(), grid, mode="nearest", padding_mode="border", align_corners=False).long()
    x01 = (xb * std + mean).clamp(0.0, 1.0)
    gamma = torch.from_numpy(rng.uniform(0.7, 1.4, (n, 1, 1, 1)).astype(np.float32))
    xb = (x01 ** gamma - mean) / std
    contrast = torch.from_numpy(rng.uniform(0.75, 1.33, (n, 1, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.uniform(-0.2, 0.2, (n, 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.uniform(0.0, 0.1, (n, 1, 1, 1)).astype(np.float32))
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    xb = xb * contrast + offset + noise * torch.randn(xb.shape, generator=generator)
    # Frame padding: some reconstructions come shifted in their frame, with a band of exact zeros
    # (no data) along one edge. A quarter of the patches get one, 2-12 % of the side wide, at a
    # random edge; the labels under it become background (nothing is visible there).
    black = float((0.0 - mean) / std)
    for i in np.flatnonzero(rng.random(n) < 0.25):
        width = max(1, int(round(rng.uniform(0.02, 0.12) * xb.shape[-1])))
        edge = int(rng.integers(4))
        band = [slice(None)] * 2
        band[edge % 2] = slice(0, width) if edge < 2 else slice(-width, None)
        xb[i, 0][tuple(band)] = black
        yb[i, 0][tuple(band)] = 0
    return xb, yb


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
    x = stack_images(images, "images")
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
