"""Organs on real PAT: k-fold cross-validation of the organ task's U-Net on a labelled PAT-only folder.

Input: a folder as ``fusionbench data import coco`` writes it (``pat/``, ``labels_pat/``,
``manifest.csv``), e.g. SFE-GCN's real train images (body, liver, kidneys, spleen, spine,
vessels). Folds are contiguous blocks of the images sorted by id (neighbouring slices of one animal
stay on one side). Each fold trains :class:`segment.organ_model.OrganModel` with the ``standard``
preset on the whole 300² image (``size=None``) and scores the held-out block with
:func:`segment.organ_scoring.score_organs` (per image and organ DSC over the images whose reference
holds the organ; ``body`` is every labelled pixel).

Each fold's rows go to ``OUT/fold_K.csv`` when the fold is done; a rerun skips finished folds.
``OUT/summary.json`` holds the per-organ mean DSC over all images.

    OMP_NUM_THREADS=2 python research/organs_real_pat.py FOLDER --out OUT [--folds 5] [--threads 2]
        [--work-size 152]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from _pat_folder import fold_split, load_labelled_pat, write_rows

ORGANS = ("body", "liver", "kidneys", "spleen", "spine", "vessels")


def _resize(x: np.ndarray, side: int, order: int) -> np.ndarray:
    """Area-averaged image (order 1) or nearest-neighbour label map (order 0) at side x side."""
    from skimage.transform import resize

    if order == 0:
        return resize(x, (side, side), order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)
    return resize(x, (side, side), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--patch", type=int, default=160)
    parser.add_argument("--steps", type=int, default=None, help="override the preset's step budget")
    parser.add_argument("--work-size", type=int, default=None,
                        help="train and predict on the whole image resampled to this side (labels back "
                             "by nearest neighbour), with the full augmentation; default: native patches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only-fold", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from segment.organ_model import OrganModel
    from segment.organ_scoring import score_organs

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ids, images, labels = load_labelled_pat(args.folder)
    for k in range(args.folds):
        if args.only_fold is not None and k != args.only_fold:
            continue
        path = args.out / f"fold_{k}.csv"
        if path.exists():
            print(f"fold {k}: done before ({path})", flush=True)
            continue
        train, test = fold_split(len(ids), args.folds, k)
        start = time.perf_counter()
        budget = {"steps": args.steps} if args.steps else {}
        if args.work_size:
            model = OrganModel.create("pat", args.preset, size=None, patch=None, augment="full", **budget)
            shrink = [_resize(images[i], args.work_size, 1) for i in train]
            model.fit(shrink, [_resize(labels[i], args.work_size, 0) for i in train], args.out / f"model_{k}",
                      log=lambda line: print(f"fold {k}:{line}", flush=True))
            small = model.predict([_resize(images[i], args.work_size, 1) for i in test])
            predictions = [_resize(p, images[i].shape[0], 0) for p, i in zip(small, test)]
        else:
            model = OrganModel.create("pat", args.preset, size=None, patch=args.patch, **budget)
            model.fit([images[i] for i in train], [labels[i] for i in train], args.out / f"model_{k}",
                      log=lambda line: print(f"fold {k}:{line}", flush=True))
            predictions = model.predict([images[i] for i in test])
        fit_s = time.perf_counter() - start
        rows = score_organs(predictions, [labels[i] for i in test], organs=ORGANS, case_ids=[ids[i] for i in test])
        for row in rows:
            row["fold"] = k
        write_rows(path, rows)
        means = {o: np.nanmean([r["dsc"] for r in rows if r["organ"] == o and r["in_ref"]]) for o in ORGANS}
        print(f"fold {k}: trained on {len(train)} images and predicted in {fit_s:.0f} s; "
              + ", ".join(f"{o} {v:.1f}" for o, v in means.items()), flush=True)
    done = sorted(args.out.glob("fold_*.csv"))
    rows = [r for p in done for r in csv.DictReader(open(p, newline=""))]
    summary = {"folds_done": len(done), "images": len({(r["fold"], r["case"]) for r in rows})}
    for organ in ORGANS:
        values = [float(r["dsc"]) for r in rows if r["organ"] == organ and r["in_ref"] == "True"]
        summary[organ] = {"DSC_mean": float(np.nanmean(values)) if values else None, "images_with_organ": len(values)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
