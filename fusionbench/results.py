"""Long-form results: assembly from case files, aggregation, ranking and significance tests.

A result row is ``method, case, group, metric, value, seconds`` with ``group`` one of
``"fusion"``, ``"registration"`` or ``"time"`` (DESIGN §6). Aggregates are over the cases a
method completed; ``n`` says how many.

Ranking follows the usual convention of fusion papers: per metric the method with the best mean is
rank 1 (ties share the average rank), and the overall rank is the mean of the per-metric ranks.
Significance: for each metric the best method is compared with every other one by the two-sided
paired Wilcoxon signed-rank test on the cases both completed (Wilcoxon 1945; ``scipy.stats.wilcoxon``,
zero differences dropped, exact or normal-approximation p-value as SciPy chooses), and the p-values of
one metric's family of comparisons are Holm-corrected (Holm 1979).
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .data.io import atomic_write_bytes
from .scoring import FUSION_METRICS, GROUND_TRUTH_METRICS, REGISTRATION_METRICS

__all__ = ["COLUMNS", "read_case_files", "assemble", "load_results", "load_failures", "run_info",
           "higher_is_better", "aggregate", "rank_methods", "holm", "paired_wilcoxon", "wilcoxon_vs_best",
           "metric_order"]

COLUMNS = ["method", "case", "group", "metric", "value", "seconds"]
FAILURE_COLUMNS = ["method", "case", "role", "stage", "error"]
_LOWER_IS_BETTER = {("registration", name) for name, higher in GROUND_TRUTH_METRICS if not higher}


def read_case_files(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All result rows and failures recorded under ``run_dir/cases``, sorted."""
    rows, failures = [], []
    for path in sorted(Path(run_dir, "cases").glob("*/*.json")):
        try:
            rec = json.loads(path.read_text())
        except ValueError:  # not possible with atomic writes, but never let one file stop a report
            warnings.warn(f"{path}: unreadable case file skipped", RuntimeWarning, stacklevel=2)
            continue
        if rec.get("status") == "ok":
            rows += [{"method": rec["method"], "case": rec["case"], **r} for r in rec["rows"]]
        else:
            failures.append({k: rec.get(k) for k in FAILURE_COLUMNS})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.sort_values(["method", "case", "group", "metric"], kind="stable").reset_index(drop=True)
    fails = pd.DataFrame(failures, columns=FAILURE_COLUMNS).sort_values(["method", "case"]).reset_index(drop=True)
    return df, fails


def _csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.10g")
    return buf.getvalue().encode()


def assemble(run_dir: str | Path) -> pd.DataFrame:
    """Write ``results.csv`` and ``failures.csv`` from the case files; return the results."""
    df, fails = read_case_files(run_dir)
    atomic_write_bytes(Path(run_dir, "results.csv"), _csv_bytes(df))
    atomic_write_bytes(Path(run_dir, "failures.csv"), _csv_bytes(fails))
    return df


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """``results.csv`` of a run (assembled from the case files if it is missing)."""
    path = Path(run_dir, "results.csv")
    if not path.exists():
        if not Path(run_dir, "cases").is_dir():
            raise FileNotFoundError(f"{run_dir}: no results.csv and no cases/ folder; is this a run folder?")
        return assemble(run_dir)
    return pd.read_csv(path, dtype={"method": str, "case": str, "group": str, "metric": str})


def load_failures(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir, "failures.csv")
    if not path.exists():
        return read_case_files(run_dir)[1]
    return pd.read_csv(path, dtype=str).fillna("")


def run_info(run_dir: str | Path) -> dict:
    """The run's ``run.json`` (empty dict when absent)."""
    try:
        return json.loads(Path(run_dir, "run.json").read_text())
    except (OSError, ValueError):
        return {}


def higher_is_better(metric: str, group: str = "fusion") -> bool:
    """Direction of ``metric`` in ``group``: from ``fusionbench.metrics.METRICS`` when it lists it.

    Otherwise endpoint errors and folding are lower-is-better and everything else higher-is-better.
    """
    from .metrics import METRICS

    spec = METRICS.get(f"{group}.{metric}")
    if spec is not None:
        return spec.higher_is_better
    return (group, metric) not in _LOWER_IS_BETTER


