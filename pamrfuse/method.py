"""The registered ``pamrfuse+`` method and its Table 5 ablation variants.

A joint method (DESIGN §5): ``register(pat, mri)`` warps PAT into the MRI frame with P2M + MLR,
``fuse(pat, mri)`` registers first, then fuses with DFDF. The harness calls ``register`` and then
``fuse`` on the registered PAT; ``fuse`` recognises its own last ``register`` output (by content
hash) and does not register twice.

The networks run at the preset's ``size`` for registration (the flow is resized to the input
grid and its magnitudes scaled), and DFDF runs at the input's native resolution (fully
convolutional). The returned flow follows the project's convention: ``warp(pat, flow)`` is the
registered PAT; it is the negated MLR field (paper Eq. 3, ``phi = -phi_r``; spec §7 item 30).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fusionbench.data.io import as_image, check_same_shape
from fusionbench.methods import FusionMethod, RegistrationMethod, register_method
from fusionbench.nn.layers import resolve_device
from fusionbench.nn.training import cases_hash, load_weights

from .presets import PAMRFuseConfig, get_config
from .train import PAMRFuseNet, config_hash, fit_pamrfuse, weights_name

__all__ = ["PAMRFusePlus", "load_shipped_model", "mlr_flow_to_input_grid", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REFERENCE = ("Zhong et al., 'Performance of medical image fusion in high-level analysis tasks: a mutual "
             "enhancement framework for unaligned PAT and MRI image fusion', 2024 (PAMRFuse+)")


def _digest(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img, dtype=np.float32).tobytes()).hexdigest()


def load_shipped_model(preset: str = "lite", ablation: str | None = None) -> PAMRFuseNet:
    """The shipped weights of a preset (``pamrfuse/weights/pamrfuse_PRESET.pt``) as an eval-mode net."""
    cfg = get_config(preset, ablation)
    path = WEIGHTS_DIR / f"{weights_name(cfg)}{'_' + ablation if ablation else ''}.pt"
    state, meta = load_weights(path)
    if meta.get("config"):
        cfg = PAMRFuseConfig.from_dict(meta["config"])
    net = PAMRFuseNet(cfg)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()


def mlr_flow_to_input_grid(mlr_flow: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """MLR's flow (1, 2, s, s), MRI into the PAT frame at the network size, as the project's flow
    (2, H, W) on the input grid: negated (paper Eq. 3), resized and its magnitudes scaled."""
    h, w = shape
    s_h, s_w = mlr_flow.shape[-2:]
    flow = F.interpolate(-mlr_flow.float(), size=(h, w), mode="bilinear", align_corners=True)
    scale = torch.tensor([(h - 1) / (s_h - 1), (w - 1) / (s_w - 1)], device=flow.device).view(1, 2, 1, 1)
    return (flow * scale)[0].cpu().numpy().astype(np.float32)


class PAMRFusePlus(FusionMethod, RegistrationMethod):
    """PAMRFuse+ (P2M style transfer + MLR registration + DFDF fusion), trained in two stages."""

    kind = "transformer"
    reference = REFERENCE
    needs_alignment = False
    trainable = True
    ablation: str | None = None

    def __init__(self, preset: str = "lite", weights: str | None = "shipped", device: str = "auto",
                 ablation: str | None = None, epochs: tuple[int, int] | None = None, **overrides: Any):
        ablation = ablation if ablation is not None else type(self).ablation
        if epochs is not None:
            overrides.update(epochs_stage1=int(epochs[0]), epochs_stage2=int(epochs[1]))
        self.cfg = get_config(preset, ablation, **overrides)
        self.preset, self.ablation_name, self.overrides = preset, ablation, overrides
        self.device = str(resolve_device(device))
        self.net = PAMRFuseNet(self.cfg).eval()
        self.provenance: dict[str, Any] = {"weights": "untrained", "preset": self.cfg.preset}
        self._last: tuple[str, np.ndarray] | None = None
        if weights == "shipped":
            path = self.shipped_path()
            if path.exists():
                self._load(path)
        elif weights not in (None, "none"):
            self._load(Path(weights))

    def shipped_path(self) -> Path:
        suffix = f"_{self.ablation_name}" if self.ablation_name else ""
        return WEIGHTS_DIR / f"{weights_name(self.cfg)}{suffix}.pt"

    def _load(self, path: Path) -> None:
        state, meta = load_weights(path)
        if meta.get("config") and PAMRFuseConfig.from_dict(meta["config"]) != self.cfg:
            raise ValueError(f"{path}: weights were trained with another configuration than "
                             f"preset={self.preset!r} ablation={self.ablation_name!r}")
        self.net.load_state_dict({k: v.float() for k, v in state.items()})
        self.provenance = meta or {"weights": str(path)}

    def config(self) -> dict[str, Any]:
        return {"preset": self.cfg.preset, "ablation": self.ablation_name, **self.overrides,
                "vgg_source": self.provenance.get("vgg_source", self.cfg.vgg_source),
                "weights_sha256": self.provenance.get("sha256", "untrained")}

    # ------------------------------------------------------------------------------ training
    def needs_training(self, cases: Sequence[Any]) -> bool:
        """False when the loaded weights (shipped or cached) were trained on exactly these cases."""
        return self.provenance.get("train_data_hash") != cases_hash(cases)

    def fit(self, cases: Sequence[Any], workdir, *, progress: bool = True) -> dict[str, Any]:
        """Two-stage training on ``cases``; reuses weights trained on the same data and settings."""
        if not cases:
            raise ValueError(f"{self.name or 'pamrfuse+'}: fit needs at least one training case")
        data_hash = cases_hash(cases)
        if (self.provenance.get("train_data_hash") == data_hash
                and PAMRFuseConfig.from_dict(self.provenance.get("config") or {}) == self.cfg):
            return self.provenance
        run_dir = Path(workdir) / f"pamrfuse-{self.cfg.preset}-{data_hash}-{config_hash(self.cfg)}"
        net, prov = fit_pamrfuse(cases, run_dir, preset=self.cfg, device=self.device, progress=progress,
                                 ablation=self.ablation_name)
        self._load(run_dir / f"{weights_name(self.cfg)}.pt")
        return self.provenance

    # ------------------------------------------------------------------------------ inference
    def _tensor(self, img: np.ndarray, size: int | None = None) -> torch.Tensor:
        t = torch.from_numpy(img)[None, None].to(self.device)
        if size is None or t.shape[-2:] == (size, size):
            return t
        return F.interpolate(t, size=(size, size), mode="area")

    @torch.no_grad()
    def predict_flow(self, pat: np.ndarray, mri: np.ndarray) -> np.ndarray:
        """The project-convention flow (2, H, W) on the MRI grid: ``warp(pat, flow)`` is registered."""
        h, w = pat.shape
        net = self.net.to(self.device).eval()
        if net.mlr is None:
            return np.zeros((2, h, w), np.float32)
        s = self.cfg.size
        out = net.register(self._tensor(pat, s), self._tensor(mri, s))
        return mlr_flow_to_input_grid(out["flow"], (h, w))

    def register(self, moving, fixed) -> tuple[np.ndarray, np.ndarray]:
        from fusionbench.warp import warp

        pat, mri = as_image(moving, "moving (PAT)"), as_image(fixed, "fixed (MRI)")
        check_same_shape(moving=pat, fixed=mri)
        flow = self.predict_flow(pat, mri)
        warped = warp(pat, flow).astype(np.float32)
        self._last = (_digest(warped), flow)
        return warped, flow

    @torch.no_grad()
    def fuse(self, pat, mri) -> np.ndarray:
        pat, mri = as_image(pat, "pat"), as_image(mri, "mri")
        check_same_shape(pat=pat, mri=mri)
        if self._last is None or self._last[0] != _digest(pat):
            pat, _ = self.register(pat, mri)
        net = self.net.to(self.device).eval()
        fused = net.dfdf.fuse(self._tensor(pat), self._tensor(mri))[0][0, 0].float()
        if self.cfg.minmax_output:
            lo, hi = fused.min(), fused.max()
            fused = (fused - lo) / (hi - lo) if hi > lo else torch.zeros_like(fused)
        return fused.clamp(0, 1).cpu().numpy().astype(np.float32)


register_method("pamrfuse+", kind="transformer", reference=REFERENCE)(PAMRFusePlus)


def _variant(ablation_key: str, doc: str):
    cls = type(f"PAMRFusePlus_{ablation_key}", (PAMRFusePlus,), {"ablation": ablation_key, "__doc__": doc,
                                                                  "__module__": __name__})
    register_method(f"pamrfuse+_{ablation_key}", kind="transformer", reference=REFERENCE + f" - Table 5 {doc}",
                    in_all=False)(cls)
    return cls


PAMRFusePlusWoP2M = _variant("wo_p2m", "ablation: without P2M (MLR registers MRI to PAT directly)")
PAMRFusePlusWoP2MMLR = _variant("wo_p2m_mlr", "ablation: without P2M and MLR (DFDF fuses the unaligned pair)")
PAMRFusePlusWoFeedback = _variant("wo_feedback", "ablation: without registration-fusion feedback")
PAMRFusePlusWoTwoStage = _variant("wo_two_stage", "ablation: without two-stage training of DFDF")
