"""Do the shipped deep-baseline weights fuse better than the same networks at random initialisation?

For each deep fusion method (every trainable registered method of a deep kind, plus VGGML, which trains
nothing and uses ImageNet VGG-16 features) it fuses every pair of a phantom split twice, with the
shipped weights (VGGML: the ImageNet VGG) and with the seeded random initialisation the training
started from (VGGML: a seeded random VGG-16), and prints SSIM and Qabf (``fusionbench.metrics.fusion``, paper
conventions): means and on how many pairs the shipped weights score higher. The pairs are fused
as they come (unregistered), the same input for both weight sets. ``--csv`` keeps the per-pair values.

``--why`` instead prints what lies behind the two methods whose trained weights do not win (docs/results.md):
how decisive CNN's focus map is, and how closely VGGML's detail weights follow the sources' local
detail energy, with trained and with random weights.

Usage: ``python research/deep_vs_random.py [--methods cnn,mefgan] [--dataset phantom] [--split test] [--pairs N]
[--csv F] [--why]``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fusionbench.nn import to_tensor

#: The two arms, trained and random, as method settings; the default for the trainable methods.
ARMS = {"vggml": {"trained": {"vgg": "imagenet"}, "random": {"vgg": "random"}}}
DEFAULT_ARMS = {"trained": {"weights": "shipped"}, "random": {"weights": "random"}}
#: Registry kinds of the deep fusion methods (the ones `fusionbench fit METHOD --ship` trains).
DEEP_KINDS = ("cnn", "gan", "transformer")


def trainable_deep_methods() -> list[str]:
    """Registered deep fusion methods with trainable weights (those that declare ``train_config``):
    every trainable registered method of a deep kind."""
    from fusionbench.methods import get_method_info, list_methods

    infos = {name: get_method_info(name) for name in list_methods(role="fusion")}
    return [name for name, info in infos.items()
            if info.kind in DEEP_KINDS and hasattr(info.factory, "train_config")]




def why(cases) -> None:
    """CNN: share of decisive focus-map pixels; VGGML: per-tap correlation of the PAT's detail weight
    with the PAT's share of local detail energy (5×5), and the weight's spread."""
    import torch
    from scipy import ndimage as ndi

    from baselines.fusion import vggml
    from fusionbench.methods import create_method

    torch.set_grad_enabled(False)
    for weights, settings in DEFAULT_ARMS.items():
        cnn = create_method("cnn", **settings, device="cpu")
        w = np.concatenate([cnn.weight_map(c.pat, c.mri).ravel() for c in cases])
        print(f"cnn {weights}: W mean {w.mean():.3f}, below 0.1 or above 0.9 on {np.mean(np.abs(w - 0.5) > 0.4):.0%}")
    for weights, settings in ARMS["vggml"].items():
        method = create_method("vggml", **settings, device="cpu")
        corr, spread = [], []
        for c in cases:
            details = [img - vggml.tikhonov_lowpass(img, method.lmbda) for img in (c.pat, c.mri)]
            energy = [ndi.uniform_filter(d ** 2, 5) for d in details]
            share = (energy[0] / (energy[0] + energy[1] + 1e-12)).ravel()
            for wa, _ in method.tap_weights(*(to_tensor(d) for d in details)):
                wa = wa.double().cpu().numpy().ravel()
                corr.append(np.corrcoef(wa, share)[0, 1])
                spread.append(wa.std())
        corr, spread = (np.mean(np.reshape(v, (len(cases), -1)), axis=0) for v in (corr, spread))
        print(f"vggml {weights}: correlation with detail-energy share per tap "
              f"{[round(float(x), 2) for x in corr]}, weight std {[round(float(x), 3) for x in spread]}")


def main(argv=None) -> int:
    import pandas as pd
    import torch

    from fusionbench.data import load_dataset
    from fusionbench.data.io import atomic_write_bytes
    from fusionbench.methods import create_method
    from fusionbench.metrics.fusion import qabf, ssim

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=None, help="NAME,... (default: every deep method)")
    ap.add_argument("--dataset", default="phantom", help="e.g. phantom:version=1.2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--pairs", type=int, default=None, help="only the first N pairs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--why", action="store_true", help="the CNN and VGGML mechanisms instead (README)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.why:
        why(load_dataset(args.dataset, args.split)[: args.pairs or 4])
        return 0
    names = args.methods.split(",") if args.methods else [*trainable_deep_methods(), "vggml"]
    cases = load_dataset(args.dataset, args.split)[: args.pairs]
    rows = []
    for name in names:
        for weights, settings in ARMS.get(name, DEFAULT_ARMS).items():
            method = create_method(name, **settings, device="cpu")
            for case in cases:
                fused = method.fuse(case.pat, case.mri)
                rows.append({"method": name, "weights": weights, "case": case.id,
                             "ssim": ssim(case.pat, case.mri, fused), "qabf": qabf(case.pat, case.mri, fused)})
        print(f"{name} done", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    if args.csv:
        atomic_write_bytes(args.csv, table.to_csv(index=False).encode())
    wide = table.pivot_table(index=["method", "case"], columns="weights", values=["ssim", "qabf"])
    print(f"| method | SSIM trained | SSIM random | higher on | Qabf trained | Qabf random | higher on |  ({len(cases)} {args.split} pairs)")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        w = wide.loc[name]
        cells = []
        for metric in ("ssim", "qabf"):
            trained, random = w[(metric, "trained")], w[(metric, "random")]
            cells += [f"{trained.mean():.3f}", f"{random.mean():.3f}", f"{int((trained > random).sum())}/{len(w)}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
