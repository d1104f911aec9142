"""Body contour on real PAT: k-fold cross-validation of the learned and the hand-made cost.

Input: a labelled PAT-only folder as ``fusionbench data import coco`` writes it (``pat/``,
``labels_pat/``, ``manifest.csv``), e.g. SFE-GCN's real train images. The body mask is
``labels_pat > 0`` (the body label and every organ inside it). Folds are contiguous blocks of the
images sorted by id, so neighbouring slices of one animal do not straddle train and test.

Each fold's rows are written to ``OUT/fold_K.csv`` as soon as the fold is done; a rerun skips the
folds that exist (an interrupted run loses at most the fold in progress). ``OUT/summary.json``
holds the means over all images.

    OMP_NUM_THREADS=1 python research/contour_real_pat.py FOLDER --out OUT [--folds 5] [--steps 800]
        [--size 96] [--hand] [--threads 1]
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


def score(pred: np.ndarray, truth: np.ndarray) -> dict:
    from fusionbench.metrics import segmentation as seg

    return {"DSC": seg.dsc(pred, truth), "HD95": seg.hd95(pred, truth), "MSD": seg.msd(pred, truth)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hand", action="store_true", help="also score the hand-made cost")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only-fold", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from segment.contour import ContourSegmenter

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ids, images, labels = load_labelled_pat(args.folder)
    masks = [label > 0 for label in labels]  # the body: the body label and every organ inside it
    for k in range(args.folds):
        if args.only_fold is not None and k != args.only_fold:
            continue
        path = args.out / f"fold_{k}.csv"
        if path.exists():
            print(f"fold {k}: done before ({path})", flush=True)
            continue
        train, test = fold_split(len(ids), args.folds, k)
        start = time.perf_counter()
        seg = ContourSegmenter("learned", steps=args.steps, size=args.size, batch_size=args.batch_size)
        seg.fit([images[i] for i in train], [masks[i] for i in train],
                log=lambda line: print(f"fold {k}:{line}", flush=True))
        fit_s = time.perf_counter() - start
        rows = []
        for i in test:
            t0 = time.perf_counter()
            learned = score(seg.segment(images[i]).mask, masks[i])
            row = {"fold": k, "id": ids[i], **{f"learned_{m}": v for m, v in learned.items()},
                   "learned_s": time.perf_counter() - t0}
            if args.hand:
                hand = score(ContourSegmenter("hand").segment(images[i]).mask, masks[i])
                row.update({f"hand_{m}": v for m, v in hand.items()})
            rows.append(row)
        write_rows(path, rows)
        dsc = np.array([r["learned_DSC"] for r in rows])
        print(f"fold {k}: train {len(train)} images in {fit_s:.0f} s; test {len(rows)}: DSC mean {dsc.mean():.2f} "
              f"min {dsc.min():.2f}", flush=True)
    done = sorted(args.out.glob("fold_*.csv"))
    rows = [r for p in done for r in csv.DictReader(open(p, newline=""))]
    summary = {"folds_done": len(done), "images": len(rows)}
    for prefix in ("learned", "hand"):
        if rows and f"{prefix}_DSC" in rows[0]:
            dsc = np.array([float(r[f"{prefix}_DSC"]) for r in rows])
            summary[prefix] = {"DSC_mean": float(dsc.mean()), "DSC_median": float(np.median(dsc)),
                               "DSC_min": float(dsc.min()), "below_80": int((dsc < 80).sum()),
                               "HD95_mean": float(np.mean([float(r[f"{prefix}_HD95"]) for r in rows])),
                               "MSD_mean": float(np.mean([float(r[f"{prefix}_MSD"]) for r in rows]))}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
