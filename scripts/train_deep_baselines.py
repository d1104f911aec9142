"""Retrain the shipped weights of the deep fusion baselines from scratch.

Every registered fusion method of kind cnn/gan/transformer that is trainable and built on
:class:`baselines.fusion._deep.TrainableFusion` is trained on the offline training set (the
phantom train split plus the images bundled with scikit-image), with its own seeded settings,
checkpointed under ``--workdir`` so an interrupted run resumes. Then it is compared with the same
network at its random initialisation on ``--eval-pairs`` phantom test pairs (SSIM and Qabf of
:mod:`fusionbench.metrics.fusion`); the float16 copy is checked against the float32 one, and the
weights are written to ``baselines/weights/NAME.pt`` with the ``NAME.json`` provenance record
(float16 when it keeps the metrics within ``--half-tolerance``).

Examples::

    python scripts/train_deep_baselines.py                      # all deep methods, shipped settings
    python scripts/train_deep_baselines.py --methods cnn,densefuse --device cuda
    python scripts/train_deep_baselines.py --methods densefuse --steps 20 --out /tmp/w   # smoke run
    python scripts/train_deep_baselines.py --methods ddcgan --set steps=60 batch=4 patch=48 max_inner=4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from baselines.fusion._deep import WEIGHTS_DIR, TrainableFusion, TrainingData  # noqa: E402
from fusionbench.data import load_dataset  # noqa: E402
from fusionbench.methods import create_method, get_method_info, list_methods  # noqa: E402

DEEP_KINDS = ("cnn", "gan", "transformer")


def trainable_deep_methods() -> list[str]:
    """Registered deep fusion methods whose weights this script can train and ship."""
    names = []
    for name in list_methods(role="fusion"):
        info = get_method_info(name)
        if info.kind in DEEP_KINDS and isinstance(info.factory, type) and issubclass(info.factory, TrainableFusion):
            names.append(name)
    return names


def evaluate(method, cases) -> dict[str, float]:
    """Mean SSIM and Qabf (paper conventions) of ``method`` on ``cases``."""
    from fusionbench.metrics.fusion import qabf, ssim

    scores = {"ssim": [], "qabf": []}
    for case in cases:
        fused = method.fuse(case.pat, case.mri)
        scores["ssim"].append(ssim(case.pat, case.mri, fused))
        scores["qabf"].append(qabf(case.pat, case.mri, fused))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def train_one(name: str, args, train_cases, eval_cases, log) -> dict:
    kw = {"weights": "random", "device": args.device, "seed": args.seed, **args.settings}
    if args.steps:
        kw["steps"] = args.steps
    method = create_method(name, **kw)
    baseline = evaluate(method, eval_cases)
    log(f"{name}: random weights {baseline}")
    data = TrainingData(train_cases, natural=method.natural_images)
    t0 = time.perf_counter()
    history = method.train(data, log=log, checkpoint=Path(args.workdir) / f"{name}.ckpt",
                           checkpoint_every=args.checkpoint_every)
    seconds = time.perf_counter() - t0
    method.to("cpu")
    trained = evaluate(method, eval_cases)
    log(f"{name}: trained {trained} after {len(history)} steps ({seconds:.0f} s)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(args.workdir) / f"{name}-half.pt"
    method.save(staging, data=data, history=history, seconds=seconds, half=True)
    half = create_method(name, weights=str(staging), device="cpu")
    half_scores = evaluate(half, eval_cases)
    keeps = all(abs(half_scores[k] - trained[k]) <= args.half_tolerance for k in trained)
    beats = all(trained[k] > baseline[k] for k in trained)
    record = {"eval_cases": [c.id for c in eval_cases], "eval_random": baseline, "eval_trained": trained,
              "eval_float16": half_scores, "beats_random": beats, "dataset": args.dataset}
    if not beats and not args.ship_anyway:
        log(f"{name}: NOT shipped: trained weights do not beat random ones on SSIM and Qabf")
        return record
    method.save(out / f"{method.weights_name}.pt", data=data,
                history=history, seconds=seconds, half=keeps, extra=record)
    log(f"{name}: shipped {'float16' if keeps else 'float32'} weights to {out}")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="all", help="comma-separated names (default: every trainable deep method)")
    parser.add_argument("--dataset", default="phantom", help="dataset spec whose train split is used")
    parser.add_argument("--steps", type=int, default=None, help="override every method's step count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=str(WEIGHTS_DIR))
    parser.add_argument("--workdir", default=str(ROOT / ".train-deep"))
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--eval-pairs", type=int, default=6)
    parser.add_argument("--half-tolerance", type=float, default=2e-3)
    parser.add_argument("--ship-anyway", action="store_true", help="write weights even if they do not beat random")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings for every named method (constructor keywords, JSON values)")
    args = parser.parse_args(argv)
    args.settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        try:
            args.settings[key] = json.loads(value)
        except json.JSONDecodeError:
            args.settings[key] = value
    if args.threads:
        torch.set_num_threads(args.threads)
    available = trainable_deep_methods()
    names = available if args.methods == "all" else [m.strip().lower() for m in args.methods.split(",")]
    unknown = [n for n in names if n not in available]
    if unknown:
        parser.error(f"not trainable deep methods: {', '.join(unknown)} (available: {', '.join(available)})")

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    train_cases = load_dataset(args.dataset, split="train")
    eval_cases = load_dataset(args.dataset, split="test")[:args.eval_pairs]
    summary = {name: train_one(name, args, train_cases, eval_cases, log) for name in names}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
