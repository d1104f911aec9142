"""Check the phantom's modality complementarity: organ segmentation from PAT alone vs MRI alone.

Trains the same small MONAI U-Net twice with identical seed, architecture and step budget, once on
the phantom's PAT images (labels in the PAT frame) and once on its MRI images (labels in the MRI
frame), and prints a Markdown table of per-organ Dice (percent, as
:func:`fusionbench.metrics.segmentation.dsc`) on the test split. The phantom is built so that, as
in the seed paper's Table 4 (Zhong et al.), deep organs (brain, lung, heart, kidneys, spine) are
clearly better segmented from MRI and spleen and tumour from PAT.

Measurement choices, made so that small organs (spleen ~20 x 6 px, tumour, spine, vessels at 256²)
are not lost before the networks see them:

* images at the phantom's native 256² and a fixed centre crop (176², 27.5 mm, the same window for
  both modalities) that holds the whole body, instead of downsampling;
* training on random ``patch``² sub-windows of the crop (more optimiser steps per CPU second) and
  testing by sliding-window inference with the same window (50 % overlap, Gaussian blending), so
  the U-Net's instance normalisation sees the same context size in training and test;
* intensities z-scored with the training set's mean and standard deviation (not per image);
* DiceCE loss with ``include_background=False`` and batch-wise Dice (classes absent from an image
  do not count as failures), and cross-entropy weighted by inverse square-root class frequency
  (computed on each modality's own training labels) so small organs count;
* Dice per organ only on test images whose reference holds that organ; the table gives the
  number of such images.

Usage::

    nice python scripts/complementarity.py [--preset quick|standard] [--threads 1] [--jobs 1]

``quick``: 40 train / 24 test animals (160 / 96 images), UNet(16, 32, 64, 128), 600 steps of
8 patches of 112². ``standard``: the same data, 1200 steps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

PRESETS = {
    "quick": dict(n_train=40, channels=(16, 32, 64, 128), steps=600, batch=8, patch=112),
    "standard": dict(n_train=40, channels=(16, 32, 64, 128), steps=1200, batch=8, patch=112),
}
SIZE = 256
CROP = 176
N_TEST_ANIMALS = 24


def centre_crop(stack: np.ndarray, crop: int) -> np.ndarray:
    """The central ``crop`` x ``crop`` window of an (N, H, W) stack."""
    h, w = stack.shape[-2:]
    if crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the images ({h}x{w})")
    r0, c0 = (h - crop) // 2, (w - crop) // 2
    return stack[..., r0:r0 + crop, c0:c0 + crop]


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Cross-entropy weights ``sqrt(median_freq / freq)`` (classes never seen get weight 0), mean 1."""
    freq = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)
    seen = freq > 0
    w = np.zeros(n_classes)
    w[seen] = np.sqrt(np.median(freq[seen]) / freq[seen])
    return (w / w[seen].mean()).astype(np.float32)


