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
- ``README.md``: all Markdown tables, the run's configuration and its failures.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..data.io import atomic_write_bytes
from ..results import assemble, load_failures, run_info, wilcoxon_vs_best
from .figures import fused_grid
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


def build_report(run_dir: str | Path, *, figure_cases: int = 3) -> dict[str, list[Path]]:
    """Write the tables, significance tests and figure of ``run_dir``; return the paths by kind."""
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
        notes=["EPE in pixels inside the body, Dice in percent, Folding as a fraction; "
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
    atomic_write_bytes(out / "README.md", "\n".join(md_parts).encode())
    written["readme"] = [out / "README.md"]
    return written
