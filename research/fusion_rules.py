"""Score one set of weights of a deep fusion method under each of its fusion rules.

Loads a weights folder (default: the shipped one) into the method once per value of a setting
that changes only how features are fused at test time (DenseFuse's ``strategy``) and prints the
validation score the fits use (``fusionbench.fitting.validation_scores``: mean of SSIM and Qabf of
the fusion of each held-out pair aligned by its true flow) on the first ``--pairs`` pairs of the
val split. How docs/baselines.md chose DenseFuse's default rule.

Usage: ``python research/fusion_rules.py [--method densefuse] [--weights FOLDER]
[--setting strategy] [--values addition,mean,l1] [--dataset phantom] [--pairs 8]``
"""
from __future__ import annotations

import argparse


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="densefuse")
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    ap.add_argument("--setting", default="strategy")
    ap.add_argument("--values", default="addition,mean,l1")
    ap.add_argument("--dataset", default="phantom")
    ap.add_argument("--pairs", type=int, default=8)
    args = ap.parse_args(argv)

    import torch

    from fusionbench.data import load_dataset
    from fusionbench.fitting import validation_scores
    from fusionbench.methods import create_method
    from fusionbench.weights import load_into

    torch.set_num_threads(1)
    cases = load_dataset(args.dataset, split="val")[: args.pairs]
    for value in args.values.split(","):
        method = create_method(args.method, device="cpu", **{args.setting: value})
        if args.weights:  # a fit with other training settings than the defaults: its weights anyway
            load_into(method, args.weights, check_config=False)
        score = validation_scores(method, cases)["SSIM_Qabf"]
        print(f"{args.method} {args.setting}={value}: SSIM_Qabf {score:.3f} ({len(cases)} {args.dataset} val pairs)")


if __name__ == "__main__":
    main()
