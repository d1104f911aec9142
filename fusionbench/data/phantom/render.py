"""Rendering a label map as a modality image: the T2-weighted MRI and the MSOT-like PAT.

The per-organ tables of the config give the MRI intensity and the PAT absorption; the PAT physics
(fluence, ring-array acquisition, back-projection) is :mod:`.pat_physics`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..case import ORGAN_IDS
from .config import PhantomConfig
from .pat_physics import acquire_and_reconstruct, fluence_diffusion, fluence_fast

__all__ = ["render_mri", "render_pat"]


def _smooth_noise(rng: np.random.Generator, shape, sigma_px: float) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length ``sigma_px``."""
    field_ = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return (field_ / (field_.std() or 1.0)).astype(np.float32)


def _lookup(table: tuple, labels: np.ndarray) -> np.ndarray:
    lut = np.array([v for _, v in table], dtype=np.float32)
    return lut[labels]


def _skin_band(labels: np.ndarray, depth_px: float) -> np.ndarray:
    body = labels > 0
    return body & (ndi.distance_transform_edt(body) <= depth_px)


def _mri_v2_tissue(cfg: PhantomConfig, labels: np.ndarray, t2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Phantom 2.0's T2 detail, as in real 7 T mouse slices: visceral fat as bright lobules
    between the organs, intestinal loops with a wall and bright (fluid), dark (gas) or mixed
    content, and fine texture inside the parenchymal organs."""
    n = cfg.size
    scale = n / 256
    body_tissue = labels == ORGAN_IDS["body"]
    inner = ndi.binary_erosion(labels > 0, iterations=max(1, int(round(0.8 / cfg.px_mm))))
    # Fat: the top ~30 % of a smooth field, only in the trunk's soft tissue (not the head).
    if (labels == ORGAN_IDS["brain"]).any():
        fat = np.zeros_like(body_tissue)
    else:
        field_ = _smooth_noise(rng, (n, n), 6.0 * scale)
        fat = body_tissue & inner & (field_ > np.percentile(field_[body_tissue], 70) if body_tissue.any() else False)
    t2 = np.where(fat, 0.88, t2)
    gut = labels == ORGAN_IDS["intestines"]
    if gut.any():
        loops, n_loops = ndi.label(gut)
        content = rng.choice([0.92, 0.08, 0.5], size=n_loops + 1, p=[0.45, 0.3, 0.25])
        lumen = ndi.binary_erosion(gut, iterations=max(1, int(round(0.35 / cfg.px_mm))))
        mixed = 0.5 + 0.35 * _smooth_noise(rng, (n, n), 1.2 * scale)
        inside = np.where(content[loops] == 0.5, mixed, content[loops])
        t2 = np.where(gut & ~lumen, 0.35, np.where(lumen, inside, t2))
    parenchyma = np.isin(labels, [ORGAN_IDS[k] for k in ("liver", "kidneys", "spleen", "brain", "heart", "tumour")])
    fine = 1.0 + cfg.mri_texture * _smooth_noise(rng, (n, n), 1.5 * scale)
    return np.where(parenchyma | body_tissue, t2 * fine, t2)


def render_mri(cfg: PhantomConfig, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = cfg.size
    t2 = _lookup(cfg.mri_t2, labels)
    if cfg.version != "1.2":
        t2 = _mri_v2_tissue(cfg, labels, t2, rng)
    # Subcutaneous fat is bright in T2w: a thin rim under the skin, which also covers a
    # subcutaneous tumour (it grows under skin and fat), so the rim does not outline it.
    fat = _skin_band(labels, 0.45 / cfg.px_mm) & np.isin(labels, (ORGAN_IDS["body"], ORGAN_IDS["tumour"]))
    t2 = np.where(fat, max(t2.max(), 0.6), t2)
    texture = 1.0 + cfg.mri_texture * _smooth_noise(rng, (n, n), 1.5 * n / 256)
    gut = labels == ORGAN_IDS["intestines"]
    texture = np.where(gut, texture + 2.0 * cfg.mri_texture * _smooth_noise(rng, (n, n), 1.0), texture)
    img = ndi.gaussian_filter(t2 * texture, 0.7 if cfg.version == "1.2" else 1.2 * n / 256)
    # Smooth multiplicative bias field exp(quadratic polynomial) spanning ±mri_bias.
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    coef = rng.normal(size=5)
    log_bias = coef[0] * xx + coef[1] * yy + coef[2] * xx * yy + coef[3] * xx ** 2 + coef[4] * yy ** 2
    log_bias -= log_bias.mean()
    log_bias *= np.log1p(cfg.mri_bias) / (np.abs(log_bias).max() or 1.0)
    img = img * np.exp(log_bias)
    if cfg.mri_noise > 0:  # Rician magnitude noise
        img = np.hypot(img + rng.normal(0, cfg.mri_noise, img.shape), rng.normal(0, cfg.mri_noise, img.shape))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


#: Absorption of the skin (1/mm): superficial capillaries make it a bright rim in MSOT images.
_SKIN_MUA = 0.06


def render_pat(cfg: PhantomConfig, labels: np.ndarray, rng: np.random.Generator):
    """``(pat01, signed, scale, fluence, p0)`` rendered in the PAT frame."""
    n = cfg.size
    body = labels > 0
    mua = _lookup(cfg.pat_mua, labels)
    skin = _skin_band(labels, max(1.0, 0.2 / cfg.px_mm)) & (labels == ORGAN_IDS["body"])
    mua = np.where(skin, _SKIN_MUA, mua)
    # Sub-resolution microvasculature: a speckle-like multiplicative texture of μa.
    corr = 1.0 if cfg.version == "1.2" else 2.5  # 2.0: real MSOT shows no pixel-scale speckle
    texture = np.clip(1.0 + cfg.pat_texture * _smooth_noise(rng, (n, n), corr * n / 256), 0.1, None)
    mua = np.where(body, mua * texture, mua)
    mua = ndi.gaussian_filter(mua, 0.5).astype(np.float32)
    solve = fluence_diffusion if cfg.fluence == "diffusion" else fluence_fast
    phi = solve(body, mua, cfg.px_mm, cfg.mus_prime)
    grueneisen = np.where(body, 0.2, 0.12).astype(np.float32)
    p0 = grueneisen * mua * phi
    signed = acquire_and_reconstruct(p0, cfg.fov_mm, rng, band_mhz=cfg.pat_band_mhz, noise=cfg.pat_noise,
                                     sos_error=cfg.pat_sos_error)
    scale = float(np.percentile(np.abs(signed), 99.9)) or 1.0
    zero = cfg.pat_zero
    pat = np.clip(zero + (cfg.pat_white - zero) * signed / scale, 0.0, 1.0).astype(np.float32)
    return pat, signed, scale, phi, p0
