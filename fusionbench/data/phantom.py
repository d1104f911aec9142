"""The built-in PAT/MRI phantom: deterministic synthetic mouse cross-sections (DESIGN §7).

Each case is one cross-section of one synthetic nude mouse at one of four body levels (head,
thorax, upper abdomen, lower abdomen; optional subcutaneous 4T1-like tumour), with

* ``labels_mri``: the anatomy label map (ids of :data:`fusionbench.data.ORGANS`) in the MRI frame;
* ``mri``: a 7 T T2-weighted-like rendering (per-organ contrast table, texture, Gaussian PSF,
  smooth multiplicative bias field, Rician magnitude noise; Gudbjartsson & Patz 1995);
* ``pat``: an MSOT-like rendering in its own frame: initial pressure ``p0 = Γ μa Φ`` with the
  fluence Φ from the 2-D diffusion approximation and light entering through the whole skin
  (``fluence="fast"``: ``exp(-μeff d)``), then a limited-view (270°, 128 elements) ring-array
  acquisition with band-limited detection, noise and (off by default) a speed-of-sound error, and
  back-projection.
  The reconstruction is signed; it is stored as ``0.5 + 0.5 · signed / pat_scale`` clipped to
  [0, 1], so zero (the water) is mid-gray, as vendor 8-bit exports are. ``pat_scale`` is a
  robust percentile of ``|signed|`` (saturation is rare) and is recorded in ``meta``;
* ``flow_true``: the displacement with ``warp(pat, flow_true)`` aligned to ``mri``, and
  ``labels_pat``, the same anatomy in the PAT frame. The anatomy is drawn in the MRI frame,
  warped into the PAT frame with the inverse field (``meta["flow_mri_to_pat"]``), and the PAT
  physics is rendered there, so fluence and reconstruction artefacts are not warped.

The per-organ tables :data:`DEFAULT_MRI_T2` and :data:`DEFAULT_PAT_MUA` make the modalities'
complementarity explicit (seed paper, Zhong et al., Table 4): kidneys, spine, heart, lungs and
brain are clear in MRI but weak at depth in PAT; spleen and tumour are close to the surrounding
tissue in MRI but strongly absorbing (blood-rich) in PAT. Absorption values at 800 nm and the
geometry follow the planning notes (data notes §1b).

Splits are by animal: test animals have ids 0..499, validation 500..999, train 1000.., so the
test set depends only on ``seed`` and ``n_test_animals``. Every animal gives one case per level.
A case depends only on the rendering parameters, ``seed``, the animal id and the level
(``numpy.random.SeedSequence([seed, animal, level, stream])``), hence is identical on any machine
and independent of the split sizes; cases are cached on disk per case.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi

from ..warp import warp
from .case import ORGAN_IDS, ORGANS, Case
from ._anatomy import LEVELS, draw_anatomy, draw_animal
from ._pat_physics import acquire_and_reconstruct, fluence_diffusion, fluence_fast
from .cache import NpzCache
from .io import as_image, atomic_write_bytes, write_image

__all__ = ["GENERATOR_VERSION", "LEVELS", "SPLITS", "MISALIGN_PRESETS", "DEFAULT_MRI_T2", "DEFAULT_PAT_MUA",
           "PhantomConfig", "generate_case", "split_animals", "split_of", "load_phantom", "display",
           "write_phantom_folder", "preview_grid"]

#: Bump whenever the generated images change for the same parameters (invalidates caches).
GENERATOR_VERSION = "1.2"

SPLITS = ("train", "val", "test")
_SPLIT_BASE = {"test": 0, "val": 500, "train": 1000}
_SPLIT_CAP = {"test": 500, "val": 500, "train": 10 ** 6}

#: Maximum displacement (pixels at 256²; scaled with the image size) of each misalignment preset.
MISALIGN_PRESETS: dict[str, float] = {"none": 0.0, "mild": 2.0, "moderate": 6.0, "severe": 12.0}

#: T2-weighted MRI intensity per organ (0-1 scale before bias and noise). Fluid-rich organs
#: (intestines, kidneys, brain) are bright, liver and bone dark, lung and flowing blood near zero;
#: spleen is close to the surrounding soft tissue and the tumour only slightly hyperintense,
#: which reproduces the seed paper's poor MRI Dice for spleen and tumour.
DEFAULT_MRI_T2: tuple[tuple[str, float], ...] = (
    ("background", 0.02), ("body", 0.30), ("brain", 0.56), ("lung", 0.05), ("heart", 0.44),
    ("liver", 0.16), ("intestines", 0.74), ("kidneys", 0.66), ("spleen", 0.33), ("spine", 0.10),
    ("tumour", 0.33), ("vessels", 0.06),
)

#: Optical absorption μa (1/mm) at ~800 nm per organ: scales with blood volume (whole blood
#: ≈ 0.4-0.5/mm). Spleen, tumour and vessels are bright; deep organs differ little from muscle.
DEFAULT_PAT_MUA: tuple[tuple[str, float], ...] = (
    ("background", 0.002), ("body", 0.02), ("brain", 0.026), ("lung", 0.022), ("heart", 0.034),
    ("liver", 0.06), ("intestines", 0.026), ("kidneys", 0.036), ("spleen", 0.16), ("spine", 0.03),
    ("tumour", 0.12), ("vessels", 0.18),
)


def _table_tuple(value, name: str) -> tuple[tuple[str, float], ...]:
    if isinstance(value, str):
        value = json.loads(value)
    items = dict(value.items() if isinstance(value, Mapping) else value)
    unknown = sorted(set(items) - set(ORGAN_IDS))
    if unknown:
        raise ValueError(f"{name}: unknown organ(s) {unknown}; expected names of ORGANS {sorted(ORGAN_IDS)}")
    base = dict(DEFAULT_MRI_T2 if name == "mri_t2" else DEFAULT_PAT_MUA)
    base.update({k: float(v) for k, v in items.items()})
    bad = [k for k, v in base.items() if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f"{name}: values must be finite and >= 0 (bad: {bad})")
    return tuple((ORGANS[i], base[ORGANS[i]]) for i in sorted(ORGANS))


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of the phantom. Defaults give 48 test, 16 validation and 160 train pairs at 256².

    Attributes
    ----------
    n_train_animals, n_val_animals, n_test_animals : int
        Animals per split; each gives one case per level (4 by default).
    size : int
        Image side in pixels (256 default; 300 as in the seed paper on request).
    misalign : str
        ``"none"``, ``"mild"``, ``"moderate"`` or ``"severe"``: maximum displacement inside the body
        about 0/2/6/12 px at 256² (scaled with ``size``): small affine + smooth diffeomorphism.
    seed : int
        Dataset seed.
    fluence : str
        ``"diffusion"`` (2-D diffusion approximation) or ``"fast"`` (``exp(-μeff d)``).
    tumour_prob : float
        Probability that an animal carries a subcutaneous tumour (seen at both abdominal levels).
    mri_t2, pat_mua : tuple of (organ, value)
        The per-organ contrast tables (see :data:`DEFAULT_MRI_T2`, :data:`DEFAULT_PAT_MUA`).
    fov_mm : float
        Field of view (mm) of the image side.
    mus_prime : float
        Reduced scattering coefficient of tissue (1/mm).
    mri_noise, mri_bias, mri_texture : float
        Rician noise σ, bias-field span (±fraction), relative texture amplitude of the MRI.
    pat_noise, pat_texture, pat_sos_error : float
        Sinogram noise (relative to its RMS), microvascular μa texture amplitude, relative
        speed-of-sound error of the reconstruction. The latter is 0 by default: on the 270° arc a
        wrong speed of sound does not only blur, it moves edges towards the array by an amount that
        depends on their orientation, which no displacement field can describe, so ``flow_true``
        would be wrong. At 1 %, body-masked MI between PAT and the MRI warped into the PAT frame
        peaked 1.9 px away from alignment on 12 ``misalign="none"`` cases (0.0 px without it), and
        affine MI registration then could not beat the unregistered input (phantom 1.1).
    pat_band_mhz : (float, float)
        Detection band edges (MHz).
    levels : tuple of str
        Body levels per animal.
    keep_physics : bool
        Also keep ``fluence`` and ``p0`` (PAT frame) in ``Case.meta``.
    """

    n_train_animals: int = 40
    n_val_animals: int = 4
    n_test_animals: int = 12
    size: int = 256
    misalign: str = "moderate"
    seed: int = 0
    fluence: str = "diffusion"
    tumour_prob: float = 0.4
    mri_t2: tuple = DEFAULT_MRI_T2
    pat_mua: tuple = DEFAULT_PAT_MUA
    fov_mm: float = 40.0
    mus_prime: float = 1.0
    mri_noise: float = 0.03
    mri_bias: float = 0.25
    mri_texture: float = 0.06
    pat_noise: float = 0.04
    pat_texture: float = 0.5
    pat_sos_error: float = 0.0
    pat_band_mhz: tuple = (0.5, 6.0)
    levels: tuple = LEVELS
    keep_physics: bool = False

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("mri_t2", _table_tuple(self.mri_t2, "mri_t2"))
        set_("pat_mua", _table_tuple(self.pat_mua, "pat_mua"))
        set_("levels", tuple(self.levels))
        set_("pat_band_mhz", tuple(float(b) for b in self.pat_band_mhz))
        for split in SPLITS:
            n = getattr(self, f"n_{split}_animals")
            if not isinstance(n, (int, np.integer)) or n < 0 or n > _SPLIT_CAP[split]:
                raise ValueError(f"n_{split}_animals must be an integer in [0, {_SPLIT_CAP[split]}], got {n!r}")
        if not isinstance(self.size, (int, np.integer)) or not 32 <= self.size <= 1024:
            raise ValueError(f"size must be an integer in [32, 1024], got {self.size!r}")
        if self.misalign not in MISALIGN_PRESETS:
            raise ValueError(f"misalign must be one of {list(MISALIGN_PRESETS)}, got {self.misalign!r}")
        if self.fluence not in ("diffusion", "fast"):
            raise ValueError(f"fluence must be 'diffusion' or 'fast', got {self.fluence!r}")
        if not 0.0 <= self.tumour_prob <= 1.0:
            raise ValueError(f"tumour_prob must lie in [0, 1], got {self.tumour_prob}")
        bad_levels = [lv for lv in self.levels if lv not in LEVELS]
        if bad_levels or not self.levels:
            raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {self.levels}")
        lo, hi = self.pat_band_mhz
        if not 0 < lo < hi:
            raise ValueError(f"pat_band_mhz must be (low, high) with 0 < low < high, got {self.pat_band_mhz}")
        for name in ("fov_mm", "mus_prime"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("mri_noise", "mri_bias", "mri_texture", "pat_noise", "pat_texture", "pat_sos_error"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.mri_bias >= 1:
            raise ValueError("mri_bias is a ± fraction and must be < 1")

    @property
    def px_mm(self) -> float:
        return self.fov_mm / self.size

    @classmethod
    def from_params(cls, **params: Any) -> "PhantomConfig":
        """Build a config from keyword parameters given as strings (CLI, URLs) or typed values.

        ``n`` is the number of test pairs: ``n_test_animals = ceil(n / n_levels)``, the train
        split gets ``max(8, round(10/3 · n_test_animals))`` animals and validation
        ``max(1, ceil(n_test_animals / 3))`` (so ``n=48`` gives the defaults 12/40/4). Explicit
        ``n_*_animals`` win over ``n``. Tables accept a dict or its JSON text, overriding some organs.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        params = dict(params)
        n = params.pop("n", None)
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ValueError(f"unknown phantom parameter(s) {unknown}; known: n, {', '.join(sorted(fields))}")
        out: dict[str, Any] = {}
        for key, value in params.items():
            default = fields[key].default
            if isinstance(value, str) and not isinstance(default, str):
                text = value.strip()
                try:
                    if isinstance(default, bool):
                        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                            raise ValueError
                        value = text.lower() in ("1", "true", "yes")
                    elif isinstance(default, int):
                        value = int(text)
                    elif isinstance(default, float):
                        value = float(text)
                    elif key in ("levels",):
                        value = tuple(s.strip() for s in text.split(",") if s.strip())
                    elif key == "pat_band_mhz":
                        value = tuple(float(s) for s in text.split(","))
                except ValueError:
                    raise ValueError(f"phantom parameter {key}={value!r}: expected {type(default).__name__}") from None
            out[key] = value
        if n is not None:
            try:
                n = int(n)
            except (TypeError, ValueError):
                raise ValueError(f"phantom parameter n={n!r}: expected an integer number of test pairs") from None
            if n < 1:
                raise ValueError(f"phantom parameter n must be >= 1, got {n}")
            n_levels = len(out.get("levels", LEVELS))
            n_test = math.ceil(n / n_levels)
            out.setdefault("n_test_animals", n_test)
            out.setdefault("n_train_animals", max(8, round(10 * n_test / 3)))
            out.setdefault("n_val_animals", max(1, math.ceil(n_test / 3)))
        return cls(**out)

    def render_params(self) -> dict[str, Any]:
        """Parameters that determine a case's content (all but the split sizes): the cache key."""
        d = dataclasses.asdict(self)
        for split in SPLITS:
            d.pop(f"n_{split}_animals")
        return d


# ----------------------------------------------------------------------------------------------
# Randomness and small helpers

_STREAMS = {"animal": 0, "anatomy": 1, "deform": 2, "mri": 3, "pat": 4}


def _rng(cfg: PhantomConfig, animal: int, level: str | None, stream: str) -> np.random.Generator:
    level_code = 0 if level is None else LEVELS.index(level) + 1
    return np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(animal), level_code,
                                                         _STREAMS[stream]]))


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


