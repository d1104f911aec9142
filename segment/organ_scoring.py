"""Scoring of the organ predictions (paper Table 4): per-image DSC and instance counts.

* per test image and organ, the DSC (percent) of the predicted and reference masks; ``body`` is
  the whole animal (label > 0), as the paper's body annotation, the other columns one label each;
* an organ's mean DSC is taken over the test images whose reference holds it (``over=
  "either"``: also those where only the prediction does, counting 0); it is "/" when the model
  never predicts it on those images, or it never occurs in the reference, as the paper prints
  "/"; images where the organ is predicted but absent are counted separately;
* instances: 8-connected components of at least ``min_instance_px`` pixels per organ, counted in
  prediction and reference.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from fusionbench.data import ORGAN_IDS
from fusionbench.data.io import ImageError

__all__ = ["TABLE4_ORGANS", "count_instances", "score_organs", "organ_table"]

#: Table 4 columns: body (the whole animal) and the eight organs the paper annotates.
TABLE4_ORGANS: tuple[str, ...] = ("body", "brain", "lung", "heart", "intestines", "kidneys", "spleen",
                                  "spine", "tumour")


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
                organs: Sequence[str] = TABLE4_ORGANS, *, over: str = "reference"):
    """Table 4: mean DSC per (source, organ), ``nan`` for "/", plus instance and false-positive counts.

    Parameters
    ----------
    rows_by_source : mapping source -> rows of :func:`score_organs`
    organs : the columns
    over : {"reference", "either"}
        Which test images an organ's mean is taken over. ``"reference"`` (default): those whose
        reference holds the organ, the convention of per-organ Dice in the segmentation
        literature (MONAI ``DiceMetric(ignore_empty=True)``); an organ predicted on a slice that
        does not hold it is counted separately (``false_pos_images``), so a few stray pixels on
        the many slices without, say, a brain do not swamp the segmentation score. ``"either"``:
        those where it is in the reference or the prediction (a hallucinated organ is a 0 in the
        mean, as nnU-Net's evaluation counts it).

    Returns
    -------
    dsc : pandas.DataFrame
        Sources x organs, mean DSC (percent); ``nan`` ("/") if the organ never occurs in the
        reference, or the model never predicts it on an image that holds it (``"reference"``) or
        anywhere (``"either"``).
    instances : pandas.DataFrame
        Sources x (organ, "pred" / "ref" / "false_pos_images"): total instance counts over the
        test split and the number of images where the organ is predicted but absent.
    """
    import pandas as pd

    if over not in ("reference", "either"):
        raise ValueError(f"over must be 'reference' or 'either', got {over!r}")
    dsc_rows, inst_rows = {}, {}
    for source, rows in rows_by_source.items():
        frame = pd.DataFrame(list(rows))
        means, inst = {}, {}
        for organ in organs:
            sub = frame[frame["organ"] == organ] if not frame.empty else frame
            if sub.empty:
                means[organ] = float("nan")
                inst.update({(organ, "pred"): 0, (organ, "ref"): 0, (organ, "false_pos_images"): 0})
                continue
            if over == "reference":
                sub_mean = sub[sub["in_ref"]]
                never = not (sub["in_ref"] & sub["in_pred"]).any()
            else:
                sub_mean = sub
                never = not sub["in_pred"].any() or not sub["in_ref"].any()
            means[organ] = float("nan") if never else float(sub_mean["dsc"].dropna().mean())
            inst[(organ, "pred")] = int(sub["n_pred"].sum())
            inst[(organ, "ref")] = int(sub["n_ref"].sum())
            inst[(organ, "false_pos_images")] = int((sub["in_pred"] & ~sub["in_ref"]).sum())
        dsc_rows[source], inst_rows[source] = means, inst
    dsc_frame = pd.DataFrame.from_dict(dsc_rows, orient="index").reindex(columns=list(organs))
    inst_frame = pd.DataFrame.from_dict(inst_rows, orient="index")
    inst_frame.columns = pd.MultiIndex.from_tuples(inst_frame.columns, names=["organ", "count"])
    return dsc_frame, inst_frame
