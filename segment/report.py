"""Tables (CSV, LaTeX, Markdown) and the overlay figure of the segmentation tasks (Tables 3 and 4).

The contour table reuses :mod:`fusionbench.report.tables` (``mean ± std``, best in bold, arrows).
The organ table follows the paper's Table 4 layout: one mean DSC per cell, "/" where an organ is
never found, best per column in bold; instance counts go to a second table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fusionbench.data.io import atomic_write_bytes

__all__ = ["contour_table", "write_contour_tables", "write_organ_tables", "overlay_figure"]

_CONTOUR_METRICS = {"dsc": ("DSC", True), "hausdorff": ("Haus", False), "iou": ("IoU", True),
                    "msd": ("MSD", False)}


def contour_table(frame: pd.DataFrame, sources: Sequence[str], unit: str = "px"):
    """A :class:`fusionbench.report.tables.Table` of the contour rows (``source, case, metric, value``)."""
    from fusionbench.report.tables import Table

    finite = frame.replace([np.inf, -np.inf], np.nan)
    grouped = finite.groupby(["source", "metric"])["value"]
    cols = list(_CONTOUR_METRICS)
    mean = grouped.mean().unstack("metric").reindex(index=list(sources), columns=cols)
    std = grouped.std(ddof=0).unstack("metric").reindex(index=list(sources), columns=cols)
    n = grouped.count().unstack("metric").reindex(index=list(sources), columns=cols)
    labels = {k: v[0] + (f" ({unit})" if k in ("hausdorff", "msd") else "") for k, v in _CONTOUR_METRICS.items()}
    return Table(title="Body-contour segmentation (paper Table 3)", mean=mean, std=std, n=n,
                 higher={k: v[1] for k, v in _CONTOUR_METRICS.items()}, labels=labels,
                 notes=["DSC and IoU in percent; Hausdorff and MSD in " + unit + ". Graph-search contour "
                        "(segment.contour); PAT scored in its own frame against labels_pat, MRI and "
                        "fused images against labels_mri."])


def write_contour_tables(frame: pd.DataFrame, sources: Sequence[str], out_dir: Path, unit: str = "px") -> list[Path]:
    """``contour.csv/.tex/.md`` in ``out_dir``."""
    from fusionbench.report.tables import write_table

    return write_table(contour_table(frame, sources, unit), Path(out_dir), "contour")


def _organ_cells(dsc: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, set]]:
    cells = dsc.map(lambda v: "/" if pd.isna(v) else f"{v:.2f}")
    best = {c: set(dsc.index[np.isclose(dsc[c], dsc[c].max())]) for c in dsc.columns if dsc[c].notna().any()}
    return cells, best


def write_organ_tables(dsc: pd.DataFrame, instances: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``organs.csv/.tex/.md`` (Table 4 layout) and ``organ_instances.csv``."""
    out_dir = Path(out_dir)
    cells, best = _organ_cells(dsc)
    head = ["Method"] + [c.capitalize() for c in dsc.columns]
    csv = dsc.copy()
    csv.index.name = "method"
    texts = {".csv": csv.to_csv(na_rep="/", float_format="%.4f")}
    md = ["### Multi-organ segmentation DSC (%) (paper Table 4)", "",
          "| " + " | ".join(head) + " |", "|" + "|".join([":---"] + [":---:"] * len(dsc.columns)) + "|"]
    tex = [r"\begin{table}[t]", r"\centering",
           r"\caption{Multi-organ segmentation DSC (\%), mean over the test images that contain the organ; / = never found.}",
           r"\label{tab:organs}", r"\begin{tabular}{l" + "c" * len(dsc.columns) + "}", r"\toprule",
           " & ".join(head) + r" \\", r"\midrule"]
    for src in dsc.index:
        md_row, tex_row = [str(src).replace("|", r"\|")], [str(src).replace("_", r"\_")]
        for c in dsc.columns:
            text = cells.at[src, c]
            bold = src in best.get(c, ())
            md_row.append(f"**{text}**" if bold else text)
            tex_row.append(rf"\textbf{{{text}}}" if bold else text)
        md.append("| " + " | ".join(md_row) + " |")
        tex.append(" & ".join(tex_row) + r" \\")
    md += ["", "_Mean DSC over the test images whose reference contains the organ (images where it is "
           "predicted but absent: `*_false_pos_images` in organ_instances.csv); / = never predicted on "
           "those images (or it never occurs); body = the whole animal._"]
    tex += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    texts[".md"] = "\n".join(md) + "\n"
    texts[".tex"] = "\n".join(tex) + "\n"
    paths = []
    for suffix, text in texts.items():
        path = out_dir / f"organs{suffix}"
        atomic_write_bytes(path, text.encode())
        paths.append(path)
    inst = instances.copy()
    inst.columns = [f"{o}_{k}" for o, k in inst.columns]
    inst.index.name = "method"
    path = out_dir / "organ_instances.csv"
    atomic_write_bytes(path, inst.to_csv().encode())
    paths.append(path)
    return paths


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