# ----------------------------------------------------------------------------------------------
# Misalignment


def _integrate_velocity(v: np.ndarray, steps: int = 6) -> np.ndarray:
    """Scaling and squaring: displacement of exp(v) (Arsigny et al. 2006)."""
    u = v / 2 ** steps
    for _ in range(steps):
        u = u + np.stack([warp(u[i], u) for i in range(2)])
    return u


def _misalignment(cfg: PhantomConfig, rng: np.random.Generator, body: np.ndarray):
    """``(flow_pat_to_mri, flow_mri_to_pat, max_disp_px)`` for the config's preset.

    The transform T maps MRI-frame points to PAT-frame points, ``T(x) = A(x + u(x))`` with A a
    small affine map about the image centre and u = exp(v) a diffeomorphic displacement obtained
    from a smooth stationary velocity field (6×6 control grid, cubic upsampling, scaling and
    squaring on a coarse grid). ``flow_true(x) = T(x) - x``; the inverse field uses exp(-v) and
    A⁻¹. Amplitudes are scaled so the largest displacement inside the body is the preset's.
    """
    from skimage.transform import resize

    n = cfg.size
    target = MISALIGN_PRESETS[cfg.misalign] * n / 256.0
    zeros = np.zeros((2, n, n), np.float32)
    if target == 0:
        return zeros, zeros.copy(), 0.0
    angle0 = rng.uniform(-1, 1) * np.deg2rad(3.0)
    scale0 = rng.uniform(-1, 1) * 0.03
    shift0 = rng.uniform(-1, 1, size=2) * 0.3 / cfg.px_mm
    coarse = 64
    ctrl = rng.standard_normal((2, 6, 6))
    v_coarse = np.stack([resize(c, (coarse, coarse), order=3, mode="edge") for c in ctrl])
    v_coarse *= 3.6 * coarse / 256 / np.abs(v_coarse).max()  # about 3.6 px at 256² when lam = 1

    centre = (n - 1) / 2
    grid = np.stack(np.meshgrid(np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64), indexing="ij"))

    def fields(lam):
        v = v_coarse * lam  # in coarse pixels
        fwd = _integrate_velocity(v)
        inv = _integrate_velocity(-v)
        up = lambda f: np.stack([resize(c, (n, n), order=3, mode="edge") for c in f]) * (n / coarse)  # noqa: E731
        u_f, u_i = up(fwd), up(inv)
        th, s = angle0 * lam, 1.0 + scale0 * lam
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * s
        t = shift0 * lam
        # flow_true(x) = A(x + u(x)) - x
        p = grid + u_f - centre
        ap = np.einsum("ij,jhw->ihw", rot, p) + centre + t[:, None, None]
        flow_true = ap - grid
        # flow_inv(y) = A^-1(y) + u_inv(A^-1 y) - y
        q = np.einsum("ij,jhw->ihw", np.linalg.inv(rot), grid - centre - t[:, None, None]) + centre
        u_at_q = np.stack([ndi.map_coordinates(u_i[i], q, order=1, mode="nearest") for i in range(2)])
        flow_inv = q + u_at_q - grid
        return flow_true.astype(np.float32), flow_inv.astype(np.float32)

    lam = 1.0
    ft, fi = fields(lam)
    region = ndi.binary_dilation(body, iterations=3)
    peak = float(np.hypot(*ft)[region].max())
    lam *= target / peak
    ft, fi = fields(lam)
    return ft, fi, float(np.hypot(*ft)[region].max())


