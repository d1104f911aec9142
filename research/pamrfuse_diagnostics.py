"""Is PAMRFuse+'s registration limited by MLR or by P2M's pseudo-MRI? (README, PAMRFuse+ `lite`)

On phantom pairs (validation split by default, never used for training) it prints the mean
endpoint error inside the body of:

* ``identity``: the unregistered pair;
* ``pamrfuse+``: the trained P2M + MLR;
* ``mlr, perfect target``: the trained MLR with the MRI moved into the PAT frame by the phantom's
  true inverse field as its target, i.e. with a perfect pseudo-MRI;
* ``direct affine / grid, TARGET``: no network at all; per pair, an affine map or a 6×6 cubic
  grid of displacements is fitted by Adam to minimise the registration loss's pixel term,
  ``L1(warp(MRI, flow), TARGET)``, with TARGET the pseudo-MRI or the perfect one. When this fails
  for the pseudo-MRI, no training of MLR on that target can succeed.

With ``--train-mlr STEPS`` it instead trains a fresh MLR alone (batch 2, Adam 1e-3, the pixel
registration loss with smoothness ``--lambda-sm``) on the train split against the frozen P2M's
pseudo-MRI or the perfect one (``--target``), printing the validation endpoint error every 100 steps.

Usage: ``python research/pamrfuse_diagnostics.py [--weights shipped|FOLDER|FILE/checkpoint.pt] [--split val] [--pairs 12]
[--train-mlr 600 --target pseudo|perfect --lambda-sm 10]`` (FOLDER: a weights folder of ``fusionbench fit``; or a training checkpoint).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def load_model(weights: str):
    import torch

    import pamrfuse.method as pm
    from pamrfuse.presets import PAMRFuseConfig
    from fusionbench.weights import read_provenance

    if weights == "shipped":
        return pm.PAMRFusePlus(device="cpu")
    if weights.endswith("checkpoint.pt"):
        state = torch.load(weights, map_location="cpu", weights_only=False)  # our own checkpoint
        cfg = PAMRFuseConfig.from_dict(state["config"])
        model = pm.PAMRFusePlus(preset=cfg, weights=None, device="cpu")
        model.net.load_state_dict(state["net"])
        return model
    # a fit's folder: the configuration its provenance records (any preset or --set)
    recorded = {k: v for k, v in read_provenance(weights)["train_config"].items() if k != "version"}
    return pm.PAMRFusePlus(preset=PAMRFuseConfig.from_dict(recorded), weights=weights, device="cpu")


def as_input(model, img: np.ndarray, size: int):
    """``img`` (H, W) as the network input (1, 1, size, size) on the model's device, area-resampled
    as :class:`pamrfuse.method.PAMRFusePlus` resamples its inputs."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None].to(model.device)
    return t if t.shape[-2:] == (size, size) else F.interpolate(t, size=(size, size), mode="area")


def perfect_target(model, case):
    """The perfect pseudo-MRI: the MRI moved into the PAT frame by the phantom's true inverse field."""
    from fusionbench.warp import warp

    return as_input(model, warp(case.mri, case.meta["flow_mri_to_pat"]).astype(np.float32), model.cfg.size)