def metric_order(metrics: Iterable[str], group: str) -> list[str]:
    """Paper column order (Table 1 or 2) first, then the rest in sorted order."""
    known = {"fusion": FUSION_METRICS,
             "registration": REGISTRATION_METRICS + tuple(n for n, _ in GROUND_TRUTH_METRICS),
             "time": ("registration", "fusion", "scoring")}.get(group, ())
    metrics = set(metrics)
    return [m for m in known if m in metrics] + sorted(metrics - set(known))


def aggregate(df: pd.DataFrame, group: str, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; 0 for one case) and count per method and metric.

    Returns a frame indexed by ``(method, metric)`` with columns ``mean, std, n``, methods in the
    order of ``methods`` (default sorted) and metrics in paper order.
    """
    sub = df[df["group"] == group]
    if sub.empty:
        return pd.DataFrame(columns=["mean", "std", "n"],
                            index=pd.MultiIndex.from_tuples([], names=["method", "metric"]))
    agg = sub.groupby(["method", "metric"])["value"].agg(["mean", "std", "count"])
    agg = agg.rename(columns={"count": "n"})
    agg["std"] = agg["std"].fillna(0.0)
    # A joint method is listed both as a registration and as a fusion row source: once here.
    order_m = [m for m in dict.fromkeys(methods or []) if m in agg.index.get_level_values(0)]
    order_m += sorted(set(agg.index.get_level_values(0)) - set(order_m))
    order_k = metric_order(agg.index.get_level_values(1), group)
    idx = pd.MultiIndex.from_product([order_m, order_k], names=["method", "metric"])
    return agg.reindex(idx).dropna(subset=["mean"])


def rank_methods(agg: pd.DataFrame, group: str) -> pd.DataFrame:
    """Per-metric ranks of the mean (1 = best, ties averaged) and ``Avg. rank`` (their mean).

    Returns a method x metric frame with an extra ``avg_rank`` column.
    """
    means = agg["mean"].unstack("metric")
    ranks = pd.DataFrame(index=means.index)
    for metric in means.columns:
        ascending = not higher_is_better(metric, group)
        ranks[metric] = means[metric].rank(ascending=ascending, method="average")
    ranks = ranks[list(means.columns)]
    ranks["avg_rank"] = ranks.mean(axis=1)
    return ranks


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (Holm 1979), same order as given; NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def paired_wilcoxon(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float]:
    """Two-sided paired Wilcoxon signed-rank test of ``x`` against ``y`` (same cases, same order).

    Returns ``(n, statistic, p)``: ``p`` is 1 when every difference is 0 and NaN (statistic NaN)
    for no pair, where ``scipy.stats.wilcoxon`` is undefined.
    """
    from scipy.stats import wilcoxon

    diff = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if diff.size == 0:
        return 0, float("nan"), float("nan")
    if not np.any(diff != 0):
        return int(diff.size), 0.0, 1.0
    res = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    return int(diff.size), float(res.statistic), float(res.pvalue)


def wilcoxon_vs_best(df: pd.DataFrame, group: str, methods: Sequence[str] | None = None,
                     alpha: float = 0.05) -> pd.DataFrame:
    """Paired Wilcoxon test of the best method (by mean) against each other one, per metric.

    Columns: ``metric, best, other, n, statistic, p, p_holm, significant``. ``n`` counts the cases
    both methods completed; with fewer than one non-zero difference the test is undefined and
    ``p`` is 1 (identical results) or NaN (no common case).
    """
    agg = aggregate(df, group, methods)
    out = []
    if agg.empty:
        return pd.DataFrame(columns=["metric", "best", "other", "n", "statistic", "p", "p_holm", "significant"])
    means = agg["mean"].unstack("metric")
    sub = df[df["group"] == group]
    for metric in means.columns:
        col = means[metric].dropna()
        if len(col) < 2:
            continue
        best = col.idxmax() if higher_is_better(metric, group) else col.idxmin()
        wide = sub[sub["metric"] == metric].pivot_table(index="case", columns="method", values="value")
        family = []
        for other in col.index:
            if other == best:
                continue
            pair = wide[[best, other]].dropna()
            n, stat, p = paired_wilcoxon(pair[best].to_numpy(), pair[other].to_numpy())
            family.append({"metric": metric, "best": best, "other": other, "n": n, "statistic": stat, "p": p})
        adjusted = holm([r["p"] for r in family])
        for r, pa in zip(family, adjusted):
            r["p_holm"] = float(pa)
            r["significant"] = bool(pa < alpha) if not np.isnan(pa) else False
        out += family
    return pd.DataFrame(out, columns=["metric", "best", "other", "n", "statistic", "p", "p_holm", "significant"])
