"""Scoring of the organ predictions (paper Table 4): per-image DSC and instance counts, as result rows.

* per test image and organ, the DSC (percent) of the predicted and reference masks; ``body`` is
  the whole animal (label > 0), as the paper's body annotation, the other columns one label each;
* an organ's DSC rows are those of the test images whose reference holds it, the convention of
  per-organ Dice in the segmentation literature (MONAI ``DiceMetric(ignore_empty=True)``), so
  Table 4's mean is the plain mean of the rows; an organ predicted on an image that does not hold
  it is counted separately (``ORGAN.false_pos``), so a few stray pixels on the many slices
  without, say, a brain do not swamp the segmentation score; the table prints "/" where the model
  never predicts the organ on an image that holds it (``ORGAN.detected`` all 0) or it never occurs
  in the reference, as the paper prints "/";
* instances: 8-connected components of at least ``min_instance_px`` pixels per organ, counted in
  prediction and reference.
"""
from __future__ import annotations

from time import perf_counter
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from fusionbench.data import ORGAN_IDS
from fusionbench.data.io import ImageError

__all__ = ["TABLE4_ORGANS", "GROUP", "count_instances", "score_organs", "organ_rows"]

#: Table 4 columns: body (the whole animal) and the eight organs the paper annotates.
TABLE4_ORGANS: tuple[str, ...] = ("body", "brain", "lung", "heart", "intestines", "kidneys", "spleen",
                                  "spine", "tumour")
#: The ``group`` of the organ task's result rows.
GROUP = "organs"


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
        Keys ``case, organ, dsc, in_pred, in_ref, n_pred, n_ref`` and ``seconds``, what computing
        ``dsc``, ``n_pred`` and ``n_ref`` cost (a dict with those keys).
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
            row: dict[str, Any] = {"case": cid, "organ": organ}
            seconds = {}
            t0 = perf_counter()
            p, r = _organ_mask(pred, organ), _organ_mask(ref, organ)
            row["in_pred"], row["in_ref"] = bool(p.any()), bool(r.any())
            row["dsc"] = dsc(p, r) if (row["in_pred"] or row["in_ref"]) else float("nan")
            seconds["dsc"] = perf_counter() - t0
            for key, labels in (("n_pred", pred), ("n_ref", ref)):
                t0 = perf_counter()
                row[key] = count_instances(labels, organ, min_instance_px=min_instance_px)
                seconds[key] = perf_counter() - t0
            rows.append({**row, "seconds": seconds})
    return rows


def organ_rows(source: str, scores: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Result rows (the core's long form, group :data:`GROUP`) of one source's :func:`score_organs` rows.

    Per test image and organ (``ORGAN`` is its name, e.g. ``kidneys``):

    * ``ORGAN``: the DSC (percent), on the images whose reference holds the organ;
    * ``ORGAN.detected``: 1 where the organ is predicted, else 0, on the same images;
    * ``ORGAN.false_pos``: 1 where the organ is predicted, else 0, on the images whose reference
      does not hold it (the mean is the image-level false-positive rate);
    * ``ORGAN.n_pred``, ``ORGAN.n_ref``: instance counts in prediction and reference, every image.

    ``seconds`` is what computing the value cost (0 for the two flags, read off the DSC's masks).
    """
    out = []
    for s in scores:
        organ, cost = s["organ"], s.get("seconds", {})
        if s["in_ref"]:
            values = [(organ, s["dsc"], cost.get("dsc", 0.0)), (f"{organ}.detected", s["in_pred"], 0.0)]
        else:
            values = [(f"{organ}.false_pos", s["in_pred"], 0.0)]
        values += [(f"{organ}.{key}", s[key], cost.get(key, 0.0)) for key in ("n_pred", "n_ref")]
        out += [{"method": source, "case": s["case"], "group": GROUP, "metric": metric, "value": float(value),
                 "seconds": float(seconds)} for metric, value, seconds in values]
    return out
