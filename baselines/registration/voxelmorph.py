"""VoxelMorph (Balakrishnan et al., IEEE TMI 38(8), 2019), 2-D, trained by our own code.

The ``VxmDense`` network of the voxelmorph torch package (spec §3.7): a U-Net over the
concatenated (moving, fixed) pair, encoder [16, 32, 32, 32] with max-pooling, decoder [32, 32, 32, 32]
with nearest upsampling and skips, three full-resolution convolutions [32, 16, 16], a 3×3 flow head
initialised N(0, 1e-5), and a stationary velocity field integrated by 7 scaling-and-squaring steps at
half resolution. Warping uses the project's one convention (:mod:`fusionbench.nn.layers`).

PAT and MRI are different modalities, so the stock MSE/NCC similarity does not apply: ``loss="mi"``
(default for ``voxelmorph``) maximises a differentiable Parzen-window mutual information (MONAI's
``GlobalMutualInformationLoss``); ``loss="ncc"`` (local NCC, 9×9) is for same-modality pairs such as
pseudo-MRI → MRI in ``p2m+vm``. Smoothness: λ · mean squared spatial gradient of the displacement.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.data.io import as_image, check_same_shape
from fusionbench.methods import RegistrationMethod, register_method
from fusionbench.nn.layers import SpatialTransformer, VecInt, resolve_device
from fusionbench.nn.training import cases_hash, load_weights, save_weights, seed_everything

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


def gradient_loss(flow: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of the displacement (VoxelMorph's Grad-L2)."""
    dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    return 0.5 * (dy.pow(2).mean() + dx.pow(2).mean())


