"""Reports of a run: ranked tables (CSV, LaTeX, Markdown), significance tests and figures.

:func:`build_report` rebuilds everything from ``RUN/results.csv`` (assembled from the case files
first) and ``RUN/run.json``, so ``fusionbench report RUN`` works on a copied or resumed run folder.
Files written under ``RUN/report/``:

- ``fusion.{csv,tex,md}``: the paper's Table 2 layout (fusion metrics, rows = fusion methods);
- ``registration.{csv,tex,md}``: Table 1 layout (MI, NMI, NCC, rows = registration methods: the
  identity, the registration used and any joint method) with the ground-truth errors (EPE, Dice,
  folding) as extra columns when the data have ground truth;
- ``runtime.{csv,tex,md}``: seconds per case for registration, fusion and scoring;
- ``significance.{csv,md}``: paired Wilcoxon tests of the best method against each other one,
  Holm-corrected per metric;
- ``fused_grid.png``: fused images of a few cases;
- ``figures/fusion_CASE.png``, ``figures/registration_CASE.png``: per case (the first
  ``figure_cases``), the sources and every method's fused image with a zoomed inset, and the
  registration checks (checkerboard, MRI edges on the registered PAT) of every registration
  method, at the width of a paper column (3.5 in, 300 dpi);
- ``index.html`` and ``img/``: the report page (:mod:`fusionbench.report.html`): the run's record,
  the sortable ranked tables with significance marks, per-case galleries, registration checks,
  the task tables of ``RUN/segment`` when present, the runtime chart, failures and the figures;
- ``README.md``: all Markdown tables, the run's configuration and its failures.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..data.io import atomic_write_bytes
from ..results import assemble, load_failures, run_info, wilcoxon_vs_best
from .figures import RunImages, fused_grid, fusion_case_figure, registration_case_figure
from .html import table_context, write_html
from .tables import build_table, runtime_table, significance_table, to_markdown, with_time_column, write_table

__all__ = ["build_report"]


def _markdown_frame(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", r"\|").replace("\n", " ") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "x"


def _column_figures(run_dir: Path, out: Path, cases: list[str], fusion_methods: list[str],
                    reg_methods: list[str], registration: str) -> list[Path]:
    """The paper-column figures of ``cases`` under ``out/figures`` (old ones removed)."""
    folder = out / "figures"
    for old in folder.glob("*.png") if folder.is_dir() else ():
        old.unlink()
    images, paths = RunImages(run_dir), []
    for case in cases:
        if fusion_methods:
            p = fusion_case_figure(images, fusion_methods, case, folder / f"fusion_{_slug(case)}.png",
                                   registration=registration)
            paths += [p] if p is not None else []
        if reg_methods:
            p = registration_case_figure(images, reg_methods, case, folder / f"registration_{_slug(case)}.png")
            paths += [p] if p is not None else []
    return paths


def build_report(run_dir: str | Path, *, figure_cases: int = 3, gallery_cases: int = 60) -> dict[str, list[Path]]:
    """Write the tables, significance tests, figures and report page of ``run_dir``; return the
    paths by kind (``html``: the page first, then its images)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    df = assemble(run_dir) if (run_dir / "cases").is_dir() else pd.read_csv(run_dir / "results.csv")
    info = run_info(run_dir)
    out = run_dir / "report"
    fusion_methods = [m for m in info.get("methods", []) if m in set(df["method"])]
    reg_methods = info.get("registration_methods", [])
    registration = info.get("registration", "?")
    joint = sorted(set(df.loc[df["group"] == "registration", "method"]) - set(reg_methods))
    written: dict[str, list[Path]] = {}

    weights = info.get("weights", {})
    fusion = build_table(df, "fusion", f"Fusion metrics (after {registration} registration), "
                         "mean ± std over test cases", fusion_methods, row_notes=weights)
    registration_tab = build_table(
        df, "registration", "Registration of PAT to MRI, mean ± std over test cases",
        reg_methods + joint,
        notes=["EPE in pixels inside the body (labels, or the body mask of misalign=; else the whole "
               "image), Dice in percent, Folding as a fraction; "
               "ground-truth columns only where the data have ground truth; Registration (s): "
               "wall-clock seconds per pair in one worker, not ranked."], row_notes=weights)
    registration_tab = with_time_column(registration_tab, df, "registration")
    runtime = runtime_table(df, reg_methods + joint + fusion_methods)
    md_parts = [f"# fusionbench report: {run_dir.name}", "",
                f"Dataset `{info.get('dataset', '?')}` ({len(info.get('cases', []))} test cases), "
                f"registration `{registration}`, device `{info.get('device', '?')}`, metric convention "
                f"`{info.get('convention', '?')}`.", ""]
    for table, stem in ((fusion, "fusion"), (registration_tab, "registration"), (runtime, "runtime")):
        if table.mean.empty:
            continue
        written[stem] = write_table(table, out, stem)
        md_parts += [to_markdown(table), ""]

    sig = pd.concat([wilcoxon_vs_best(df, "fusion", fusion_methods).assign(group="fusion"),
                     wilcoxon_vs_best(df, "registration", reg_methods + joint).assign(group="registration")],
                    ignore_index=True)
    sig = sig[["group"] + [c for c in sig.columns if c != "group"]]
    buf = io.StringIO()
    sig.to_csv(buf, index=False, float_format="%.6g")
    atomic_write_bytes(out / "significance.csv", buf.getvalue().encode())
    sig_md = ("### Paired Wilcoxon signed-rank tests, best method vs each other (Holm-corrected per "
              "metric, α = 0.05)\n\n" + _markdown_frame(significance_table(sig)))
    atomic_write_bytes(out / "significance.md", sig_md.encode())
    written["significance"] = [out / "significance.csv", out / "significance.md"]
    md_parts += [sig_md, ""]

    failures = load_failures(run_dir)
    if not failures.empty:
        summary = (failures.groupby(["method", "error"], dropna=False).size()
                   .rename("cases").reset_index())
        md_parts += ["### Failures", "", _markdown_frame(summary), ""]

    cases = sorted(set(df["case"]))[:figure_cases]
    grid = fused_grid(run_dir, fusion_methods, cases, out / "fused_grid.png") if fusion_methods else None
    if grid is not None:
        written["figures"] = [grid]
        md_parts += ["![fused images](fused_grid.png)", ""]
    # Registration checks: the unregistered input, the registration methods, the joint methods.
    checked = list(dict.fromkeys([*reg_methods, *joint,
                                  *(m for m in fusion_methods if (run_dir / "registered" / m).is_dir())]))
    column = _column_figures(run_dir, out, cases, fusion_methods, checked, registration)
    if column:
        written.setdefault("figures", []).extend(column)
        md_parts += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in column] + [""]
    atomic_write_bytes(out / "README.md", "\n".join(md_parts).encode())
    written["readme"] = [out / "README.md"]

    # The gallery: every case of the run, every fusion method it ran (a failed one shows as failed).
    all_cases = list(info.get("cases", [])) or sorted(set(df["case"]))
    sig_by = {g: sig[sig["group"] == g].drop(columns="group") for g in ("fusion", "registration")}
    contexts = [table_context(t, stem, csv=f"{stem}.csv", sig=sig_by.get(stem))
                for t, stem in ((fusion, "fusion"), (registration_tab, "registration")) if not t.mean.empty]
    written["html"] = write_html(run_dir, out, info=info, tables=contexts,
                                 runtime=None if runtime.mean.empty else runtime, significance=sig,
                                 failures=failures, cases=all_cases,
                                 fusion_methods=list(info.get("methods", [])) or fusion_methods,
                                 registration_methods=checked, figures=written.get("figures", []),
                                 gallery_cases=gallery_cases)
    return written
