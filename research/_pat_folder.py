"""Shared by the real-PAT cross-validations: a labelled PAT-only folder and its contiguous folds."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def load_labelled_pat(folder: Path):
    """``(ids, images, label maps)`` of the folder's labelled images, sorted by numeric id.

    The folder is what ``fusionbench data import coco`` writes (``manifest.csv`` with
    ``id,pat,labels_pat``); images are float32 in [0, 1], label maps uint8 organ ids.
    """
    from fusionbench.data.io import read_image

    with open(folder / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("labels_pat")]
    rows.sort(key=lambda r: (len(r["id"]), r["id"]))
    images = [read_image(folder / r["pat"]) for r in rows]
    labels = [read_image(folder / r["labels_pat"], raw=True).astype(np.uint8) for r in rows]
    return [r["id"] for r in rows], images, labels


def fold_split(n: int, folds: int, k: int) -> tuple[list[int], list[int]]:
    """Train and test indices of fold ``k``: the test set is the k-th contiguous block, so
    neighbouring slices of one animal stay on one side."""
    bounds = np.linspace(0, n, folds + 1).round().astype(int)
    test = list(range(bounds[k], bounds[k + 1]))
    return [i for i in range(n) if not bounds[k] <= i < bounds[k + 1]], test


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write a fold's result rows as CSV through a temporary file, so a fold file is complete or absent."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
