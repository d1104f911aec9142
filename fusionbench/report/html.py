"""The run's report page: ``RUN/report/index.html``, one self-contained page rendered with Jinja2.

The page needs no network and no server: its CSS and JavaScript are inline and its images are PNG
files under ``RUN/report/img/`` (and the paper figures under ``RUN/report/figures/``), referenced by
relative paths, so the ``report/`` folder can be copied, zipped or opened from disk. Sections:

* the run's record: dataset and fingerprint, cases, registration, metric convention, device,
  metrics, weights notes per method, external folders, methods left out, settings and versions;
* the ranked tables (fusion, registration, runtime) built by :func:`fusionbench.report.build_report`
  from the same aggregated numbers as the CSV files (each cell carries the CSV's mean in
  ``data-value``), sortable by any column, rows in order of average rank, the best mean in bold and
  a mark on every mean the best method beats significantly (paired Wilcoxon, Holm-corrected; the
  p-values in each cell's tooltip and in the significance table);
* per-case galleries, one case at a time (previous/next, a case menu, the arrow keys): PAT, MRI,
  the registered PAT and each method's fused image, each with a zoomed inset of the same region;
* registration checks per case: for the unregistered input and each registration (and joint)
  method a PAT/MRI checkerboard and the MRI's edges drawn on the registered PAT, cropped to the body;
* the task tables (``RUN/segment``: contour, organs) with their overlay figure, when present;
* the runtime per method as a stacked bar chart (inline SVG) and its table;
* failures with their messages, and methods left out untrained;
* the paper figures written beside the page.

The page's script sets ``data-ready="yes"`` and ``data-errors`` (a count of script errors and
images that failed to load) on ``<body>``, which the browser test reads.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.io import atomic_write_bytes
from .figures import RunImages, registration_panels, scale_box, zoom_box
from .panels import crop, to_png
from .tables import Table, formatted_cells

__all__ = ["write_html", "table_context", "runtime_chart", "IMAGE_DIR", "ALPHA"]

#: Folder of the page's images, relative to the page.
IMAGE_DIR = "img"
#: Significance level of the marks (the significance tests' α).
ALPHA = 0.05
_STAGE_COLOURS = {"registration": "#4e79a7", "fusion": "#f28e2b", "scoring": "#59a14f"}


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("fusionbench.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _value(x: Any) -> str:
    """A number as the CSV files write it (``%.10g``); "" for a missing one."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else f"{x:.10g}"


class _Names:
    """File names for run names (methods, cases): safe characters, distinct for distinct names."""

    def __init__(self):
        self._by_name: dict[str, str] = {}
        self._taken: set[str] = set()

    def __call__(self, name: str) -> str:
        if name not in self._by_name:
            base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "x"
            slug, k = base, 1
            while slug in self._taken:
                k += 1
                slug = f"{base}-{k}"
            self._taken.add(slug)
            self._by_name[name] = slug
        return self._by_name[name]


# ------------------------------------------------------------------------------------ tables

