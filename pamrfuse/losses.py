"""PAMRFuse+ losses (Zhong et al. 2024, §2.6; spec §2.3, §3.6, §4.8, §5).

Conventions: images (B, 1, H, W) in [0, 1]; every loss returns a scalar tensor (mean reduction).
VGG features are :class:`fusionbench.nn.vgg.VGGTaps` of :func:`fusionbench.nn.vgg.vgg16_features`
(ImageNet VGG-16; VGG-19 is not obtainable offline, so the taps relu1_1..relu5_1 are VGG-16's,
spec §8); SSIM and the flow smoothness are :mod:`fusionbench.nn.losses`'. Where paper and released
code disagree the paper's form is the default (spec §6-7).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.nn.layers import warp_torch
from fusionbench.nn.losses import smoothness_loss, ssim_map
from fusionbench.nn.vgg import VGGTaps, build_vgg16_features

__all__ = [
    "PST_WEIGHTS", "load_vgg", "gram", "cycle_loss", "lsgan_loss", "laplacian_residual", "edge_loss", "p2m_code_terms",
    "registration_loss", "reconstruction_loss", "cc", "decomposition_loss", "sobel_magnitude", "intensity_loss",
    "gradient_max_loss",
]

#: omega_j of the paper's Eq. 11-12 for the five taps.
PST_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1.0, 1.0)


def load_vgg(source: str = "auto", seed: int = 0) -> tuple[nn.Sequential, str]:
    """VGG-16 ``features`` (frozen, eval) and a provenance string.

    ``source``: ``"auto"``, ``"imagenet"``, ``"random"`` go to the shared loader
    :func:`fusionbench.nn.vgg.vgg16_features`. ``"tiny-random"`` is a VGG-16 layout with 1/8 of the
    channels and seeded random weights, for CI (spec §8: "a tiny random VGG so CI never needs the
    59 MB file"); its losses are not meaningful for training.
    """
    if source == "tiny-random":
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        net = build_vgg16_features(width_div=8)
        torch.random.set_rng_state(gen_state)
        desc = f"tiny-random-vgg16/8 (seed {seed})"
    else:
        from fusionbench.nn.vgg import vgg16_features

        net, desc = vgg16_features(source, seed=seed)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), desc


def gram(feat: torch.Tensor) -> torch.Tensor:
    """Per-sample Gram matrix (B, C, C) normalised by C·H·W (spec §7 item 4; the code mixes samples)."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def cycle_loss(rec01: torch.Tensor, real01: torch.Tensor, vgg: VGGTaps, lambda_p: float = 1.0,
               lambda_s: float = 100.0, weights: Sequence[float] = PST_WEIGHTS, taps: int = 5) -> torch.Tensor:
    """Perceptual-style-transfer cycle criterion (paper Eq. 10-12, spec §6 "P2M loss").

    ``L1(rec, x) + lambda_p * sum_j w_j MSE(phi_j(rec), phi_j(x))
    + lambda_s * sum_j w_j MSE(Gram_j(rec), Gram_j(x))``, targets without gradient; ``taps < 5``
    keeps only the first taps (a cost cut of the ``lite`` preset, not the paper).
    """
    fr = vgg(rec01, upto=taps)
    with torch.no_grad():
        fx = vgg(real01, upto=taps)
    pcp = sum(w * F.mse_loss(a, b) for w, a, b in zip(weights, fr, fx))
    sty = sum(w * F.mse_loss(gram(a), gram(b)) for w, a, b in zip(weights, fr, fx))
    return F.l1_loss(rec01, real01) + lambda_p * pcp + lambda_s * sty


def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al., ICCV 2017): MSE to 1 (real) or 0 (fake)."""
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


_BINOMIAL5 = (0.05, 0.25, 0.4, 0.25, 0.05)


def laplacian_residual(x: torch.Tensor) -> torch.Tensor:
    """One Laplacian-pyramid level ``x - blur(up(down(blur(x))))`` (spec §2.3 "edge loss").

    5×5 separable binomial ``[.05 .25 .4 .25 .05]`` with replicate padding, decimation by 2, zero
    insertion scaled by 4 (the kernel sums to 1, so a constant image has a zero residual).
    """
    k1 = torch.tensor(_BINOMIAL5, device=x.device, dtype=x.dtype)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)

    def blur(t):
        return F.conv2d(F.pad(t, (2, 2, 2, 2), mode="replicate"), kernel, groups=x.shape[1])

    down = blur(x)[:, :, ::2, ::2]
    up = torch.zeros_like(x)
    up[:, :, ::2, ::2] = 4.0 * down
    return x - blur(up)


def edge_loss(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier distance ``mean(sqrt(d² + eps²))`` of the two images' :func:`laplacian_residual`."""
    d = laplacian_residual(a) - laplacian_residual(b)
    return torch.sqrt(d * d + eps * eps).mean()


