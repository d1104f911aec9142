"""Check the phantom's modality complementarity: organ segmentation from PAT alone vs MRI alone.

Trains the same small MONAI U-Net twice with identical seed, architecture and step budget, once on
the phantom's PAT images (labels in the PAT frame) and once on its MRI images (labels in the MRI
frame), and prints a Markdown table of per-organ Dice (percent, as
:func:`fusionbench.metrics.segmentation.dsc`) on the test split. The phantom is built so that, as
in the seed paper's Table 4 (Zhong et al.), deep organs (brain, lung, heart, kidneys, spine) are
clearly better segmented from MRI and spleen and tumour from PAT.

The networks are :class:`segment.organs.OrganModel` with the organ task's own presets (the recipe
is described in :mod:`segment.organs`: native 256² in a fixed 176² centre window that holds the
whole body, random 112² training patches, sliding-window inference, training-set z-scoring, DiceCE
without background and with square-root inverse-frequency class weights). Dice per organ is taken
only on test images whose reference holds that organ; the table gives the number of such images.

Usage::

    nice python research/complementarity.py [--preset quick|standard] [--threads 1] [--jobs 1]

``quick``: 40 train / 24 test animals (160 / 96 images), UNet(16, 32, 64, 128), 600 steps of
8 patches of 112². ``standard``: the same data, 1200 steps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

N_TRAIN_ANIMALS = 40
N_TEST_ANIMALS = 24
SIZE = 256


def dice_per_organ(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[int, list[float]]:
    """DSC (percent) per label id, over the images whose reference holds that label."""
    from fusionbench.metrics.segmentation import multilabel_dsc

    out: dict[int, list[float]] = {k: [] for k in range(1, n_classes)}
    for p, t in zip(pred, truth):
        present = [int(k) for k in np.unique(t) if k != 0]
        for k, v in multilabel_dsc(p, t, labels=present).items():
            out[k].append(v)
    return out


def train_and_score(source, train_images, train_labels, test_images, test_labels, *, preset="quick",
                    steps=None, log=print):
    """Fit one :class:`segment.organs.OrganModel` and return (Dice per organ on the test set, its record)."""
    from segment.organs import OrganModel

    overrides = {} if steps is None else {"steps": steps}
    model = OrganModel.create(source, preset, **overrides).fit(train_images, train_labels, log=log)
    pred = np.stack(model.predict(test_images))
    return dice_per_organ(pred, np.stack(test_labels), model.config["n_classes"]), model.record


def main(argv=None) -> None:
    import torch

    from segment.organs import PRESETS, centre_window, training_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="quick")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's optimiser steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=None, help="processes for phantom generation")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)

    from fusionbench.data import ORGANS
    from fusionbench.data.phantom import PhantomConfig, load_phantom

    def log(msg):
        print(msg, flush=True)

    torch.set_num_threads(args.threads)
    p = training_config(args.preset, **({} if args.steps is None else {"steps": args.steps}))
    t_start = time.perf_counter()
    cfg = PhantomConfig(size=SIZE, n_train_animals=N_TRAIN_ANIMALS, n_val_animals=1, n_test_animals=N_TEST_ANIMALS)
    train = load_phantom("train", cfg, cache_dir=args.cache_dir, jobs=args.jobs)
    test = load_phantom("test", cfg, cache_dir=args.cache_dir, jobs=args.jobs)
    t_gen = time.perf_counter() - t_start
    n_classes = len(ORGANS)

    def stack(cases, key):
        return np.stack([getattr(c, key) for c in cases])

    outside = max(1.0 - np.count_nonzero(centre_window(stack(cs, k), p["size"])) / np.count_nonzero(stack(cs, k))
                  for cs in (train, test) for k in ("labels_pat", "labels_mri"))
    results, timings = {}, {}
    for source, img_key, lab_key in (("PAT", "pat", "labels_pat"), ("MRI", "mri", "labels_mri")):
        t1 = time.perf_counter()
        log(f"training on {source}")
        results[source], _ = train_and_score(source, stack(train, img_key), stack(train, lab_key),
                                             stack(test, img_key), stack(test, lab_key), preset=args.preset,
                                             steps=args.steps, log=log)
        timings[source] = time.perf_counter() - t1
    total = time.perf_counter() - t_start
    print(f"\nphantom {SIZE}², centre window {p['size']}² (labelled pixels outside it: {100 * outside:.2f} %), "
          f"{len(train)} train / {len(test)} test images, preset {args.preset}, UNet{tuple(p['channels'])}, "
          f"{p['steps']} steps x {p['batch_size']} patches of {p['patch']}², {args.threads} thread(s)")
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