def table_context(table: Table, table_id: str, *, csv: str | None = None, sig: pd.DataFrame | None = None,
                  alpha: float = ALPHA) -> dict[str, Any]:
    """What the template needs to draw ``table``: columns, rows in order of average rank, cells
    with the rounded text of the Markdown table, the CSV's value and the significance mark.

    ``sig`` holds the :func:`fusionbench.results.wilcoxon_vs_best` rows of the table's group: a
    mean of a method the best one beats with a Holm-corrected p below ``alpha`` gets a mark.
    """
    cells, best = formatted_cells(table)
    tests: dict[tuple[str, str], Mapping[str, Any]] = {}
    winners: dict[str, str] = {}
    if sig is not None and not sig.empty:
        for rec in sig.to_dict("records"):
            tests[(str(rec["metric"]), str(rec["other"]))] = rec
            winners[str(rec["metric"])] = str(rec["best"])
    columns = []
    for col in table.columns:
        higher = table.higher.get(col)
        columns.append({"key": col, "label": table.label(col),
                        "arrow": "" if higher is None else ("↑" if higher else "↓"),
                        "order": "asc" if higher is False else "desc",
                        "tip": {True: "higher is better", False: "lower is better"}.get(higher, "not ranked")})
    rank = table.avg_rank
    best_rank = rank.min() if rank is not None and rank.notna().any() else None
    rows = []
    for m in table.mean.index:
        out_cells = []
        for col in table.columns:
            cell = cells.at[m, col]
            n = table.n.at[m, col] if col in table.n else np.nan
            entry = {"text": "–" if cell is None else cell[0], "std": "" if cell is None else cell[1],
                     "value": _value(table.mean.at[m, col]), "best": m in best.get(col, ()), "mark": "",
                     "tip": "" if cell is None or pd.isna(n) else f"mean ± std over {int(n)} cases"}
            test = tests.get((col, m))
            if test is not None:
                p, ph = test.get("p"), test.get("p_holm")
                entry["tip"] += (f"; vs {test['best']}: Wilcoxon p = {_fmt_p(p)}, Holm p = {_fmt_p(ph)}, "
                                 f"n = {test['n']}")
                if bool(test.get("significant")):
                    entry["mark"] = "*"
            elif winners.get(col) == m:
                entry["tip"] += "; best mean, tested against every other method"
            out_cells.append(entry)
        r = None if rank is None else rank.get(m)
        rows.append({"method": m, "cells": out_cells, "note": table.row_note(m),
                     "rank": {"text": "–" if r is None or pd.isna(r) else f"{r:.2f}", "value": _value(r),
                              "best": best_rank is not None and r is not None and r == best_rank}})
    if rank is not None:  # ranked: best average rank first (stable, missing ranks last)
        order = sorted(range(len(rows)), key=lambda i: (rows[i]["rank"]["value"] == "",
                                                        float(rows[i]["rank"]["value"] or 0)))
        rows = [rows[i] for i in order]
    return {"id": table_id, "title": table.title, "columns": columns, "rows": rows, "notes": list(table.notes),
            "has_rank": rank is not None, "has_notes": bool(table.row_notes), "csv": csv,
            "has_marks": any(c["mark"] for r in rows for c in r["cells"])}


def _fmt_p(p: Any) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(p) else f"{p:.3g}"


def runtime_chart(table: Table, *, width: int = 760, bar: int = 18, label_w: int = 170) -> dict[str, Any]:
    """A stacked horizontal bar per method (seconds per case by stage) as SVG geometry."""
    stages = [c for c in table.columns if c in _STAGE_COLOURS] or list(table.columns)
    means = table.mean.reindex(columns=stages).astype(float).fillna(0.0)
    totals = means.sum(axis=1)
    top = float(totals.max()) if len(totals) and totals.max() > 0 else 1.0
    plot_w = width - label_w - 90
    bars = []
    for i, (m, row) in enumerate(means.iterrows()):
        x, segs = float(label_w), []
        for stage in stages:
            w = plot_w * float(row[stage]) / top
            if row[stage] > 0:
                segs.append({"x": round(x, 2), "w": round(max(w, 0.5), 2), "stage": stage,
                             "colour": _STAGE_COLOURS.get(stage, "#888"), "value": f"{row[stage]:.3g}"})
            x += w
        bars.append({"method": m, "y": 24 + i * (bar + 6), "segs": segs, "total": f"{totals[m]:.3g}",
                     "end": round(x, 2)})
    ticks = []
    step = _nice_step(top / 5)
    k = 0
    while k * step <= top * 1.0001:
        ticks.append({"x": round(label_w + plot_w * k * step / top, 2), "text": f"{k * step:g}"})
        k += 1
    return {"width": width, "height": 24 + len(bars) * (bar + 6) + 22, "bar": bar, "bars": bars,
            "label_w": label_w, "plot_w": plot_w, "ticks": ticks,
            "legend": [{"stage": table.label(s), "colour": _STAGE_COLOURS.get(s, "#888")} for s in stages]}


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    return next(f * mag for f in (1, 2, 2.5, 5, 10) if f * mag >= raw)


# ------------------------------------------------------------------------------------ images

class _ImageWriter:
    """Writes the page's PNG files under ``out/img`` and returns their paths relative to the page."""

    def __init__(self, out: Path):
        self.out = out
        self.names = _Names()
        self.written: list[Path] = []

    def write(self, rel: str, data: bytes) -> str:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.written.append(path)
        return rel

    def copy(self, rel: str, source: Path) -> str:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        self.written.append(path)
        return rel


