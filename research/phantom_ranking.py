"""Does the phantom rank the classic fusion methods as real PAT/MRI pairs do?

Both inputs are ``fusionbench run`` folders (or their ``results.csv``). For each, the first ``--n``
cases (numeric ids in numeric order, others in text order) of the ten classic methods are scored by
the eight Table-2 metrics; methods are ranked per metric by their mean (1 = best) and by the mean of
those ranks. Prints Spearman's ρ between the two mean-rank vectors and, per metric, between the two
vectors of per-method means.

    python research/phantom_ranking.py PHANTOM_RUN REAL_RUN --n 12 [--json OUT.json]

PHANTOM_RUN, e.g. ``fusionbench run --methods average,...,vggml --dataset phantom:version=2.0
--registration identity --limit 12 --out runs/rank-phantom2``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from fusionbench.results import aggregate, rank_methods
from fusionbench.scoring import FUSION_METRICS

CLASSIC = ("average", "maximum", "bgr", "gtf", "mwgf", "msvd", "nsct", "sai", "vsmwls", "vggml")
TABLE2 = tuple(m for m in FUSION_METRICS if m in ("MI", "VIF", "Qabf", "SF", "SSIM", "FMI_pixel", "FMI_dct",
                                                   "FMI_w"))


def _first_cases(cases, n: int) -> list[str]:
    def key(c):
        c = str(c)
        return (0, int(c), c) if c.isdigit() else (1, 0, c)
    return sorted(dict.fromkeys(map(str, cases)), key=key)[:n]


def ranking(results: Path, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(means, ranks)``: method x metric means and per-metric ranks with ``avg_rank``."""
    path = results / "results.csv" if results.is_dir() else results
    df = pd.read_csv(path, dtype={"case": str})
    df = df[(df["group"] == "fusion") & df["method"].isin(CLASSIC) & df["metric"].isin(TABLE2)]
    missing = sorted(set(CLASSIC) - set(df["method"]))
    if missing:
        raise SystemExit(f"{path}: no fusion rows for {', '.join(missing)}")
    df = df[df["case"].isin(_first_cases(df["case"], n))]
    agg = aggregate(df, "fusion", CLASSIC)
    return agg["mean"].unstack("metric")[list(TABLE2)], rank_methods(agg, "fusion")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phantom", type=Path)
    parser.add_argument("real", type=Path)
    parser.add_argument("--n", type=int, default=12, help="first N cases of each")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    (pm, pr), (rm, rr) = ranking(args.phantom, args.n), ranking(args.real, args.n)
    rho = float(spearmanr(pr["avg_rank"], rr.loc[pr.index, "avg_rank"]).statistic)
    per_metric = {m: float(spearmanr(pm[m], rm.loc[pm.index, m]).statistic) for m in TABLE2}
    table = pd.DataFrame({"phantom avg rank": pr["avg_rank"], "real avg rank": rr.loc[pr.index, "avg_rank"]})
    print(table.sort_values("real avg rank").round(2).to_string())
    print("per metric ρ: " + ", ".join(f"{m} {v:.2f}" for m, v in per_metric.items()))
    print(f"Spearman ρ of the mean ranks (n={args.n}): {rho:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rho": rho, "per_metric": per_metric, "n": args.n,
                                         "phantom": str(args.phantom), "real": str(args.real),
                                         "avg_rank": table.to_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