def p2m_code_terms(pat: torch.Tensor, mri: torch.Tensor, fake_m: torch.Tensor, fake_p: torch.Tensor,
                   rec_p: torch.Tensor, rec_m: torch.Tensor, idt_p: torch.Tensor, idt_m: torch.Tensor
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """The released P2M code's generator terms beyond the paper's (spec §2.3, §7 item 5).

    All tensors in the generators' [-1, 1] range: ``fake_m = G_pm(PAT)``, ``fake_p = G_mp(MRI)``,
    ``rec_p = G_mp(fake_m)``, ``rec_m = G_pm(fake_p)``, ``idt_p = G_mp(PAT)``, ``idt_m = G_pm(MRI)``.
    Identity ``4 L1(idt_p, PAT) + 6.5 L1(idt_m, MRI)``; paired cross L1 ``5 L1(fake_m, MRI) +
    8 L1(fake_p, PAT)``; edge ``5 E(fake_m, MRI) + 10 E(fake_p, PAT)``; cross-cycle ``8 (L1 + E)``
    of (fake_p, rec_p) and of (fake_m, rec_m). The code pairs PAT and MRI of the same slice, so
    the cross terms see the pair's misalignment; it is zero-mean over a dataset.
    """
    idt = 4.0 * F.l1_loss(idt_p, pat) + 6.5 * F.l1_loss(idt_m, mri)
    cross = 5.0 * F.l1_loss(fake_m, mri) + 8.0 * F.l1_loss(fake_p, pat)
    edge = 5.0 * edge_loss(fake_m, mri) + 10.0 * edge_loss(fake_p, pat)
    cross_cycle = 8.0 * (F.l1_loss(fake_p, rec_p) + F.l1_loss(fake_m, rec_m)
                         + edge_loss(fake_p, rec_p) + edge_loss(fake_m, rec_m))
    total = idt + cross + edge + cross_cycle
    return total, {"idt": idt.item(), "cross": cross.item(), "edge": edge.item(), "xcycle": cross_cycle.item()}


def registration_loss(target: torch.Tensor, moving: torch.Tensor, flow: torch.Tensor, vgg: VGGTaps | None,
                      *, lambda_rev: float = 0.2, lambda_pix: float = 8.0, lambda_sm: float = 1.0,
                      penalty: str = "l2", backward_source: torch.Tensor | None = None) -> torch.Tensor:
    """Bidirectional registration loss (paper Eq. 13-15, spec §3.6 and §6 "reg loss").

    ``target`` T (pseudo-MRI in the PAT frame), ``moving`` M (MRI), ``flow`` with
    ``M_reg = warp(M, flow)``. Forward term compares ``M_reg`` with T, backward term
    ``warp(S, -flow)`` with M where S is ``backward_source`` (default T: the paper; the released
    code passes the real PAT). Each term is ``lambda_pix * L1(pixels) + L1(psi)`` with psi =
    relu4_1 (spec §7 item 11); ``vgg=None`` drops the feature term. Plus
    ``lambda_sm * smoothness(flow)``.
    """
    source = target if backward_source is None else backward_source
    fwd = warp_torch(moving, flow)
    bwd = warp_torch(source, -flow)
    loss = lambda_pix * (F.l1_loss(fwd, target) + lambda_rev * F.l1_loss(bwd, moving))
    if vgg is not None:
        with torch.no_grad():
            psi_t, psi_m = vgg(target, upto=4)[-1], vgg(moving, upto=4)[-1]
        loss = loss + F.l1_loss(vgg(fwd, upto=4)[-1], psi_t) + lambda_rev * F.l1_loss(vgg(bwd, upto=4)[-1], psi_m)
    return loss + lambda_sm * smoothness_loss(flow, penalty)


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor, mu: float = 5.0) -> torch.Tensor:
    """Paper Eq. 18 ``||X - X_hat||² + mu · DSSIM`` with DSSIM = (1 - SSIM)/2 and mu = 5 (CDDFuse, spec §7 item 15).

    SSIM as kornia's, which CDDFuse uses: the reflect-padded map averaged over the whole batch.
    """
    return F.mse_loss(x_hat, x) + mu * (1.0 - ssim_map(x, x_hat, padding="reflect").mean()) / 2


def cc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample and channel over H·W, clamped to [-1, 1], averaged (spec §4.8)."""
    eps = torch.finfo(torch.float32).eps
    a = a - a.mean(dim=(-2, -1), keepdim=True)
    b = b - b.mean(dim=(-2, -1), keepdim=True)
    num = (a * b).sum(dim=(-2, -1))
    den = eps + torch.sqrt((a * a).sum(dim=(-2, -1))) * torch.sqrt((b * b).sum(dim=(-2, -1)))
    return (num / den).clamp(-1.0, 1.0).mean()


def decomposition_loss(detail_a, detail_b, base_a, base_b, form: str = "paper") -> torch.Tensor:
    """Feature decomposition loss: ``CC(D_a, D_b)² / (CC(B_a, B_b) + 1.01)`` (paper Eq. 19).

    ``form="code"`` is the released code's ``|CC_D| + |CC_B|`` (spec §7 item 13).
    """
    cd, cb = cc(detail_a, detail_b), cc(base_a, base_b)
    if form == "paper":
        return cd ** 2 / (cb + 1.01)
    if form == "code":
        return cd.abs() + cb.abs()
    raise ValueError(f"decomposition loss form must be 'paper' or 'code', got {form!r}")


_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|Gx| + |Gy|`` with the 3×3 Sobel kernels, zero padding 1 (CDDFuse's ``Sobelxy``)."""
    kx = torch.tensor(_SOBEL_X, device=x.device, dtype=x.dtype).view(1, 1, 3, 3)
    kernels = torch.cat([kx, kx.transpose(-1, -2)], 0)
    g = F.conv2d(x, kernels, padding=1)
    return g.abs().sum(dim=1, keepdim=True)


def intensity_loss(fused, pat, mri) -> torch.Tensor:
    """``mean |F - max(P, M)|`` (paper Eq. 21)."""
    return F.l1_loss(fused, torch.maximum(pat, mri))


def gradient_max_loss(fused, pat, mri) -> torch.Tensor:
    """``mean | |∇F| - max(|∇P|, |∇M|) |`` with Sobel magnitudes (paper Eq. 22)."""
    return F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(pat), sobel_magnitude(mri)))
