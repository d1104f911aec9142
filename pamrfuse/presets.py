"""PAMRFuse+ configurations: the ``paper``, ``lite`` and ``tiny`` presets and the Table 5 ablations.

Every field changes the trained model or its output and is recorded in the weights' provenance.
Defaults follow the spec's recommendations (shared/reference/pamrfuse-spec.md §6), which pick the
paper's form where paper and released code disagree; the code's forms are switches.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["PAMRFuseConfig", "PRESETS", "ABLATIONS", "get_config"]


@dataclass(frozen=True)
class PAMRFuseConfig:
    preset: str = "paper"
    size: int = 300                  # training (and registration) resolution, divisible by 4
    # P2M (spec §2)
    ngf: int = 64
    n_res_blocks: int = 9
    ndf: int = 64
    d_layers: int = 3
    pool_size: int = 50
    # MLR (spec §3)
    mlr_pat_branch: bool = False
    # DFDF (spec §4)
    dim: int = 64
    heads: int = 8
    enc_blocks: int = 4
    dec_blocks: int = 4
    detail_layers: int = 3
    fuse_detail_layers: int = 1
    decoder_residual: bool = True
    minmax_output: bool = True       # the code's test-time min-max normalisation (spec §7 item 22)
    # VGG (spec §8): VGG-16 taps replace VGG-19's
    vgg_source: str = "auto"
    vgg_imagenet_norm: bool = True
    pst_taps: int = 5                # VGG taps used by the P2M cycle loss (relu1_1 .. relu5_1)
    # "paper": lambda_cyc-weighted PST cycles + LSGAN. "code": the released code's generator
    # objective (spec §2.3): cycle weights 8/13, 2x one GAN term, identity, paired cross L1, edge
    # and cross-cycle terms (pamrfuse.losses.p2m_code_terms).
    p2m_loss: str = "paper"
    # losses (spec §6)
    lambda_cyc: float = 10.0
    lambda_p: float = 1.0
    lambda_s: float = 100.0
    lambda_gan: float = 1.0
    lambda_rev: float = 0.2
    lambda_pix: float = 8.0
    # UMF-CMGR's L2 x10: favours the true field over none and keeps MLR on the anatomy (docs/pamrfuse.md)
    lambda_sm: float = 10.0
    smooth_penalty: str = "l2"
    reg_vgg: bool = True
    # L_reg reaches P2M in stage I (spec §7 item 1)? No: P2M and MLR drift off together (docs/pamrfuse.md)
    reg_to_p2m: bool = False
    mu_ssim: float = 5.0
    alpha1: float = 1.0
    alpha2: float = 2.0
    alpha3: float = 10.0
    alpha4: float = 2.0
    decomp_form: str = "paper"
    # schedule (spec §5-6)
    epochs_stage1: int = 40
    epochs_stage2: int = 80
    batch: int = 8
    lr_p2m: float = 2e-4
    lr_mlr: float = 1e-3
    lr_dfdf: float = 1e-4
    lr_step: int = 20
    lr_gamma: float = 0.5
    lr_floor: float = 1e-6
    clip_dfdf: float = 0.01
    steps_per_epoch: int = 0         # 0: one pass over the training cases
    augment: bool = True
    seed: int = 0
    # Table 5 ablations
    use_p2m: bool = True
    use_mlr: bool = True
    fusion_feedback: bool = True
    two_stage: bool = True

    def __post_init__(self):
        if self.size % 4:
            raise ValueError(f"size must be divisible by 4 (MLR and P2M strides), got {self.size}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if not 1 <= self.pst_taps <= 5:
            raise ValueError(f"pst_taps must be in 1..5, got {self.pst_taps}")
        if self.p2m_loss not in ("paper", "code"):
            raise ValueError(f"p2m_loss must be 'paper' or 'code', got {self.p2m_loss!r}")
        if self.use_p2m and not self.use_mlr:
            raise ValueError("use_p2m without use_mlr is meaningless: P2M only serves the registration")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "PAMRFuseConfig":
        """A recorded configuration; fields added since it was written take their defaults, which
        reproduce the behaviour of the code that wrote it."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(saved) - known)
        if bad:
            raise ValueError(f"unknown PAMRFuse+ setting(s) in a saved configuration: {', '.join(bad)}")
        return cls(**saved)

    def updated(self, **changes: Any) -> "PAMRFuseConfig":
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ValueError(f"unknown PAMRFuse+ setting(s): {', '.join(bad)}")
        return replace(self, **changes)


PRESETS: dict[str, PAMRFuseConfig] = {
    "paper": PAMRFuseConfig(),
    # Sized for 2 CPU cores; the code's P2M objective places the MRI better in this budget (docs/pamrfuse.md).
    "lite": PAMRFuseConfig(preset="lite", size=128, ngf=16, n_res_blocks=4, ndf=16, pool_size=20,
                           dim=16, heads=2, enc_blocks=1, dec_blocks=1, detail_layers=2,
                           pst_taps=3, reg_vgg=False, p2m_loss="code", epochs_stage1=40, epochs_stage2=32, batch=2, lr_step=8, steps_per_epoch=50),
    "tiny": PAMRFuseConfig(preset="tiny", size=32, ngf=4, n_res_blocks=1, ndf=4, d_layers=2, pool_size=4,
                           dim=8, heads=2, enc_blocks=1, dec_blocks=1, detail_layers=1,
                           vgg_source="tiny-random", epochs_stage1=1, epochs_stage2=1, batch=2,
                           steps_per_epoch=2),
}

#: Paper Table 5: (P2M, MLR) and (feedback of fusion, two-stage training) switched off.
ABLATIONS: dict[str, dict[str, Any]] = {
    "wo_p2m": {"use_p2m": False},
    "wo_p2m_mlr": {"use_p2m": False, "use_mlr": False},
    "wo_feedback": {"fusion_feedback": False},
    "wo_two_stage": {"two_stage": False},
    "wo_feedback_two_stage": {"fusion_feedback": False, "two_stage": False},
}


def get_config(preset: str | PAMRFuseConfig = "lite", ablation: str | None = None, **overrides: Any) -> PAMRFuseConfig:
    """A preset, optionally with a Table 5 ablation and field overrides applied."""
    if isinstance(preset, PAMRFuseConfig):
        cfg = preset
    else:
        try:
            cfg = PRESETS[preset]
        except KeyError:
            raise ValueError(f"unknown PAMRFuse+ preset {preset!r}; known: {', '.join(PRESETS)}") from None
    if ablation:
        try:
            overrides = {**ABLATIONS[ablation], **overrides}
        except KeyError:
            raise ValueError(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}") from None
    return cfg.updated(**overrides) if overrides else cfg
