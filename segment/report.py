"""Result rows, tables (CSV, LaTeX, Markdown) and the overlay figure of the segmentation tasks (Tables 3 and 4).

Rows have the core's long form (:data:`fusionbench.results.COLUMNS`): ``method`` is the image
source (PAT, MRI or a fusion method), ``group`` the task (``contour`` or ``organs``), one row per
test image and metric, ``seconds`` what computing the value cost. :func:`write_results` records
them in case files ``RUN/segment/cases/SOURCE/CASE.json`` (the runner's format) and assembles
``RUN/segment/results.csv`` with :func:`fusionbench.results.assemble`, so
:func:`fusionbench.results.load_results` reads them back. The metrics:

* ``contour``: ``dsc`` and ``iou`` (percent), ``hausdorff`` and ``msd`` (mm where the dataset gives
  the pixel size, else pixels; ``inf`` where the contour is empty) of the body mask;
* ``organs``: per organ its DSC and detection, false-positive and instance counts
  (:func:`segment.organ_scoring.organ_rows`).

The tables are built from those rows by :mod:`fusionbench.report.tables`, the code of the fusion
and registration tables: ``mean ± std`` over the test images (sample standard deviation), best
mean per column in bold, direction arrows, the ``Avg. rank`` column, the same CSV/LaTeX/Markdown.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fusionbench.data.io import atomic_write_bytes
from fusionbench.report.tables import Table, build_table
from fusionbench.results import COLUMNS, assemble, higher_is_better

from .organ_scoring import GROUP as ORGAN_GROUP, TABLE4_ORGANS

__all__ = ["CONTOUR_GROUP", "CONTOUR_METRICS", "write_results", "contour_table", "organ_table",
           "organ_significance", "overlay_figure"]

#: The ``group`` of the contour task's result rows.
CONTOUR_GROUP = "contour"
#: Contour metrics: name in the rows -> name in :data:`fusionbench.metrics.METRICS` (group
#: ``segmentation``), where the core finds their direction (DSC, IoU higher; distances lower).
CONTOUR_METRICS = {"dsc": "DSC", "hausdorff": "Hausdorff", "iou": "IoU", "msd": "MSD"}


def write_results(out_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Record result rows in case files under ``out_dir/cases`` and assemble ``out_dir/results.csv``.

    One file per (source, test image), ``cases/SOURCE/CASE.json``; the rows of the groups (tasks)
    given replace that file's earlier rows of those groups, rows of other tasks stay. Returns every
    row under ``out_dir`` (:func:`fusionbench.results.assemble`).
    """
    from fusionbench.runner import case_file

    out_dir = Path(out_dir)
    by_case: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        missing = set(COLUMNS) - set(r)
        if missing:
            raise ValueError(f"result row {dict(r)} lacks {sorted(missing)}")
        by_case.setdefault((str(r["method"]), str(r["case"])), []).append(
            {"group": r["group"], "metric": r["metric"], "value": float(r["value"]), "seconds": float(r["seconds"])})
    groups = {r["group"] for case_rows in by_case.values() for r in case_rows}
    for (method, case), case_rows in by_case.items():
        path = case_file(out_dir, method, case)
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        kept = [r for r in old.get("rows", []) if r.get("group") not in groups] if old.get("status") == "ok" else []
        record = {"method": method, "case": case, "role": "segment", "status": "ok", "rows": kept + case_rows}
        atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    return assemble(out_dir)


def _select(results: pd.DataFrame, group: str, sources: Sequence[str], cases: Sequence[str] | None) -> pd.DataFrame:
    rows = results[(results["group"] == group) & results["method"].isin(list(sources))]
    if cases is not None:
        rows = rows[rows["case"].isin([str(c) for c in cases])]
    return rows