def local_ncc_loss(a: torch.Tensor, b: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """Negative mean squared local normalised cross-correlation (VoxelMorph's NCC)."""
    kernel = torch.ones(1, 1, window, window, device=a.device, dtype=a.dtype)
    pad = window // 2
    n = window * window

    def box(x):
        return F.conv2d(x, kernel, padding=pad)

    sa, sb = box(a), box(b)
    saa, sbb, sab = box(a * a), box(b * b), box(a * b)
    cross = sab - sa * sb / n
    var_a = saa - sa * sa / n
    var_b = sbb - sb * sb / n
    return -(cross * cross / (var_a * var_b + eps)).mean()


def similarity_loss(kind: str):
    if kind == "mi":
        from monai.losses import GlobalMutualInformationLoss

        mi = GlobalMutualInformationLoss(kernel_type="b-spline", num_bins=32)
        return lambda warped, fixed: mi(warped, fixed)
    if kind == "ncc":
        return local_ncc_loss
    if kind == "mse":
        return F.mse_loss
    raise ValueError(f"unknown similarity loss {kind!r} (expected 'mi', 'ncc' or 'mse')")


def _batch(cases: Sequence[Any], idx: np.ndarray, moving_of, rng: np.random.Generator):
    mov = np.stack([moving_of(cases[i]) for i in idx])[:, None]
    fix = np.stack([cases[i].mri for i in idx])[:, None]
    # Flips and quarter turns: the phantom's anatomy has no preferred orientation for registration.
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    mov, fix = np.rot90(mov, k, axes=(2, 3)), np.rot90(fix, k, axes=(2, 3))
    if flip:
        mov, fix = mov[..., ::-1], fix[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(mov)), torch.from_numpy(np.ascontiguousarray(fix))


class _LearnedRegistration(RegistrationMethod):
    """Shared fit/register logic of VoxelMorph-style registration methods."""

    trainable = True
    weights_name = ""

    def __init__(self, loss: str = "mi", smooth: float = 1.0, steps: int = 1500, batch: int = 4,
                 lr: float = 1e-3, integration_steps: int = 7, seed: int = 0, device: str = "auto",
                 weights: str | None = "shipped"):
        self.loss, self.smooth, self.steps, self.batch, self.lr = loss, smooth, steps, batch, lr
        self.seed, self.weights = seed, weights
        self.device = str(resolve_device(device))
        seed_everything(seed)
        self.net = VxmDense(integration_steps=integration_steps)
        self.net.eval()
        self.provenance: dict[str, Any] = {"weights": "untrained"}
        if weights == "shipped" and self.shipped_path().exists():
            self._load(self.shipped_path())
        elif weights not in (None, "shipped", "none"):
            self._load(Path(weights))

    # The image that is moved during training and registration (PAT, or pseudo-MRI for P2M+VM).
    def moving_image(self, case_or_pat):
        return case_or_pat.pat if hasattr(case_or_pat, "pat") else case_or_pat

    def shipped_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.weights_name}.pt"

    def _load(self, path: Path) -> None:
        state, meta = load_weights(path)
        self.net.load_state_dict({k: v.float() for k, v in state.items()})
        self.provenance = meta or {"weights": str(path)}

    def train_config(self) -> dict[str, Any]:
        return {"loss": self.loss, "smooth": self.smooth, "steps": self.steps, "batch": self.batch,
                "lr": self.lr, "seed": self.seed}

    def needs_training(self, cases: Sequence[Any]) -> bool:
        """False when the loaded weights (shipped or cached) were trained on exactly these cases."""
        return self.provenance.get("train_data_hash") != cases_hash(cases)

    def fit(self, cases: Sequence[Any], workdir, *, progress=None) -> dict[str, Any]:
        """Train unsupervised on ``cases`` (no ground-truth flow is used); cached in ``workdir``.

        Shipped weights trained on the same cases (same content hash and settings) are reused.
        """
        if not cases:
            raise ValueError(f"{self.name}: fit needs at least one training case")
        data_hash = cases_hash(cases)
        cfg = self.train_config()
        if self.provenance.get("train_data_hash") == data_hash and self.provenance.get("config") == cfg:
            return self.provenance
        cfg_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
        cache = Path(workdir) / f"{self.weights_name}-{data_hash}-{cfg_hash}.pt"
        if cache.exists():
            self._load(cache)
            return self.provenance
        history = self._train(cases, cfg, progress)
        save_weights(cache, self.net.state_dict(), {
            "method": self.name, "train_data_hash": data_hash, "n_cases": len(cases), "config": cfg,
            "loss_first": history[0], "loss_last": float(np.mean(history[-50:])),
        })
        self._load(cache)
        return self.provenance

    def _train(self, cases, cfg, progress=None) -> list[float]:
        device = torch.device(self.device)
        gen_rng = np.random.default_rng(self.seed)
        seed_everything(self.seed)
        net = self.net.to(device).train()
        sim = similarity_loss(self.loss)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        history = []
        for step in range(self.steps):
            idx = gen_rng.choice(len(cases), size=min(self.batch, len(cases)), replace=False)
            mov, fix = _batch(cases, idx, self.moving_image, gen_rng)
            mov, fix = mov.to(device), fix.to(device)
            warped, flow = net(mov, fix)
            loss = sim(warped, fix) + self.smooth * gradient_loss(flow)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, self.steps, history[-1])
        net.eval().cpu()
        return history

    @torch.no_grad()
    def predict_flow(self, moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        device = torch.device(self.device)
        net = self.net.to(device)
        m = torch.from_numpy(moving)[None, None].to(device)
        f = torch.from_numpy(fixed)[None, None].to(device)
        return net.flow(m, f)[0].cpu().numpy().astype(np.float32)

    def register(self, moving, fixed):
        from fusionbench.warp import warp

        moving, fixed = as_image(moving, "moving"), as_image(fixed, "fixed")
        check_same_shape(moving=moving, fixed=fixed)
        flow = self.predict_flow(self.moving_image(moving), fixed)
        return warp(moving, flow), flow


@register_method("voxelmorph", kind="registration",
                 reference="Balakrishnan et al., IEEE TMI 38(8) 2019 (VxmDense, MI similarity for PAT->MRI)")
class VoxelMorph(_LearnedRegistration):
    weights_name = "voxelmorph_phantom"


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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


__all__ = ["VxmDense", "VxmUNet", "VoxelMorph", "gradient_loss", "local_ncc_loss", "expected_vxm_parameters",
           "parameter_count"]
