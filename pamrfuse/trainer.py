"""Two-stage training of PAMRFuse+ (Zhong et al. 2024, §2.5; spec §5-6).

Stage I (``epochs_stage1``): P2M and MLR side by side (L_pst + L_GAN + L_reg; the registration
loss reaches the P2M generator through the pseudo-MRI, spec §7 item 1, only with ``reg_to_p2m``,
off by default: docs/pamrfuse.md) and DFDF as an auto-encoder
of PAT and MRI (L_PA + alpha1 L_MR + alpha2 L_decomp). Stage II (``epochs_stage2``): P2M frozen,
MLR and DFDF (encoder, decoder, fusion layers) jointly on the registered PAT and the MRI
(L_reg + L_int + alpha3 L_grad + alpha4 L_decomp); the fusion loss reaches the MLR through the
registered PAT ("feedback of fusion").

Optimisers: Adam per part (P2M 2e-4, betas 0.5/0.999; MLR 1e-3; DFDF 1e-4), StepLR x0.5 every
``lr_step`` epochs for all parts with a floor of 1e-6, zero_grad every step, DFDF gradients
clipped to norm 0.01. Checkpoint after every epoch (atomic), resumable; per-epoch data order
from ``(seed, epoch)`` so a resumed run is identical to an uninterrupted one on CPU. Mixed
precision (bfloat16 autocast) on CUDA. Step times and the length of a ``lite`` run on 2 CPU cores:
docs/pamrfuse.md.

Command line: ``fusionbench fit pamrfuse+ --preset lite`` (resumable: rerun the same command).
"""
from __future__ import annotations

import io
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from fusionbench.data.io import atomic_write_bytes
from fusionbench.fitting import BudgetExhausted, FitControl, TrainingClock
from fusionbench.nn.layers import resolve_device
from fusionbench.nn.training import seed_everything
from fusionbench.nn.vgg import VGGTaps

from . import losses as L
from .model import PAMRFuseNet, prepare_arrays
from .monitor import TrainingProgress, save_loss_curves
from .p2m import ImagePool, to_signed, to_unit
from .presets import PAMRFuseConfig, get_config

__all__ = ["CHECKPOINT", "Trainer", "fit_pamrfuse"]

#: The checkpoint a rerun in the same work folder resumes from.
CHECKPOINT = "checkpoint.pt"