def _columns(table: Table, sources: Sequence[str], columns: Mapping[str, str], higher: Mapping[str, bool],
             labels: Mapping[str, str]) -> Table:
    """``table`` with one row per source and the ``columns`` (name in ``table`` -> shown name) in order."""
    def pick(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.reindex(index=list(sources), columns=list(columns)).rename(columns=dict(columns))

    rank = None if table.avg_rank is None else table.avg_rank.reindex(list(sources))
    return replace(table, mean=pick(table.mean), std=pick(table.std), n=pick(table.n), avg_rank=rank,
                   higher=dict(higher), labels=dict(labels))


def contour_table(results: pd.DataFrame, sources: Sequence[str], unit: str = "px",
                  cases: Sequence[str] | None = None) -> Table:
    """Table 3 from the ``contour`` rows of ``results`` (the sources' ``cases``, default all).

    A distance to an empty contour is infinite in the rows; the table's means are over the images
    where it is finite.
    """
    rows = _select(results, CONTOUR_GROUP, sources, cases)
    rows = rows.assign(value=rows["value"].replace([np.inf, -np.inf], np.nan))
    # Under their names in the core's metric registry, so the core ranks the distances lower-is-better.
    rows = rows.assign(group="segmentation", metric=rows["metric"].map(CONTOUR_METRICS))
    table = build_table(rows, "segmentation", "Body-contour segmentation (paper Table 3)", list(sources), notes=[
        "Mean ± std over the test images; DSC and IoU in percent, Hausdorff and MSD in " + unit + ". Graph-search "
        "contour (segment.contour); PAT scored in its own frame against labels_pat, MRI and fused images "
        "against labels_mri."])
    labels = {"dsc": "DSC", "hausdorff": f"Haus ({unit})", "iou": "IoU", "msd": f"MSD ({unit})"}
    return _columns(table, sources, {v: k for k, v in CONTOUR_METRICS.items()},
                    {k: higher_is_better(v, "segmentation") for k, v in CONTOUR_METRICS.items()}, labels)


def organ_table(results: pd.DataFrame, sources: Sequence[str], cases: Sequence[str] | None = None,
                organs: Sequence[str] = TABLE4_ORGANS) -> Table:
    """Table 4 from the ``organs`` rows of ``results``: mean DSC per source and organ.

    A cell is empty (the paper's "/") where the organ never occurs in the reference or the model
    never predicts it on an image that holds it (its ``ORGAN.detected`` rows are all 0); the
    average rank still counts such an organ, at its mean DSC of 0.
    """
    rows = _select(results, ORGAN_GROUP, sources, cases)
    table = build_table(rows[rows["metric"].isin(list(organs))], ORGAN_GROUP,
                        "Multi-organ segmentation DSC (%) (paper Table 4)", list(sources), notes=[
                            "Mean ± std of the DSC over the test images whose reference contains the organ; "
                            "– = never predicted on those images, or never in the reference (the paper's /); "
                            "body = the whole animal. Per image in results.csv: ORGAN.detected, ORGAN.false_pos "
                            "(predicted where absent), ORGAN.n_pred and ORGAN.n_ref (instances)."])
    detected = rows[rows["metric"].isin([f"{o}.detected" for o in organs])]
    if not detected.empty:
        found = detected.assign(metric=detected["metric"].str.removesuffix(".detected")).pivot_table(
            index="method", columns="metric", values="value", aggfunc="max")
        never = found.reindex(index=table.mean.index, columns=table.mean.columns) == 0
        table = replace(table, mean=table.mean.mask(never), std=table.std.mask(never))
    return _columns(table, sources, {o: o for o in organs}, {o: higher_is_better(o, ORGAN_GROUP) for o in organs},
                    {o: o.capitalize() for o in organs})


SIGNIFICANCE_COLUMNS = ["organ", "reference", "method", "n", "mean_diff", "statistic", "p", "p_holm", "verdict"]


def organ_significance(results: pd.DataFrame, sources: Sequence[str], cases: Sequence[str] | None = None,
                       organs: Sequence[str] = TABLE4_ORGANS, alpha: float = 0.05) -> pd.DataFrame:
    """Does a fused image segment an organ better than the better single modality?

    Per organ, the reference is whichever of ``PAT`` and ``MRI`` has the higher mean DSC; every
    other source (the fusion methods) is compared with it by a two-sided paired Wilcoxon
    signed-rank test (Wilcoxon 1945; ``scipy.stats.wilcoxon``) on the test images where both
    have a DSC for that organ, and the organ's family of comparisons is Holm-corrected (Holm 1979).

    Returns
    -------
    pandas.DataFrame
        :data:`SIGNIFICANCE_COLUMNS`: ``mean_diff`` = mean over the paired images of method minus
        reference (DSC points), ``verdict`` ``better`` / ``worse`` where ``p_holm < alpha`` (by the
        sign of ``mean_diff``), else ``n.s.``; ``p`` is 1 for identical DSCs and NaN (``n.s.``) for
        fewer than one common image.
    """
    from fusionbench.results import holm, paired_wilcoxon

    rows = _select(results, ORGAN_GROUP, sources, cases)
    out = []
    for organ in organs:
        wide = rows[rows["metric"] == organ].pivot_table(index="case", columns="method", values="value")
        singles = [s for s in ("PAT", "MRI") if s in wide.columns and wide[s].notna().any()]
        if not singles:
            continue
        reference = max(singles, key=lambda s: wide[s].mean())
        family = []
        for method in [s for s in sources if s not in ("PAT", "MRI") and s in wide.columns]:
            pair = wide[[reference, method]].dropna()
            n, stat, p = paired_wilcoxon(pair[method].to_numpy(), pair[reference].to_numpy())
            diff = float((pair[method] - pair[reference]).mean()) if n else np.nan
            family.append({"organ": organ, "reference": reference, "method": method, "n": n,
                           "mean_diff": diff, "statistic": stat, "p": p})
        for r, adjusted in zip(family, holm([r["p"] for r in family])):
            r["p_holm"] = float(adjusted)
            significant = not np.isnan(adjusted) and adjusted < alpha
            r["verdict"] = ("better" if r["mean_diff"] > 0 else "worse") if significant else "n.s."
        out += family
    return pd.DataFrame(out, columns=SIGNIFICANCE_COLUMNS)


def overlay_figure(panels: Sequence[Mapping], out_path: Path, *, n_cols: int | None = None) -> Path:
    """PNG grid: each panel is ``{"title", "image", "contour" (N,2 row/col), "ref_mask", "labels"}``.

    The predicted contour is drawn in red, the reference body outline in green, predicted organ
    labels as a translucent colour overlay.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    if n == 0:
        raise ValueError("overlay_figure: no panels")
    n_cols = n_cols or min(n, 6)
    n_rows = int(np.ceil(n / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.3 * n_rows), squeeze=False)
    cmap = plt.get_cmap("tab20", 12)
    for ax, panel in zip(axes.flat, panels):
        ax.imshow(panel["image"], cmap="gray", vmin=0, vmax=1)
        labels = panel.get("labels")
        if labels is not None:
            ax.imshow(np.ma.masked_equal(labels, 0), cmap=cmap, vmin=0, vmax=11, alpha=0.45,
                      interpolation="nearest")
        if panel.get("ref_mask") is not None:
            ax.contour(panel["ref_mask"], [0.5], colors="lime", linewidths=0.7)
        contour = panel.get("contour")
        if contour is not None:
            closed = np.vstack([contour, contour[:1]])
            ax.plot(closed[:, 1], closed[:, 0], color="red", lw=0.8)
        ax.set_title(panel.get("title", ""), fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