def dice_per_organ(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[int, list[float]]:
    """DSC (percent) per label id, over the images whose reference holds that label."""
    from fusionbench.metrics.segmentation import multilabel_dsc

    out: dict[int, list[float]] = {k: [] for k in range(1, n_classes)}
    for p, t in zip(pred, truth):
        present = [int(k) for k in np.unique(t) if k != 0]
        for k, v in multilabel_dsc(p, t, labels=present).items():
            out[k].append(v)
    return out


def _normaliser(train_images: np.ndarray):
    """z-score with the training set's statistics, so absolute intensities keep their meaning
    (PAT zero at 0.5, T2w levels) instead of depending on how much of the crop the body fills."""
    mean, std = float(train_images.mean()), float(train_images.std()) + 1e-6
    return lambda images: ((images - mean) / std).astype(np.float32)


def train_and_score(x_train, y_train, x_test, y_test, *, channels, steps, batch, patch, n_classes, seed=0,
                    log=print):
    import torch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    from fusionbench.nn.training import seed_everything

    seed_everything(seed)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=n_classes, channels=channels,
               strides=(2,) * (len(channels) - 1), num_res_units=1)
    weight = torch.from_numpy(class_weights(y_train, n_classes))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True, weight=weight)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    normalise = _normaliser(x_train)
    xt = torch.from_numpy(normalise(x_train))[:, None]
    yt = torch.from_numpy(y_train.astype(np.int64))[:, None]
    rng = np.random.default_rng(seed)
    span = xt.shape[-1] - patch
    net.train()
    running = []
    for step in range(steps):
        idx = rng.choice(len(xt), size=batch, replace=False)
        r0, c0 = rng.integers(0, span + 1, size=2)
        xb = xt[idx, :, r0:r0 + patch, c0:c0 + patch]
        yb = yt[idx, :, r0:r0 + patch, c0:c0 + patch]
        if rng.random() < 0.5:  # left-right flip: organ identity must come from appearance, not side
            xb, yb = xb.flip(-1), yb.flip(-1)
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"  step {step + 1}/{steps} loss {np.mean(running[-50:]):.3f}")
    net.eval()
    x_eval = torch.from_numpy(normalise(x_test))[:, None]
    with torch.no_grad():  # same window size as in training: instance norm sees the same context
        pred = sliding_window_inference(x_eval, roi_size=(patch, patch), sw_batch_size=8, predictor=net,
                                        overlap=0.5, mode="gaussian").argmax(1).numpy()
    return dice_per_organ(pred, y_test, n_classes)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="quick")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's optimiser steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=None, help="processes for phantom generation")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    import torch

    from fusionbench.data import ORGANS
    from fusionbench.data.phantom import PhantomConfig, load_phantom

    def log(msg):
        print(msg, flush=True)

    torch.set_num_threads(args.threads)
    p = dict(PRESETS[args.preset])
    if args.steps is not None:
        p["steps"] = args.steps
    t_start = time.perf_counter()
    cfg = PhantomConfig(size=SIZE, n_train_animals=p["n_train"], n_val_animals=1, n_test_animals=N_TEST_ANIMALS)
    train = load_phantom("train", cfg, cache_dir=args.cache_dir, jobs=args.jobs)
    test = load_phantom("test", cfg, cache_dir=args.cache_dir, jobs=args.jobs)
    t_gen = time.perf_counter() - t_start
    n_classes = len(ORGANS)

    def stack(cases, key):
        return np.ascontiguousarray(centre_crop(np.stack([getattr(c, key) for c in cases]), CROP))

    outside = max(1.0 - (stack(cs, k) > 0).sum() / float(sum((getattr(c, k) > 0).sum() for c in cs))
                  for cs in (train, test) for k in ("labels_pat", "labels_mri"))
    results, timings = {}, {}
    for source, img_key, lab_key in (("PAT", "pat", "labels_pat"), ("MRI", "mri", "labels_mri")):
        t1 = time.perf_counter()
        log(f"training on {source}")
        results[source] = train_and_score(stack(train, img_key), stack(train, lab_key), stack(test, img_key),
                                          stack(test, lab_key), channels=p["channels"], steps=p["steps"],
                                          batch=p["batch"], patch=p["patch"], n_classes=n_classes, log=log)
        timings[source] = time.perf_counter() - t1
    total = time.perf_counter() - t_start
    print(f"\nphantom {SIZE}², centre crop {CROP}² (body pixels outside the crop: {100 * outside:.2f} %), "
          f"{len(train)} train / {len(test)} test images, preset {args.preset}, UNet{p['channels']}, "
          f"{p['steps']} steps x {p['batch']} patches of {p['patch']}², {args.threads} thread(s)")
    print(f"data {t_gen:.0f} s (generation or cache), training+test PAT {timings['PAT']:.0f} s, "
          f"MRI {timings['MRI']:.0f} s, total {total / 60:.1f} min\n")
    print("| organ | test images with organ (PAT / MRI frame if they differ) | Dice PAT (%) | Dice MRI (%) | better |")
    print("|---|---|---|---|---|")
    for k in range(1, n_classes):
        dp, dm = results["PAT"][k], results["MRI"][k]
        if not dp and not dm:
            continue
        mp_, mm_ = (float(np.mean(d)) if d else float("nan") for d in (dp, dm))
        better = "PAT" if mp_ > mm_ + 5 else "MRI" if mm_ > mp_ + 5 else "≈"
        count = str(len(dp)) if len(dp) == len(dm) else f"{len(dp)} / {len(dm)}"
        print(f"| {ORGANS[k]} | {count} | {mp_:.1f} | {mm_:.1f} | {better} |")


if __name__ == "__main__":
    main()
