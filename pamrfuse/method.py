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
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fusionbench.data.io import as_image, check_same_shape
from fusionbench.fitting import FitControl, validation_metric, validation_record, validation_scores
from fusionbench.methods import FusionMethod, RegistrationMethod, Trainable, register_method
from fusionbench.nn.layers import resolve_device
from fusionbench.nn.training import load_state, save_state
from fusionbench.warp import resize_flow, warp
from fusionbench.weights import load_into, shipped_state

from .model import PAMRFuseNet
from .presets import get_config
from .trainer import fit_pamrfuse

__all__ = ["PAMRFusePlus", "mlr_flow_to_input_grid", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REFERENCE = ("Zhong et al., 'Performance of medical image fusion in high-level analysis tasks: a mutual "
             "enhancement framework for unaligned PAT and MRI image fusion', 2024 (PAMRFuse+)")


def _digest(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img, dtype=np.float32).tobytes()).hexdigest()


def mlr_flow_to_input_grid(mlr_flow: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """MLR's flow (1, 2, s, s), MRI into the PAT frame at the network size, as the project's flow
    (2, H, W) on the input grid: negated (paper Eq. 3) and resized like every learned flow
    (:func:`fusionbench.warp.resize_flow`: the network sees area-resampled images)."""
    return resize_flow(-mlr_flow[0].float().cpu().numpy(), shape, "MLR flow")


class PAMRFusePlus(Trainable, FusionMethod, RegistrationMethod):
    """PAMRFuse+ (P2M style transfer + MLR registration + DFDF fusion), trained in two stages.

    ``weights="shipped"`` loads ``pamrfuse/weights/pamrfuse_PRESET[_ABLATION]/`` when its
    provenance names the current configuration; a path loads a weights folder of ``fusionbench
    fit``; ``None`` keeps the seeded initialisation.
    """

    #: Bump when a network or a loss changes: weights of another version are never loaded.
    version = "1"
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
        self.provenance: dict[str, Any] = {}
        self._last: tuple[str, np.ndarray] | None = None
        if weights == "shipped":
            if shipped_state(self) in ("match", "other-data"):
                load_into(self, self.shipped_weights())
        elif weights not in (None, "none"):
            load_into(self, weights)

    def config(self) -> dict[str, Any]:
        return {"preset": self.cfg.preset, "ablation": self.ablation_name, **self.overrides}

    # ------------------------------------------------------------ weights (fusionbench.weights)
    def train_config(self) -> dict[str, Any]:
        return {"version": self.version, **self.cfg.to_dict()}

    def shipped_weights(self) -> Path:
        suffix = f"_{self.ablation_name}" if self.ablation_name else ""
        return WEIGHTS_DIR / f"pamrfuse_{self.cfg.preset}{suffix}"

    def save_weights(self, folder) -> None:
        save_state(Path(folder) / "weights.pt", self.net.state_dict())

    def load_weights(self, folder) -> None:
        state = load_state(Path(folder) / "weights.pt")
        self.net.load_state_dict({k: v.float() for k, v in state.items()})
        self.net.eval()

    def fit(self, cases: Sequence[Any], workdir, control: FitControl | None = None) -> dict[str, Any]:
        """Two-stage training on ``cases``; ``workdir`` holds the checkpoint a rerun resumes from.

        With ``control``'s held-out cases every epoch is scored (endpoint error against their true
        flows, and the fusion's SSIM/Qabf: :func:`fusionbench.fitting.validation_scores`) and the
        curve of the endpoint error goes into the returned metrics with its tail trend.
        """
        if not cases:
            raise ValueError(f"{self.name or 'pamrfuse+'}: fit needs at least one training case")
        val_cases = control.cases() if control is not None else []
        own = self.net

        def validate(trainer) -> dict[str, float]:
            self.net, self._last = trainer.net, None  # score the network being trained
            try:
                return {**validation_scores(self, val_cases), **self.pseudo_mri_scores(val_cases)}
            finally:
                self.net, self._last = own, None

        # Weights it holds (shipped ones trained on other data, or `fit --init`) are the start.
        init = own.state_dict() if self.provenance.get("weights_sha256") else None
        net, record = fit_pamrfuse(cases, workdir, preset=self.cfg, device=self.device,
                                   ablation=self.ablation_name, validate=validate if val_cases else None,
                                   control=control, init=init)
        self.net.load_state_dict(net.state_dict())
        self.net.eval()
        history = json.loads((Path(workdir) / "history.json").read_text())
        metric, _ = validation_metric(self)
        points = [(h["epoch"], h[f"val_{metric}"]) for h in history if f"val_{metric}" in h]
        if points:
            total = self.cfg.epochs_stage1 + self.cfg.epochs_stage2
            record["validation"] = {**validation_record(self, points, total, len(val_cases)), "unit": "epoch"}
        return record

    @torch.no_grad()
    def pseudo_mri_scores(self, cases: Sequence[Any]) -> dict[str, float]:
        """P2M's pseudo-MRI against the true MRI on cases with a true flow.

        The pseudo-MRI is made at the network's side (as in training) from the PAT, resized back,
        moved into the MRI frame by ``flow_true`` and compared with the MRI: ``P2M_L1``, the mean
        absolute difference inside the MRI's labels (the whole image without labels), and
        ``P2M_SSIM`` (Wang et al. 2004, data range 1) on the whole image. Empty without P2M or
        without true flows.
        """
        from skimage.metrics import structural_similarity
        from skimage.transform import resize

        net = self.net.to(self.device).eval()
        if net.p2m is None:
            return {}
        l1, ssim = [], []
        for case in cases:
            if getattr(case, "flow_true", None) is None:
                continue
            pat, mri = as_image(case.pat, "pat"), as_image(case.mri, "mri")
            pseudo = net.p2m(self._tensor(pat, self.cfg.size)).float().clamp(0, 1)[0, 0].cpu().numpy()
            pseudo = resize(pseudo, mri.shape, order=1, anti_aliasing=False).astype(np.float32)
            aligned = warp(pseudo, case.flow_true)
            region = (case.labels_mri > 0) if getattr(case, "labels_mri", None) is not None else np.ones(mri.shape, bool)
            l1.append(float(np.abs(aligned - mri)[region].mean()))
            ssim.append(float(structural_similarity(aligned, mri, data_range=1.0)))
        return {"P2M_L1": float(np.mean(l1)), "P2M_SSIM": float(np.mean(ssim))} if l1 else {}

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
