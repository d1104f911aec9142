"""VoxelMorph (Balakrishnan et al., IEEE TMI 38(8), 2019), 2-D, trained by our own code.

The ``VxmDense`` network of the voxelmorph torch package (spec §3.7): a U-Net over the
concatenated (moving, fixed) pair, encoder [16, 32, 32, 32] with max-pooling, decoder [32, 32, 32, 32]
with nearest upsampling and skips, three full-resolution convolutions [32, 16, 16], a 3×3 flow head
initialised N(0, 1e-5), and a stationary velocity field integrated by 7 scaling-and-squaring steps at
half resolution. Warping uses the project's one convention (:mod:`fusionbench.nn.layers`).

PAT and MRI are different modalities, so the stock MSE/NCC similarity does not apply: ``loss="mi"``
(default for ``voxelmorph``) maximises a differentiable Parzen-window mutual information measured
around the fixed image's body (:func:`fusionbench.nn.losses.parzen_mi_loss`); ``loss="ncc"`` (local
NCC, 9×9, :func:`fusionbench.nn.losses.local_ncc_loss`) is for same-modality pairs such as
pseudo-MRI → MRI in ``p2m+vm``. Smoothness: λ · mean squared spatial gradient of the displacement
(:func:`fusionbench.nn.losses.smoothness_loss`, ``"l2"``). The network works at a fixed size (128²
by default).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi
import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.data.io import as_image, atomic_write_bytes, check_same_shape
from fusionbench.fitting import (BudgetExhausted, FitControl, TrainingClock, save_curves, validation_metric,
                                 validation_record, validation_scores)
from fusionbench.methods import RegistrationMethod, Trainable, register_method
from fusionbench.nn.layers import SpatialTransformer, VecInt, resolve_device
from fusionbench.nn.losses import local_ncc_loss, parzen_mi_loss, smoothness_loss
from fusionbench.nn.training import load_state, save_state, seed_everything
from fusionbench.warp import resize_flow, warp
from fusionbench.weights import load_into, shipped_state

from .regions import body_region

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return F.leaky_relu(self.conv(x), 0.2)


class VxmUNet(nn.Module):
    """The VoxelMorph U-Net: concatenated pair in, 2-channel displacement (or velocity) out."""

    def __init__(self, enc=(16, 32, 32, 32), dec=(32, 32, 32, 32), final=(32, 16, 16), in_channels=2):
        super().__init__()
        self.encoder = nn.ModuleList()
        skips, prev = [], in_channels
        for nf in enc:
            self.encoder.append(_ConvBlock(prev, nf))
            skips.append(nf)
            prev = nf
        self.decoder = nn.ModuleList()
        for nf, skip in zip(dec, reversed(skips)):
            self.decoder.append(_ConvBlock(prev, nf))
            prev = nf + skip
        self.final = nn.ModuleList()
        for nf in final:
            self.final.append(_ConvBlock(prev, nf))
            prev = nf
        self.flow = nn.Conv2d(prev, 2, 3, padding=1)
        nn.init.normal_(self.flow.weight, 0.0, 1e-5)
        nn.init.zeros_(self.flow.bias)
        self.levels = len(enc)

    def forward(self, x):
        history = []
        for block in self.encoder:
            x = block(x)
            history.append(x)
            x = F.max_pool2d(x, 2)
        for block in self.decoder:
            x = block(x)
            skip = history.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        for block in self.final:
            x = block(x)
        return self.flow(x)


class VxmDense(nn.Module):
    """U-Net + optional half-resolution velocity integration + spatial transformer."""

    def __init__(self, integration_steps: int = 7, int_downsize: int = 2, **unet_kw):
        super().__init__()
        self.unet = VxmUNet(**unet_kw)
        self.int_downsize = int_downsize
        self.integrate = VecInt(integration_steps) if integration_steps > 0 else None
        self.transformer = SpatialTransformer()

    @staticmethod
    def _pad(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        return (F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x), (h, w)

    def flow(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        x, (h, w) = self._pad(torch.cat([moving, fixed], dim=1))
        field = self.unet(x)[..., :h, :w]
        if self.integrate is None:
            return field
        if self.int_downsize > 1:
            small = F.interpolate(field, scale_factor=1 / self.int_downsize, mode="bilinear",
                                  align_corners=True) / self.int_downsize
            small = self.integrate(small)
            return F.interpolate(small * self.int_downsize, size=(h, w), mode="bilinear", align_corners=True)
        return self.integrate(field)

    def forward(self, moving, fixed):
        flow = self.flow(moving, fixed)
        return self.transformer(moving, flow), flow


def similarity_loss(kind: str):
    """``(warped, fixed, region) -> loss`` for ``kind`` in mi (masked Parzen MI), ncc, mse."""
    if kind == "mi":
        return parzen_mi_loss
    if kind == "ncc":
        return lambda warped, fixed, region: local_ncc_loss(warped, fixed)
    if kind == "mse":
        return lambda warped, fixed, region: F.mse_loss(warped, fixed)
    raise ValueError(f"unknown similarity loss {kind!r} (expected 'mi', 'ncc' or 'mse')")


def _resample(img: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) -> (1, size, size) float32 tensor, area-averaged (no-op at the same size)."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="area")
    return t[0]


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    # Flips and quarter turns of the whole batch (all channels alike): no preferred orientation.
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    x = torch.rot90(x, k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if flip else x


class LearnedRegistration(Trainable, RegistrationMethod):
    """Shared fit/register logic of VoxelMorph-style registration methods.

    The network works at ``size``² (inputs area-resampled, the flow bilinearly resized back and
    its values scaled), so one set of weights serves any input size and CPU training stays cheap.
    """

    trainable = True
    weights_name = ""
    #: Bump when the network, the loss or the preprocessing changes: shipped and cached weights
    #: of another version are then never loaded.
    version = "1"

    def __init__(self, loss: str = "mi", smooth: float = 1.0, steps: int = 10000, batch: int = 4,
                 lr: float = 1e-4, integration_steps: int = 7, size: int = 128, seed: int = 0,
                 device: str = "auto", weights: str | None = "shipped"):
        similarity_loss(loss)  # fail early on an unknown loss
        self.loss, self.smooth, self.steps, self.batch, self.lr = loss, smooth, steps, batch, lr
        self.size = int(size)
        self.seed, self.weights = seed, weights
        self.device = str(resolve_device(device))
        seed_everything(seed)
        self.net = VxmDense(integration_steps=integration_steps)
        self.net.eval()
        self.provenance: dict[str, Any] = {}
        if weights == "shipped":
            if shipped_state(self) in ("match", "other-data"):
                load_into(self, self.shipped_weights())
        elif weights not in (None, "none"):
            load_into(self, weights, check_config=False)

    def network_input(self, moving: np.ndarray) -> np.ndarray:
        """The moving image as the network sees it at ``size``² (P2M+VM: the pseudo-MRI)."""
        return _resample(moving, self.size)[0].numpy()

    def _pairs(self, movings: Sequence[np.ndarray], fixeds: Sequence[np.ndarray], region: bool = False
               ) -> torch.Tensor:
        """(N, 2, size, size): network moving input and fixed image, plus the similarity region
        (the loss's mask, training only) as a third channel with ``region``."""
        out = []
        for mov, fix in zip(movings, fixeds):
            channels = [torch.from_numpy(self.network_input(mov))[None], _resample(fix, self.size)]
            if region:
                channels.append(_resample(body_region(fix).astype(np.float32), self.size))
            out.append(torch.cat(channels))
        return torch.stack(out)

    # ---- weights (fusionbench.weights protocol) ---------------------------------------------
    def shipped_weights(self) -> Path:
        return WEIGHTS_DIR / self.weights_name

    def save_weights(self, folder) -> None:
        save_state(Path(folder) / "weights.pt", self.net.state_dict())

    def load_weights(self, folder) -> None:
        state = load_state(Path(folder) / "weights.pt")
        self.net.load_state_dict({k: v.float() for k, v in state.items()})

    def train_config(self) -> dict[str, Any]:
        return {"loss": self.loss, "smooth": self.smooth, "steps": self.steps, "batch": self.batch,
                "lr": self.lr, "size": self.size, "seed": self.seed, "version": self.version}

    def fit(self, cases: Sequence[Any], workdir, control: FitControl | None = None) -> dict[str, Any]:
        """Train unsupervised on ``cases`` (no ground-truth flow is used); returns the losses.

        ``workdir/train.ckpt`` (every ``checkpoint_every`` steps) makes an interrupted fit resume
        with the same batches; ``control`` adds the validation curve (endpoint error on the
        held-out cases' true flows, which training never sees) and the time budget
        (:mod:`fusionbench.fitting`).
        """
        if not cases:
            raise ValueError(f"{self.name}: fit needs at least one training case")
        history = self._train(cases, Path(workdir) / "train.ckpt", control)
        metrics = {"n_cases": len(cases), "loss_first": history[0], "loss_last": float(np.mean(history[-50:])),
                   "train_seconds": self.clock.total()}
        if self.val_history:
            metrics["validation"] = validation_record(self, self.val_history, self.steps, len(control.cases()))
        return metrics

    #: Steps between checkpoints (where an interrupted or budget-stopped fit continues from).
    checkpoint_every = 50

    def _train(self, cases, ckpt: Path | None = None, control: FitControl | None = None) -> list[float]:
        device = torch.device(self.device)
        rng = np.random.default_rng(self.seed)
        seed_everything(self.seed)
        data = self._pairs([c.pat for c in cases], [c.mri for c in cases], region=True)
        net = self.net.to(device).train()
        sim = similarity_loss(self.loss)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        history: list[float] = []
        self.val_history: list[tuple[int, float]] = []
        val_cases = control.cases() if control is not None else []
        every = control.every(self.steps) if control is not None else 0
        metric, _ = validation_metric(self)
        saved = None
        if ckpt is not None and ckpt.is_file():
            saved = torch.load(ckpt, map_location=device, weights_only=True)
            net.load_state_dict(saved["net"])
            opt.load_state_dict(saved["opt"])
            rng.bit_generator.state = json.loads(saved["rng"])
            torch.set_rng_state(saved["torch_rng"])
            history = list(saved["history"])
            self.val_history = [tuple(p) for p in json.loads(saved["val_history"])]
        self.clock = TrainingClock.resume(saved)
        for step in range(len(history), self.steps):
            idx = rng.choice(len(cases), size=min(self.batch, len(cases)), replace=False)
            x = _augment(data[idx], rng).to(device)
            mov, fix, region = x[:, :1], x[:, 1:2], x[:, 2:3]
            warped, flow = net(mov, fix)
            loss = sim(warped, fix, region) + self.smooth * smoothness_loss(flow, "l2")
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            done = step + 1
            if val_cases and (done % every == 0 or done == self.steps):
                net.eval()
                torch_rng = torch.get_rng_state()
                self.val_history.append((done, validation_scores(self, val_cases)[metric]))
                torch.set_rng_state(torch_rng)
                net.to(device).train()
            at_checkpoint = done % self.checkpoint_every == 0 or done == self.steps
            if ckpt is not None and at_checkpoint:
                blob = self.clock.stamp({"net": net.state_dict(), "opt": opt.state_dict(),
                                         "rng": json.dumps(rng.bit_generator.state),
                                         "torch_rng": torch.get_rng_state(), "history": history,
                                         "val_history": json.dumps(self.val_history)})
                buf = io.BytesIO()
                torch.save(blob, buf)
                atomic_write_bytes(ckpt, buf.getvalue())
                save_curves(ckpt.parent / "curves.png", history, self.val_history, metric=metric,
                            title=f"{self.name}: {done}/{self.steps} steps", total_steps=self.steps)
            if control is not None and at_checkpoint and done < self.steps and control.spent():
                net.eval().cpu()
                raise BudgetExhausted(done, self.steps, ckpt)
        net.eval().cpu()
        return history

    @torch.no_grad()
    def predict_flow(self, moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """The displacement (2, H, W) at the inputs' size with ``warp(moving, flow)`` ≈ ``fixed``."""
        device = torch.device(self.device)
        net = self.net.to(device)
        x = self._pairs([moving], [fixed]).to(device)
        flow = net.flow(x[:, :1], x[:, 1:2])[0].cpu().numpy()
        return resize_flow(flow, fixed.shape, f"{self.name} flow")

    def register(self, moving, fixed):
        moving, fixed = as_image(moving, "moving"), as_image(fixed, "fixed")
        check_same_shape(moving=moving, fixed=fixed)
        flow = self.predict_flow(moving, fixed)
        return warp(moving, flow), flow


@register_method("voxelmorph", kind="registration",
                 reference="Balakrishnan et al., IEEE TMI 38(8) 2019 (VxmDense, MI similarity for PAT->MRI)")
class VoxelMorph(LearnedRegistration):
    """VoxelMorph from PAT to MRI with the body-masked Parzen MI.

    ``moving_sigma`` (pixels at the input size) smooths the PAT the network sees and its loss
    measures, as for :class:`~baselines.registration.mi_bspline.MIBSpline`: the microvascular
    speckle is not in the MRI. The returned warped image is the unsmoothed PAT.

    Global MI constrains a dense field weakly, so the smoothness weight is large (λ = 100, lr
    1e-3: the best validation endpoint error of the settings tried, docs/baselines.md).
    """

    weights_name = "voxelmorph"

    def __init__(self, moving_sigma: float = 2.0, smooth: float = 100.0, lr: float = 1e-3, **kwargs: Any):
        if moving_sigma < 0:
            raise ValueError(f"moving_sigma must be >= 0, got {moving_sigma}")
        self.moving_sigma = float(moving_sigma)
        super().__init__(smooth=smooth, lr=lr, **kwargs)


    def network_input(self, moving: np.ndarray) -> np.ndarray:
        if self.moving_sigma:
            moving = ndi.gaussian_filter(np.asarray(moving, np.float32), self.moving_sigma)
        return super().network_input(moving)

    def train_config(self) -> dict[str, Any]:
        return {**super().train_config(), "moving_sigma": self.moving_sigma}


def expected_vxm_parameters(enc=(16, 32, 32, 32), dec=(32, 32, 32, 32), final=(32, 16, 16)) -> int:
    """Parameter count of the reference VxmDense 2-D U-Net, derived layer by layer (3×3 convs + bias)."""
    def conv(cin, cout):
        return 9 * cin * cout + cout

    total, prev, skips = 0, 2, []
    for nf in enc:
        total += conv(prev, nf)
        skips.append(nf)
        prev = nf
    for nf, skip in zip(dec, reversed(skips)):
        total += conv(prev, nf)
        prev = nf + skip
    for nf in final:
        total += conv(prev, nf)
        prev = nf
    return total + conv(prev, 2)


__all__ = ["VxmDense", "VxmUNet", "VoxelMorph", "LearnedRegistration", "similarity_loss", "expected_vxm_parameters"]
