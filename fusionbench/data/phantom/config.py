"""The phantom's parameters (:class:`PhantomConfig`), its default contrast tables and its splits.

A case depends only on :meth:`PhantomConfig.render_params`, the animal id and the level; the split
sizes only say which animals a split holds (:func:`split_animals`). :data:`GENERATOR_VERSION` and
the render parameters key the on-disk cache and :func:`fusionbench.data.dataset_fingerprint`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..case import ORGAN_IDS, ORGANS
from .anatomy import LEVELS

__all__ = ["GENERATOR_VERSION", "SPLITS", "MISALIGN_PRESETS", "DEFAULT_MRI_T2", "DEFAULT_PAT_MUA", "PhantomConfig",
           "split_of", "split_animals"]

#: Bump whenever the generated images change for the same parameters (invalidates caches). It
#: keys the code, not the look: each look is a :data:`VERSIONS` entry chosen by ``version=``.
GENERATOR_VERSION = "1.2"

#: The phantom's looks, selectable by name (``phantom:version=1.2``) so that every published table
#: stays reproducible. ``"1.2"``: the first physics-based rendering; ``"2.0"`` (the default, on
#: whose train split the shipped weights are trained): geometry, PAT contrast, reconstruction and
#: MRI texture set from measurements of real images (docs/phantom.md).
VERSIONS = ("1.2", "2.0")
DEFAULT_VERSION = "2.0"

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


#: Phantom 2.0's T2 table: body wall and muscle as bright as the real 7 T images' soft tissue
#: (median inside the body about 0.49 of the frame's range against 0.31 for 1.2). Visceral fat and
#: gut content are rendered on top (:func:`.render.render_mri`).
MRI_T2_V2: tuple[tuple[str, float], ...] = (
    ("background", 0.0), ("body", 0.42), ("brain", 0.55), ("lung", 0.06), ("heart", 0.40),
    ("liver", 0.22), ("intestines", 0.62), ("kidneys", 0.78), ("spleen", 0.40), ("spine", 0.14),
    ("tumour", 0.48), ("vessels", 0.05),
)

#: Phantom 2.0's absorption: real MSOT images show liver, kidneys, spleen, spine and the great
#: vessels as bright regions, so their μa is raised over muscle. With 2.0's lower effective
#: scattering (``mus_prime`` 0.6/mm: light also reaches the slice from above and below it, which
#: a 2-D diffusion model can only mimic by attenuating less) a deep liver still shows as a region
#: instead of shadowing itself.
PAT_MUA_V2: tuple[tuple[str, float], ...] = (
    ("background", 0.002), ("body", 0.015), ("brain", 0.025), ("lung", 0.025), ("heart", 0.06),
    ("liver", 0.1), ("intestines", 0.035), ("kidneys", 0.08), ("spleen", 0.2), ("spine", 0.07),
    ("tumour", 0.14), ("vessels", 0.22),
)

#: Parameters whose default depends on ``version`` (a field left at None takes the version's).
VERSION_DEFAULTS: dict[str, dict[str, Any]] = {
    "1.2": {"fov_mm": 40.0, "mus_prime": 1.0, "mri_t2": DEFAULT_MRI_T2, "pat_mua": DEFAULT_PAT_MUA, "mri_noise": 0.03,
            "mri_texture": 0.06, "pat_noise": 0.04, "pat_texture": 0.5, "pat_band_mhz": (0.5, 6.0),
            "pat_zero": 0.5, "pat_white": 1.0},
    "2.0": {"fov_mm": 30.0, "mus_prime": 0.6, "mri_t2": MRI_T2_V2, "pat_mua": PAT_MUA_V2, "mri_noise": 0.012,
            "mri_texture": 0.12, "pat_noise": 0.03, "pat_texture": 0.15, "pat_band_mhz": (0.05, 3.0),
            "pat_zero": 0.27, "pat_white": 0.8},
}


def _table_tuple(value, name: str, version: str) -> tuple[tuple[str, float], ...]:
    if isinstance(value, str):
        value = json.loads(value)
    items = dict(value.items() if isinstance(value, Mapping) else value)
    unknown = sorted(set(items) - set(ORGAN_IDS))
    if unknown:
        raise ValueError(f"{name}: unknown organ(s) {unknown}; expected names of ORGANS {sorted(ORGAN_IDS)}")
    base = dict(VERSION_DEFAULTS[version][name])
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
        would be wrong (docs/phantom.md; tests/test_phantom.py checks it).
    pat_band_mhz : (float, float)
        Detection band edges (MHz).
    levels : tuple of str
        Body levels per animal.
    keep_physics : bool
        Also keep ``fluence`` and ``p0`` (PAT frame) in ``Case.meta``.
    version : str
        The look (:data:`VERSIONS`): anatomy framing, rendering and every parameter above left at
        None take this version's values (:data:`VERSION_DEFAULTS`).
    pat_zero, pat_white : float
        Stored gray values of zero pressure (the water) and of the 99.9th percentile of the
        reconstruction's magnitude: 0.5 and 1 in 1.2; 0.27 and 0.8 in 2.0, set from the
        real 8-bit MSOT exports (docs/phantom.md).
    """

    n_train_animals: int = 40
    n_val_animals: int = 4
    n_test_animals: int = 12
    size: int = 256
    misalign: str = "moderate"
    seed: int = 0
    fluence: str = "diffusion"
    tumour_prob: float = 0.4
    mri_t2: tuple | None = None
    pat_mua: tuple | None = None
    fov_mm: float | None = None
    mus_prime: float | None = None
    mri_noise: float | None = None
    mri_bias: float = 0.25
    mri_texture: float | None = None
    pat_noise: float | None = None
    pat_texture: float | None = None
    pat_sos_error: float = 0.0
    pat_band_mhz: tuple | None = None
    levels: tuple = LEVELS
    keep_physics: bool = False
    version: str = DEFAULT_VERSION
    pat_zero: float | None = None
    pat_white: float | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("version", str(self.version))
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {list(VERSIONS)}, got {self.version!r}")
        for key, value in VERSION_DEFAULTS[self.version].items():
            if getattr(self, key) is None:
                set_(key, value)
        set_("mri_t2", _table_tuple(self.mri_t2, "mri_t2", self.version))
        set_("pat_mua", _table_tuple(self.pat_mua, "pat_mua", self.version))
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
        if not 0 < self.pat_zero < self.pat_white <= 1:
            raise ValueError(f"need 0 < pat_zero < pat_white <= 1, got pat_zero={self.pat_zero}, "
                             f"pat_white={self.pat_white}")
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
            if default is None:
                default = VERSION_DEFAULTS[DEFAULT_VERSION][key]
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

    def record(self) -> dict[str, Any]:
        """Every parameter, as keyed in dataset fingerprints and caches. Version 1.2 leaves out
        the keys it predates (``version``, ``pat_zero`` at 0.5, ``pat_white`` at 1), so its
        fingerprints, caches and the provenance of weights trained on it stay as they were."""
        d = dataclasses.asdict(self)
        if self.version == "1.2" and (self.pat_zero, self.pat_white) == (0.5, 1.0):
            del d["version"], d["pat_zero"], d["pat_white"]
        return d

    def render_params(self) -> dict[str, Any]:
        """Parameters that determine a case's content (all but the split sizes): the cache key."""
        d = self.record()
        for split in SPLITS:
            d.pop(f"n_{split}_animals")
        return d


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