def fit_direct(target, moving, kind: str, steps: int = 300, grid: int = 6):
    """A flow (1, 2, S, S) minimising ``L1(warp(moving, flow), target)``: affine or cubic grid."""
    import torch
    import torch.nn.functional as F

    from fusionbench.nn.layers import warp_torch

    size = target.shape[-1]
    rows, cols = torch.meshgrid(*(torch.linspace(-0.5, 0.5, size),) * 2, indexing="ij")
    coords = torch.stack([rows, cols, torch.ones_like(rows)])            # (3, S, S)
    param = torch.zeros((2, 3) if kind == "affine" else (1, 2, grid, grid), requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.05)

    def flow():
        if kind == "affine":  # linear part in pixels per half image, so both parts step alike
            scale = torch.tensor([size / 10, size / 10, 1.0]).view(3, 1, 1)
            return torch.einsum("ij,jhw->ihw", param, coords * scale)[None]
        return F.interpolate(param, size=(size, size), mode="bicubic", align_corners=True)

    for _ in range(steps):
        loss = F.l1_loss(warp_torch(moving, flow()), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return flow().detach()


def train_mlr_alone(model, cases, train_cases, steps: int, target: str, lambda_sm: float, seed: int = 0,
                    reg_vgg: bool = False) -> list[tuple[int, float]]:
    """Endpoint error on ``cases`` every 100 steps of a fresh MLR trained on ``train_cases``; with
    ``reg_vgg`` the loss adds the paper's VGG relu4_1 term to the pixel term."""
    import torch

    from fusionbench.metrics.registration import endpoint_error
    from fusionbench.nn.vgg import VGGTaps
    from pamrfuse.losses import load_vgg, registration_loss
    from pamrfuse.method import mlr_flow_to_input_grid as project_flow
    from pamrfuse.mlr import MLR

    size = model.cfg.size

    def pair(case):
        mri = as_input(model, case.mri, size)
        if target == "perfect":
            return perfect_target(model, case), mri
        with torch.no_grad():
            return model.net.pseudo_mri(as_input(model, case.pat, size)), mri

    train = [pair(c) for c in train_cases]
    evaluation = [pair(c) for c in cases]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vgg = VGGTaps(load_vgg(model.cfg.vgg_source)[0], imagenet_norm=model.cfg.vgg_imagenet_norm) if reg_vgg else None
    mlr = MLR()
    opt = torch.optim.Adam(mlr.parameters(), lr=1e-3)
    curve = []
    for step in range(1, steps + 1):
        idx = rng.integers(len(train), size=2)
        tgt = torch.cat([train[i][0] for i in idx])
        mov = torch.cat([train[i][1] for i in idx])
        loss = registration_loss(tgt, mov, mlr(tgt, mov)["flow"], vgg, lambda_sm=lambda_sm, penalty="l2")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                errs = [endpoint_error(project_flow(mlr(t, m)["flow"], c.pat.shape), c.flow_true,
                                       mask=c.labels_mri > 0)["mean"] for (t, m), c in zip(evaluation, cases)]
            curve.append((step, float(np.mean(errs))))
            print(f"  step {step}: {np.mean(errs):.3f} px", flush=True)
    return curve


def main(argv=None) -> int:
    import torch

    from fusionbench.data import load_dataset
    from fusionbench.metrics.registration import endpoint_error
    from pamrfuse.method import mlr_flow_to_input_grid as project_flow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="shipped")
    ap.add_argument("--split", default="val")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--train-mlr", type=int, default=0, metavar="STEPS")
    ap.add_argument("--target", choices=["pseudo", "perfect"], default="pseudo")
    ap.add_argument("--lambda-sm", type=float, default=10.0)
    ap.add_argument("--reg-vgg", action="store_true", help="--train-mlr with the VGG relu4_1 term too")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    net, size = model.net.eval(), model.cfg.size
    cases = load_dataset("phantom", args.split)[: args.pairs]

    if args.train_mlr:
        print(f"a fresh MLR against the {args.target} target, {'pixel + VGG' if args.reg_vgg else 'pixel'} loss, "
              f"smoothness L2 x{args.lambda_sm:g}; mean endpoint "
              f"error inside the body on {len(cases)} {args.split} pairs:")
        train_mlr_alone(model, cases, load_dataset("phantom", "train"), args.train_mlr, args.target,
                        args.lambda_sm, reg_vgg=args.reg_vgg)
        return 0
    errors: dict[str, list[float]] = {}
    for case in cases:
        mask = case.labels_mri > 0

        def record(name, flow):
            errors.setdefault(name, []).append(endpoint_error(flow, case.flow_true, mask=mask)["mean"])

        record("identity", np.zeros_like(case.flow_true))
        record("pamrfuse+", model.predict_flow(case.pat, case.mri))
        mri = as_input(model, case.mri, size)
        perfect = perfect_target(model, case)
        with torch.no_grad():
            pat = as_input(model, case.pat, size)
            pseudo = net.pseudo_mri(pat)
            if net.mlr is not None:  # the released code's PAT branch also sees the real PAT
                flow = net.mlr(perfect, mri, pat if net.mlr.pat_branch else None)["flow"]
                record("mlr, perfect target", project_flow(flow, case.pat.shape))
        for target_name, target in (("pseudo-MRI", pseudo), ("perfect", perfect)):
            for kind in ("affine", "grid"):
                record(f"direct {kind}, {target_name}", project_flow(fit_direct(target, mri, kind), case.pat.shape))
    print(f"mean endpoint error inside the body, {len(cases)} {args.split} pairs, weights {args.weights}:")
    for name, values in errors.items():
        print(f"  {name:28s} {np.mean(values):6.3f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