def _panel(images: _ImageWriter, folder: str, name: str, title: str, img: np.ndarray | None,
           box: tuple[int, int, int], source: Path | None = None) -> dict[str, Any]:
    if img is None:
        return {"title": title, "src": None}
    stem = f"{IMAGE_DIR}/{folder}/{images.names(name)}"
    if source is not None and source.suffix == ".png":
        src = images.copy(f"{stem}.png", source)
    else:
        src = images.write(f"{stem}.png", to_png(img))
    h, w = img.shape[:2]
    r0, c0, side = box
    zoom = images.write(f"{stem}.zoom.png", to_png(crop(img, box)))
    return {"title": title, "src": src, "zoom": zoom, "w": w, "h": h,
            "box": {"left": 100 * c0 / w, "top": 100 * r0 / h, "width": 100 * side / w, "height": 100 * side / h}}


def _gallery(run_dir: Path, images: _ImageWriter, reader: RunImages, cases: Sequence[str], methods: Sequence[str],
             registration: str | None) -> list[dict[str, Any]]:
    pages = []
    for case in cases:
        mri = reader.mri(case)
        if mri is None:
            continue
        folder = f"cases/{images.names('case:' + case)}"
        box = zoom_box(mri, 0.25)
        panels = [_panel(images, folder, "source:pat", "PAT", reader.pat(case), box),
                  _panel(images, folder, "source:mri", "MRI", mri, box, run_dir / "sources" / case / "mri.png")]
        if registration and registration != "identity":
            reg = reader.registered(registration, case)
            if reg is not None and reg.shape[:2] == mri.shape[:2]:
                panels.append(_panel(images, folder, f"registered:{registration}", f"PAT ({registration})", reg, box))
        for m in methods:
            path = run_dir / "fused" / m / f"{case}.png"
            img = reader.fused(m, case)  # another size than the MRI's: an external method's, resized
            own = box if img is None else scale_box(box, mri.shape, img.shape)
            panels.append(_panel(images, folder, m, m, img, own, path))
        pages.append({"case": case, "panels": panels})
    return pages


def _registration_pages(images: _ImageWriter, reader: RunImages, cases: Sequence[str],
                        methods: Sequence[str]) -> list[dict[str, Any]]:
    pages = []
    for case in cases:
        folder = f"registration/{images.names('case:' + case)}"
        columns = []
        for m, board, edges in registration_panels(reader, methods, case):
            col = {"method": m, "title": "before registration" if m == "identity" else m,
                   "checker": None, "edges": None}
            if board is not None:
                slug = images.names(m)
                col["checker"] = images.write(f"{IMAGE_DIR}/{folder}/{slug}.checker.png", to_png(board))
                col["edges"] = images.write(f"{IMAGE_DIR}/{folder}/{slug}.edges.png", to_png(edges))
            columns.append(col)
        if any(c["checker"] for c in columns):
            pages.append({"case": case, "columns": columns})
    return pages


# ------------------------------------------------------------------------------------ record

def _record(run_dir: Path, info: Mapping[str, Any], n_cases: int) -> dict[str, Any]:
    metrics = info.get("metrics")
    rows = [("Run folder", run_dir.resolve().name),
            ("Dataset", info.get("dataset", "?")),
            ("Dataset fingerprint", info.get("dataset_fingerprint", "?")),
            ("Test cases", f"{len(info.get('cases', [])) or n_cases}"
                           + (f" (limit {info['limit']})" if info.get("limit") else "")),
            ("Registration (for fusion methods needing aligned input)", info.get("registration", "?")),
            ("Registration methods scored", ", ".join(info.get("registration_methods", [])) or "–"),
            ("Fusion methods", ", ".join(info.get("methods", [])) or "–"),
            ("Metric convention", info.get("convention", "?")),
            ("Fusion metrics", ", ".join(metrics) if metrics else "the whole suite"),
            ("Device", info.get("device", "?"))]
    weights = dict(info.get("weights") or {})
    external = {name: f"{e.get('external', '?')} (size={e.get('size', '?')})" if isinstance(e, Mapping) else str(e)
                for name, e in (info.get("external") or {}).items() if name not in weights}
    settings = {m: ", ".join(f"{k}={v}" for k, v in s.items()) for m, s in (info.get("method_settings") or {}).items()
                if s}
    configs = info.get("method_configs") or {}
    return {"rows": rows, "weights": weights, "external": external,
            "untrained": dict(info.get("untrained") or {}), "settings": settings,
            "versions": dict(info.get("versions") or {}), "cases": list(info.get("cases", [])),
            "configs": json.dumps(configs, indent=1, sort_keys=True) if configs else ""}


