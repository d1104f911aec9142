"""Ranked result tables as CSV, LaTeX (booktabs) and Markdown.

Layout of the seed paper's tables: one row per method, one column per metric headed by its name and
direction arrow (↑ higher is better, ↓ lower is better), cells ``mean ± std`` over the test cases,
the best mean per column in bold (all tied bests), and an ``Avg. rank`` column, the mean of the
per-metric ranks (see :func:`fusionbench.results.rank_methods`). The CSV keeps full precision
(``METRIC_mean``, ``METRIC_std`` columns plus ``n`` and ranks); LaTeX and Markdown round each column
to three significant digits of its largest value (at most four decimals).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data.io import atomic_write_bytes
from ..results import aggregate, higher_is_better, metric_order, rank_methods

__all__ = ["Table", "build_table", "runtime_table", "significance_table", "to_csv", "to_latex",
           "to_markdown", "write_table", "read_table", "formatted_cells"]

_TIME_LABELS = {"registration": "Registration (s)", "fusion": "Fusion (s)", "scoring": "Scoring (s)"}


@dataclass
class Table:
    """A formatted-ready table: ``mean``/``std`` are method x column frames."""

    title: str
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    higher: dict[str, bool | None]  # None: no direction (runtime), no arrow, no bold
    avg_rank: pd.Series | None = None
    labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Per row, where its numbers come from (trained weights, an external folder): a last column.
    row_notes: dict[str, str] = field(default_factory=dict)

    def row_note(self, method: str) -> str:
        return self.row_notes.get(method, "")

    @property
    def columns(self) -> list[str]:
        return list(self.mean.columns)

    def label(self, col: str) -> str:
        return self.labels.get(col, col)

    def best(self) -> dict[str, set[str]]:
        out = {}
        for col in self.columns:
            if self.higher.get(col) is None:
                continue
            values = self.mean[col].dropna()
            if values.empty:
                continue
            target = values.max() if self.higher[col] else values.min()
            out[col] = set(values.index[np.isclose(values, target, rtol=1e-12, atol=0)])
        return out


def build_table(df: pd.DataFrame, group: str, title: str, methods: Sequence[str] | None = None,
                notes: Sequence[str] = (), row_notes: dict[str, str] | None = None) -> Table:
    """Aggregate ``group`` rows of ``df`` into a ranked :class:`Table`; ``row_notes`` (method ->
    text) become its weights column."""
    agg = aggregate(df, group, methods)
    mean = agg["mean"].unstack("metric")
    order_rows = list(dict.fromkeys(agg.index.get_level_values(0)))
    order_cols = list(dict.fromkeys(agg.index.get_level_values(1)))
    mean = mean.reindex(index=order_rows, columns=order_cols)
    std = agg["std"].unstack("metric").reindex(index=order_rows, columns=order_cols)
    n = agg["n"].unstack("metric").reindex(index=order_rows, columns=order_cols)
    ranks = rank_methods(agg, group).reindex(order_rows) if not agg.empty else None
    return Table(title=title, mean=mean, std=std, n=n,
                 higher={c: higher_is_better(c, group) for c in order_cols},
                 avg_rank=None if ranks is None else ranks["avg_rank"], notes=list(notes),
                 row_notes={m: t for m, t in (row_notes or {}).items() if t and m in order_rows})


def runtime_table(df: pd.DataFrame, methods: Sequence[str] | None = None) -> Table:
    """Seconds per case for registration, fusion and scoring, per method (no ranking)."""
    agg = aggregate(df, "time", methods)
    mean = agg["mean"].unstack("metric")
    rows = list(dict.fromkeys(agg.index.get_level_values(0)))
    cols = metric_order(agg.index.get_level_values(1), "time")
    mean = mean.reindex(index=rows, columns=cols)
    std = agg["std"].unstack("metric").reindex(index=rows, columns=cols)
    n = agg["n"].unstack("metric").reindex(index=rows, columns=cols)
    return Table(title="Runtime per case", mean=mean, std=std, n=n, higher={c: None for c in cols},
                 labels={c: _TIME_LABELS.get(c, c) for c in cols},
                 notes=["Wall-clock seconds per case in one worker; registration of fusion methods "
                        "is shared and listed under the registration method."])


def with_time_column(table: Table, df: pd.DataFrame, stage: str) -> Table:
    """``table`` plus the seconds per case of ``stage`` (e.g. registration) as a last column.

    The column is informative only: it takes no part in the average rank and is not bolded.
    """
    times = df[(df["group"] == "time") & (df["metric"] == stage) & df["method"].isin(table.mean.index)]
    if times.empty:
        return table
    by_method = times.groupby("method")["value"]
    col = f"time_{stage}"
    mean = table.mean.assign(**{col: by_method.mean().reindex(table.mean.index)})
    std = table.std.assign(**{col: by_method.std().fillna(0.0).reindex(table.mean.index)})
    n = table.n.assign(**{col: by_method.count().reindex(table.mean.index)})
    return replace(table, mean=mean, std=std, n=n, higher={**table.higher, col: None},
                   labels={**table.labels, col: _TIME_LABELS.get(stage, stage)})


def significance_table(sig: pd.DataFrame) -> pd.DataFrame:
    """The Wilcoxon/Holm frame with rounded p-values, for Markdown."""
    out = sig.copy()
    for col in ("p", "p_holm"):
        out[col] = out[col].map(lambda p: "–" if pd.isna(p) else f"{p:.3g}")
    out["statistic"] = out["statistic"].map(lambda s: "–" if pd.isna(s) else f"{s:g}")
    return out


# -------------------------------------------------------------------------------- formatting

def _decimals(values: pd.Series) -> int:
    finite = values[np.isfinite(values)].abs()
    if finite.empty or finite.max() == 0:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(finite.max())))))


def _cells(table: Table) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    cells = pd.DataFrame(index=table.mean.index, columns=table.columns, dtype=object)
    for col in table.columns:
        d = _decimals(pd.concat([table.mean[col], table.std[col]]).astype(float))
        for m in table.mean.index:
            mu, sd = table.mean.at[m, col], table.std.at[m, col]
            cells.at[m, col] = None if pd.isna(mu) else (f"{mu:.{d}f}", f"{sd:.{d}f}")
    return cells, table.best()


def formatted_cells(table: Table) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """Per method and column the rounded ``(mean, std)`` strings of the Markdown and LaTeX tables
    (None where there is no value), and per column the best methods."""
    return _cells(table)


def _arrow(higher: bool | None, latex: bool) -> str:
    if higher is None:
        return ""
    if latex:
        return r" $\uparrow$" if higher else r" $\downarrow$"
    return " ↑" if higher else " ↓"


def to_csv(table: Table) -> str:
    """Full-precision CSV: ``method, <metric>_mean, <metric>_std, <metric>_n, ..., avg_rank``."""
    frame = pd.DataFrame(index=table.mean.index)
    frame.index.name = "method"
    for col in table.columns:
        frame[f"{col}_mean"] = table.mean[col]
        frame[f"{col}_std"] = table.std[col]
        frame[f"{col}_n"] = table.n[col].astype("Int64")
    if table.avg_rank is not None:
        frame["avg_rank"] = table.avg_rank
    if table.row_notes:
        frame["weights"] = [table.row_note(m) for m in frame.index]
    return frame.to_csv(float_format="%.10g")


def _latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(ch, ch) for ch in str(text))


def to_latex(table: Table, label: str = "") -> str:
    """A ``table`` float with a booktabs ``tabular``; needs ``\\usepackage{booktabs,graphicx}``."""
    cells, best = _cells(table)
    cols = table.columns
    has_rank = table.avg_rank is not None
    spec = "l" + "c" * (len(cols) + has_rank) + "l" * bool(table.row_notes)
    head = ["Method"] + [_latex_escape(table.label(c)) + _arrow(table.higher.get(c), True) for c in cols]
    if has_rank:
        head.append(r"Avg.\ rank $\downarrow$")
    if table.row_notes:
        head.append("Weights")
    lines = [r"\begin{table}[htbp]", r"\centering", r"\caption{" + _latex_escape(table.title) + "}"]
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(head) + r" \\", r"\midrule"]
    best_rank = table.avg_rank.min() if has_rank and table.avg_rank.notna().any() else None
    for m in table.mean.index:
        row = [_latex_escape(m)]
        for c in cols:
            cell = cells.at[m, c]
            if cell is None:
                row.append("--")
                continue
            text = f"{cell[0]} $\\pm$ {cell[1]}"
            row.append(r"\textbf{" + text + "}" if m in best.get(c, ()) else text)
        if has_rank:
            r = table.avg_rank.get(m)
            text = "--" if pd.isna(r) else f"{r:.2f}"
            row.append(r"\textbf{" + text + "}" if best_rank is not None and r == best_rank else text)
        if table.row_notes:
            row.append(r"{\footnotesize " + _latex_escape(table.row_note(m)) + "}")
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    for note in table.notes:
        lines.append(r"\par\footnotesize " + _latex_escape(note))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table, best cells in ``**bold**``."""
    cells, best = _cells(table)
    cols = table.columns
    has_rank = table.avg_rank is not None
    head = ["Method"] + [table.label(c) + _arrow(table.higher.get(c), False) for c in cols]
    if has_rank:
        head.append("Avg. rank ↓")
    if table.row_notes:
        head.append("Weights")
    lines = [f"### {table.title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + [":---:"] * (len(head) - 1)) + "|"]
    best_rank = table.avg_rank.min() if has_rank and table.avg_rank.notna().any() else None
    for m in table.mean.index:
        row = [m.replace("|", r"\|")]
        for c in cols:
            cell = cells.at[m, c]
            if cell is None:
                row.append("–")
                continue
            text = f"{cell[0]} ± {cell[1]}"
            row.append(f"**{text}**" if m in best.get(c, ()) else text)
        if has_rank:
            r = table.avg_rank.get(m)
            text = "–" if pd.isna(r) else f"{r:.2f}"
            row.append(f"**{text}**" if best_rank is not None and r == best_rank else text)
        if table.row_notes:
            row.append(table.row_note(m).replace("|", r"\|"))
        lines.append("| " + " | ".join(row) + " |")
    lines += [""] + [f"_{note}_" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def write_table(table: Table, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.csv``, ``stem.tex`` and ``stem.md`` atomically; return their paths."""
    out_dir = Path(out_dir)
    paths = []
    for suffix, text in ((".csv", to_csv(table)), (".tex", to_latex(table, label=f"tab:{stem}")),
                         (".md", to_markdown(table))):
        path = out_dir / f"{stem}{suffix}"
        atomic_write_bytes(path, text.encode())
        paths.append(path)
    return paths


def read_table(out_dir: str | Path, stem: str) -> Table | None:
    """The :class:`Table` that :func:`write_table` wrote as ``stem.csv`` (numbers, full precision)
    and ``stem.md`` (title, column labels, direction arrows, notes); None without ``stem.csv``.

    Without ``stem.md`` the columns keep their names and have no direction.
    """
    out_dir = Path(out_dir)
    try:
        frame = pd.read_csv(out_dir / f"{stem}.csv", dtype={"method": str}, keep_default_na=False,
                            na_values=[""]).set_index("method")
    except (OSError, ValueError, KeyError):
        return None
    cols = [c[:-5] for c in frame.columns if c.endswith("_mean")]
    mean = pd.DataFrame({c: pd.to_numeric(frame[f"{c}_mean"], errors="coerce") for c in cols}, index=frame.index)

    def column(name: str) -> pd.Series:
        return pd.to_numeric(frame[name], errors="coerce") if name in frame else pd.Series(np.nan, index=frame.index)

    std = pd.DataFrame({c: column(f"{c}_std") for c in cols}, index=frame.index)
    n = pd.DataFrame({c: column(f"{c}_n") for c in cols}, index=frame.index)
    title, labels, higher, notes = stem, {}, {c: None for c in cols}, []
    try:
        md = (out_dir / f"{stem}.md").read_text().splitlines()
    except OSError:
        md = []
    header = next((line for line in md if line.startswith("| Method")), None)
    for line in md:
        if line.startswith("### "):
            title = line[4:].strip()
        elif line.startswith("_") and line.endswith("_") and len(line) > 1:
            notes.append(line[1:-1])
    if header is not None:
        heads = [h.strip() for h in header.strip().strip("|").split(" | ")][1:1 + len(cols)]
        for c, h in zip(cols, heads):
            if h.endswith(" ↑") or h.endswith(" ↓"):
                higher[c] = h.endswith(" ↑")
                h = h[:-2]
            labels[c] = h
    weights = frame["weights"].fillna("").astype(str).to_dict() if "weights" in frame else {}
    return Table(title=title, mean=mean, std=std, n=n, higher=higher,
                 avg_rank=pd.to_numeric(frame["avg_rank"], errors="coerce") if "avg_rank" in frame else None,
                 labels=labels, notes=notes, row_notes={m: t for m, t in weights.items() if t})