# ----------------------------------------------------------------------------------------------
# Rendering


def _render_mri(cfg: PhantomConfig, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = cfg.size
    t2 = _lookup(cfg.mri_t2, labels)
    # Subcutaneous fat is bright in T2w: a thin rim under the skin, which also covers a
    # subcutaneous tumour (it grows under skin and fat), so the rim does not outline it.
    fat = _skin_band(labels, 0.45 / cfg.px_mm) & np.isin(labels, (ORGAN_IDS["body"], ORGAN_IDS["tumour"]))
    t2 = np.where(fat, max(t2.max(), 0.6), t2)
    texture = 1.0 + cfg.mri_texture * _smooth_noise(rng, (n, n), 1.5 * n / 256)
    gut = labels == ORGAN_IDS["intestines"]
    texture = np.where(gut, texture + 2.0 * cfg.mri_texture * _smooth_noise(rng, (n, n), 1.0), texture)
    img = ndi.gaussian_filter(t2 * texture, 0.7)
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


def _render_pat(cfg: PhantomConfig, labels: np.ndarray, rng: np.random.Generator):
    """``(pat01, signed, scale, fluence, p0)`` rendered in the PAT frame."""
    n = cfg.size
    body = labels > 0
    mua = _lookup(cfg.pat_mua, labels)
    skin = _skin_band(labels, max(1.0, 0.2 / cfg.px_mm)) & (labels == ORGAN_IDS["body"])
    mua = np.where(skin, _SKIN_MUA, mua)
    # Sub-resolution microvasculature: a speckle-like multiplicative texture of μa.
    texture = np.clip(1.0 + cfg.pat_texture * _smooth_noise(rng, (n, n), 1.0 * n / 256), 0.1, None)
    mua = np.where(body, mua * texture, mua)
    mua = ndi.gaussian_filter(mua, 0.5).astype(np.float32)
    solve = fluence_diffusion if cfg.fluence == "diffusion" else fluence_fast
    phi = solve(body, mua, cfg.px_mm, cfg.mus_prime)
    grueneisen = np.where(body, 0.2, 0.12).astype(np.float32)
    p0 = grueneisen * mua * phi
    signed = acquire_and_reconstruct(p0, cfg.fov_mm, rng, band_mhz=cfg.pat_band_mhz, noise=cfg.pat_noise,
                                     sos_error=cfg.pat_sos_error)
    scale = float(np.percentile(np.abs(signed), 99.9)) or 1.0
    pat = np.clip(0.5 + 0.5 * signed / scale, 0.0, 1.0).astype(np.float32)
    return pat, signed, scale, phi, p0


def split_of(animal: int) -> str:
    """The split an animal id belongs to (test 0..499, val 500..999, train 1000..)."""
    if animal < 0:
        raise ValueError(f"animal id must be >= 0, got {animal}")
    return "test" if animal < 500 else "val" if animal < 1000 else "train"


def split_animals(cfg: PhantomConfig, split: str) -> list[int]:
    """Animal ids of ``split`` under ``cfg``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    base = _SPLIT_BASE[split]
    return list(range(base, base + getattr(cfg, f"n_{split}_animals")))


def generate_case(cfg: PhantomConfig, animal: int, level: str) -> Case:
    """Render one cross-section (pure and deterministic in ``cfg``, ``animal`` and ``level``).

    Parameters
    ----------
    cfg : PhantomConfig
        Rendering parameters and seed.
    animal : int
        Animal id (its split is :func:`split_of`).
    level : str
        One of :data:`LEVELS`.

    Returns
    -------
    Case
        id ``"a017_thorax"``; ``meta`` holds level, animal, split, px_mm, pat_scale, pat_zero,
        pat_saturated, max_disp_px, has_tumour, seed, misalign, generator_version and the inverse
        field ``flow_mri_to_pat`` (and ``fluence``, ``p0`` when ``cfg.keep_physics``).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    split = split_of(int(animal))
    traits = draw_animal(_rng(cfg, animal, None, "animal"), cfg.tumour_prob)
    labels_mri = draw_anatomy(level, traits, _rng(cfg, animal, level, "anatomy"), cfg.size, cfg.fov_mm)
    flow_true, flow_inv, max_disp = _misalignment(cfg, _rng(cfg, animal, level, "deform"), labels_mri > 0)
    labels_pat = warp(labels_mri, flow_inv, order=0) if max_disp > 0 else labels_mri.copy()
    mri = _render_mri(cfg, labels_mri, _rng(cfg, animal, level, "mri"))
    pat, signed, scale, phi, p0 = _render_pat(cfg, labels_pat, _rng(cfg, animal, level, "pat"))
    meta: dict[str, Any] = {
        "level": level, "animal": int(animal), "split": split, "px_mm": cfg.px_mm,
        "pat_scale": scale, "pat_zero": 0.5,
        "pat_signed": "signed = (pat - pat_zero) * 2 * pat_scale",
        "pat_saturated": float(np.mean((pat <= 0) | (pat >= 1))),
        "max_disp_px": max_disp, "has_tumour": bool((labels_mri == ORGAN_IDS["tumour"]).any()),
        "seed": int(cfg.seed), "misalign": cfg.misalign, "fluence": cfg.fluence,
        "generator_version": GENERATOR_VERSION, "flow_mri_to_pat": flow_inv,
    }
    if cfg.keep_physics:
        meta["fluence"] = phi
        meta["p0"] = p0.astype(np.float32)
    return Case(id=f"a{int(animal):03d}_{level}", pat=pat, mri=mri, labels_mri=labels_mri, labels_pat=labels_pat,
                flow_true=flow_true, meta=meta)


# ----------------------------------------------------------------------------------------------
# Caching and parallel generation

_ARRAY_META = ("flow_mri_to_pat", "fluence", "p0")


def _case_to_entry(case: Case):
    arrays = {"pat": case.pat, "mri": case.mri, "labels_mri": case.labels_mri, "labels_pat": case.labels_pat,
              "flow_true": case.flow_true}
    meta = {}
    for k, v in case.meta.items():
        if k in _ARRAY_META:
            arrays[k] = v
        else:
            meta[k] = v
    return arrays, meta


def _entry_to_case(name: str, arrays: dict, meta: dict) -> Case:
    meta = dict(meta)
    for k in _ARRAY_META:
        if k in arrays:
            meta[k] = arrays[k]
    return Case(id=name, pat=arrays["pat"], mri=arrays["mri"], labels_mri=arrays["labels_mri"],
                labels_pat=arrays["labels_pat"], flow_true=arrays["flow_true"], meta=meta)


def _cache_for(cfg: PhantomConfig, cache_dir) -> NpzCache:
    return NpzCache("phantom", GENERATOR_VERSION, cfg.render_params(), root=cache_dir)


def _generate_into_cache(cfg: PhantomConfig, animal: int, level: str, cache_dir) -> str:
    case = generate_case(cfg, animal, level)
    _cache_for(cfg, cache_dir).save(case.id, *_case_to_entry(case))
    return case.id


def load_phantom(split: str = "test", cfg: PhantomConfig | None = None, *, cache_dir=None, jobs: int | None = None,
                 progress: bool = False) -> list[Case]:
    """The cases of one split, generated once and then read from the on-disk cache.

    Parameters
    ----------
    split : {"train", "val", "test"}
        Which animals (splits are disjoint by animal).
    cfg : PhantomConfig, optional
        Defaults to ``PhantomConfig()`` (48 test pairs at 256², moderate misalignment).
    cache_dir : path-like, optional
        Cache root (default ``$FUSIONBENCH_CACHE`` or ``~/.cache/fusionbench``).
    jobs : int, optional
        Worker processes for missing cases (default: all cores); ``1`` generates in this process.
    progress : bool
        Show a progress bar while generating.

    Returns
    -------
    list of Case
        Ordered by animal, then level (head to tail).
    """
    cfg = cfg if cfg is not None else PhantomConfig()
    cache = _cache_for(cfg, cache_dir)
    wanted = [(a, lv) for a in split_animals(cfg, split) for lv in cfg.levels]
    names = [f"a{a:03d}_{lv}" for a, lv in wanted]
    missing = [w for w, name in zip(wanted, names) if name not in cache]
    if missing:
        jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        bar = _progress(progress, len(missing), f"phantom {split}")
        with bar as (advance):
            if jobs == 1 or len(missing) == 1:
                for a, lv in missing:
                    _generate_into_cache(cfg, a, lv, cache_dir)
                    advance()
            else:
                import multiprocessing as mp

                ctx = mp.get_context("spawn")  # safe with threads (torch, BLAS) in the parent
                with ProcessPoolExecutor(max_workers=min(jobs, len(missing)), mp_context=ctx) as pool:
                    futures = [pool.submit(_generate_into_cache, cfg, a, lv, cache_dir) for a, lv in missing]
                    for fut in as_completed(futures):
                        fut.result()
                        advance()
    cases = []
    for (a, lv), name in zip(wanted, names):
        hit = cache.load(name)
        if hit is None:  # unreadable entry (e.g. a disk problem): regenerate in-process
            _generate_into_cache(cfg, a, lv, cache_dir)
            hit = cache.load(name)
        cases.append(_entry_to_case(name, *hit))
    return cases


class _progress:
    """Context manager yielding an ``advance()`` callable; a rich progress bar when enabled."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._p = Progress(transient=True)
        self._p.__enter__()
        task = self._p.add_task(self.label, total=self.total)
        return lambda: self._p.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False


# ----------------------------------------------------------------------------------------------
# Display and export


def display(pat_image: np.ndarray, mode: str = "signed", percentile: float = 99.5) -> np.ndarray:
    """Map a stored PAT image (zero at 0.5) to a [0, 1] gray image for figures; data are unchanged.

    Parameters
    ----------
    pat_image : (H, W) array
        A PAT image as stored (signed values with zero at mid-gray).
    mode : {"signed", "positive", "abs"}
        ``"signed"``: symmetric contrast stretch about mid-gray (zero stays at 0.5);
        ``"positive"``: negative lobes clipped to black, as many MSOT viewers show;
        ``"abs"``: magnitude (envelope-like).
    percentile : float
        Percentile of ``|signed|`` mapped to full scale.
    """
    img = as_image(pat_image, name="pat")
    signed = 2.0 * img - 1.0
    top = float(np.percentile(np.abs(signed), percentile)) or 1.0
    if mode == "signed":
        out = 0.5 + 0.5 * signed / top
    elif mode == "positive":
        out = signed / top
    elif mode == "abs":
        out = np.abs(signed) / top
    else:
        raise ValueError(f"display mode must be 'signed', 'positive' or 'abs', got {mode!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


#: One colour per label id of ORGANS (background black, body dark red, ...), for previews.
LABEL_COLOURS = np.array([
    (0, 0, 0), (120, 40, 40), (90, 140, 255), (170, 220, 255), (230, 40, 60), (150, 90, 30),
    (250, 200, 60), (60, 200, 90), (200, 60, 220), (240, 240, 240), (255, 120, 0), (255, 0, 0),
], dtype=np.float32) / 255


def _label_rgb(labels: np.ndarray) -> np.ndarray:
    return LABEL_COLOURS[np.clip(labels, 0, len(LABEL_COLOURS) - 1)]


def preview_grid(cases: list[Case], max_rows: int = 8) -> np.ndarray:
    """RGB uint8 grid, one row per case: MRI | PAT (as stored) | MRI labels | PAT labels |
    PAT warped by ``flow_true`` with the MRI label outlines (alignment check)."""
    from skimage.segmentation import find_boundaries

    rows = []
    for case in cases[:max_rows]:
        gray = lambda im: np.repeat(im[..., None], 3, axis=2)  # noqa: E731
        aligned = gray(warp(case.pat, case.flow_true))
        aligned[find_boundaries(case.labels_mri, mode="inner")] = (1.0, 0.2, 0.2)
        tiles = [gray(case.mri), gray(case.pat), _label_rgb(case.labels_mri), _label_rgb(case.labels_pat), aligned]
        sep = np.ones((case.shape[0], 2, 3), np.float32)
        rows.append(np.concatenate(sum(([t, sep] for t in tiles), [])[:-1], axis=1))
        rows.append(np.ones((2, rows[-1].shape[1], 3), np.float32))
    grid = np.concatenate(rows[:-1], axis=0)
    return np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)


def write_phantom_folder(out_dir, *, n: int = 64, size: int = 256, misalign: str = "moderate", seed: int = 0,
                         split: str = "test", cache_dir=None, jobs: int | None = None, progress: bool = False) -> Path:
    """Write ``n`` phantom pairs of ``split`` as files a person (or ``folder:`` loader) can read.

    Layout: ``pat/ID.png`` and ``mri/ID.png`` (8-bit; PAT zero at mid-gray), ``labels_mri/ID.png``
    and ``labels_pat/ID.png`` (8-bit label ids), ``flow/ID.npy`` (float32 (2, H, W), PAT -> MRI),
    ``manifest.csv`` (id,pat,mri,labels_mri,labels_pat,flow,split; paths relative to the folder)
    and ``preview.png``. The test split has ``4·ceil(n/4)`` pairs; the first ``n`` are written.
    """
    import imageio.v3 as iio

    cfg = PhantomConfig.from_params(n=n, size=size, misalign=misalign, seed=seed)
    cases = load_phantom(split, cfg, cache_dir=cache_dir, jobs=jobs, progress=progress)[:n]
    out = Path(out_dir)
    rows = []
    for case in cases:
        rel = {"pat": f"pat/{case.id}.png", "mri": f"mri/{case.id}.png", "labels_mri": f"labels_mri/{case.id}.png",
               "labels_pat": f"labels_pat/{case.id}.png", "flow": f"flow/{case.id}.npy"}
        write_image(out / rel["pat"], case.pat)
        write_image(out / rel["mri"], case.mri)
        write_image(out / rel["labels_mri"], case.labels_mri.astype(np.uint8))
        write_image(out / rel["labels_pat"], case.labels_pat.astype(np.uint8))
        buf = io.BytesIO()
        np.save(buf, case.flow_true.astype(np.float32))
        atomic_write_bytes(out / rel["flow"], buf.getvalue())
        rows.append({"id": case.id, **rel, "split": case.meta["split"]})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["id", "pat", "mri", "labels_mri", "labels_pat", "flow", "split"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "manifest.csv", text.getvalue().encode())
    atomic_write_bytes(out / "preview.png", iio.imwrite("<bytes>", preview_grid(cases), extension=".png"))
    return out


def main(argv=None) -> None:
    """``python -m fusionbench.data.phantom --out DIR [--n 64 --size 256 --misalign moderate]``."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--misalign", default="moderate", choices=list(MISALIGN_PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=list(SPLITS))
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args(argv)
    path = write_phantom_folder(args.out, n=args.n, size=args.size, misalign=args.misalign, seed=args.seed,
                                split=args.split, jobs=args.jobs, progress=True)
    print(path)


if __name__ == "__main__":
    main()
