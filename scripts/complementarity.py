"""Check the phantom's modality complementarity: organ segmentation from PAT alone vs MRI alone.

Trains the same small MONAI U-Net twice with identical seeds and schedule, once on the phantom's
PAT images (labels in the PAT frame) and once on its MRI images (labels in the MRI frame), and
prints a Markdown table of per-organ Dice on the test split. The phantom is built so that, as in
the seed paper's Table 4, deep organs (brain, lung, heart, kidneys, spine) are clearly better
segmented from MRI and spleen and tumour from PAT.

Usage::

    python scripts/complementarity.py [--preset quick|standard] [--threads 2]

``quick``: 128², 30 train / 12 test animals (120 / 48 images), UNet(8, 16, 32, 64), 20 epochs.
``standard``: 128², 40 / 12 animals, UNet(16, 32, 64, 128), 40 epochs.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

PRESETS = {
    "quick": dict(size=128, n_train=30, channels=(8, 16, 32, 64), epochs=20),
    "standard": dict(size=128, n_train=40, channels=(16, 32, 64, 128), epochs=40),
}


def dice_per_organ(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[int, list[float]]:
    """Dice per label id over images where the label is present in the ground truth."""
    out: dict[int, list[float]] = {k: [] for k in range(1, n_classes)}
    for p, t in zip(pred, truth):
        for k in range(1, n_classes):
            tk = t == k
            if tk.any():
                pk = p == k
                out[k].append(2.0 * np.logical_and(pk, tk).sum() / (pk.sum() + tk.sum()))
    return out


def _normalise(images: np.ndarray) -> np.ndarray:
    mean = images.mean(axis=(1, 2), keepdims=True)
    std = images.std(axis=(1, 2), keepdims=True) + 1e-6
    return ((images - mean) / std).astype(np.float32)


def train_and_score(x_train, y_train, x_test, y_test, *, channels, epochs, n_classes, seed=0):
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    torch.manual_seed(seed)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=n_classes, channels=channels,
               strides=(2,) * (len(channels) - 1), num_res_units=1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    xt = torch.from_numpy(_normalise(x_train))[:, None]
    yt = torch.from_numpy(y_train.astype(np.int64))[:, None]
    rng = np.random.default_rng(seed)
    batch = 16
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(xt))
        for i in range(0, len(order), batch):
            idx = torch.from_numpy(order[i:i + batch])
            xb, yb = xt[idx], yt[idx]
            if rng.random() < 0.5:  # left-right flip: anatomy is nearly symmetric
                xb, yb = xb.flip(-1), yb.flip(-1)
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(_normalise(x_test))[:, None]).argmax(1).numpy()
    return dice_per_organ(pred, y_test, n_classes)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="quick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=None, help="processes for phantom generation")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    import torch

    from fusionbench.data import ORGANS
    from fusionbench.data.phantom import PhantomConfig, load_phantom

    torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    cfg = PhantomConfig(size=p["size"], n_train_animals=p["n_train"], n_val_animals=1, n_test_animals=12)
    t0 = time.perf_counter()
    train = load_phantom("train", cfg, cache_dir=args.cache_dir, jobs=args.jobs)
    test = load_phantom("test", cfg, cache_dir=args.cache_dir, jobs=args.jobs)
    t_gen = time.perf_counter() - t0
    n_classes = len(ORGANS)
    results, timings = {}, {}
    for source, img_key, lab_key in (("PAT", "pat", "labels_pat"), ("MRI", "mri", "labels_mri")):
        t1 = time.perf_counter()
        stack = lambda cases, key: np.stack([getattr(c, key) for c in cases])  # noqa: E731
        results[source] = train_and_score(stack(train, img_key), stack(train, lab_key), stack(test, img_key),
                                          stack(test, lab_key), channels=p["channels"], epochs=p["epochs"],
                                          n_classes=n_classes)
        timings[source] = time.perf_counter() - t1
    print(f"phantom {cfg.size}², {len(train)} train / {len(test)} test images, preset {args.preset}, "
          f"UNet{p['channels']}, {p['epochs']} epochs, {args.threads} threads")
    print(f"data {t_gen:.0f} s (generation or cache), training+test PAT {timings['PAT']:.0f} s, "
          f"MRI {timings['MRI']:.0f} s\n")
    print("| organ | n test images | Dice PAT | Dice MRI | better |")
    print("|---|---|---|---|---|")
    for k in range(1, n_classes):
        dp, dm = results["PAT"][k], results["MRI"][k]
        if not dp and not dm:
            continue
        mp_, mm_ = float(np.mean(dp)) if dp else float("nan"), float(np.mean(dm)) if dm else float("nan")
        better = "PAT" if mp_ > mm_ + 0.05 else "MRI" if mm_ > mp_ + 0.05 else "≈"
        print(f"| {ORGANS[k]} | {max(len(dp), len(dm))} | {mp_:.3f} | {mm_:.3f} | {better} |")


if __name__ == "__main__":
    main()
