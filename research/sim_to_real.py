"""Sim-to-real: does an organ U-Net trained on phantom PAT alone segment real PAT?

For each phantom version, :class:`segment.organ_model.OrganModel` (the organ task's model, preset
``standard`` on the whole image) is trained on the phantom's train-split PAT images and their
PAT-frame labels, then predicts a labelled real PAT folder (e.g. SFE-GCN's train images imported
with ``fusionbench data import coco``), resized to the phantom's side. Per-organ DSC (percent) is
averaged over the real images whose manual labels hold the organ. A realistic phantom transfers;
a cartoon does not.

Each version's rows go to ``OUT/v{VERSION}.csv`` when done (a rerun skips it);
``OUT/summary.json`` holds the per-organ means side by side.

    OMP_NUM_THREADS=1 python research/sim_to_real.py REAL_FOLDER --out OUT [--versions 1.2,2.0]
        [--every 1] [--threads 1]
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from _pat_folder import load_labelled_pat, write_rows

ORGANS = ("body", "liver", "kidneys", "spleen", "spine", "vessels")


def _resize(x: np.ndarray, side: int, order: int) -> np.ndarray:
    from skimage.transform import resize

    if order == 0:
        return resize(x, (side, side), order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)
    return resize(x, (side, side), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--versions", default="1.2,2.0")
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--every", type=int, default=1, help="score every k-th real image")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from fusionbench.data.phantom import PhantomConfig, load_phantom
    from segment.organ_model import OrganModel
    from segment.organ_scoring import score_organs

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ids, images, labels = load_labelled_pat(args.folder)
    ids, images, labels = ids[::args.every], images[::args.every], labels[::args.every]
    summary = {}
    for version in args.versions.split(","):
        path = args.out / f"v{version}.csv"
        if not path.exists():
            cfg = PhantomConfig(version=version)
            train = load_phantom("train", cfg, jobs=1)
            start = time.perf_counter()
            model = OrganModel.create("pat", args.preset, size=None)
            model.fit([c.pat for c in train], [c.labels_pat for c in train], args.out / f"model_{version}",
                      log=lambda line: print(f"{version}:{line}", flush=True))
            side = cfg.size
            small = model.predict([_resize(im, side, 1) for im in images])
            predictions = [_resize(p, im.shape[0], 0) for p, im in zip(small, images)]
            rows = score_organs(predictions, labels, organs=ORGANS, case_ids=ids)
            for row in rows:
                row["version"] = version
                row.pop("seconds", None)
            write_rows(path, rows)
            print(f"{version}: trained on {len(train)} phantom images and scored {len(ids)} real in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        rows = list(csv.DictReader(open(path, newline="")))
        summary[version] = {}
        for organ in ORGANS:
            values = [float(r["dsc"]) for r in rows if r["organ"] == organ and r["in_ref"] == "True"]
            summary[version][organ] = {"DSC_mean": float(np.nanmean(values)) if values else None,
                                       "DSC_median": float(np.nanmedian(values)) if values else None,
                                       "images_with_organ": len(values)}
        print(version + ": " + ", ".join(f"{o} {v['DSC_mean']:.1f}" for o, v in summary[version].items()
                                         if v["DSC_mean"] is not None), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