def _failures(failures: pd.DataFrame) -> list[dict[str, Any]]:
    if failures is None or failures.empty:
        return []
    out = []
    fails = failures.fillna("")
    for (method, stage, error), grp in fails.groupby(["method", "stage", "error"], sort=True, dropna=False):
        cases = sorted(map(str, grp["case"]))
        out.append({"method": method, "stage": stage, "error": error, "count": len(cases),
                    "cases": ", ".join(cases[:12]) + (f" … (+{len(cases) - 12})" if len(cases) > 12 else "")})
    return out


def _tasks(run_dir: Path, images: _ImageWriter) -> dict[str, Any] | None:
    """The task tables under ``RUN/segment`` (contour, organs) and their overlay figure."""
    from .tables import read_table

    seg = run_dir / "segment"
    if not seg.is_dir():
        return None
    tables, files = [], []
    for stem in ("contour", "organs"):
        table = read_table(seg, stem)
        if table is not None and not table.mean.empty:
            tables.append(table_context(table, f"task-{stem}"))
            files.append(f"segment/{stem}.csv")
    overlay = None
    if (seg / "overlay.png").is_file():
        overlay = images.copy(f"{IMAGE_DIR}/segment_overlay.png", seg / "overlay.png")
    try:
        meta = json.loads((seg / "segment.json").read_text())
    except (OSError, ValueError):
        meta = {}
    if not tables and overlay is None:
        return None
    return {"tables": tables, "files": files, "overlay": overlay, "preset": meta.get("preset"),
            "sources": meta.get("sources", []), "cases": len(meta.get("cases", []))}


# ------------------------------------------------------------------------------------ page

def write_html(run_dir: str | Path, out: str | Path, *, info: Mapping[str, Any], tables: Sequence[dict[str, Any]],
               runtime: Table | None, significance: pd.DataFrame, failures: pd.DataFrame,
               cases: Sequence[str], fusion_methods: Sequence[str], registration_methods: Sequence[str],
               figures: Sequence[Path] = (), gallery_cases: int = 60) -> list[Path]:
    """Write ``out/index.html`` and its images; return the page and the image files.

    ``tables`` are :func:`table_context` dicts (ranked tables, in page order); ``runtime`` the
    runtime table (bar chart and table); ``significance`` the Wilcoxon rows (with their ``group``);
    ``cases`` the run's cases, the first ``gallery_cases`` of which get a gallery page and a
    registration page; ``figures`` PNG files under ``out`` listed in the figures section.
    """
    run_dir, out = Path(run_dir), Path(out)
    img_root = out / IMAGE_DIR
    if img_root.is_dir():  # the page's own folder: images of an earlier build go
        shutil.rmtree(img_root)
    images = _ImageWriter(out)
    reader = RunImages(run_dir)
    shown = list(cases)[:gallery_cases]
    registration = info.get("registration")
    gallery = _gallery(run_dir, images, reader, shown, fusion_methods, registration)
    reg_pages = _registration_pages(images, reader, shown, registration_methods)
    tasks = _tasks(run_dir, images)
    runtime_ctx = None
    if runtime is not None and not runtime.mean.empty:
        runtime_ctx = {"chart": runtime_chart(runtime), "table": table_context(runtime, "runtime", csv="runtime.csv")}
    sig_rows = []
    if significance is not None and not significance.empty:
        for rec in significance.to_dict("records"):
            sig_rows.append({**rec, "p": _fmt_p(rec.get("p")), "p_holm": _fmt_p(rec.get("p_holm")),
                             "statistic": _fmt_p(rec.get("statistic"))})
    env = _environment()
    css = env.loader.get_source(env, "report.css")[0]
    js = env.loader.get_source(env, "report.js")[0]
    from .. import __version__

    html = env.get_template("report.html.j2").render(
        title=f"fusionbench report: {run_dir.resolve().name}", record=_record(run_dir, info, len(cases)),
        tables=list(tables), runtime=runtime_ctx, significance=sig_rows, alpha=ALPHA,
        gallery=gallery, gallery_total=len(cases), registration_pages=reg_pages,
        registration=registration, tasks=tasks, failures=_failures(failures),
        figures=[p.relative_to(out).as_posix() for p in figures if p.is_file()],
        version=__version__, css=css, js=js)
    page = out / "index.html"
    atomic_write_bytes(page, html.encode("utf-8"))
    return [page, *images.written]
