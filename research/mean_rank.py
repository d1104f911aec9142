"""Mean rank of each fusion method over the paper's eight Table-2 metrics in one run.

Each metric ranks the methods by their mean over the run's cases (1 = best), and a method's mean
rank is the mean of its eight ranks: the package's own ranking (``fusionbench.results``) restricted
to MI, VIF, Qabf, SF, SSIM, FMI_pixel, FMI_dct and FMI_w, the metrics the seed paper's Table 2
reports. Every row of the run counts, external rows included.

    python research/mean_rank.py runs/phantom-all
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fusionbench.results import aggregate, rank_methods
from phantom_ranking import TABLE2


def mean_ranks(run: Path) -> pd.Series:
    path = run / "results.csv" if run.is_dir() else run
    df = pd.read_csv(path, dtype={"case": str})
    df = df[(df["group"] == "fusion") & df["metric"].isin(TABLE2)]
    if df.empty:
        raise SystemExit(f"{path}: no fusion rows for the Table-2 metrics")
    methods = tuple(dict.fromkeys(df["method"]))
    return rank_methods(aggregate(df, "fusion", methods), "fusion")["avg_rank"].sort_values()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a fusionbench run folder (or its results.csv)")
    args = parser.parse_args(argv)
    print(mean_ranks(args.run).round(2).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
