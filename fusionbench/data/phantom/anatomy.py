"""Mouse cross-section anatomy for the phantom: label maps at four body levels.

Geometry follows the planning notes (data notes §1b): nude mouse of 12-15 g, trunk cross-section
an ellipse of about 19-24 mm x 15-19 mm, head 13-16 mm x 10-13 mm, the animal prone with the
spine dorsal at the image bottom (so the ventral side faces the top of the image). Every outline is
an ellipse whose radius is modulated by a few low-order cosines, ``r(θ) (1 + Σ a_k cos(kθ + φ_k))``,
which gives the irregular, animal-specific shapes. Organ positions are given in body-normalised
coordinates (fractions of the body semi-axes) and jittered per slice; sizes scale per animal.

All functions are pure: randomness comes only from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..case import ORGAN_IDS

__all__ = ["LEVELS", "AnimalTraits", "draw_animal", "draw_anatomy"]

#: The four body levels, head to tail.
LEVELS: tuple[str, ...] = ("head", "thorax", "upper_abdomen", "lower_abdomen")

#: Body semi-axes (mm) per level for a reference 13.5 g animal: (horizontal, vertical).
_BODY_SEMI_AXES_MM = {
    "head": (7.2, 5.7),
    "thorax": (10.0, 8.0),
    "upper_abdomen": (11.0, 8.6),
    "lower_abdomen": (10.6, 8.3),
}


@dataclass(frozen=True)
class AnimalTraits:
    """Per-animal constants shared by its four slices (so one animal is one consistent mouse)."""

    scale: float          # overall linear size factor (body mass variation)
    aspect: float         # height/width factor of the trunk
    organ_scale: float    # organ size factor relative to the body
    has_tumour: bool
    tumour_radius_mm: float
    tumour_angle: float   # position on the ventro-lateral body wall (radians, image frame)


def draw_animal(rng: np.random.Generator, tumour_prob: float) -> AnimalTraits:
    """Draw the per-animal traits (size, aspect, tumour) from ``rng``."""
    has_tumour = bool(rng.random() < tumour_prob)
    side = rng.choice([-1.0, 1.0])
    # Ventro-lateral: between 25 and 70 degrees from the ventral midline (top of the image).
    angle = -np.pi / 2 + side * np.deg2rad(rng.uniform(25.0, 70.0))
    return AnimalTraits(
        scale=float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)),
        aspect=float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1)),
        organ_scale=float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.15)),
        has_tumour=has_tumour,
        tumour_radius_mm=float(rng.uniform(1.5, 3.0)),
        tumour_angle=float(angle),
    )


def _blob(x, y, cx, cy, rx, ry, angle, rng, roughness, orders=(2, 3, 4, 5)):
    """Boolean mask of an irregular ellipse centred at (cx, cy) with semi-axes (rx, ry) (mm).

    The boundary radius is scaled by ``1 + Σ a_k cos(k θ + φ_k)``, ``a_k ~ N(0, roughness)``.
    """
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    u = (dx * ca + dy * sa) / rx
    v = (-dx * sa + dy * ca) / ry
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    amps = rng.normal(0.0, roughness, size=len(orders))
    phases = rng.uniform(0.0, 2 * np.pi, size=len(orders))
    edge = 1.0 + sum(a * np.cos(k * theta + p) for a, k, p in zip(amps, orders, phases))
    return rho < edge


def _disk(x, y, cx, cy, r):
    return (x - cx) ** 2 + (y - cy) ** 2 < r * r


#: Phantom 2.0 frames the head as tightly as the trunk (real slices fill 59-83 % of the frame
#: width at every level), so its head is drawn larger relative to the field of view.
_HEAD_SEMI_AXES_MM_V2 = (9.4, 7.4)


def draw_anatomy(level: str, traits: AnimalTraits, rng: np.random.Generator, size: int,
                 fov_mm: float, version: str = "1.2") -> np.ndarray:
    """Label map (uint8, ids of :data:`fusionbench.data.ORGANS`) of one cross-section.

    Parameters
    ----------
    level : str
        One of :data:`LEVELS`.
    traits : AnimalTraits
        The animal's constants.
    rng : numpy.random.Generator
        Source of the slice's own variation (outline, organ jitter, loops, vessels).
    size : int
        Image side in pixels.
    fov_mm : float
        Field of view (mm) covered by the image side.
    version : str
        Phantom version: ``"2.0"`` draws a larger head and flattens the trunk's dorsal side (the
        animal lies prone on the holder), as the real slices are shaped.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    px = fov_mm / size
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * px
    y, x = np.meshgrid(coords, coords, indexing="ij")  # y grows downward = dorsal
    v2 = version != "1.2"
    ax0, ay0 = _HEAD_SEMI_AXES_MM_V2 if v2 and level == "head" else _BODY_SEMI_AXES_MM[level]
    a = ax0 * traits.scale * rng.uniform(0.96, 1.04)
    b = ay0 * traits.scale * traits.aspect * rng.uniform(0.96, 1.04)
    cx0, cy0 = rng.normal(0.0, 0.4, size=2)
    labels = np.zeros((size, size), dtype=np.uint8)
    body = _blob(x, y, cx0, cy0, a, b, rng.normal(0.0, 0.05), rng, 0.025, orders=(2, 3, 4))
    if v2 and level != "head":
        # Prone on the holder: the dorsal side (image bottom) is flattened, so the trunk's section
        # is D-shaped as in the real slices; the outline keeps rounded corners.
        flat = cy0 + b * rng.uniform(0.72, 0.86)
        body &= ndi.gaussian_filter((y < flat).astype(np.float32), 1.5 / px) > 0.5
    if traits.has_tumour and level in ("upper_abdomen", "lower_abdomen"):
        # Subcutaneous tumour: centred just inside the skin, bulging out of the body outline.
        r_t = traits.tumour_radius_mm * (1.0 if level == "lower_abdomen" else 0.75) * rng.uniform(0.9, 1.1)
        th = traits.tumour_angle + rng.normal(0.0, 0.08)
        tx, ty = cx0 + 0.9 * a * np.cos(th), cy0 + 0.9 * b * np.sin(th)
        tumour = _blob(x, y, tx, ty, r_t, r_t * rng.uniform(0.75, 0.95), th, rng, 0.08)
        body |= tumour
    else:
        tumour = None
    labels[body] = ORGAN_IDS["body"]
    # Organs stay at least ~0.6 mm inside the skin (subcutaneous layer and abdominal wall).
    inner = ndi.binary_erosion(body, iterations=max(1, int(round(0.6 / px))))
    s = traits.organ_scale

    def jit(sd=0.04):
        return rng.normal(0.0, sd)

    def organ(name, u, v, ru, rv, angle_deg=0.0, rough=0.06, within=inner):
        mask = _blob(x, y, cx0 + (u + jit()) * a, cy0 + (v + jit()) * b, ru * s * a * rng.uniform(0.92, 1.08),
                     rv * s * b * rng.uniform(0.92, 1.08), np.deg2rad(angle_deg + rng.normal(0, 6)), rng, rough)
        labels[mask & within] = ORGAN_IDS[name]

    def spine():
        v = 0.56 if v2 else 0.72  # above the flattened back in 2.0
        r = 1.15 * traits.scale * rng.uniform(0.92, 1.08)
        cx, cy = cx0 + jit(0.02) * a, cy0 + (v + jit(0.02)) * b
        labels[_disk(x, y, cx, cy, r) & inner] = ORGAN_IDS["spine"]
        return cx, cy, r

    def great_vessels(sx, sy, r_spine):
        # Aorta just ventral of the spine, vena cava to its right.
        labels[_disk(x, y, sx + 0.15, sy - r_spine - 0.55, 0.42 * traits.scale) & inner] = ORGAN_IDS["vessels"]
        labels[_disk(x, y, sx + 1.1, sy - r_spine - 0.45, 0.5 * traits.scale) & inner] = ORGAN_IDS["vessels"]

    if level == "head":
        organ("brain", 0.0, 0.12, 0.64, 0.6, rough=0.04)
    elif level == "thorax":
        organ("lung", -0.44, 0.02, 0.34, 0.56, angle_deg=-12)
        organ("lung", 0.44, 0.02, 0.34, 0.56, angle_deg=12)
        organ("heart", 0.08, -0.22, 0.33, 0.36, angle_deg=20, rough=0.04)
        great_vessels(*spine())
    elif level == "upper_abdomen":
        organ("liver", -0.22, -0.18, 0.66, 0.55, angle_deg=12, rough=0.07)
        organ("liver", 0.22, -0.45, 0.4, 0.3, angle_deg=-10, rough=0.07)
        organ("intestines", 0.36, 0.05, 0.28, 0.27, rough=0.08)
        organ("spleen", 0.66, 0.22, 0.3, 0.11, angle_deg=62, rough=0.05)
        great_vessels(*spine())
    else:  # lower_abdomen
        n_loops = int(rng.integers(5, 10))
        centres = rng.uniform([-0.6, -0.72], [0.6, 0.2], size=(n_loops, 2))
        for u, v in centres:
            r = rng.uniform(0.12, 0.2)
            organ("intestines", u, v, r, r * a / b * rng.uniform(0.8, 1.2), angle_deg=rng.uniform(0, 180),
                  rough=0.1)
        organ("kidneys", -0.42, 0.36, 0.21, 0.3, angle_deg=-22, rough=0.04)
        organ("kidneys", 0.42, 0.36, 0.21, 0.3, angle_deg=22, rough=0.04)
        if rng.random() < 0.85:
            organ("spleen", 0.68, 0.0, 0.22, 0.085, angle_deg=75, rough=0.05)
        great_vessels(*spine())
    # Subcutaneous vessels: small disks 0.3-1 mm under the skin.
    shell = body & ~ndi.binary_erosion(body, iterations=max(1, int(round(1.0 / px))))
    rr, cc = np.nonzero(shell & ~ndi.binary_erosion(body, iterations=max(1, int(round(0.3 / px)))))
    if rr.size:
        # 2.0: fewer, as real MSOT rims show a few bright vessels, not a string of beads.
        n_vessels = int(rng.integers(3, 9) if v2 else rng.integers(8, 21))
        pick = rng.choice(rr.size, size=min(n_vessels, rr.size), replace=False)
        radius = max(0.18, 0.55 * px)  # at least about one pixel across
        for i in pick:
            vx, vy = x[rr[i], cc[i]], y[rr[i], cc[i]]
            labels[_disk(x, y, vx, vy, radius * rng.uniform(0.8, 1.3)) & body] = ORGAN_IDS["vessels"]
    if tumour is not None:
        labels[tumour] = ORGAN_IDS["tumour"]
    return labels
