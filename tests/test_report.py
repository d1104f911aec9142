"""Aggregation, ranking, significance tests and the table writers, on hand-made results."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from fusionbench.report.tables import build_table, runtime_table, to_csv, to_latex, to_markdown
from fusionbench.results import aggregate, higher_is_better, holm, rank_methods, wilcoxon_vs_best


def _rows(method, metric, values, group="fusion"):
    return [{"method": method, "case": f"c{i}", "group": group, "metric": metric, "value": v, "seconds": 0.01}
            for i, v in enumerate(values)]


@pytest.fixture
def results():
    rows = (_rows("a", "MI", [1.0, 2.0, 3.0]) + _rows("b", "MI", [2.0, 3.0, 4.0]) + _rows("c", "MI", [0.0, 0.0, 3.0])
            + _rows("a", "SF", [0.04, 0.04, 0.04]) + _rows("b", "SF", [0.01, 0.02, 0.03])
            + _rows("c", "SF", [0.05, 0.03, 0.04])
            + _rows("r", "EPE_mean", [1.0, 1.0], "registration") + _rows("s", "EPE_mean", [3.0, 5.0], "registration")
            + _rows("a", "fusion", [0.5, 0.7], "time"))
    return pd.DataFrame(rows)


def test_aggregate_mean_std_and_count(results):
    agg = aggregate(results, "fusion", methods=["c", "b", "a"])
    assert list(agg.index.get_level_values(0).unique()) == ["c", "b", "a"]
    assert agg.loc[("a", "MI"), "mean"] == 2.0
    assert agg.loc[("a", "MI"), "std"] == pytest.approx(1.0)  # sample std (ddof=1) of 1, 2, 3
    assert agg.loc[("c", "MI"), "mean"] == 1.0 and agg.loc[("c", "MI"), "n"] == 3
    assert list(agg.loc["a"].index) == ["MI", "SF"]  # paper column order


def test_ranks_and_directions(results):
    ranks = rank_methods(aggregate(results, "fusion"), "fusion")
    # MI means a 2, b 3, c 1; SF means a 0.04, b 0.02, c 0.04 (tie -> 1.5 each).
    assert ranks.loc["b", "MI"] == 1 and ranks.loc["c", "MI"] == 3
    assert ranks.loc["a", "SF"] == 1.5 and ranks.loc["c", "SF"] == 1.5 and ranks.loc["b", "SF"] == 3
    assert ranks.loc["a", "avg_rank"] == pytest.approx(1.75)
    assert not higher_is_better("EPE_mean", "registration") and higher_is_better("Dice", "registration")
    reg = rank_methods(aggregate(results, "registration"), "registration")
    assert reg.loc["r", "EPE_mean"] == 1  # lower endpoint error is better


def test_holm_known_values():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.01]), [0.5, 0.02])
    out = holm([np.nan, 0.2, 0.9])
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.4) and out[2] == pytest.approx(0.9)


def test_wilcoxon_best_against_others_matches_scipy():
    rng = np.random.default_rng(0)
    base = rng.random(12)
    rows = (_rows("best", "MI", base + 1.0) + _rows("close", "MI", base + 1.0 + rng.normal(0, 0.01, 12))
            + _rows("same", "MI", base + 1.0 - 1e-3 * np.arange(12)) + _rows("worse", "MI", base))
    df = pd.DataFrame(rows)
    sig = wilcoxon_vs_best(df, "fusion").set_index("other")
    assert set(sig["best"]) == {"best"}
    expected = wilcoxon(base + 1.0, base)
    assert sig.loc["worse", "p"] == pytest.approx(expected.pvalue)
    assert sig.loc["worse", "n"] == 12
    ps = [sig.loc[m, "p"] for m in sig.index]
    np.testing.assert_allclose(sig["p_holm"], holm(ps))
    assert bool(sig.loc["worse", "significant"])
    identical = pd.DataFrame(_rows("x", "MI", [1.0, 2.0]) + _rows("y", "MI", [1.0, 2.0]))
    assert wilcoxon_vs_best(identical, "fusion")["p"].tolist() == [1.0]


def test_markdown_and_csv_layout(results):
    table = build_table(results, "fusion", "Fusion", methods=["a", "b", "c"])
    md = to_markdown(table)
    header = md.splitlines()[2]
    assert header == "| Method | MI ↑ | SF ↑ | Avg. rank ↓ |"
    row_b = next(line for line in md.splitlines() if line.startswith("| b "))
    assert row_b == "| b | **3.00 ± 1.00** | 0.0200 ± 0.0100 | 2.00 |"
    row_a = next(line for line in md.splitlines() if line.startswith("| a "))
    assert "**0.0400 ± 0.0000**" in row_a and row_a.endswith("| **1.75** |")
    csv = pd.read_csv(pd.io.common.StringIO(to_csv(table)), index_col="method")
    assert csv.loc["c", "MI_mean"] == 1.0 and csv.loc["c", "MI_n"] == 3
    assert csv.loc["a", "avg_rank"] == 1.75
    rt = to_markdown(runtime_table(results))
    assert "| Method | Fusion (s) |" in rt and "| a | 0.600 ± 0.141 |" in rt and "↑" not in rt


def test_latex_escapes_and_uses_booktabs(results):
    df = results.replace({"SF": "FMI_pixel"})
    tex = to_latex(build_table(df, "fusion", "Fusion 100% & more"))
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"FMI\_pixel $\uparrow$" in tex and r"Fusion 100\% \& more" in tex
    assert r"\textbf{3.00 $\pm$ 1.00}" in tex
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert all(line.count("&") == 3 for line in body)  # method + 2 metrics + rank


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(results, tmp_path):
    doc = ("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs,graphicx}\n"
           "\\begin{document}\n" + to_latex(build_table(results, "fusion", "Fusion"))
           + to_latex(runtime_table(results)) + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_registration_time_column_is_shown_but_not_ranked():
    from fusionbench.report.tables import build_table, with_time_column

    rows = []
    for case in ("c1", "c2"):
        for method, epe, sec in (("fast-bad", 3.0, 0.1), ("slow-good", 1.0, 5.0)):
            rows.append({"method": method, "case": case, "group": "registration", "metric": "EPE_mean",
                         "value": epe, "seconds": 0.0})
            rows.append({"method": method, "case": case, "group": "time", "metric": "registration",
                         "value": sec + (0.2 if case == "c2" else 0.0), "seconds": 0.0})
    df = pd.DataFrame(rows)
    table = with_time_column(build_table(df, "registration", "t"), df, "registration")
    assert table.columns == ["EPE_mean", "time_registration"]
    assert table.mean.loc["slow-good", "time_registration"] == pytest.approx(5.1)
    assert table.std.loc["slow-good", "time_registration"] == pytest.approx(np.std([5.0, 5.2], ddof=1))
    assert table.higher["time_registration"] is None and table.label("time_registration") == "Registration (s)"
    # the ranking is by quality only: the slow, accurate method stays first
    assert table.avg_rank["slow-good"] == 1.0 and table.avg_rank["fast-bad"] == 2.0


def test_a_joint_method_listed_twice_is_aggregated_once():
    # PAMRFuse+ is a registration row source and a fusion row source: the runtime table lists it once.
    df = pd.DataFrame([{"method": m, "case": c, "group": "time", "metric": "fusion", "value": v, "seconds": v}
                       for m, v in (("joint", 2.0), ("average", 0.01)) for c in ("c1", "c2")])
    agg = aggregate(df, "time", ["joint", "average", "joint"])
    assert list(agg.index.get_level_values(0)) == ["joint", "average"]
    table = runtime_table(df, ["joint", "average", "joint"])
    assert table.mean.loc["joint", "fusion"] == 2.0