def _scheduler(opt: torch.optim.Optimizer, cfg: PAMRFuseConfig, base_lr: float):
    floor = cfg.lr_floor / base_lr
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda epoch: max(cfg.lr_gamma ** (epoch // cfg.lr_step), floor))


class Trainer:
    """Holds model, optimisers, schedulers, pools and history; one :meth:`run` trains to the end."""

    def __init__(self, cfg: PAMRFuseConfig, workdir, device: str = "auto", progress: bool = True):
        self.cfg, self.workdir = cfg, Path(workdir)
        self.device = resolve_device(device)
        self.progress = progress
        seed_everything(cfg.seed)
        self.net = PAMRFuseNet(cfg).to(self.device)
        vgg, self.vgg_source = L.load_vgg(cfg.vgg_source, seed=cfg.seed)
        self.vgg = VGGTaps(vgg, imagenet_norm=cfg.vgg_imagenet_norm).to(self.device)
        net = self.net
        self.opts: dict[str, torch.optim.Optimizer] = {}
        lrs: dict[str, float] = {}
        if net.p2m is not None:
            self.opts["p2m_g"] = torch.optim.Adam(net.p2m.generators(), lr=cfg.lr_p2m, betas=(0.5, 0.999))
            self.opts["p2m_d"] = torch.optim.Adam(net.p2m.discriminators(), lr=cfg.lr_p2m, betas=(0.5, 0.999))
            lrs.update(p2m_g=cfg.lr_p2m, p2m_d=cfg.lr_p2m)
        if net.mlr is not None:
            self.opts["mlr"] = torch.optim.Adam(net.mlr.parameters(), lr=cfg.lr_mlr)
            lrs["mlr"] = cfg.lr_mlr
        self.opts["dfdf"] = torch.optim.Adam(net.dfdf.parameters(), lr=cfg.lr_dfdf)
        lrs["dfdf"] = cfg.lr_dfdf
        self.scheds = {k: _scheduler(o, cfg, lrs[k]) for k, o in self.opts.items()}
        self.pool_m = ImagePool(cfg.pool_size, seed=cfg.seed)
        self.pool_p = ImagePool(cfg.pool_size, seed=cfg.seed + 1)
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.clock = TrainingClock()
        use_amp = self.device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return self.clock.stamp({"net": self.net.state_dict(),
                                 "opts": {k: o.state_dict() for k, o in self.opts.items()},
                                 "scheds": {k: s.state_dict() for k, s in self.scheds.items()},
                                 "pools": [self.pool_m.state_dict(), self.pool_p.state_dict()],
                                 "epoch": self.epoch, "history": self.history, "config": self.cfg.to_dict()})

    def save_checkpoint(self) -> Path:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        path = self.workdir / CHECKPOINT
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load_checkpoint(self, path: Path) -> None:
        # Our own checkpoint (optimiser state, pool RNG tuples): trusted, written by save_checkpoint.
        state = torch.load(path, map_location=self.device, weights_only=False)
        # The schedule's length may change on resume (train longer, or stop stage I earlier), the
        # model and losses may not; nor may stage I end before the epochs already trained in it.
        schedule = ("epochs_stage1", "epochs_stage2")
        saved, wanted = PAMRFuseConfig.from_dict(state["config"]).to_dict(), self.cfg.to_dict()
        if {k: v for k, v in saved.items() if k not in schedule} != {k: v for k, v in wanted.items()
                                                                       if k not in schedule}:
            raise ValueError(f"{path}: checkpoint was written with a different configuration; "
                             "use another workdir or resume=False")
        trained_stage1 = min(state["epoch"], saved["epochs_stage1"])
        if trained_stage1 > self.cfg.epochs_stage1 or (state["epoch"] > saved["epochs_stage1"]
                                                       and saved["epochs_stage1"] != self.cfg.epochs_stage1):
            raise ValueError(f"{path}: checkpoint has {state['epoch']} epochs with stage I = "
                             f"{saved['epochs_stage1']}; cannot resume with stage I = {self.cfg.epochs_stage1}")
        self.net.load_state_dict(state["net"])
        for k, o in self.opts.items():
            o.load_state_dict(state["opts"][k])
        for k, s in self.scheds.items():
            s.load_state_dict(state["scheds"][k])
        self.pool_m.load_state_dict(state["pools"][0])
        self.pool_p.load_state_dict(state["pools"][1])
        self.epoch, self.history = state["epoch"], state["history"]
        self.clock = TrainingClock.resume(state)

    # --------------------------------------------------------------------------- steps
    def _zero(self, *names: str) -> None:
        for n in names:
            if n in self.opts:
                self.opts[n].zero_grad(set_to_none=True)

    def _step(self, *names: str) -> None:
        for n in names:
            if n in self.opts:
                self.opts[n].step()

    def _reg_loss(self, out: dict, mri: torch.Tensor, pat: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return L.registration_loss(out["target"], mri, out["flow"], self.vgg if cfg.reg_vgg else None,
                                   lambda_rev=cfg.lambda_rev, lambda_pix=cfg.lambda_pix, lambda_sm=cfg.lambda_sm,
                                   penalty=cfg.smooth_penalty)

    def _fusion_loss(self, pat_reg, mri):
        cfg = self.cfg
        fused, (b_p, d_p), (b_m, d_m) = self.net.dfdf.fuse(pat_reg, mri)
        fused = fused.float()
        loss_int = L.intensity_loss(fused, pat_reg, mri)
        loss_grad = L.gradient_max_loss(fused, pat_reg, mri)
        loss_dec = L.decomposition_loss(d_p.float(), d_m.float(), b_p.float(), b_m.float(), cfg.decomp_form)
        return loss_int + cfg.alpha3 * loss_grad + cfg.alpha4 * loss_dec, {
            "int": loss_int.item(), "grad": loss_grad.item(), "decomp": loss_dec.item()}

    def _clip_dfdf(self):
        if self.cfg.clip_dfdf > 0:
            nn.utils.clip_grad_norm_(self.net.dfdf.parameters(), self.cfg.clip_dfdf)

    def step_stage1(self, pat: torch.Tensor, mri: torch.Tensor) -> dict[str, float]:
        cfg, net, log = self.cfg, self.net, {}
        # P2M + MLR jointly.
        if net.mlr is not None:
            self._zero("p2m_g", "mlr")
            with self.autocast():
                loss = torch.zeros((), device=self.device)
                target = None
                if net.p2m is not None:
                    p2m = net.p2m
                    fake_m = p2m.g_pm(to_signed(pat))
                    fake_p = p2m.g_mp(to_signed(mri))
                    rec_p, rec_m = p2m.g_mp(fake_m), p2m.g_pm(fake_p)
                    for d in (p2m.d_m, p2m.d_p):
                        d.requires_grad_(False)
                    code = cfg.p2m_loss == "code"
                    gan = (L.lsgan_loss(p2m.d_m(fake_m), True)
                           + (2.0 if code else 1.0) * L.lsgan_loss(p2m.d_p(fake_p), True))
                    cyc_p = L.cycle_loss(to_unit(rec_p).float(), pat, self.vgg, cfg.lambda_p, cfg.lambda_s,
                                         taps=cfg.pst_taps)
                    cyc_m = L.cycle_loss(to_unit(rec_m).float(), mri, self.vgg, cfg.lambda_p, cfg.lambda_s,
                                         taps=cfg.pst_taps)
                    if code:  # the released code's cycle weights 8 (PAT) and 13 (MRI) and its extra terms
                        cyc = (8.0 * cyc_p + 13.0 * cyc_m) / cfg.lambda_cyc
                        extra, parts = L.p2m_code_terms(to_signed(pat), to_signed(mri), fake_m, fake_p, rec_p, rec_m,
                                                        p2m.g_mp(to_signed(pat)), p2m.g_pm(to_signed(mri)))
                        log.update(parts)
                    else:
                        cyc, extra = cyc_p + cyc_m, 0.0
                    loss = cfg.lambda_gan * gan + cfg.lambda_cyc * cyc + extra
                    log.update(gan=gan.item(), cycle=cyc.item())
                    target = to_unit(fake_m).float()
                    if not cfg.reg_to_p2m:
                        target = target.detach()
                out = net.register(pat, mri, target)
                reg = self._reg_loss(out, mri, pat)
                log["reg"] = reg.item()
                loss = loss + reg
            loss.backward()
            self._step("p2m_g", "mlr")
            if net.p2m is not None:
                p2m = net.p2m
                for d in (p2m.d_m, p2m.d_p):
                    d.requires_grad_(True)
                self._zero("p2m_d")
                with self.autocast():
                    d_loss = 0.5 * (L.lsgan_loss(p2m.d_m(to_signed(mri)), True)
                                    + L.lsgan_loss(p2m.d_m(self.pool_m.query(fake_m)), False)
                                    + L.lsgan_loss(p2m.d_p(to_signed(pat)), True)
                                    + L.lsgan_loss(p2m.d_p(self.pool_p.query(fake_p)), False))
                d_loss.backward()
                self._step("p2m_d")
                log["disc"] = d_loss.item()
        # DFDF: auto-encoder (two-stage) or fusion from the start (ablation).
        self._zero("dfdf")
        with self.autocast():
            if cfg.two_stage:
                d = net.dfdf
                pat_hat, b_p, d_p = d.reconstruct(pat)
                mri_hat, b_m, d_m = d.reconstruct(mri)
                rec = (L.reconstruction_loss(pat, pat_hat.float(), cfg.mu_ssim)
                       + cfg.alpha1 * L.reconstruction_loss(mri, mri_hat.float(), cfg.mu_ssim))
                dec = L.decomposition_loss(d_p.float(), d_m.float(), b_p.float(), b_m.float(), cfg.decomp_form)
                loss = rec + cfg.alpha2 * dec
                log.update(recon=rec.item(), decomp=dec.item())
            else:
                with torch.no_grad():
                    pat_reg = net.register(pat, mri)["registered_pat"]
                loss, parts = self._fusion_loss(pat_reg, mri)
                log.update(parts)
        loss.backward()
        self._clip_dfdf()
        self._step("dfdf")
        return log

    def step_stage2(self, pat: torch.Tensor, mri: torch.Tensor) -> dict[str, float]:
        cfg, net, log = self.cfg, self.net, {}
        self._zero("mlr", "dfdf")
        with self.autocast():
            loss = torch.zeros((), device=self.device)
            if net.mlr is not None:
                with torch.no_grad():  # P2M frozen in stage II
                    target = net.pseudo_mri(pat).float()
                out = net.register(pat, mri, target)
                reg = self._reg_loss(out, mri, pat)
                log["reg"] = reg.item()
                loss = loss + reg
                pat_reg = out["registered_pat"] if cfg.fusion_feedback else out["registered_pat"].detach()
            else:
                pat_reg = pat
            fus, parts = self._fusion_loss(pat_reg.float(), mri)
            log.update(parts)
            loss = loss + fus
        loss.backward()
        self._clip_dfdf()
        self._step("mlr", "dfdf")
        return log

    # --------------------------------------------------------------------------- loop
    def _batches(self, n: int, epoch: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, epoch])
        steps = cfg.steps_per_epoch or max(1, math.ceil(n / cfg.batch))
        order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(steps * cfg.batch / n) + 1)])
        for s in range(steps):
            idx = order[s * cfg.batch:(s + 1) * cfg.batch]
            yield s, steps, idx, (int(rng.integers(4)), bool(rng.integers(2))) if cfg.augment else (0, False)

    def run(self, pats: np.ndarray, mris: np.ndarray, on_epoch: Callable[["Trainer"], None] | None = None,
            validate: Callable[["Trainer"], dict[str, float]] | None = None,
            control: FitControl | None = None) -> None:
        """Train to the end of the schedule, one checkpoint per epoch.

        ``validate(trainer)`` scores the epoch's network on held-out cases; its values join the
        epoch's history entry as ``val_*`` (checkpointed, drawn in ``losses.png``). With a
        ``control`` whose budget is spent, :class:`~fusionbench.fitting.BudgetExhausted` is raised
        after the epoch's checkpoint.
        """
        cfg = self.cfg
        total = cfg.epochs_stage1 + cfg.epochs_stage2
        bar = TrainingProgress(total, enabled=self.progress)
        try:
            while self.epoch < total:
                stage = 1 if self.epoch < cfg.epochs_stage1 else 2
                self.net.train()
                if stage == 2 and self.net.p2m is not None:
                    self.net.p2m.eval().requires_grad_(False)
                sums: dict[str, float] = {}
                count = 0
                for s, steps, idx, (k, flip) in self._batches(len(pats), self.epoch):
                    p, m = pats[idx], mris[idx]
                    p, m = np.rot90(p, k, axes=(2, 3)), np.rot90(m, k, axes=(2, 3))
                    if flip:
                        p, m = p[..., ::-1], m[..., ::-1]
                    p = torch.from_numpy(np.ascontiguousarray(p)).to(self.device)
                    m = torch.from_numpy(np.ascontiguousarray(m)).to(self.device)
                    log = self.step_stage1(p, m) if stage == 1 else self.step_stage2(p, m)
                    bad = [k for k, v in log.items() if not math.isfinite(v)]
                    if bad:
                        raise FloatingPointError(f"PAMRFuse+ epoch {self.epoch + 1} step {s + 1}: "
                                                 f"non-finite loss {', '.join(bad)}")
                    for key, v in log.items():
                        sums[key] = sums.get(key, 0.0) + v
                    count += 1
                    bar.update(self.epoch, stage, s + 1, steps, log)
                for sch in self.scheds.values():
                    sch.step()
                entry = {"epoch": self.epoch + 1, "stage": stage, **{k: v / count for k, v in sums.items()}}
                if validate is not None:
                    torch_rng = torch.get_rng_state()  # scoring must not move the training's streams
                    entry.update({f"val_{k}": v for k, v in validate(self).items()})
                    torch.set_rng_state(torch_rng)
                    if self.progress:
                        print(f"epoch {self.epoch + 1}/{total} validation "
                              + " ".join(f"{k[4:]} {v:.4g}" for k, v in entry.items() if k.startswith("val_")),
                              flush=True)
                self.history.append(entry)
                self.epoch += 1
                self.save_checkpoint()
                save_loss_curves(self.history, self.workdir / "losses.png")
                if on_epoch is not None:
                    on_epoch(self)
                if control is not None and self.epoch < total and control.spent():
                    raise BudgetExhausted(self.epoch, total, self.workdir / CHECKPOINT, unit="epoch")
        finally:
            bar.close()


