"""Retrain the shipped weights of the learned registration baselines from scratch.

``voxelmorph`` (PAT → MRI, masked Parzen MI) and ``p2m+vm`` (pseudo-MRI → MRI, local NCC; needs
the shipped PAMRFuse+ ``lite`` weights for P2M) are fitted on the phantom train split with their
default, seeded settings (the fit is cached under ``--workdir``), scored against ``identity`` by the
ground-truth endpoint error on ``--eval-pairs`` test pairs, and written to
``baselines/weights/NAME.pt`` with the ``NAME.json`` provenance record (training data hash,
settings, loss at the start and end, and the measured endpoint errors).

Examples::

    python scripts/train_registration.py                        # both methods
    python scripts/train_registration.py --methods p2m+vm --device cuda
    python scripts/train_registration.py --steps 5 --out /tmp/w # smoke run
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from baselines.registration.voxelmorph import WEIGHTS_DIR  # noqa: E402
from fusionbench.data import load_dataset  # noqa: E402
from fusionbench.data.cache import default_cache_dir  # noqa: E402
from fusionbench.methods import create_method  # noqa: E402
from fusionbench.metrics.registration import endpoint_error  # noqa: E402
from fusionbench.nn.training import save_weights  # noqa: E402

METHODS = ("voxelmorph", "p2m+vm")


def mean_epe(method, cases) -> float:
    """Mean endpoint error (pixels, inside the body) of ``method`` on ``cases``; None: identity."""
    errors = []
    for case in cases:
        flow = np.zeros_like(case.flow_true) if method is None else method.register(case.pat, case.mri)[1]
        errors.append(endpoint_error(flow, case.flow_true, mask=case.labels_mri > 0)["mean"])
    return float(np.mean(errors))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--dataset", default="phantom")
    ap.add_argument("--steps", type=int, default=None, help="override the methods' training steps")
    ap.add_argument("--lr", type=float, default=None, help="override the methods' learning rate")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval-pairs", type=int, default=16)
    ap.add_argument("--workdir", type=Path, default=default_cache_dir() / "fit" / "registration")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_dataset(args.dataset, "train")
    test = load_dataset(args.dataset, "test")[: args.eval_pairs]
    identity = mean_epe(None, test)
    print(f"identity: endpoint error {identity:.3f} px on {len(test)} test pairs", flush=True)
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v}
        method = create_method(name, weights=None, device=args.device, **overrides)
        t0 = time.perf_counter()
        provenance = method.fit(train, args.workdir)
        seconds = time.perf_counter() - t0
        epe = mean_epe(method, test)
        print(f"{name}: endpoint error {epe:.3f} px (identity {identity:.3f}); fit {seconds:.0f} s", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        save_weights(args.out / f"{method.weights_name}.pt", method.net.state_dict(), {
            **provenance, "fit_seconds_this_run": round(seconds, 1), "device": str(method.device),
            "eval": {"pairs": len(test), "epe_mean_px": round(epe, 4), "identity_epe_mean_px": round(identity, 4)},
        })
        print(f"wrote {args.out / (method.weights_name + '.pt')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