def fit_pamrfuse(cases: Sequence[Any], workdir, preset: str | PAMRFuseConfig = "lite", device: str = "auto",
                 epochs: tuple[int, int] | None = None, resume: bool = True, progress: bool = True,
                 ablation: str | None = None, validate: Callable[[Trainer], dict[str, float]] | None = None,
                 control: FitControl | None = None, init: dict[str, Any] | None = None,
                 **overrides: Any) -> tuple[PAMRFuseNet, dict[str, Any]]:
    """Train PAMRFuse+ on ``cases`` in ``workdir``; returns the trained net and the training metrics.

    ``epochs=(stage1, stage2)`` overrides the preset's. With ``resume`` an existing
    ``workdir/checkpoint.pt`` of the same configuration is continued; a finished run returns at once.
    The loss history goes to ``workdir/history.json`` (the weights are the caller's to save:
    :mod:`fusionbench.weights`). ``validate`` and ``control``: :meth:`Trainer.run`. ``init``: a
    state dict of the network to start from (fine-tuning) when there is no checkpoint to resume.
    """
    if epochs is not None:
        overrides.update(epochs_stage1=int(epochs[0]), epochs_stage2=int(epochs[1]))
    cfg = get_config(preset, ablation, **overrides)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, workdir, device=device, progress=progress)
    ckpt = workdir / CHECKPOINT
    if resume and ckpt.exists():
        trainer.load_checkpoint(ckpt)
    elif init is not None:
        trainer.net.load_state_dict(init)  # in place: the optimisers keep their parameters
    pats, mris = prepare_arrays(cases, cfg.size)
    t0 = time.perf_counter()
    trainer.run(pats, mris, validate=validate, control=control)
    elapsed = time.perf_counter() - t0
    metrics = {"vgg_source": trainer.vgg_source, "n_cases": len(cases), "epochs": trainer.epoch,
               "last_session_seconds": round(elapsed, 1), "train_seconds": trainer.clock.total(),
               "final_losses": trainer.history[-1] if trainer.history else {}}
    atomic_write_bytes(workdir / "history.json", json.dumps(trainer.history, indent=1).encode())
    return trainer.net.eval(), metrics
